package agentrun

import (
	"context"
	"encoding/base64"
	"fmt"
	"net/url"
	"strconv"
	"strings"
)

// gitRunner runs git for agent-runner's own steps.
type gitRunner struct {
	// baseEnv is agent-runner's environment without git variables that
	// could redirect it (GIT_DIR, GIT_CONFIG_*, …).
	baseEnv []string
	// authEnv carries the read-only token as an http.extraHeader through
	// GIT_CONFIG_COUNT/KEY/VALUE, for the commands that talk to the remote
	// before the agent runs. It never goes to a file, an argument (visible
	// in /proc) or the agent.
	authEnv []string
}

// authEnv builds the environment that hands git the token for cloneURL's
// origin only (http.<origin>/.extraHeader), so a redirect or a submodule on
// another host never receives it.
func authEnv(cloneURL, token string) []string {
	if token == "" {
		return nil
	}
	u, err := url.Parse(cloneURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") {
		return nil
	}
	header := "Authorization: Basic " + base64.StdEncoding.EncodeToString([]byte("x-access-token:"+token))
	return []string{
		"GIT_CONFIG_COUNT=1",
		"GIT_CONFIG_KEY_0=http." + u.Scheme + "://" + u.Host + "/.extraHeader",
		"GIT_CONFIG_VALUE_0=" + header,
	}
}

// cleanGitEnv drops variables that would make git act on another repository
// or with another configuration than agent-runner means, or trace what it
// sends.
func cleanGitEnv(env []string) []string {
	var out []string
	for _, kv := range env {
		k, _, _ := strings.Cut(kv, "=")
		switch {
		case k == "GIT_DIR", k == "GIT_WORK_TREE", k == "GIT_INDEX_FILE", k == "GIT_OBJECT_DIRECTORY",
			k == "GIT_ALTERNATE_OBJECT_DIRECTORIES", k == "GIT_CONFIG", k == "GIT_CONFIG_PARAMETERS",
			k == "GIT_CONFIG_COUNT", strings.HasPrefix(k, "GIT_CONFIG_KEY_"), strings.HasPrefix(k, "GIT_CONFIG_VALUE_"),
			k == "GIT_ASKPASS", k == "SSH_ASKPASS", k == "GIT_TERMINAL_PROMPT", k == "GIT_NAMESPACE":
			continue
		case strings.HasPrefix(k, "GIT_TRACE"), k == "GIT_CURL_VERBOSE", k == "GIT_REDACT_COOKIES":
			// Traces (GIT_TRACE_CURL with GIT_TRACE_REDACT=0, trace2)
			// would write the Authorization header to a file or stderr.
			continue
		}
		out = append(out, kv)
	}
	return append(out, "GIT_TERMINAL_PROMPT=0")
}

// gitOpts are the -c options of every git command after the agent ran: the
// agent could have written hooks or an fsmonitor command into .git, and
// agent-runner's own commit must not run them.
var afterAgentOpts = []string{"-c", "core.hooksPath=/dev/null", "-c", "core.fsmonitor=false"}

// run runs git in dir and returns its standard output. Its standard error
// is not logged line by line (git chatters about progress); a failure
// carries its last lines. withAuth adds the
// token; it is only ever set before the agent starts.
func (g gitRunner) run(ctx context.Context, dir string, withAuth bool, args ...string) (string, error) {
	env := g.baseEnv
	if withAuth {
		env = append(append([]string(nil), g.baseEnv...), g.authEnv...)
	}
	var out strings.Builder
	res, err := proc{
		Dir:  dir,
		Path: "git",
		Args: args,
		Env:  env,
		Stdout: func(line string) {
			out.WriteString(line)
			out.WriteByte('\n')
		},
	}.run(ctx)
	if err != nil {
		return out.String(), fmt.Errorf("git %s: %w", args[0], err)
	}
	if res.ExitCode != 0 {
		return out.String(), &gitError{args: args, code: res.ExitCode, tail: res.StderrTail}
	}
	return out.String(), nil
}

// gitError is a git command that exited non-zero.
type gitError struct {
	args []string
	code int
	tail []string
}

func (e *gitError) Error() string {
	msg := "git " + e.args[0] + " exited with status " + strconv.Itoa(e.code)
	if n := len(e.tail); n > 0 {
		msg += ": " + e.tail[n-1]
	}
	return msg
}
