package agent

import (
	"bufio"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/agentbot/agentbot/runner"
)

func TestClaudeParsesARecordedTranscript(t *testing.T) {
	f, err := os.Open(filepath.Join("testdata", "claude-stream.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	p := Claude{}.NewParser(Request{RepoDir: "/workspace/repo"})
	var got []Output
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		got = append(got, p.Line(sc.Text())...)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	log := func(m string) Output { return Output{Type: runner.EventLog, Message: m} }
	want := []Output{
		log("claude started: model claude-sonnet-4-5, 9 tools"),
		log("I'll look at the handler first."),
		{Type: runner.EventProgress, Tool: "Read", File: "server/handler.go", Message: "Read server/handler.go"},
		{Type: runner.EventProgress, Tool: "Edit", File: "server/handler.go", Message: "Edit server/handler.go"},
		{Type: runner.EventProgress, Tool: "Bash", Message: "Bash go test ./server/... …"},
		log("tool error: Claude requested permissions to use Bash, but you haven't granted it yet."),
		log("Adding a test as well."),
		{Type: runner.EventProgress, Tool: "Write", File: "server/handler_test.go", Message: "Write server/handler_test.go"},
		{Type: runner.EventProgress, Tool: "Grep", Message: `Grep Handle\(`},
		log("Handle now returns an error, and a test file is in place."),
		log("claude was not permitted to use Bash go test ./server/..."),
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("outputs:\n%s\nwant:\n%s", dump(got), dump(want))
	}
	rep := p.Report()
	wantRep := Report{
		Summary: "Handle now returns an error, and a test file is in place.",
		CostUSD: 0.0421,
		Usage:   &runner.Usage{InputTokens: 8900, OutputTokens: 257, CacheReadInputTokens: 6900, CacheCreationInputTokens: 1200},
	}
	if !reflect.DeepEqual(rep, wantRep) {
		t.Errorf("report = %+v (usage %+v), want %+v", rep, rep.Usage, wantRep)
	}
}

func dump(outs []Output) string {
	var b strings.Builder
	for _, o := range outs {
		b.WriteString(strings.Join([]string{o.Type, o.Tool, o.File, o.Message}, " | "))
		b.WriteByte('\n')
	}
	return b.String()
}

func TestClaudeReports(t *testing.T) {
	tests := []struct {
		name  string
		lines []string
		want  Report
	}{
		{
			name: "max turns is a failure",
			// As Claude Code 2.1.330 prints it (trimmed), with exit status 1.
			lines: []string{`{"type":"result","subtype":"error_max_turns","is_error":true,"num_turns":2,"stop_reason":"tool_use","total_cost_usd":0.0048,"usage":{"input_tokens":1200,"output_tokens":80},"errors":["Reached maximum number of turns (1)"]}`},
			want:  Report{CostUSD: 0.0048, Usage: &runner.Usage{InputTokens: 1200, OutputTokens: 80}, Failed: true, Reason: "claude reported error_max_turns: Reached maximum number of turns (1)"},
		},
		{
			name:  "an error result with success subtype",
			lines: []string{`{"type":"result","subtype":"success","is_error":true,"result":"API Error: 401 invalid x-api-key","total_cost_usd":0}`},
			want:  Report{Summary: "API Error: 401 invalid x-api-key", Failed: true, Reason: "claude reported success: API Error: 401 invalid x-api-key"},
		},
		{
			name:  "no result message",
			lines: []string{`{"type":"system","subtype":"init","model":"m","tools":[]}`, "not json at all"},
			want:  Report{Failed: true, Reason: "claude printed no result message"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := Claude{}.NewParser(Request{})
			for _, l := range tc.lines {
				p.Line(l)
			}
			if got := p.Report(); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("report = %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestClaudeKeepsNonJSONLines(t *testing.T) {
	p := Claude{}.NewParser(Request{})
	got := p.Line("Error: something odd")
	if len(got) != 1 || got[0].Type != runner.EventLog || got[0].Message != "Error: something odd" {
		t.Errorf("got %+v", got)
	}
	if got := p.Line(`{"type":"stream_event","event":{}}`); len(got) != 0 {
		t.Errorf("unknown message types make outputs: %+v", got)
	}
}

func TestInvocations(t *testing.T) {
	dir := t.TempDir()
	short := filepath.Join(dir, "short.md")
	long := filepath.Join(dir, "long.md")
	if err := os.WriteFile(short, []byte("Fix the bug"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(long, []byte(strings.Repeat("x", maxArgPrompt+1)), 0o644); err != nil {
		t.Fatal(err)
	}
	// Claude Code refuses bypassPermissions as root: only an unsandboxed
	// run is root, and it keeps acceptEdits.
	mode := "bypassPermissions"
	if os.Geteuid() == 0 {
		mode = "acceptEdits"
	}
	tests := []struct {
		name    string
		adapter Adapter
		req     Request
		want    Invocation
		wantErr bool
	}{
		{
			name:    "claude narrowed by the operator",
			adapter: Claude{Bin: "claude"},
			req:     Request{PromptFile: short, Spec: runner.AgentSpec{Name: "claude", PermissionMode: "plan", AllowedTools: []string{"Read", "Grep", "Bash(go test:*)", "Bash(make:*)"}}},
			want: Invocation{Path: "claude", Args: []string{"-p", "Fix the bug", "--output-format", "stream-json", "--verbose",
				"--permission-mode", "plan", "--tools", "Read,Grep,Bash", "--allowedTools", "Read,Grep,Bash(go test:*),Bash(make:*)"}},
		},
		{
			name:    "claude with model and turns",
			adapter: Claude{Bin: "/opt/claude"},
			req:     Request{PromptFile: short, Spec: runner.AgentSpec{Name: "claude", Model: "claude-sonnet-4-5", MaxTurns: 30}},
			want: Invocation{Path: "/opt/claude", Args: []string{"-p", "Fix the bug", "--output-format", "stream-json", "--verbose",
				"--permission-mode", mode, "--max-turns", "30", "--model", "claude-sonnet-4-5"}},
		},
		{
			name:    "claude with a prompt too long for an argument",
			adapter: Claude{Bin: "claude"},
			req:     Request{PromptFile: long, Spec: runner.AgentSpec{Name: "claude"}},
			want:    Invocation{Path: "claude", Args: []string{"-p", "--output-format", "stream-json", "--verbose", "--permission-mode", mode}, StdinPromptFile: true},
		},
		{
			name:    "claude without its prompt file",
			adapter: Claude{Bin: "claude"},
			req:     Request{PromptFile: filepath.Join(dir, "missing")},
			wantErr: true,
		},
		{
			name:    "codex",
			adapter: Codex{Bin: "codex"},
			req:     Request{PromptFile: short, SummaryFile: "/ws/.agentbot/summary.md", Spec: runner.AgentSpec{Name: "codex", Model: "gpt-5-codex", MaxTurns: 9}},
			want: Invocation{Path: "codex", Args: []string{"exec", "--dangerously-bypass-approvals-and-sandbox", "--color", "never",
				"--output-last-message", "/ws/.agentbot/summary.md", "--model", "gpt-5-codex", "-"}, StdinPromptFile: true},
		},
		{
			name:    "command split without a shell",
			adapter: Command{},
			req:     Request{Spec: runner.AgentSpec{Name: "command", Command: "/bin/agent --flag  'quoted arg' $HOME"}},
			want:    Invocation{Path: "/bin/agent", Args: []string{"--flag", "'quoted", "arg'", "$HOME"}, StdinPromptFile: true},
		},
		{
			name:    "command without a command",
			adapter: Command{},
			req:     Request{Spec: runner.AgentSpec{Name: "command"}},
			wantErr: true,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.adapter.Invocation(tc.req)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, want error %v", err, tc.wantErr)
			}
			if !tc.wantErr && !reflect.DeepEqual(got, tc.want) {
				t.Errorf("invocation = %#v\nwant %#v", got, tc.want)
			}
		})
	}
}

func TestPlainLinesAndSummaryFile(t *testing.T) {
	summary := filepath.Join(t.TempDir(), "summary.md")
	for _, ad := range []Adapter{Command{}, Codex{}} {
		p := ad.NewParser(Request{SummaryFile: summary})
		if got := p.Line("working…"); !slices.Equal(got, []Output{{Type: runner.EventLog, Message: "working…"}}) {
			t.Errorf("%s: line = %+v", ad.Name(), got)
		}
		if rep := p.Report(); rep != (Report{}) {
			t.Errorf("%s: report without a summary file = %+v", ad.Name(), rep)
		}
	}
	if err := os.WriteFile(summary, []byte("\nDid the thing.\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if rep := (Command{}).NewParser(Request{SummaryFile: summary}).Report(); rep.Summary != "Did the thing." {
		t.Errorf("summary = %q", rep.Summary)
	}
}

func TestLookup(t *testing.T) {
	for _, name := range []string{"claude", "codex", "command"} {
		ad, err := Lookup(name, Binaries{})
		if err != nil || ad.Name() != name {
			t.Errorf("Lookup(%q) = %v, %v", name, ad, err)
		}
	}
	if ad, _ := Lookup("claude", Binaries{Claude: "/x/claude"}); ad.(Claude).Bin != "/x/claude" {
		t.Error("the claude binary is not used")
	}
	if _, err := Lookup("aider", Binaries{}); err == nil {
		t.Error("an unknown agent was found")
	}
}
