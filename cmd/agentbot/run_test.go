package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/agentbot/agentbot/internal/fakeanthropic"
	"github.com/agentbot/agentbot/internal/scriptedagent"
	"github.com/agentbot/agentbot/internal/testtool"
)

func gitOut(t *testing.T, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("git %v: %v\n%s", args, err, out)
	}
	return strings.TrimSpace(string(out))
}

// TestRunCommand runs `agentbot run` in-process against a local repository
// with the scripted agent: the result is a branch in that repository.
func TestRunCommand(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs agent-runner")
	}
	runnerBin := scriptedagent.BuildAgentRunner(t)
	agentBin := scriptedagent.Build(t)
	repo := t.TempDir()
	if _, err := createDemoRepo(context.Background(), repo); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name       string
		args       []string
		wantErr    string
		wantBranch string
	}{
		{"edits become a branch", []string{"--prompt", "Fix the greeting\nscripted: write hello.py print('hi'); summary Fixed it"}, "", "agentbot/run-fix-the-greeting"},
		{"failure names the phase", []string{"--prompt", "Break\nscripted: fail 4 no way"}, "failed during agent", ""},
		{"missing prompt", []string{}, "--prompt is required", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			m := NewMain()
			m.Stdout, m.Stderr = &stdout, &stderr
			args := append([]string{"run", "--repo", repo, "--agent-command", agentBin, "--isolation", "none",
				"--agent-runner", runnerBin, "--data-dir", t.TempDir()}, tc.args...)
			err := m.ParseFlags(args, func(string) string { return "" })
			if err == nil {
				err = m.Run(context.Background())
			}
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q\n%s", err, tc.wantErr, stdout.String())
				}
				return
			}
			if err != nil {
				t.Fatalf("run: %v\n%s%s", err, stdout.String(), stderr.String())
			}
			if got := gitOut(t, repo, "show", tc.wantBranch+":hello.py"); got != "print('hi')" {
				t.Errorf("hello.py on %s = %q", tc.wantBranch, got)
			}
			out := stdout.String()
			for _, want := range []string{"▸", "agent", "✓ done", tc.wantBranch, "Fixed it"} {
				if !strings.Contains(out, want) {
					t.Errorf("output lacks %q:\n%s", want, out)
				}
			}
		})
	}
}

// TestRunDemo is the README's first command on the built binaries:
// `agentbot run --demo` creates a sample repository and leaves a branch in
// it, with no GitHub and no model key.
func TestRunDemo(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binaries")
	}
	bin := buildAgentbot(t)
	runnerBin := scriptedagent.BuildAgentRunner(t)
	// agent-runner next to agentbot, as `make build` leaves them.
	if out, err := exec.Command("cp", runnerBin, filepath.Join(filepath.Dir(bin), "agent-runner")).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v %s", err, out)
	}
	dir := t.TempDir()
	// The sandbox's uid passes through to the workspaces and agent-runner.
	for d := dir; d != os.TempDir() && d != "/"; d = filepath.Dir(d) {
		if err := os.Chmod(d, 0o711); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command(bin, "run", "--demo", "--data-dir", filepath.Join(dir, "cache"))
	cmd.Dir = dir
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "AGENTBOT_") {
			env = append(env, kv)
		}
	}
	cmd.Env = env
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("agentbot run --demo: %v\n%s", err, out)
	}
	demo := filepath.Join(dir, "agentbot-demo")
	branch := "agentbot/run-add-a-friendly-greeting-to-the-project"
	if got := gitOut(t, demo, "show", branch+":GREETING.md"); !strings.Contains(got, "Add a friendly greeting to the project") {
		t.Errorf("GREETING.md = %q", got)
	}
	if !strings.Contains(string(out), "created a sample repository") || !strings.Contains(string(out), "✓ done") {
		t.Errorf("output:\n%s", out)
	}
	// Running it again reuses the repository and makes a second branch.
	cmd2 := exec.Command(bin, "run", "--demo", "--data-dir", filepath.Join(dir, "cache"))
	cmd2.Dir, cmd2.Env = dir, env
	if out, err := cmd2.CombinedOutput(); err != nil {
		t.Fatalf("second run: %v\n%s", err, out)
	}
	gitOut(t, demo, "rev-parse", "--verify", branch+"-2")
}

