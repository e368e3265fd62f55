package dispatch

import (
	"encoding/base64"
	"regexp"
	"sort"

	"github.com/agentbot/agentbot"
	"github.com/agentbot/agentbot/github"
	"github.com/agentbot/agentbot/runner"
)

// agent-runner redacts its own events, but the dispatcher does not rely on
// it alone: an agent may rewrite the events file a Kubernetes re-attach
// replays, and launcher errors and stderr tails never pass agent-runner's
// redaction. Everything that reaches a task log, the store, a comment, a
// check run or a pull request is redacted here too.

// minSecret is the shortest AgentEnv value that is redacted, as in
// agent-runner: shorter values ("1", "yes") are settings, not secrets.
const minSecret = 4

var (
	// tokenPattern matches GitHub tokens, so that a token this process did
	// not mint (the one a run re-attached after a restart was given) is
	// still hidden.
	tokenPattern = regexp.MustCompile(`gh[opsu]_[A-Za-z0-9]{20,}`)
	// basicPattern matches the base64 of "x-access-token:<anything>", the
	// Basic credential git sends: "x-access-token:" is 15 bytes, so its
	// encoding is a fixed 20-character prefix.
	basicPattern = regexp.MustCompile(basicPrefix + `[A-Za-z0-9+/]*={0,2}`)
	basicPrefix  = base64.StdEncoding.EncodeToString([]byte("x-access-token:"))
)

// redactor hides one task's secrets: its read token, the token's Basic
// form and every AgentEnv value.
type redactor struct {
	secrets []string // longest first, so a secret containing another goes whole
}

func newRedactor(token string, env map[string]string) redactor {
	var s []string
	if token != "" {
		s = append(s, token, base64.StdEncoding.EncodeToString([]byte("x-access-token:"+token)))
	}
	for _, v := range env {
		if len(v) >= minSecret {
			s = append(s, v)
		}
	}
	sort.Slice(s, func(i, j int) bool { return len(s[i]) > len(s[j]) })
	return redactor{secrets: s}
}

// String redacts s.
func (r redactor) String(s string) string {
	if s == "" {
		return s
	}
	s = github.Redact(s, r.secrets...)
	s = basicPattern.ReplaceAllString(s, "[REDACTED]")
	return tokenPattern.ReplaceAllString(s, "[REDACTED]")
}

// Lines redacts each line, into a new slice.
func (r redactor) Lines(lines []string) []string {
	if lines == nil {
		return nil
	}
	out := make([]string, len(lines))
	for i, l := range lines {
		out[i] = r.String(l)
	}
	return out
}

// Event redacts every string an event carries.
func (r redactor) Event(e runner.Event) runner.Event { return e.MapStrings(r.String) }

// View redacts what a comment or check run shows.
func (r redactor) View(v github.ProgressView) github.ProgressView {
	v.Phase = r.String(v.Phase)
	v.Summary = r.String(v.Summary)
	v.Error = r.String(v.Error)
	v.FailedPhase = r.String(v.FailedPhase)
	v.LogTail = r.Lines(v.LogTail)
	v.Branch = r.String(v.Branch)
	v.Note = r.String(v.Note)
	return v
}

// Result redacts what a task's result stores.
func (r redactor) Result(res agentbot.Result) agentbot.Result {
	res.Summary = r.String(res.Summary)
	res.Error = r.String(res.Error)
	res.FailedPhase = r.String(res.FailedPhase)
	return res
}
