package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/agentbot/agentbot/bundle"
	"github.com/agentbot/agentbot/dispatch"
	"github.com/agentbot/agentbot/gateway"
	"github.com/agentbot/agentbot/github"
	"github.com/agentbot/agentbot/runner"
)

// Timeouts of the steps a one-shot run takes after its context ended
// (Ctrl-C): stopping the agent and removing the sandbox.
const (
	stopTimeout    = 30 * time.Second
	cleanupTimeout = 30 * time.Second
)

// tailLines is how much of the agent's output a failure shows.
const tailLines = 10

// oneShot is one task run outside GitHub (`agentbot run`): against a local
// repository, whose new branch is left in it, or any git URL, whose result
// bundle is left on disk.
type oneShot struct {
	// Repo is a local path (a work tree or a bare repository) or a git URL.
	Repo string
	// Prompt is what the agent is asked; its first line titles the branch.
	Prompt string
	// Base is the branch to start from ("" = the repository's current or
	// default branch).
	Base string
	// Branch is the branch to create ("" = agentbot/run-<slug>).
	Branch string
	Agent  runner.AgentSpec
	// AgentEnv goes into the job's environment (model API keys).
	AgentEnv  map[string]string
	TimeLimit time.Duration
	// ProtectedPaths are checked before the branch is taken in (default
	// .github/workflows/**, as on GitHub).
	ProtectedPaths []string
	// BundleDir keeps the bundle of a URL repository ("" = the working
	// directory).
	BundleDir string
	// Progress receives the live phase line and the agent's output; a
	// terminal gets a redrawn status line with the elapsed time.
	Progress io.Writer
	// Quiet drops the agent's output lines, keeping phases.
	Quiet bool
	// Egress is the gateway the sandbox leaves through (nil: none, the
	// job carries AgentEnv's keys as they are).
	Egress *dispatch.Egress
}

// oneShotResult is how a one-shot run ended.
type oneShotResult struct {
	TaskID    string
	Branch    string
	Base      string
	BaseSHA   string
	Commit    string
	Summary   string
	CostUSD   float64
	Files     []runner.FileChange
	NoChanges bool
	// LocalRepo is set when the branch was created in a local repository;
	// BundlePath when the bundle was left on disk instead.
	LocalRepo  string
	BundlePath string
	Elapsed    time.Duration
}

// oneShotError is a run that failed, with where and why.
type oneShotError struct {
	Phase    string
	Message  string
	ExitCode int
	Tail     []string
}

func (e *oneShotError) Error() string {
	msg := fmt.Sprintf("failed during %s: %s", e.Phase, e.Message)
	if len(e.Tail) > 0 {
		msg += "\n  last output:\n    " + strings.Join(e.Tail, "\n    ")
	}
	return msg
}

