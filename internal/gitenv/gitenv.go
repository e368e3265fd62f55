// Package gitenv builds the environment agentbot's own git commands run
// in: agent-runner's clone and commit inside the sandbox, and the bot's
// bundle verification and push outside it. Both sides hand git a token
// and both must keep git from being redirected (GIT_DIR, GIT_CONFIG_*) or
// made to trace what it sends (GIT_TRACE_CURL writes the Authorization
// header); two copies of these rules had already drifted.
package gitenv

import (
	"encoding/base64"
	"net/url"
	"strings"

	"github.com/agentbot/agentbot/internal/secret"
)

// Auth is the environment that hands git token for remote's origin only,
// as an http.<origin>/.extraHeader set through GIT_CONFIG_COUNT/KEY/VALUE:
// never in a URL, an argument (visible in /proc) or a file, and never sent
// to another host a redirect or a submodule names. It is nil without a
// token or for a remote that is not http(s) (a file URL of a local run).
func Auth(remote, token string) []string {
	if token == "" {
		return nil
	}
	u, err := url.Parse(remote)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil
	}
	return []string{
		"GIT_CONFIG_COUNT=1",
		"GIT_CONFIG_KEY_0=http." + u.Scheme + "://" + u.Host + "/.extraHeader",
		"GIT_CONFIG_VALUE_0=Authorization: Basic " + secret.Basic(token),
	}
}

// Credentials returns the secrets in an environment Auth made: the Basic
// credential and the token inside it, for redacting git's messages.
func Credentials(env []string) []string {
	var out []string
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		if !strings.HasPrefix(k, "GIT_CONFIG_VALUE_") {
			continue
		}
		_, cred, ok := strings.Cut(v, "Basic ")
		if !ok || cred == "" {
			continue
		}
		out = append(out, cred)
		if tok, ok := tokenOf(cred); ok {
			out = append(out, tok)
		}
	}
	return out
}

// tokenOf is the token inside a Basic credential "x-access-token:<token>".
func tokenOf(cred string) (string, bool) {
	raw, err := base64.StdEncoding.DecodeString(cred)
	if err != nil {
		return "", false
	}
	_, tok, ok := strings.Cut(string(raw), ":")
	return tok, ok && tok != ""
}

// kept are the git variables Clean lets through: who commits, and which
// certificate authorities to trust. Nothing in them can redirect git to
// another repository or configuration, or make it write what it sends.
var kept = map[string]bool{
	"GIT_AUTHOR_NAME": true, "GIT_AUTHOR_EMAIL": true, "GIT_AUTHOR_DATE": true,
	"GIT_COMMITTER_NAME": true, "GIT_COMMITTER_EMAIL": true, "GIT_COMMITTER_DATE": true,
	"GIT_SSL_CAINFO": true, "GIT_SSL_CAPATH": true,
}

// Clean returns env without every GIT_* variable but the few in kept, and
// without SSH_ASKPASS, and with prompts off. What it drops could make git
// act on another repository (GIT_DIR, GIT_WORK_TREE, GIT_OBJECT_DIRECTORY,
// GIT_NAMESPACE), with another configuration (GIT_CONFIG_*, GIT_CONFIG,
// GIT_CONFIG_PARAMETERS, GIT_SSH_COMMAND, GIT_ASKPASS), or trace what it
// sends (GIT_TRACE*, GIT_CURL_VERBOSE: with GIT_TRACE_REDACT=0 the trace
// holds the Authorization header). A list of what to drop would miss the
// next such variable git adds; a list of what to keep does not.
func Clean(env []string) []string {
	out := make([]string, 0, len(env)+1)
	for _, kv := range env {
		k, _, _ := strings.Cut(kv, "=")
		if (strings.HasPrefix(k, "GIT_") && !kept[k]) || k == "SSH_ASKPASS" {
			continue
		}
		out = append(out, kv)
	}
	return append(out, "GIT_TERMINAL_PROMPT=0")
}
