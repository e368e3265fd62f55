package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/agentbot/agentbot/runner"
)

var lookPath = exec.LookPath

// issueHeading is how agent-runner's prompt starts ("Issue #3: title").
var issueHeading = regexp.MustCompile(`^Issue( #\d+)?: `)

// RunOptions are the flags of `agentbot run`, which runs one task through
// the local launcher and agent-runner with no GitHub at all.
type RunOptions struct {
	Repo         string
	Prompt       string
	Base         string
	Branch       string
	Agent        string
	AgentCommand string
	Model        string
	TimeLimit    time.Duration
	DataDir      string
	Isolation    string
	AgentRunner  string
	Quiet        bool
	Demo         bool
}

// demoPrompt is what --demo asks for when no --prompt is given.
const demoPrompt = "Add a friendly greeting to the project"

// defaultRunDir is where `agentbot run` keeps workspaces: the user's cache
// directory, except for root, whose home the sandbox's unprivileged uid may
// not enter (it must walk to the workspace and agent-runner): there it is a
// directory of its own under /var/lib.
func defaultRunDir() string {
	if os.Geteuid() == 0 {
		return "/var/lib/agentbot-run"
	}
	cache, err := os.UserCacheDir()
	if err != nil {
		cache = os.TempDir()
	}
	return filepath.Join(cache, "agentbot")
}

// runSettings are `agentbot run`'s flags; workspaces default to
// defaultRunDir.
func runSettings() []setting[RunOptions] {
	runDir := defaultRunDir()
	return []setting[RunOptions]{
		{"repo", "", "", "local repository path or git URL to work on", func(o *RunOptions) any { return &o.Repo }},
		{"prompt", "", "", "what the agent should do (first line names the branch)", func(o *RunOptions) any { return &o.Prompt }},
		{"base", "", "", "branch to start from (default: the repository's current branch)", func(o *RunOptions) any { return &o.Base }},
		{"branch", "", "", "branch to create (default: agentbot/run-<slug>)", func(o *RunOptions) any { return &o.Branch }},
		{"agent", "AGENTBOT_AGENT", "", "claude, codex or command (default claude, or command with --agent-command)", func(o *RunOptions) any { return &o.Agent }},
		{"agent-command", "AGENTBOT_AGENT_COMMAND", "", "the command agent's command line, split on spaces", func(o *RunOptions) any { return &o.AgentCommand }},
		{"model", "", "", "model for claude or codex (default: the agent's)", func(o *RunOptions) any { return &o.Model }},
		{"time-limit", "", "30m", "time limit of the run", func(o *RunOptions) any { return &o.TimeLimit }},
		{"data-dir", "AGENTBOT_RUN_DIR", runDir, "where workspaces live", func(o *RunOptions) any { return &o.DataDir }},
		{"isolation", "AGENTBOT_LOCAL_ISOLATION", "auto", "auto, gvisor, bwrap or none", func(o *RunOptions) any { return &o.Isolation }},
		{"agent-runner", "AGENTBOT_AGENT_RUNNER", "", "agent-runner binary (default next to agentbot, then PATH)", func(o *RunOptions) any { return &o.AgentRunner }},
		{"quiet", "", "false", "show phases only, not the agent's output", func(o *RunOptions) any { return &o.Quiet }},
		{"demo", "", "false", "create a sample repository (at --repo, default ./agentbot-demo) and run agentbot's built-in demo agent on it: no model key needed", func(o *RunOptions) any { return &o.Demo }},
	}
}