// runOne runs one task through launcher l and takes its result in.
func runOne(ctx context.Context, l runner.Launcher, o oneShot) (*oneShotResult, error) {
	start := time.Now()
	o, src, job, err := planOne(ctx, o, start)
	if err != nil {
		return nil, err
	}
	var gw *gateway.Task
	if o.Egress != nil {
		if gw, err = openOneGateway(o.Egress, &job, src); err != nil {
			return nil, err
		}
		defer gw.Close()
	}
	ui := newStatusLine(o.Progress)
	defer ui.close()
	ui.printf("agentbot run %s: %s → branch %s (agent %s)", job.TaskID, src.display, job.Branch, o.Agent.Name)
	run, err := l.Start(ctx, job)
	if err != nil {
		return nil, fmt.Errorf("agentbot run: start: %w", err)
	}
	keep := true
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
		defer cancel()
		if err := l.Cleanup(cctx, job.TaskID, keep); err != nil {
			ui.printf("agentbot run: cannot clean up the sandbox of %s: %v", job.TaskID, err)
		}
	}()
	f := followOne(ctx, run, ui, o.Quiet)
	res, err := f.outcome(ctx, run)
	if err != nil {
		return nil, err
	}
	// The branch is the one chosen here: a result naming another (the
	// sandbox's word) must not move a ref of the local repository.
	if res.Branch != "" && res.Branch != job.Branch {
		return nil, &oneShotError{Phase: "verifying", Message: fmt.Sprintf("the sandbox reported branch %q, not %q", res.Branch, job.Branch)}
	}
	out := &oneShotResult{
		TaskID: job.TaskID, Branch: job.Branch, Base: src.base, BaseSHA: res.BaseSHA, Commit: res.Commit,
		Summary: res.Summary, CostUSD: res.CostUSD, Files: res.Files,
		NoChanges: res.Status == runner.StatusNoChanges,
	}
	if gw != nil {
		// The model relay's measure, not the sandbox's word.
		out.CostUSD, _ = gw.Spent()
	}
	if !out.NoChanges {
		ui.phase("taking the result in")
		if err := takeResult(ctx, run, o, src, out); err != nil {
			return nil, err
		}
	}
	keep = false
	out.Elapsed = time.Since(start)
	return out, nil
}

// planOne fills o's defaults, resolves the repository and builds the job.
func planOne(ctx context.Context, o oneShot, start time.Time) (oneShot, *source, runner.Job, error) {
	if o.Progress == nil {
		o.Progress = io.Discard
	}
	if strings.TrimSpace(o.Prompt) == "" {
		return o, nil, runner.Job{}, errors.New("agentbot run: --prompt is empty")
	}
	if o.TimeLimit <= 0 {
		o.TimeLimit = 30 * time.Minute
	}
	if o.ProtectedPaths == nil {
		o.ProtectedPaths = github.DefaultSettings().ProtectedPaths
	}
	src, err := resolveSource(ctx, o.Repo, o.Base)
	if err != nil {
		return o, nil, runner.Job{}, err
	}
	title := strings.TrimSpace(strings.SplitN(strings.TrimSpace(o.Prompt), "\n", 2)[0])
	id := newRunID(start)
	branch := o.Branch
	if branch == "" {
		branch = github.BranchName("agentbot/", 0, title)
		branch = "agentbot/run-" + strings.TrimPrefix(branch, "agentbot/issue-0-")
		if branch == "agentbot/run-" || strings.HasSuffix(branch, "issue-0") {
			branch = "agentbot/run-" + id
		}
		if src.gitDir != "" {
			branch = freeBranch(ctx, src.gitDir, branch)
		}
	}
	return o, src, runner.Job{
		Version:     runner.ProtocolVersion,
		TaskID:      id,
		Repo:        src.name,
		CloneURL:    src.cloneURL,
		BaseBranch:  src.base,
		Branch:      branch,
		Prompt:      runner.JobPrompt{Title: title, Instructions: o.Prompt},
		Agent:       o.Agent,
		TimeLimit:   runner.Duration(o.TimeLimit),
		AuthorName:  "agentbot",
		AuthorEmail: "agentbot@users.noreply.github.com",
		Env:         o.AgentEnv,
	}, nil
}

// oneFollowed is what a one-shot run's events said.
type oneFollowed struct {
	res   *runner.RunResult
	errEv *runner.Event
	tail  []string
	phase string
}

// followOne shows the run's events on the status line until they end,
// stopping the run if ctx ends first.
func followOne(ctx context.Context, run runner.Run, ui *statusLine, quiet bool) *oneFollowed {
	f := &oneFollowed{phase: "starting"}
	var stopOnce sync.Once
	events := run.Events()
	for events != nil {
		select {
		case ev, ok := <-events:
			if !ok {
				events = nil
				continue
			}
			f.event(ev, ui, quiet)
		case <-ctx.Done():
			stopOnce.Do(func() {
				ui.printf("interrupted; stopping the agent…")
				sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), stopTimeout)
				defer cancel()
				if err := run.Stop(sctx); err != nil {
					ui.printf("agentbot run: cannot stop the agent: %v", err)
				}
			})
		}
	}
	return f
}

