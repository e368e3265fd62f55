// Package secret hides secrets in text that leaves agentbot's control: task
// logs, the store, comments, check runs, pull requests, error messages and
// agent-runner's events. It is the one redactor every side of the protocol
// uses (agent-runner, the dispatcher, the GitHub client), so the rules —
// which values, which token shapes — cannot drift apart.
package secret

import (
	"encoding/base64"
	"regexp"
	"sort"
	"strings"
)

// Mask is what a secret is replaced with.
const Mask = "[REDACTED]"

// MinLen is the shortest value that is redacted: shorter values ("1",
// "yes") are settings rather than secrets, and replacing them would shred
// every line. Tokens are far longer.
const MinLen = 4

var (
	// tokenPattern matches GitHub tokens, so a token this process did not
	// mint (the one a run re-attached after a restart was given) is hidden
	// too.
	tokenPattern = regexp.MustCompile(`gh[opsu]_[A-Za-z0-9]{20,}`)
	// basicPrefix is the base64 of "x-access-token:", the user of the Basic
	// credential git sends. It is 15 bytes, so its encoding is a fixed
	// 20-character prefix of every such credential, whatever the token.
	basicPrefix  = base64.StdEncoding.EncodeToString([]byte(basicUser))
	basicPattern = regexp.MustCompile(basicPrefix + `[A-Za-z0-9+/]*={0,2}`)
)

const basicUser = "x-access-token:"

// Basic is the credential of an Authorization: Basic header that hands git
// token for an installation.
func Basic(token string) string {
	return base64.StdEncoding.EncodeToString([]byte(basicUser + token))
}

// Redactor replaces known secrets and anything shaped like a GitHub token
// or its Basic credential with Mask. The zero Redactor knows no secrets
// but still hides the token shapes.
type Redactor struct {
	r *strings.Replacer
}

// New is a Redactor for secrets; values shorter than MinLen are ignored.
// A secret that contains another is replaced whole.
func New(secrets ...string) Redactor {
	var s []string
	for _, v := range secrets {
		if len(v) >= MinLen {
			s = append(s, v)
		}
	}
	if len(s) == 0 {
		return Redactor{}
	}
	// Longest first: strings.Replacer tries its pairs in order at each
	// position.
	sort.SliceStable(s, func(i, j int) bool { return len(s[i]) > len(s[j]) })
	pairs := make([]string, 0, 2*len(s))
	for _, v := range s {
		pairs = append(pairs, v, Mask)
	}
	return Redactor{r: strings.NewReplacer(pairs...)}
}

// String redacts s.
func (r Redactor) String(s string) string {
	if s == "" {
		return s
	}
	if r.r != nil {
		s = r.r.Replace(s)
	}
	s = basicPattern.ReplaceAllString(s, Mask)
	return tokenPattern.ReplaceAllString(s, Mask)
}

// Lines redacts each line, into a new slice (nil stays nil).
func (r Redactor) Lines(lines []string) []string {
	if lines == nil {
		return nil
	}
	out := make([]string, len(lines))
	for i, l := range lines {
		out[i] = r.String(l)
	}
	return out
}
