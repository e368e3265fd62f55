package dispatch

import (
	"github.com/agentbot/agentbot"
	"github.com/agentbot/agentbot/github"
	"github.com/agentbot/agentbot/internal/secret"
	"github.com/agentbot/agentbot/runner"
)

// agent-runner redacts its own events, but the dispatcher does not rely on
// it alone: an agent may rewrite the events file a Kubernetes re-attach
// replays, and launcher errors and stderr tails never pass agent-runner's
// redaction. Everything that reaches a task log, the store, a comment, a
// check run or a pull request is redacted here too.

// redactor hides one task's secrets: its read token (and so its Basic
// form) and every AgentEnv value, and anything shaped like a GitHub token.
// String and Lines are secret.Redactor's; the methods below apply it to
// the dispatcher's own types.
type redactor struct {
	secret.Redactor
}

func newRedactor(token string, env map[string]string) redactor {
	secrets := []string{token}
	for _, v := range env {
		secrets = append(secrets, v)
	}
	return redactor{secret.New(secrets...)}
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
