package e2e

import (
	"strings"
	"testing"
	"time"

	"github.com/agentbot/agentbot"
	"github.com/agentbot/agentbot/internal/fakeanthropic"
	"github.com/agentbot/agentbot/internal/testtool"
)

// TestClaudeCodeEndToEnd is the main path once more with the real Claude
// Code CLI as the agent, driven by the fake Messages API: the pushed branch
// holds the file Claude Code wrote, and the final comment shows its summary
// and cost.
func TestClaudeCodeEndToEnd(t *testing.T) {
	bin := testtool.Claude(t)
	const summary = "Added NOTES.md with a greeting from Claude."
	api := fakeanthropic.New(t,
		fakeanthropic.Turn{Text: "I'll add the notes file.", ToolUses: []fakeanthropic.ToolUse{{
			Name:  "Write",
			Input: map[string]string{"file_path": "NOTES.md", "content": "hello from claude\n"},
		}}},
		fakeanthropic.Turn{Text: summary},
	)
	const apiKey = "sk-ant-e2e-dummy-key-1234"
	w := newWorld(t)
	w.settings("agent: claude\nmodel: claude-sonnet-4-5\nmax_turns: 5\n")
	b := w.start(
		"AGENTBOT_AGENT=claude",
		"AGENTBOT_CLAUDE_BIN="+bin,
		"ANTHROPIC_API_KEY="+apiKey,
		"ANTHROPIC_BASE_URL="+api.URL,
		"CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1",
		"DISABLE_AUTOUPDATER=1",
		"AGENTBOT_AGENT_ENV=ANTHROPIC_API_KEY,ANTHROPIC_BASE_URL,CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC,DISABLE_AUTOUPDATER",
	)
	b.deliver("issues", w.issue(8, "Add notes", "Please add NOTES.md with a greeting."))
	task := b.taskFor(8, agentbot.KindNew)
	page := b.waitDone(task.ID, 3*time.Minute)
	for _, r := range api.Requests() {
		t.Logf("fake API: %s %s?%s model=%s tools=%d → %s", r.Method, r.Path, r.Query, r.Model, r.Tools, r.Answer)
	}
	if page.Task.State != agentbot.StateSucceeded {
		t.Fatalf("task ended %s: %+v\nlog: %+v", page.Task.State, page.Result, page.Log)
	}
	if got, err := w.git.Show(repo.Owner, repo.Name, page.Result.Branch, "NOTES.md"); err != nil || got != "hello from claude\n" {
		t.Fatalf("NOTES.md on %s = %q, %v", page.Result.Branch, got, err)
	}
	if page.Result.CostUSD <= 0 {
		t.Errorf("no cost recorded: %+v", page.Result)
	}
	comments := w.gh.Comments(ref(8))
	if len(comments) != 1 {
		t.Fatalf("%d comments", len(comments))
	}
	body := comments[0].Body
	if !strings.Contains(body, summary) || !strings.Contains(body, "$") {
		t.Errorf("final comment lacks the summary or the cost:\n%s", body)
	}
	if strings.Contains(body, apiKey) || strings.Contains(b.log(), apiKey) {
		t.Error("the API key leaked into the comment or the log")
	}
	if prs := w.gh.PullRequests(repo); len(prs) != 1 || !strings.Contains(prs[0].Body, summary) {
		t.Errorf("pull requests: %+v", prs)
	}
}
