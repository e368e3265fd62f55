package agentrun

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/agentbot/agentbot/internal/fakeanthropic"
	"github.com/agentbot/agentbot/internal/testtool"
	"github.com/agentbot/agentbot/runner"
	"github.com/agentbot/agentbot/runner/agent"
)

// TestRealClaudeCode runs the claude adapter with the real Claude Code CLI
// against the fake Messages API: Claude Code must write the file through
// its Write tool, and agent-runner must report its progress, summary, cost
// and usage.
func TestRealClaudeCode(t *testing.T) {
	bin := testtool.Claude(t)
	f := newFixture(t)
	ws := Workspace{Dir: t.TempDir()}
	const summary = "Added hello.txt with a greeting."
	api := fakeanthropic.New(t,
		fakeanthropic.Turn{Text: "I'll add the greeting file.", ToolUses: []fakeanthropic.ToolUse{{
			Name:  "Write",
			Input: map[string]string{"file_path": filepath.Join(ws.RepoDir(), "hello.txt"), "content": "hello from claude\n"},
		}}},
		fakeanthropic.Turn{Text: summary},
	)
	const apiKey = "sk-ant-test-dummy-key-0000"
	job := f.job("Please add hello.txt with a greeting.")
	job.Agent = runner.AgentSpec{Name: "claude", Model: "claude-sonnet-4-5", MaxTurns: 5}
	if os.Geteuid() == 0 {
		// Outside a sandbox, as root, Claude Code refuses bypassPermissions;
		// this test is about the adapter, and a Write needs no more.
		job.Agent.PermissionMode = "acceptEdits"
	}
	job.Env = map[string]string{"ANTHROPIC_API_KEY": apiKey}

	home := t.TempDir()
	environ := []string{
		"PATH=" + os.Getenv("PATH"),
		"HOME=" + home,
		"ANTHROPIC_BASE_URL=" + api.URL,
		"CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1",
		"DISABLE_AUTOUPDATER=1",
	}
	in, err := json.Marshal(job)
	if err != nil {
		t.Fatal(err)
	}
	var stdout bytes.Buffer
	code := Run(t.Context(), Options{
		Workspace: ws, Stdin: bytes.NewReader(in), Stdout: &stdout,
		Environ: environ, Agents: agent.Binaries{Claude: bin},
	})
	o := outcome{ws: ws, code: code, stdout: stdout.Bytes(), events: decodeEvents(t, stdout.Bytes())}
	for _, r := range api.Requests() {
		t.Logf("fake API: %s %s?%s model=%s stream=%v tools=%d → %s", r.Method, r.Path, r.Query, r.Model, r.Stream, r.Tools, r.Answer)
	}
	if code != runner.ExitOK {
		t.Fatalf("exit %d:\n%s", code, stdout.String())
	}

	res := o.result(t)
	if res.Status != runner.StatusSucceeded || len(res.Files) != 1 || res.Files[0] != (runner.FileChange{Path: "hello.txt", Added: 1}) {
		t.Errorf("result = %+v", res)
	}
	if res.Summary != summary {
		t.Errorf("summary = %q, want %q", res.Summary, summary)
	}
	if res.CostUSD <= 0 {
		t.Errorf("cost = %v, want Claude Code's total_cost_usd", res.CostUSD)
	}
	if res.Usage == nil || res.Usage.InputTokens != 2*fakeanthropic.InputTokens || res.Usage.OutputTokens != 2*fakeanthropic.OutputTokens {
		t.Errorf("usage = %+v, want two answers' worth", res.Usage)
	}
	var wrote bool
	for _, e := range o.events {
		if e.Type == runner.EventProgress && e.Tool == "Write" && e.File == "hello.txt" {
			wrote = true
		}
	}
	if !wrote {
		t.Errorf("no progress event for the Write:\n%s", stdout.String())
	}
	bot := applyBundle(t, f, ws.BundleFile(), job.Branch)
	if got := testtool.Git(t, bot, "show", res.Commit+":hello.txt"); got != "hello from claude" {
		t.Errorf("hello.txt = %q", got)
	}
	if bytes.Contains(stdout.Bytes(), []byte(apiKey)) {
		t.Error("the API key shows in the events")
	}

	var turns []string
	for _, r := range api.Requests() {
		if r.APIKey != apiKey {
			t.Errorf("request %s %s came with key %q", r.Method, r.Path, r.APIKey)
		}
		if r.Main {
			turns = append(turns, r.Answer)
			if r.Path != "/v1/messages" || r.Query != "beta=true" || !r.Stream {
				t.Errorf("main request %s?%s stream=%v", r.Path, r.Query, r.Stream)
			}
		}
	}
	if strings.Join(turns, ",") != "turn 0,turn 1" {
		t.Errorf("main conversation answers = %v", turns)
	}
	if reqs := api.Requests(); len(reqs) == 0 || !strings.Contains(firstMain(reqs).UserText, "Please add hello.txt") {
		t.Error("the prompt did not reach the model")
	}
}

func firstMain(reqs []fakeanthropic.Request) fakeanthropic.Request {
	for _, r := range reqs {
		if r.Main {
			return r
		}
	}
	return fakeanthropic.Request{}
}