// TestRunClaudeThroughRelay is `agentbot run --agent claude` with the real
// Claude Code CLI against the fake Messages API, under bubblewrap: the
// sandbox, in a network namespace of its own, reaches the model only
// through the run's egress gateway, so the fake sees the operator's
// key on every call (never the sandbox's placeholder), the branch holds
// the file Claude Code wrote, and the cost printed is the relay's measure.
func TestRunClaudeThroughRelay(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs agent-runner and Claude Code")
	}
	bin := testtool.Claude(t)
	if _, err := exec.LookPath("bwrap"); err != nil {
		testtool.Missing(t, "AGENTBOT_REQUIRE_BWRAP", "bubblewrap is not available: "+err.Error())
	}
	runnerBin := scriptedagent.BuildAgentRunner(t)
	repo, dataDir := t.TempDir(), t.TempDir()
	if _, err := createDemoRepo(context.Background(), repo); err != nil {
		t.Fatal(err)
	}
	// The sandbox's uid passes through to the repository, the workspaces,
	// the gateway's socket and agent-runner.
	for _, d := range []string{repo, dataDir, filepath.Dir(runnerBin)} {
		for ; d != os.TempDir() && d != "/"; d = filepath.Dir(d) {
			if err := os.Chmod(d, 0o711); err != nil {
				t.Fatal(err)
			}
		}
	}
	api := fakeanthropic.New(t,
		fakeanthropic.Turn{Text: "Writing it.", ToolUses: []fakeanthropic.ToolUse{{
			Name: "Write", Input: map[string]string{"file_path": "NOTES.md", "content": "from claude via the relay\n"}}}},
		fakeanthropic.Turn{Text: "Added NOTES.md."},
	)
	const apiKey = "sk-ant-run-relay-key-9876"
	t.Setenv("AGENTBOT_CLAUDE_BIN", bin)
	t.Setenv("ANTHROPIC_API_KEY", apiKey)
	t.Setenv("ANTHROPIC_BASE_URL", api.URL)
	t.Setenv("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1")
	t.Setenv("DISABLE_AUTOUPDATER", "1")
	t.Setenv("AGENTBOT_AGENT_ENV", "ANTHROPIC_API_KEY,ANTHROPIC_BASE_URL,CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC,DISABLE_AUTOUPDATER")
	var stdout, stderr bytes.Buffer
	m := NewMain()
	m.Stdout, m.Stderr = &stdout, &stderr
	err := m.ParseFlags([]string{"run", "--repo", repo, "--agent", "claude", "--model", "claude-sonnet-4-5",
		"--prompt", "Add notes", "--isolation", "bwrap", "--agent-runner", runnerBin, "--data-dir", dataDir},
		func(string) string { return "" })
	if err == nil {
		err = m.Run(context.Background())
	}
	if err != nil {
		t.Fatalf("run: %v\n%s%s", err, stdout.String(), stderr.String())
	}
	if got := gitOut(t, repo, "show", "agentbot/run-add-notes:NOTES.md"); got != "from claude via the relay" {
		t.Errorf("NOTES.md = %q", got)
	}
	main := 0
	for _, r := range api.Requests() {
		if r.APIKey != apiKey {
			t.Errorf("the fake API got key %q on %s, not the operator's", r.APIKey, r.Path)
		}
		if r.Main {
			main++
		}
	}
	if main < 2 {
		t.Errorf("the fake API saw %d main calls, want the script's 2", main)
	}
	out := stdout.String()
	if !strings.Contains(out, "✓ done") || !strings.Contains(out, "cost: $") {
		t.Errorf("output lacks the result or the relay's cost:\n%s", out)
	}
	if strings.Contains(out+stderr.String(), apiKey) {
		t.Error("the API key leaked into the output")
	}
}