func (o *RunOptions) validate() error {
	var errs []error
	if o.Demo {
		if o.Repo == "" {
			o.Repo = "agentbot-demo"
		}
		if o.Prompt == "" {
			o.Prompt = demoPrompt
		}
		if o.Agent == "" && o.AgentCommand == "" {
			o.Agent = "command"
		}
	}
	if o.Agent == "" {
		o.Agent = "claude"
		if o.AgentCommand != "" {
			o.Agent = "command"
		}
	}
	if o.Repo == "" {
		errs = append(errs, errors.New("run: --repo is required (a local repository or a git URL), or use --demo"))
	}
	if strings.TrimSpace(o.Prompt) == "" {
		errs = append(errs, errors.New("run: --prompt is required"))
	}
	switch o.Agent {
	case "claude", "codex":
	case "command":
		if o.AgentCommand == "" && !o.Demo {
			errs = append(errs, errors.New("run: --agent command needs --agent-command"))
		}
	default:
		errs = append(errs, fmt.Errorf("run: --agent %q is not claude, codex or command", o.Agent))
	}
	if o.TimeLimit <= 0 {
		errs = append(errs, errors.New("run: --time-limit must be positive"))
	}
	return errors.Join(errs...)
}

// runOnce is `agentbot run`.
func (m *Main) runOnce(ctx context.Context) error {
	o := m.RunOptions
	logger := m.Logger
	if logger == nil {
		logger = slog.New(slog.NewTextHandler(m.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	if o.Demo {
		created, err := createDemoRepo(ctx, o.Repo)
		if err != nil {
			return err
		}
		if created {
			fmt.Fprintf(m.Stdout, "created a sample repository at %s\n", o.Repo)
		}
		if o.AgentCommand == "" && o.Agent == "command" {
			exe, err := os.Executable()
			if err != nil {
				return fmt.Errorf("run: find agentbot's own binary for the demo agent: %w", err)
			}
			o.AgentCommand = exe + " demo-agent"
		}
	}
	if err := os.MkdirAll(o.DataDir, 0o700); err != nil {
		return fmt.Errorf("run: create %s: %w", o.DataDir, err)
	}
	l, closeLauncher, _, err := newLauncher(o.DataDir, DispatchConfig{
		Launcher: "local", AgentRunner: o.AgentRunner, LocalIsolation: o.Isolation, KeepFailed: 24 * time.Hour,
	}, nil, logger)
	if err != nil {
		return err
	}
	defer closeLauncher()
	// The sandbox has a network namespace of its own: like serve's, it
	// reaches the model and the allow-list only through the gateway.
	eg, closeEgress, err := newEgress(o.DataDir, os.Getenv, logger)
	if err != nil {
		return err
	}
	defer closeEgress()
	env := map[string]string{}
	names := os.Getenv("AGENTBOT_AGENT_ENV")
	if names == "" {
		names = defaultAgentEnv
	}
	for _, k := range strings.Split(names, ",") {
		if k = strings.TrimSpace(k); k != "" && os.Getenv(k) != "" {
			env[k] = os.Getenv(k)
		}
	}
	res, err := runOne(ctx, l, oneShot{
		Repo: o.Repo, Prompt: o.Prompt, Base: o.Base, Branch: o.Branch,
		Agent:    runner.AgentSpec{Name: o.Agent, Command: o.AgentCommand, Model: o.Model},
		AgentEnv: env, TimeLimit: o.TimeLimit, Progress: m.Stdout, Quiet: o.Quiet, Egress: eg,
	})
	if err != nil {
		return err
	}
	w := m.Stdout
	switch {
	case res.NoChanges:
		fmt.Fprintf(w, "✓ done in %s: the agent made no changes\n", res.Elapsed.Round(100*time.Millisecond))
	case res.LocalRepo != "":
		fmt.Fprintf(w, "✓ done in %s: branch %s in %s (%d files changed)\n", res.Elapsed.Round(100*time.Millisecond), res.Branch, res.LocalRepo, len(res.Files))
		fmt.Fprintf(w, "  see it:  git -C %s log -p %s..%s\n", shellQuote(res.LocalRepo), res.Base, res.Branch)
	default:
		fmt.Fprintf(w, "✓ done in %s: bundle %s holds branch %s\n", res.Elapsed.Round(100*time.Millisecond), res.BundlePath, res.Branch)
		fmt.Fprintf(w, "  take it: git fetch %s %s:%s   (in a clone of the repository)\n", shellQuote(res.BundlePath), res.Branch, res.Branch)
	}
	if res.Summary != "" {
		fmt.Fprintf(w, "  summary: %s\n", strings.ReplaceAll(res.Summary, "\n", "\n           "))
	}
	if res.CostUSD > 0 {
		fmt.Fprintf(w, "  cost: $%.2f\n", res.CostUSD)
	}
	return nil
}

func shellQuote(s string) string {
	if s != "" && !strings.ContainsAny(s, " '\"\\$`!*?&;|<>(){}[]#~") {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// createDemoRepo makes a small sample repository at dir unless one is
// there. It reports whether it created it.
func createDemoRepo(ctx context.Context, dir string) (bool, error) {
	if _, err := os.Stat(filepath.Join(dir, ".git")); err == nil {
		return false, nil
	}
	if entries, err := os.ReadDir(dir); err == nil && len(entries) > 0 {
		return false, fmt.Errorf("run: %s exists and is not a git repository; pick another --repo for the demo", dir)
	}
	files := map[string]string{
		"README.md": "# agentbot demo\n\nA tiny project for trying agentbot without GitHub or a model key.\n",
		"hello.py":  "def greet(name):\n    return \"hello \" + name\n\n\nif __name__ == \"__main__\":\n    print(greet(\"world\"))\n",
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return false, fmt.Errorf("run: create %s: %w", dir, err)
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			return false, fmt.Errorf("run: %w", err)
		}
	}
	env := append(os.Environ(), "GIT_AUTHOR_NAME=agentbot demo", "GIT_AUTHOR_EMAIL=demo@agentbot.invalid",
		"GIT_COMMITTER_NAME=agentbot demo", "GIT_COMMITTER_EMAIL=demo@agentbot.invalid")
	for _, args := range [][]string{
		{"init", "--quiet", "--initial-branch=main"},
		{"add", "-A"},
		{"commit", "--quiet", "-m", "Sample project"},
	} {
		cmd := exec.CommandContext(ctx, "git", args...)
		cmd.Dir, cmd.Env = dir, env
		if out, err := cmd.CombinedOutput(); err != nil {
			return false, fmt.Errorf("run: git %s in %s: %w: %s", strings.Join(args, " "), dir, err, strings.TrimSpace(string(out)))
		}
	}
	return true, nil
}

// demoAgent is `agentbot demo-agent`, the built-in stand-in for a coding
// agent that --demo runs (through agent-runner's command agent): it reads
// the prompt and writes GREETING.md and a summary, deterministically.
func demoAgent(stdout io.Writer) error {
	prompt := ""
	if p := os.Getenv("AGENTBOT_PROMPT_FILE"); p != "" {
		b, err := os.ReadFile(p)
		if err != nil {
			return fmt.Errorf("demo-agent: read prompt: %w", err)
		}
		prompt = string(b)
	}
	ask := demoPrompt
	for _, line := range strings.Split(prompt, "\n") {
		l := strings.TrimSpace(strings.TrimLeft(line, "#*- "))
		l = issueHeading.ReplaceAllString(l, "")
		if l != "" {
			ask = l
			break
		}
	}
	fmt.Fprintln(stdout, "demo agent: reading the repository")
	entries, _ := os.ReadDir(".")
	var names []string
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), ".") {
			names = append(names, e.Name())
		}
	}
	fmt.Fprintf(stdout, "demo agent: found %s\n", strings.Join(names, ", "))
	body := fmt.Sprintf("# Hello from agentbot\n\nThis file was written by agentbot's demo agent, asked to:\n\n> %s\n\nA real run uses Claude Code or Codex: `agentbot run --repo PATH --prompt TEXT`.\n", ask)
	if err := os.WriteFile("GREETING.md", []byte(body), 0o644); err != nil {
		return fmt.Errorf("demo-agent: %w", err)
	}
	fmt.Fprintln(stdout, "demo agent: wrote GREETING.md")
	if p := os.Getenv("AGENTBOT_SUMMARY_FILE"); p != "" {
		if err := os.WriteFile(p, []byte("Added GREETING.md with a greeting (demo agent)."), 0o644); err != nil {
			return fmt.Errorf("demo-agent: %w", err)
		}
	}
	return nil
}