func (f *oneFollowed) event(ev runner.Event, ui *statusLine, quiet bool) {
	switch ev.Type {
	case runner.EventPhase:
		f.phase = ev.Phase
		ui.phase(f.phase)
	case runner.EventLog:
		f.tail = lastLines(append(f.tail, strings.Split(strings.TrimRight(ev.Message, "\n"), "\n")...), tailLines)
		if !quiet {
			ui.printf("  │ %s", ev.Message)
		}
	case runner.EventProgress:
		ui.detail(strings.TrimSpace(ev.Tool + " " + ev.File + " " + ev.Message))
	case runner.EventResult:
		f.res = ev.Result
	case runner.EventError:
		e := ev
		f.errEv = &e
	}
}

// outcome waits for the run's exit: its result, or why there is none.
func (f *oneFollowed) outcome(ctx context.Context, run runner.Run) (*runner.RunResult, error) {
	exit, err := run.Wait(context.WithoutCancel(ctx))
	if err != nil {
		return nil, fmt.Errorf("agentbot run: lost the runner: %w", err)
	}
	if ctx.Err() != nil {
		return nil, fmt.Errorf("agentbot run: %w", ctx.Err())
	}
	code := exit.Code
	if code == runner.ExitOK && f.res != nil {
		return f.res, nil
	}
	oe := &oneShotError{Phase: f.phase, Message: runner.ExitMeaning(code), ExitCode: code, Tail: f.tail}
	if f.errEv != nil {
		if f.errEv.Phase != "" {
			oe.Phase = f.errEv.Phase
		}
		oe.Message = f.errEv.Message + " (" + runner.ExitMeaning(code) + ")"
		if len(f.errEv.StderrTail) > 0 {
			oe.Tail = f.errEv.StderrTail
		}
	}
	if len(oe.Tail) == 0 {
		oe.Tail = exit.StderrTail
	}
	oe.Tail = lastLines(oe.Tail, tailLines)
	return nil, oe
}

// takeResult fetches the run's bundle and leaves it on disk (a URL
// repository) or, verified as the bot verifies before pushing, takes its
// branch into the local repository.
func takeResult(ctx context.Context, run runner.Run, o oneShot, src *source, out *oneShotResult) error {
	bundleDir := o.BundleDir
	if src.gitDir != "" {
		bundleDir = os.TempDir()
	} else if bundleDir == "" {
		bundleDir = "."
	}
	bundlePath := filepath.Join(bundleDir, "agentbot-"+out.TaskID+".bundle")
	f, err := os.Create(bundlePath)
	if err != nil {
		return fmt.Errorf("agentbot run: %w", err)
	}
	berr := run.Bundle(ctx, f)
	if cerr := f.Close(); berr == nil {
		berr = cerr
	}
	if berr != nil {
		os.Remove(bundlePath)
		return fmt.Errorf("agentbot run: fetch the bundle: %w", berr)
	}
	if src.gitDir == "" {
		out.BundlePath = bundlePath
		if abs, err := filepath.Abs(bundlePath); err == nil {
			out.BundlePath = abs
		}
		return nil
	}
	defer os.Remove(bundlePath)
	head, err := bundle.Verify(ctx, "git", bundlePath, bundle.Check{
		Branch: out.Branch, BranchPrefix: "agentbot/", BaseSHA: out.BaseSHA,
		ProtectedPaths: o.ProtectedPaths, ObjectsFrom: src.gitDir,
	})
	if err != nil {
		return &oneShotError{Phase: "verifying", Message: err.Error()}
	}
	if _, err := git(ctx, src.gitDir, "fetch", "--quiet", "--no-tags", bundlePath, "refs/heads/"+out.Branch+":refs/heads/"+out.Branch); err != nil {
		return fmt.Errorf("agentbot run: take branch %s into %s: %w", out.Branch, src.display, err)
	}
	out.Commit = head
	out.LocalRepo = src.display
	return nil
}

