package e2e

import (
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/agentbot/agentbot"
	"github.com/agentbot/agentbot/gateway"
	"github.com/agentbot/agentbot/internal/fakeanthropic"
	"github.com/agentbot/agentbot/internal/testtool"
	"github.com/agentbot/agentbot/runner"
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
	// Through the model relay: the fake saw the operator's key on every
	// request, never the sandbox's placeholder, and the cost is the fake's
	// usage at the price table, measured by agentbot.
	var want float64
	for _, r := range api.Requests() {
		if r.APIKey != apiKey {
			t.Errorf("the fake API got key %q on %s, not the operator's", r.APIKey, r.Path)
		}
		if r.Path == "/v1/messages" && r.Answer != "404" {
			want += gateway.DefaultPrices.For(r.Model).Cost(runner.Usage{InputTokens: fakeanthropic.InputTokens, OutputTokens: fakeanthropic.OutputTokens})
		}
	}
	if page.Result.CostUSD <= 0 || math.Abs(page.Result.CostUSD-want) > 1e-9 {
		t.Errorf("cost %v, want the relay's measure %v", page.Result.CostUSD, want)
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

// TestClaudeCodeRunsTests is the agent free inside the bubblewrap sandbox:
// the real Claude Code CLI runs the repository's test script with Bash and
// writes a file, the pushed branch holds both effects, and neither Claude
// Code's answer to the Bash call nor the task's log shows a refusal.
func TestClaudeCodeRunsTests(t *testing.T) {
	bin := testtool.Claude(t)
	if _, err := lookBwrap(); err != nil {
		testtool.Missing(t, "AGENTBOT_REQUIRE_BWRAP", "bubblewrap is not available: "+err.Error())
	}
	const summary = "Ran the tests and added NOTES.md."
	api := fakeanthropic.New(t,
		fakeanthropic.Turn{Text: "Running the tests first.", ToolUses: []fakeanthropic.ToolUse{{
			Name:  "Bash",
			Input: map[string]string{"command": "sh test.sh", "description": "Run the repository's tests"},
		}}},
		fakeanthropic.Turn{Text: "Tests pass; adding the notes.", ToolUses: []fakeanthropic.ToolUse{{
			Name:  "Write",
			Input: map[string]string{"file_path": "NOTES.md", "content": "tested by claude\n"},
		}}},
		fakeanthropic.Turn{Text: summary},
	)
	w := newWorld(t)
	// The sandbox's uid passes through the test's temporary directories
	// to the gateway socket in the data dir and to agent-runner, as it
	// would through /var/lib.
	must(t, os.Chmod(filepath.Dir(w.dataDir), 0o711))
	must(t, os.Chmod(filepath.Dir(bins.scripted), 0o711))
	w.settings("agent: claude\nmodel: claude-sonnet-4-5\nmax_turns: 6\n")
	// The test script leaves a file behind and prints what it saw, so the
	// tool result shows it ran inside the sandbox as the sandbox user.
	w.gh.SetFile(repo, "test.sh", "#!/bin/sh\nset -e\nprintf 'widget ok: %s\\n' \"$(cat src/widget.txt)\" > test-output.txt\necho \"tests passed as uid $(id -u)\"\n")
	b := w.start(
		"AGENTBOT_LOCAL_ISOLATION=bwrap",
		"AGENTBOT_AGENT=claude",
		"AGENTBOT_CLAUDE_BIN="+bin,
		"ANTHROPIC_API_KEY=sk-ant-e2e-bash-key-4321",
		"ANTHROPIC_BASE_URL="+api.URL,
		"CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1",
		"DISABLE_AUTOUPDATER=1",
		"AGENTBOT_AGENT_ENV=CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC,DISABLE_AUTOUPDATER",
	)
	b.deliver("issues", w.issue(10, "Test and note", "Run the tests, then add NOTES.md."))
	task := b.taskFor(10, agentbot.KindNew)
	page := b.waitDone(task.ID, 3*time.Minute)
	for _, r := range api.ToolResults("") {
		t.Logf("tool result for %s (error %v): %q", r.Tool, r.IsError, r.Text)
	}
	if page.Task.State != agentbot.StateSucceeded {
		t.Fatalf("task ended %s: %+v\nlog: %+v", page.Task.State, page.Result, page.Log)
	}
	for file, want := range map[string]string{"test-output.txt": "widget ok: a widget\n", "NOTES.md": "tested by claude\n"} {
		if got, err := w.git.Show(repo.Owner, repo.Name, page.Result.Branch, file); err != nil || got != want {
			t.Errorf("%s on %s = %q, %v; want %q", file, page.Result.Branch, got, err, want)
		}
	}
	bash := api.ToolResults("Bash")
	if len(bash) != 1 || bash[0].IsError || !strings.Contains(bash[0].Text, "tests passed as uid ") ||
		strings.Contains(strings.TrimSpace(bash[0].Text)+"\n", "uid 0\n") {
		t.Errorf("the Bash call's result = %+v, want one that ran the script as a non-root user", bash)
	}
	if write := api.ToolResults("Write"); len(write) != 1 || write[0].IsError {
		t.Errorf("the Write call's result = %+v", write)
	}
	sawBash := false
	for _, ev := range page.Log {
		if strings.Contains(ev.Message, "not permitted") || strings.Contains(ev.Message, "permission") {
			t.Errorf("the task log shows a refusal: %+v", ev)
		}
		sawBash = sawBash || (ev.Tool == "Bash" && strings.Contains(ev.Message, "sh test.sh"))
	}
	if !sawBash {
		t.Errorf("the task log does not show the Bash call: %+v", page.Log)
	}
}

// TestClaudeCodeBudget gives the real Claude Code CLI a budget smaller than
// its scripted conversation: the model relay refuses the call past it and
// the dispatcher stops the run, which fails with the budget message.
func TestClaudeCodeBudget(t *testing.T) {
	bin := testtool.Claude(t)
	turns := make([]fakeanthropic.Turn, 6)
	for i := range turns {
		turns[i] = fakeanthropic.Turn{Text: "step", ToolUses: []fakeanthropic.ToolUse{{
			Name: "Write", Input: map[string]string{"file_path": "N.md", "content": "x\n"}}}}
	}
	api := fakeanthropic.New(t, turns...)
	w := newWorld(t)
	w.settings("agent: claude\nmodel: claude-sonnet-4-5\nmax_turns: 10\nmax_cost_usd: 0.00001\n")
	b := w.start(
		"AGENTBOT_AGENT=claude",
		"AGENTBOT_CLAUDE_BIN="+bin,
		"ANTHROPIC_API_KEY=sk-ant-e2e-budget-key-5678",
		"ANTHROPIC_BASE_URL="+api.URL,
		"AGENTBOT_MAX_COST_USD=5",
		"CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1",
		"DISABLE_AUTOUPDATER=1",
		"AGENTBOT_AGENT_ENV=CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC,DISABLE_AUTOUPDATER",
	)
	b.deliver("issues", w.issue(9, "Spend", "Write N.md many times."))
	task := b.taskFor(9, agentbot.KindNew)
	page := b.waitDone(task.ID, 3*time.Minute)
	if page.Task.State != agentbot.StateFailed || !strings.Contains(page.Result.Error, "model budget of $0.00001 is spent") {
		t.Fatalf("task ended %s: %+v", page.Task.State, page.Result)
	}
	main := 0
	for _, r := range api.Requests() {
		if r.Main {
			main++
		}
	}
	if main >= len(turns) {
		t.Errorf("the agent made %d main calls, all the script's %d: the budget did not stop it", main, len(turns))
	}
	comments := w.gh.Comments(ref(9))
	if len(comments) != 1 || !strings.Contains(comments[0].Body, "model budget") {
		t.Errorf("final comment lacks the budget message: %+v", comments)
	}
}
