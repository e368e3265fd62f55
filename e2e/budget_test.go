package e2e

import (
	"strings"
	"testing"
	"time"

	"github.com/agentbot/agentbot"
	"github.com/agentbot/agentbot/github/githubtest"
)

// callBudget is what a simple labelled-issue task may cost in GitHub REST
// calls, from the installation token to the final check run.
const callBudget = 16

// TestSimpleTaskCallBudget counts, on the fake GitHub that records every
// call, what one labelled issue costs from delivery to draft pull request:
// at most callBudget calls, 👀 among the first three (so the person who
// labelled it sees agentbot has it at once), and every token minted for the
// task revoked by the end.
func TestSimpleTaskCallBudget(t *testing.T) {
	w := newWorld(t)
	b := w.start()
	b.deliver("issues", w.issue(1, "Add a changelog", "scripted: write CHANGELOG.md # Changelog; summary Added CHANGELOG.md"))
	task := b.taskFor(1, agentbot.KindNew)
	page := b.waitDone(task.ID, 60*time.Second)
	if page.Task.State != agentbot.StateSucceeded || page.Result.PRNumber == 0 {
		t.Fatalf("task ended %s: %+v", page.Task.State, page.Result)
	}
	var calls []githubtest.Call
	for _, c := range w.gh.Calls() {
		// Asking for the App's slug is agentbot's start, not the task's.
		if c.Method != "GET" || c.Path != "/app" {
			calls = append(calls, c)
		}
	}
	var list []string
	reaction := 0
	for i, c := range calls {
		list = append(list, c.String())
		if c.Method == "POST" && strings.HasSuffix(c.Path, "/reactions") && reaction == 0 {
			reaction = i + 1
		}
	}
	if len(calls) > callBudget {
		t.Errorf("%d GitHub API calls, want at most %d:\n%s", len(calls), callBudget, strings.Join(list, "\n"))
	}
	if reaction == 0 || reaction > 3 {
		t.Errorf("👀 was call %d, want one of the first 3:\n%s", reaction, strings.Join(list, "\n"))
	}
	minted := len(w.gh.CallsTo("POST", "/app/installations/*/access_tokens"))
	revoked := len(w.gh.CallsTo("DELETE", "/installation/token"))
	// The App's own API token lives on (it is cached for the next task);
	// the sandbox's read token and the push's write token are revoked.
	if minted-1 != revoked {
		t.Errorf("%d tokens minted, %d revoked; want every task token revoked:\n%s", minted, revoked, strings.Join(list, "\n"))
	}
	t.Logf("%d calls:\n%s", len(calls), strings.Join(list, "\n"))
}