// lastLines is the last n of lines, in a slice of its own.
func lastLines(lines []string, n int) []string {
	if len(lines) <= n {
		return lines
	}
	return append([]string(nil), lines[len(lines)-n:]...)
}

// source is where a one-shot run clones from.
type source struct {
	cloneURL string
	display  string
	name     string
	base     string
	// gitDir is the local repository's git directory ("" for a URL).
	gitDir string
}

func resolveSource(ctx context.Context, repo, base string) (*source, error) {
	if repo == "" {
		return nil, errors.New("agentbot run: --repo is empty")
	}
	if fi, err := os.Stat(repo); err == nil && fi.IsDir() {
		abs, err := filepath.Abs(repo)
		if err != nil {
			return nil, fmt.Errorf("agentbot run: %s: %w", repo, err)
		}
		gitDir, err := git(ctx, abs, "rev-parse", "--absolute-git-dir")
		if err != nil {
			return nil, fmt.Errorf("agentbot run: %s is not a git repository: %w", repo, err)
		}
		if base == "" {
			if base, err = git(ctx, abs, "symbolic-ref", "--short", "HEAD"); err != nil {
				return nil, fmt.Errorf("agentbot run: %s: cannot tell the current branch (detached HEAD?); pass --base: %w", repo, err)
			}
		}
		if _, err := git(ctx, abs, "rev-parse", "--verify", "--quiet", "refs/heads/"+base+"^{commit}"); err != nil {
			return nil, fmt.Errorf("agentbot run: %s has no branch %q with a commit", repo, base)
		}
		return &source{cloneURL: "file://" + abs, display: abs, name: filepath.Base(abs), base: base, gitDir: gitDir}, nil
	}
	if !strings.Contains(repo, "://") && !strings.Contains(repo, "@") {
		return nil, fmt.Errorf("agentbot run: %s is neither a local directory nor a git URL", repo)
	}
	// The sandbox gets neither the operator's SSH keys nor credentials in
	// a URL (agent-runner refuses those, and the URL would be printed):
	// say so before anything runs, without echoing a secret.
	u, err := url.Parse(repo)
	if err != nil || !strings.Contains(repo, "://") || u.Scheme == "ssh" {
		return nil, errors.New("agentbot run: SSH repository URLs are not supported (the sandbox has no SSH keys); use an https:// URL, or clone the repository and pass its path")
	}
	if u.User != nil {
		u.User = nil
		return nil, fmt.Errorf("agentbot run: the repository URL carries credentials; agentbot run clones without them: use %s for a public repository, or clone it yourself and pass its path", u.String())
	}
	name := strings.TrimSuffix(filepath.Base(u.Path), ".git")
	return &source{cloneURL: repo, display: repo, name: name, base: base}, nil
}

// freeBranch returns name, or name-2, name-3… if the repository has it.
func freeBranch(ctx context.Context, gitDir, name string) string {
	cand := name
	for i := 2; i < 1000; i++ {
		if _, err := git(ctx, gitDir, "rev-parse", "--verify", "--quiet", "refs/heads/"+cand); err != nil {
			return cand
		}
		cand = fmt.Sprintf("%s-%d", name, i)
	}
	return cand
}

func git(ctx context.Context, dir string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "git", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GIT_TERMINAL_PROMPT=0")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("git %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return strings.TrimSpace(string(out)), nil
}

func newRunID(now time.Time) string {
	var b [3]byte
	// crypto/rand.Read never fails (it aborts the program instead).
	_, _ = rand.Read(b[:])
	return "run-" + now.UTC().Format("20060102-150405") + "-" + hex.EncodeToString(b[:])
}
