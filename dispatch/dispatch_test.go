package dispatch

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/agentbot/agentbot"
	"github.com/agentbot/agentbot/bundle"
	"github.com/agentbot/agentbot/github"
	"github.com/agentbot/agentbot/github/githubtest"
	"github.com/agentbot/agentbot/internal/gitserver"
	"github.com/agentbot/agentbot/runner"
	"github.com/agentbot/agentbot/runner/local"
	"github.com/agentbot/agentbot/state"
	"github.com/agentbot/agentbot/tasklog"
)

var testRepo = agentbot.Repo{Owner: "octo", Name: "demo"}

const testInstallation = 77

// harness is the dispatcher with real parts: a bbolt store, the fake GitHub
// over a real git server, the local launcher running the real agent-runner
// and the scripted agent.
type harness struct {
	t        *testing.T
	dir      string
	gh       *githubtest.Server
	git      *gitserver.Server
	client   *github.Client
	store    *state.Store
	logs     *tasklog.Store
	launcher *local.Launcher
	// wrap, when set, stands between the dispatcher and the local launcher.
	wrap func(runner.Launcher) runner.Launcher
	// wrapGH, when set, stands between the dispatcher and GitHub.
	wrapGH func(GitHub) GitHub
	// agentEnv is the operator's AgentEnv.
	agentEnv map[string]string
	// tweak, when set, changes the dispatcher's options before New.
	tweak func(*Options)
	reg   *prometheus.Registry
	d     *Dispatcher

	cancel context.CancelFunc
	done   chan error
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	h := &harness{t: t, dir: t.TempDir()}
	h.gh = githubtest.New(t)
	h.git = gitserver.New(t, h.gh.GitAuthorize())
	h.gh.AddInstallation(testInstallation, testRepo)
	h.gh.AddRepo(testRepo, h.git, "main")
	h.gh.SetPermission(testRepo, "alice", "write")
	h.gh.SetPermission(testRepo, "mallory", "read")
	var err error
	h.client, err = github.New(github.Config{BaseURL: h.gh.URL, AppID: h.gh.AppID, PrivateKey: h.gh.PrivateKeyPEM, MaxAttempts: 1})
	if err != nil {
		t.Fatal(err)
	}
	h.open()
	return h
}

// open (re)creates the store, launcher and dispatcher over the same data
// directory, as a restarted agentbot would.
func (h *harness) open() {
	t := h.t
	var err error
	h.store, err = state.Open(filepath.Join(h.dir, "agentbot.db"), state.Options{})
	if err != nil {
		t.Fatal(err)
	}
	h.logs, err = tasklog.Open(filepath.Join(h.dir, "logs"), 0)
	if err != nil {
		t.Fatal(err)
	}
	h.launcher, err = local.New(local.Options{DataDir: h.dir, AgentRunner: agentRunnerBin, Isolation: local.IsolationNone, StopGrace: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	h.reg = prometheus.NewRegistry()
	var launcher runner.Launcher = h.launcher
	if h.wrap != nil {
		launcher = h.wrap(launcher)
	}
	var gh GitHub = h.client
	if h.wrapGH != nil {
		gh = h.wrapGH(gh)
	}
	opts := Options{
		Store: h.store, GitHub: gh, Launcher: launcher, Logs: h.logs,
		MaxConcurrent: 2, PublicURL: "http://agentbot.test",
		Agent:    runner.AgentSpec{Name: "command", Command: scriptedAgentBin},
		AgentEnv: h.agentEnv,
		TempDir:  h.dir, Registry: h.reg, RescanInterval: 200 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	if h.tweak != nil {
		h.tweak(&opts)
	}
	h.d, err = New(opts)
	if err != nil {
		t.Fatal(err)
	}
	// Repositories choose the command agent the operator configured.
	h.gh.SetFile(testRepo, github.SettingsPath, "agent: command\n")
}

func (h *harness) start() {
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	h.done = make(chan error, 1)
	go func() { h.done <- h.d.Run(ctx) }()
	h.t.Cleanup(h.stop)
}

func (h *harness) stop() {
	if h.cancel == nil {
		return
	}
	h.cancel()
	// As serve does: the dispatcher stops its runs first, the launcher's
	// Close is the backstop.
	if err := <-h.done; err != nil {
		h.t.Errorf("Run: %v", err)
	}
	h.launcher.Close()
	h.cancel = nil
	h.store.Close()
}

// metric reads a counter (by its one label value) or a histogram's sample
// count from the registry.
func (h *harness) metric(name, label string) float64 {
	h.t.Helper()
	mfs, err := h.reg.Gather()
	if err != nil {
		h.t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if label != "" && (len(m.GetLabel()) == 0 || m.GetLabel()[0].GetValue() != label) {
				continue
			}
			if m.GetHistogram() != nil {
				return float64(m.GetHistogram().GetSampleCount())
			}
			return m.GetCounter().GetValue()
		}
	}
	return 0
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(b), "\n"))
	return len(b), nil
}

var deliveries struct {
	mu sync.Mutex
	n  int
}

// enqueue stores a task as webhook/ would and wakes the dispatcher.
func (h *harness) enqueue(trig agentbot.Trigger) *agentbot.Task {
	h.t.Helper()
	deliveries.mu.Lock()
	deliveries.n++
	id := fmt.Sprintf("delivery-%d", deliveries.n)
	deliveries.mu.Unlock()
	if trig.InstallationID == 0 {
		trig.InstallationID = testInstallation
	}
	if trig.Issue.Repo.Name == "" {
		trig.Issue.Repo = testRepo
	}
	if trig.Sender.Login == "" {
		trig.Sender.Login = "alice"
	}
	task := &agentbot.Task{Trigger: trig, Event: "issues"}
	if _, err := h.store.CreateTask(context.Background(), id, task); err != nil {
		h.t.Fatal(err)
	}
	h.d.Notify(task)
	return task
}

func (h *harness) issue(n int, title, body string) agentbot.Trigger {
	h.gh.AddIssue(testRepo, n, title, body, "alice")
	return agentbot.Trigger{
		Kind: agentbot.KindNew, Label: "agent-task",
		Issue:  agentbot.IssueRef{Repo: testRepo, Number: n},
		Prompt: agentbot.Prompt{Title: title, Body: body},
	}
}

// wait polls the store until the task satisfies cond (the dispatcher runs
// real processes; there is nothing to synchronise on but the store).
func (h *harness) wait(id string, what string, cond func(*agentbot.Task) bool) *agentbot.Task {
	h.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		task, err := h.store.Get(context.Background(), id)
		if err == nil && cond(task) {
			return task
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("task %s never became %s; last: %+v (err %v)", id, what, task, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (h *harness) waitState(id string, st agentbot.TaskState) *agentbot.Task {
	h.t.Helper()
	return h.wait(id, string(st), func(t *agentbot.Task) bool { return t.State == st && (!st.Terminal() || t.Reported) })
}

func (h *harness) comment(task *agentbot.Task) githubtest.Comment {
	h.t.Helper()
	id := task.CommentID
	for _, c := range h.gh.Comments(task.Ref()) {
		if c.ID == id {
			return c
		}
	}
	h.t.Fatalf("no comment %d", id)
	return githubtest.Comment{}
}

func (h *harness) commentsOn(n int) []githubtest.Comment {
	return h.gh.Comments(agentbot.IssueRef{Repo: testRepo, Number: n})
}

func TestNewTaskOpensDraftPR(t *testing.T) {
	h := newHarness(t)
	h.start()
	task := h.enqueue(h.issue(1, "Add a greeting", "scripted: write greeting.txt hello; summary Added greeting.txt"))
	done := h.waitState(task.ID, agentbot.StateSucceeded)

	branch := "agentbot/issue-1-add-a-greeting"
	if done.Result.Branch != branch || done.Result.PRNumber == 0 {
		t.Fatalf("result %+v", done.Result)
	}
	if got, err := h.git.Show("octo", "demo", branch, "greeting.txt"); err != nil || got != "hello\n" {
		t.Fatalf("greeting.txt on %s = %q, %v", branch, got, err)
	}
	prs := h.gh.PullRequests(testRepo)
	if len(prs) != 1 || !prs[0].Draft || !strings.Contains(prs[0].Body, "Fixes #1") || prs[0].Head != branch {
		t.Fatalf("pull requests %+v", prs)
	}
	reactions := h.gh.Reactions(agentbot.IssueRef{Repo: testRepo, Number: 1})
	if len(reactions) != 1 || reactions[0].Content != "eyes" {
		t.Errorf("reactions %+v", reactions)
	}
	comments := h.commentsOn(1)
	if len(comments) != 1 || comments[0].ID != done.CommentID {
		t.Fatalf("want one progress comment, got %+v", comments)
	}
	body := comments[0].Body
	for _, want := range []string{done.Result.PRURL, "http://agentbot.test/tasks/" + task.ID, "Added greeting.txt"} {
		if !strings.Contains(body, want) {
			t.Errorf("final comment lacks %q:\n%s", want, body)
		}
	}
	// Opened when the task started and edited to the result (progress
	// edits between are coalesced: TestEditsAreNeverWithinASecond).
	if len(comments[0].Edits) < 1 {
		t.Errorf("comment never edited to the result")
	}
	runs := h.gh.CheckRuns(testRepo)
	if len(runs) != 1 || runs[0].Status != "completed" || runs[0].Conclusion != "success" || runs[0].HeadSHA != done.Result.Commit {
		t.Fatalf("check runs %+v", runs)
	}
	if v := h.metric("agentbot_dispatch_tasks_finished_total", "succeeded"); v != 1 {
		t.Errorf("finished{succeeded} = %v", v)
	}
	if v := h.metric("agentbot_dispatch_time_to_start_seconds", ""); v != 1 {
		t.Errorf("time-to-start observations: %v", v)
	}

	// A follow-up on the PR commits on the same branch.
	prRef := agentbot.IssueRef{Repo: testRepo, Number: prs[0].Number}
	first := done.Result.Commit
	fu := h.enqueue(agentbot.Trigger{
		Kind: agentbot.KindFollowUp, Issue: prRef, IsPullRequest: true, CommentID: 0,
		Prompt: agentbot.Prompt{Instructions: "scripted: append greeting.txt again"},
	})
	fdone := h.waitState(fu.ID, agentbot.StateSucceeded)
	if got, _ := h.git.Show("octo", "demo", branch, "greeting.txt"); got != "hello\nagain\n" {
		t.Fatalf("after follow-up greeting.txt = %q", got)
	}
	if parent := h.git.RevParse("octo", "demo", branch+"^"); parent != first {
		t.Errorf("follow-up commit's parent %s, want %s", parent, first)
	}
	if len(h.gh.PullRequests(testRepo)) != 1 {
		t.Errorf("follow-up opened another PR")
	}
	var fuRun *githubtest.CheckRun
	for _, r := range h.gh.CheckRuns(testRepo) {
		if r.ID == fdone.CheckRunID {
			r := r
			fuRun = &r
		}
	}
	if fuRun == nil || fuRun.HeadSHA != fdone.Result.Commit || fuRun.Conclusion != "success" {
		t.Errorf("follow-up check run %+v", fuRun)
	}
}

func TestRefusals(t *testing.T) {
	h := newHarness(t)
	h.start()
	cases := []struct {
		name      string
		sender    string
		label     string
		wantState agentbot.TaskState
		wantReply string
	}{
		{"reader is refused", "mallory", "agent-task", agentbot.StateFailed, "@mallory agentbot did not run"},
		{"bot is ignored", "dependabot[bot]", "agent-task", agentbot.StateCancelled, ""},
		{"other label is ignored", "alice", "bug", agentbot.StateCancelled, ""},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			n := 10 + i
			trig := h.issue(n, "Do something", "scripted: write x.txt x")
			trig.Sender.Login, trig.Label = tc.sender, tc.label
			task := h.enqueue(trig)
			done := h.waitState(task.ID, tc.wantState)
			comments := h.commentsOn(n)
			if tc.wantReply == "" && len(comments) != 0 {
				t.Fatalf("ignored trigger got comments %+v", comments)
			}
			if tc.wantReply != "" && (len(comments) != 1 || !strings.Contains(comments[0].Body, tc.wantReply)) {
				t.Fatalf("comments %+v, want one saying %q", comments, tc.wantReply)
			}
			if done.Attempt != 0 || done.Acknowledged() {
				t.Fatalf("something ran: %+v", done)
			}
			// 👀 comes first, before the permission check: a refused
			// sender sees it and the refusal; an ignored trigger gets
			// nothing at all.
			reactions := h.gh.Reactions(agentbot.IssueRef{Repo: testRepo, Number: n})
			if want := tc.wantReply != ""; (len(reactions) == 1) != want || len(reactions) > 1 {
				t.Fatalf("reactions %+v, want one: %v", reactions, want)
			}
		})
	}
}

// startSlow starts a task on issue 3 whose agent runs for 30 s and waits
// until it is in the agent's phase.
func (h *harness) startSlow() (*agentbot.Task, agentbot.Trigger) {
	h.t.Helper()
	trig := h.issue(3, "Slow work", "scripted: sleep 30; write slow.txt done")
	first := h.enqueue(trig)
	h.wait(first.ID, "in the agent phase", func(t *agentbot.Task) bool { return t.Phase == runner.PhaseAgent })
	return first, trig
}

func TestSecondTriggerWaitsAndSaysSo(t *testing.T) {
	h := newHarness(t)
	h.start()
	first, trig := h.startSlow()
	trig.Prompt.Body = "scripted: write second.txt 2"
	second := h.enqueue(trig)
	queued := h.wait(second.ID, "acknowledged", func(t *agentbot.Task) bool { return t.Acknowledged() })
	if c := h.comment(queued); !strings.Contains(c.Body, first.ID) {
		t.Errorf("queued comment does not name the task it waits for:\n%s", c.Body)
	}
	if st, _ := h.store.Get(context.Background(), second.ID); st.State != agentbot.StateQueued {
		t.Fatalf("second task ran beside the first: %s", st.State)
	}
	// Once the first ends, the second runs.
	h.enqueue(agentbot.Trigger{Kind: agentbot.KindControl, Control: agentbot.ControlCancel, Issue: trig.Issue, CommentID: 5002, ExternalID: first.ID})
	h.waitState(first.ID, agentbot.StateCancelled)
	h.waitState(second.ID, agentbot.StateSucceeded)
	if got, err := h.git.Show("octo", "demo", "agentbot/issue-3-slow-work", "second.txt"); err != nil || got != "2\n" {
		t.Errorf("second.txt = %q, %v", got, err)
	}
}

func TestStatusAnswers(t *testing.T) {
	h := newHarness(t)
	h.start()
	first, trig := h.startSlow()
	status := h.enqueue(agentbot.Trigger{Kind: agentbot.KindControl, Control: agentbot.ControlStatus, Issue: trig.Issue, CommentID: 5001})
	done := h.waitState(status.ID, agentbot.StateSucceeded)
	c := h.comment(done)
	for _, want := range []string{"agentbot status", first.ID, "running", "1 of at most 2 runs"} {
		if !strings.Contains(c.Body, want) {
			t.Errorf("status reply lacks %q:\n%s", want, c.Body)
		}
	}
}

func TestCancelByCommentStopsEverythingOnTheIssue(t *testing.T) {
	h := newHarness(t)
	h.start()
	first, trig := h.startSlow()
	trig2 := trig
	trig2.Prompt.Body = "scripted: write second.txt 2"
	second := h.enqueue(trig2)
	h.wait(second.ID, "acknowledged", func(t *agentbot.Task) bool { return t.Acknowledged() })

	cancel := h.enqueue(agentbot.Trigger{Kind: agentbot.KindControl, Control: agentbot.ControlCancel, Issue: trig.Issue, CommentID: 5002})
	h.waitState(cancel.ID, agentbot.StateSucceeded)
	stopped := h.waitState(first.ID, agentbot.StateCancelled)
	if !strings.Contains(stopped.Result.Error, "cancelled by @alice") {
		t.Errorf("cancelled task says %q", stopped.Result.Error)
	}
	if c := h.comment(stopped); !strings.Contains(strings.ToLower(c.Body), "cancel") {
		t.Errorf("comment of the cancelled task:\n%s", c.Body)
	}
	if _, err := h.git.Show("octo", "demo", "agentbot/issue-3-slow-work", "slow.txt"); err == nil {
		t.Errorf("the cancelled agent's work was pushed")
	}
	// The queued one too.
	h.waitState(second.ID, agentbot.StateCancelled)
	// The issue is free again.
	trig3 := trig
	trig3.Prompt.Body = "scripted: write third.txt 3"
	third := h.enqueue(trig3)
	h.waitState(third.ID, agentbot.StateSucceeded)
}

func TestFailedTaskIsRetried(t *testing.T) {
	h := newHarness(t)
	h.start()
	fail := h.enqueue(h.issue(40, "Will fail", "scripted: stdout working on it; fail 2 cannot do this"))
	failed := h.waitState(fail.ID, agentbot.StateFailed)
	if failed.Result.FailedPhase != runner.PhaseAgent || !strings.Contains(failed.Result.Error, "status 2") {
		t.Errorf("failure result %+v", failed.Result)
	}
	c := h.comment(failed)
	for _, want := range []string{"working on it", "cannot do this"} {
		if !strings.Contains(c.Body, want) {
			t.Errorf("failure comment lacks the agent's last output %q:\n%s", want, c.Body)
		}
	}
	h.enqueue(agentbot.Trigger{Kind: agentbot.KindControl, Control: agentbot.ControlRetry, Issue: failed.Ref(), CommentID: 5003})
	var retry *agentbot.Task
	deadline := time.Now().Add(30 * time.Second)
	for retry == nil && time.Now().Before(deadline) {
		tasks, _ := h.store.ListByIssue(context.Background(), failed.Ref())
		for _, o := range tasks {
			if o.RetryOf == failed.ID {
				retry = o
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	if retry == nil {
		t.Fatal("retry made no task")
	}
	again := h.waitState(retry.ID, agentbot.StateFailed)
	if again.Result.FailedPhase != runner.PhaseAgent || again.Trigger.Prompt.Body != failed.Trigger.Prompt.Body {
		t.Errorf("retry did not run the same task again: %+v", again)
	}
}

func TestProtectedPathsRefusedAtPush(t *testing.T) {
	h := newHarness(t)
	h.start()
	task := h.enqueue(h.issue(5, "Touch CI", "scripted: write .github/workflows/ci.yml on: push"))
	done := h.waitState(task.ID, agentbot.StateFailed)
	if done.Result.FailedPhase != "pushing" || !strings.Contains(done.Result.Error, ".github/workflows") {
		t.Fatalf("result %+v", done.Result)
	}
	for _, b := range h.git.Branches("octo", "demo") {
		if strings.HasPrefix(b, "agentbot/") {
			t.Fatalf("branch %s was pushed", b)
		}
	}
	if len(h.gh.PullRequests(testRepo)) != 0 {
		t.Fatal("a PR was opened")
	}
}

func TestRecovery(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	// Tasks as a killed agentbot left them: one running for the first
	// time, one already re-queued once, one finished but not reported.
	mk := func(n int, body string) *agentbot.Task {
		task := h.enqueue(h.issue(n, fmt.Sprintf("Task %d", n), body))
		id, err := h.client.CreateComment(ctx, testInstallation, task.Ref(), "working…")
		if err != nil {
			t.Fatal(err)
		}
		task, err = h.store.Update(ctx, task.ID, func(s *agentbot.Task) error { s.CommentID = id; return nil })
		if err != nil {
			t.Fatal(err)
		}
		return task
	}
	once := mk(20, "scripted: write a.txt a")
	twice := mk(21, "scripted: write b.txt b")
	ended := mk(22, "")
	for _, task := range []*agentbot.Task{once, twice, ended} {
		if _, err := h.store.Transition(ctx, task.ID, agentbot.StateQueued, agentbot.StateRunning, func(s *agentbot.Task) error {
			s.Attempt = 1
			s.Phase = runner.PhaseAgent
			if s.ID == twice.ID {
				s.Requeues = 1
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := h.store.Transition(ctx, ended.ID, agentbot.StateRunning, agentbot.StateFailed, func(s *agentbot.Task) error {
		s.Result = agentbot.Result{FailedPhase: "agent", Error: "the agent failed"}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	h.start()

	done := h.waitState(once.ID, agentbot.StateSucceeded)
	if done.Requeues != 1 || done.Attempt != 2 {
		t.Errorf("re-queued task: requeues %d attempt %d", done.Requeues, done.Attempt)
	}
	c := h.comment(done)
	var sawRequeue bool
	for _, e := range append(c.Edits, c.Body) {
		if strings.Contains(e, "re-queued") {
			sawRequeue = true
		}
	}
	if !sawRequeue {
		t.Errorf("no comment edit said the task was re-queued: %q", c.Edits)
	}
	gaveUp := h.waitState(twice.ID, agentbot.StateFailed)
	if !strings.Contains(gaveUp.Result.Error, "restarted twice") {
		t.Errorf("second interruption: %+v", gaveUp.Result)
	}
	repaired := h.waitState(ended.ID, agentbot.StateFailed)
	if c := h.comment(repaired); c.Body == "working…" || !strings.Contains(c.Body, "the agent failed") {
		t.Errorf("stale comment not repaired:\n%s", c.Body)
	}
	if n := len(h.gh.PullRequests(testRepo)); n != 1 {
		t.Errorf("%d pull requests, want 1", n)
	}
}

// attachGone re-attaches "successfully" to a sandbox whose agent-runner
// never started: the run ends at once with ErrGone from Wait, as the
// Kubernetes launcher reports a claim that was Ready when the old process
// died before its exec.
type attachGone struct{ runner.Launcher }

func (a attachGone) Attach(context.Context, string, int) (runner.Run, error) {
	events := make(chan runner.Event)
	close(events)
	return goneRun{events}, nil
}

type goneRun struct{ events chan runner.Event }

func (r goneRun) Events() <-chan runner.Event { return r.events }
func (r goneRun) Wait(context.Context) (runner.Exit, error) {
	return runner.Exit{}, fmt.Errorf("claim agentbot-x: agent-runner never started: %w", runner.ErrGone)
}
func (r goneRun) Bundle(context.Context, io.Writer) error { return runner.ErrGone }
func (r goneRun) Stop(context.Context) error              { return nil }
func (r goneRun) Detach()                                 {}

func TestReattachedRunGoneIsRequeued(t *testing.T) {
	h := newHarness(t)
	h.store.Close()
	h.wrap = func(l runner.Launcher) runner.Launcher { return attachGone{l} }
	h.open()
	ctx := context.Background()
	task := h.enqueue(h.issue(30, "Gone", "scripted: write gone.txt g"))
	if _, err := h.store.Transition(ctx, task.ID, agentbot.StateQueued, agentbot.StateRunning, func(s *agentbot.Task) error {
		s.Attempt = 1
		s.Phase = runner.PhaseCloning
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	h.start()
	done := h.waitState(task.ID, agentbot.StateSucceeded)
	if done.Requeues != 1 || done.Attempt != 2 {
		t.Errorf("requeues %d attempt %d, want 1 and 2", done.Requeues, done.Attempt)
	}
	if n := len(h.gh.PullRequests(testRepo)); n != 1 {
		t.Errorf("%d pull requests, want 1", n)
	}
}

// TestCheckRunButtons drives a follow-up through its check run's buttons:
// Cancel stops the run, Retry queues it again (and its own Cancel stops
// that).
func TestCheckRunButtons(t *testing.T) {
	h := newHarness(t)
	h.start()
	first := h.enqueue(h.issue(60, "Base work", "scripted: write base.txt base"))
	done := h.waitState(first.ID, agentbot.StateSucceeded)
	prRef := agentbot.IssueRef{Repo: testRepo, Number: done.Result.PRNumber}

	fu := h.enqueue(agentbot.Trigger{Kind: agentbot.KindFollowUp, Issue: prRef, IsPullRequest: true,
		Prompt: agentbot.Prompt{Instructions: "scripted: sleep 60; write late.txt x"}})
	running := h.wait(fu.ID, "running its agent", func(t *agentbot.Task) bool { return t.Phase == runner.PhaseAgent && t.CheckRunID != 0 })
	checkRun := func(id int64) githubtest.CheckRun {
		for _, r := range h.gh.CheckRuns(testRepo) {
			if r.ID == id {
				return r
			}
		}
		t.Fatalf("no check run %d", id)
		return githubtest.CheckRun{}
	}
	if cr := checkRun(running.CheckRunID); cr.Status != "in_progress" || !hasAction(cr, "cancel") {
		t.Fatalf("running check run %+v", cr)
	}
	button := func(control agentbot.Control, taskID string) {
		h.enqueue(agentbot.Trigger{Kind: agentbot.KindControl, Control: control, Issue: prRef, IsPullRequest: true,
			CheckRunID: running.CheckRunID, ExternalID: taskID})
	}
	button(agentbot.ControlCancel, fu.ID)
	cancelled := h.waitState(fu.ID, agentbot.StateCancelled)
	if cr := checkRun(cancelled.CheckRunID); cr.Conclusion != "cancelled" || !hasAction(cr, "retry") || hasAction(cr, "cancel") {
		t.Fatalf("cancelled check run %+v", cr)
	}

	button(agentbot.ControlRetry, fu.ID)
	var retry *agentbot.Task
	h.wait(fu.ID, "retried", func(*agentbot.Task) bool {
		tasks, _ := h.store.ListByIssue(context.Background(), prRef)
		for _, o := range tasks {
			if o.RetryOf == fu.ID {
				retry = o
				return true
			}
		}
		return false
	})
	h.wait(retry.ID, "running its agent", func(t *agentbot.Task) bool { return t.Phase == runner.PhaseAgent })
	button(agentbot.ControlCancel, retry.ID)
	h.waitState(retry.ID, agentbot.StateCancelled)
	if got, _ := h.git.Show("octo", "demo", done.Result.Branch, "late.txt"); got != "" {
		t.Errorf("a cancelled run pushed late.txt")
	}
}

func hasAction(cr githubtest.CheckRun, id string) bool {
	for _, a := range cr.Actions {
		if a.Identifier == id {
			return true
		}
	}
	return false
}

// TestGracefulStopDoesNotUseTheRequeue stops agentbot (as a deploy would)
// twice while a task's agent runs: each stop re-queues the task without
// counting an interruption, so the third start still finishes it, with one
// pull request.
func TestGracefulStopDoesNotUseTheRequeue(t *testing.T) {
	h := newHarness(t)
	h.start()
	gate := filepath.Join(h.dir, "gate")
	task := h.enqueue(h.issue(40, "Survive deploys", "scripted: write deploy.txt d; wait-for "+gate))
	for i := 1; i <= 2; i++ {
		h.wait(task.ID, "in its agent phase", func(s *agentbot.Task) bool {
			return s.State == agentbot.StateRunning && s.Attempt == i && s.Phase == runner.PhaseAgent
		})
		h.stop()
		h.open()
		got, err := h.store.Get(context.Background(), task.ID)
		if err != nil {
			t.Fatal(err)
		}
		if got.State != agentbot.StateQueued || got.Requeues != 0 {
			t.Fatalf("after stop %d: state %s requeues %d, want queued and 0", i, got.State, got.Requeues)
		}
		h.start()
	}
	h.wait(task.ID, "in its third agent phase", func(s *agentbot.Task) bool {
		return s.State == agentbot.StateRunning && s.Attempt == 3 && s.Phase == runner.PhaseAgent
	})
	if err := os.WriteFile(gate, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	done := h.waitState(task.ID, agentbot.StateSucceeded)
	if done.Requeues != 0 || done.Attempt != 3 {
		t.Errorf("requeues %d attempt %d, want 0 and 3", done.Requeues, done.Attempt)
	}
	if n := len(h.gh.PullRequests(testRepo)); n != 1 {
		t.Errorf("%d pull requests, want 1", n)
	}
	c := h.comment(done)
	var said bool
	for _, e := range c.Edits {
		said = said || strings.Contains(e, stoppedNote)
	}
	if !said {
		t.Errorf("no comment edit said agentbot was stopped: %q", c.Edits)
	}
	evs, _, err := h.logs.Read(task.ID, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	var notes int
	for _, ev := range evs {
		if strings.Contains(ev.Message, stoppedNote) {
			notes++
		}
	}
	if notes != 2 {
		t.Errorf("task log notes the stop %d times, want 2", notes)
	}
}

// cancelDuringComment cancels a task (as `/agent cancel` would) while
// agentbot opens its progress comment.
type cancelDuringComment struct {
	GitHub
	h      *harness
	once   sync.Once
	target func() *agentbot.Task
}

func (c *cancelDuringComment) CreateComment(ctx context.Context, inst int64, ref agentbot.IssueRef, body string) (int64, error) {
	c.once.Do(func() {
		if _, err := c.h.d.cancelOne(ctx, c.target(), "alice"); err != nil {
			c.h.t.Errorf("cancel: %v", err)
		}
	})
	return c.GitHub.CreateComment(ctx, inst, ref, body)
}

// TestCancelWhileAcknowledging: a task cancelled while its progress
// comment is being opened ends with that comment saying so, not "queued".
func TestCancelWhileAcknowledging(t *testing.T) {
	h := newHarness(t)
	h.store.Close()
	var task *agentbot.Task
	h.wrapGH = func(g GitHub) GitHub {
		return &cancelDuringComment{GitHub: g, h: h, target: func() *agentbot.Task { return task }}
	}
	h.open()
	trig := h.issue(50, "Cancelled early", "scripted: write x.txt x")
	task = h.enqueue(trig)
	h.start()
	done := h.wait(task.ID, "cancelled with a comment", func(s *agentbot.Task) bool {
		return s.State == agentbot.StateCancelled && s.CommentID != 0
	})
	var body string
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if body = h.comment(done).Body; strings.Contains(strings.ToLower(body), "cancelled") {
			return
		}
	}
	t.Errorf("the comment of a cancelled task does not say so:\n%s", body)
}

// TestControlReplySurvivesA502: GitHub posts a `/agent status` reply and
// answers 502; the reply carries its task's marker, so it is found rather
// than lost or posted twice, and the control task records it.
func TestControlReplySurvivesA502(t *testing.T) {
	h := newHarness(t)
	h.start()
	const n = 80
	h.gh.AddIssue(testRepo, n, "Status please", "", "alice")
	h.gh.FailAfter(http.MethodPost, "/repos/octo/demo/issues/*/comments", 1, http.StatusBadGateway)
	ctl := h.enqueue(agentbot.Trigger{Kind: agentbot.KindControl, Control: agentbot.ControlStatus,
		Issue: agentbot.IssueRef{Repo: testRepo, Number: n}, CommentID: 6001})
	done := h.waitState(ctl.ID, agentbot.StateSucceeded)
	comments := h.commentsOn(n)
	if len(comments) != 1 {
		t.Fatalf("%d replies, want exactly 1: %+v", len(comments), comments)
	}
	if !strings.HasPrefix(comments[0].Body, github.CommentMarker(ctl.ID)+"\n") {
		t.Errorf("reply does not start with its task's marker:\n%s", comments[0].Body)
	}
	if done.CommentID != comments[0].ID {
		t.Errorf("control task records comment %d, the reply is %d", done.CommentID, comments[0].ID)
	}
}

// TestSettingsErrorFence: a settings key with backticks cannot close the
// code block the refusal quotes the problems in.
func TestSettingsErrorFence(t *testing.T) {
	h := newHarness(t)
	h.gh.SetFile(testRepo, github.SettingsPath, "agent: command\n\"x```y\": 1\n")
	h.start()
	task := h.enqueue(h.issue(81, "Bad settings", "scripted: write x.txt x"))
	done := h.waitState(task.ID, agentbot.StateFailed)
	body := h.comment(done).Body
	if !strings.Contains(body, "x```y") {
		t.Fatalf("refusal does not quote the key:\n%s", body)
	}
	_, block, ok := strings.Cut(body, "\n````\n")
	if !ok || !strings.Contains(block, "x```y") || !strings.Contains(block, "\n````") {
		t.Errorf("the key is not inside a four-backtick block:\n%s", body)
	}
}

// stopDuringDelivery begins a graceful stop of agentbot (as SIGTERM would)
// when the dispatcher calls GitHub to push or to open the pull request, and
// then lets the call go on with the context it was given.
type stopDuringDelivery struct {
	GitHub
	h    *harness
	at   string
	once sync.Once
}

func (s *stopDuringDelivery) stop(call string) {
	if call == s.at {
		s.once.Do(s.h.cancel)
	}
}

func (s *stopDuringDelivery) PushBundle(ctx context.Context, inst int64, repo agentbot.Repo, cloneURL, bundlePath string, check bundle.Check, readToken string) (string, error) {
	s.stop("push")
	return s.GitHub.PushBundle(ctx, inst, repo, cloneURL, bundlePath, check, readToken)
}

func (s *stopDuringDelivery) OpenPullRequest(ctx context.Context, inst int64, repo agentbot.Repo, opts github.PROptions) (github.PRInfo, bool, error) {
	s.stop("pull request")
	return s.GitHub.OpenPullRequest(ctx, inst, repo, opts)
}

// TestGracefulStopLetsDeliveryFinish: a stop that begins while the agent's
// work is being pushed or its pull request opened lets the delivery finish:
// the task succeeds with one pull request, and the agent ran once.
func TestGracefulStopLetsDeliveryFinish(t *testing.T) {
	for i, at := range []string{"push", "pull request"} {
		t.Run(at, func(t *testing.T) {
			h := newHarness(t)
			h.store.Close()
			rec := &jobRecorder{}
			h.wrap = func(l runner.Launcher) runner.Launcher { rec.Launcher = l; return rec }
			h.wrapGH = func(g GitHub) GitHub { return &stopDuringDelivery{GitHub: g, h: h, at: at} }
			h.open()
			h.start()
			task := h.enqueue(h.issue(85+i, "Deliver during stop", "scripted: write stop.txt s"))
			// Run returns once its workers have: the stop was begun by the
			// GitHub call and waits for the delivery.
			if err := <-h.done; err != nil {
				t.Fatalf("Run: %v", err)
			}
			h.cancel = nil
			h.launcher.Close()
			got, err := h.store.Get(context.Background(), task.ID)
			if err != nil {
				t.Fatal(err)
			}
			if got.State != agentbot.StateSucceeded || got.Attempt != 1 || got.Requeues != 0 {
				t.Fatalf("after the stop: state %s attempt %d requeues %d, want succeeded 1 0 (%+v)", got.State, got.Attempt, got.Requeues, got.Result)
			}
			if prs := h.gh.PullRequests(testRepo); len(prs) != 1 {
				t.Errorf("%d pull requests, want 1", len(prs))
			}
			rec.mu.Lock()
			starts := len(rec.jobs)
			rec.mu.Unlock()
			if starts != 1 {
				t.Errorf("the agent ran %d times, want once", starts)
			}
			h.store.Close()
		})
	}
}

// TestCancelWithNothingToCancel: `/agent cancel` where nothing runs gets a
// short reply of its own — also when the task it found ended meanwhile.
func TestCancelWithNothingToCancel(t *testing.T) {
	h := newHarness(t)
	h.start()
	ended := h.enqueue(h.issue(91, "Done already", "scripted: write done.txt d"))
	h.waitState(ended.ID, agentbot.StateSucceeded)
	cases := []struct {
		name  string
		issue int
	}{
		{"no tasks on the issue", 95},
		{"the issue's task has ended", 91},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.issue != 91 {
				h.gh.AddIssue(testRepo, tc.issue, "Nothing here", "", "alice")
			}
			before := len(h.commentsOn(tc.issue))
			ctl := h.enqueue(agentbot.Trigger{Kind: agentbot.KindControl, Control: agentbot.ControlCancel,
				Issue: agentbot.IssueRef{Repo: testRepo, Number: tc.issue}, CommentID: 7000 + int64(tc.issue)})
			done := h.waitState(ctl.ID, agentbot.StateSucceeded)
			comments := h.commentsOn(tc.issue)
			if len(comments) != before+1 || !strings.Contains(comments[len(comments)-1].Body, "Nothing is running on this issue") {
				t.Fatalf("want one new reply saying nothing is running; comments %+v", comments)
			}
			if done.CommentID != comments[len(comments)-1].ID {
				t.Errorf("control task records comment %d", done.CommentID)
			}
		})
	}

	t.Run("task ended between look-up and cancel", func(t *testing.T) {
		ctx := context.Background()
		task := h.enqueue(agentbot.Trigger{Kind: agentbot.KindNew, Issue: agentbot.IssueRef{Repo: testRepo, Number: 93}, Sender: agentbot.Sender{Login: "dependabot[bot]"}})
		snapshot, err := h.store.Get(ctx, task.ID)
		if err != nil {
			t.Fatal(err)
		}
		h.waitState(task.ID, agentbot.StateCancelled) // a bot's trigger is ignored
		ok, err := h.d.cancelOne(ctx, snapshot, "alice")
		if ok || err != nil {
			t.Fatalf("cancelOne of a task that ended meanwhile = %v, %v; want nothing cancelled and no error", ok, err)
		}
	})
}

// TestProgressCommentAdoptedAfterAFailedLookUp: GitHub posts a task's
// progress comment but answers 502, and the client's look-up for it fails
// too, so the acknowledgement fails and the task stays queued. The next
// scan finds that comment by its marker and adopts it: one progress
// comment, the task's.
func TestProgressCommentAdoptedAfterAFailedLookUp(t *testing.T) {
	h := newHarness(t)
	const n = 83
	trig := h.issue(n, "Post once", "scripted: write once.txt o")
	h.gh.FailAfter(http.MethodPost, "/repos/octo/demo/issues/83/comments", 1, http.StatusBadGateway)
	h.gh.FailNext(http.MethodGet, "/repos/octo/demo/issues/83/comments", 1, http.StatusBadGateway, nil)
	h.start()
	task := h.enqueue(trig)
	done := h.waitState(task.ID, agentbot.StateSucceeded)
	comments := h.commentsOn(n)
	if len(comments) != 1 {
		t.Fatalf("%d comments, want exactly 1: %+v", len(comments), comments)
	}
	if done.CommentID != comments[0].ID {
		t.Errorf("task records comment %d, the progress comment is %d", done.CommentID, comments[0].ID)
	}
	if looks := h.gh.CallsTo(http.MethodGet, "/repos/octo/demo/issues/83/comments"); len(looks) < 2 {
		t.Errorf("%d look-ups, want the failed one and the one that adopted the comment", len(looks))
	}
	if !strings.Contains(comments[0].Body, done.Result.PRURL) {
		t.Errorf("the adopted comment was not kept up to date:\n%s", comments[0].Body)
	}
}

// holdDelivery holds the dispatcher's push or pull-request call (at) until
// released, and says when it holds it.
type holdDelivery struct {
	GitHub
	at      string
	held    chan struct{}
	release chan struct{}
	once    sync.Once
}

func (b *holdDelivery) hold(ctx context.Context, call string) {
	if call != b.at {
		return
	}
	b.once.Do(func() {
		close(b.held)
		select {
		case <-b.release:
		case <-ctx.Done():
		}
	})
}

func (b *holdDelivery) PushBundle(ctx context.Context, inst int64, repo agentbot.Repo, cloneURL, bundlePath string, check bundle.Check, readToken string) (string, error) {
	b.hold(ctx, "push")
	return b.GitHub.PushBundle(ctx, inst, repo, cloneURL, bundlePath, check, readToken)
}

func (b *holdDelivery) OpenPullRequest(ctx context.Context, inst int64, repo agentbot.Repo, opts github.PROptions) (github.PRInfo, bool, error) {
	b.hold(ctx, "pull request")
	return b.GitHub.OpenPullRequest(ctx, inst, repo, opts)
}

// TestCancelWhileDeliveringIsTooLate: `/agent cancel` while a task pushes
// its result or opens its pull request does not cut the delivery short,
// and the reply says it came too late; the task succeeds with one PR.
func TestCancelWhileDeliveringIsTooLate(t *testing.T) {
	for i, at := range []string{"push", "pull request"} {
		t.Run(at, func(t *testing.T) {
			h := newHarness(t)
			h.store.Close()
			hold := &holdDelivery{at: at, held: make(chan struct{}), release: make(chan struct{})}
			h.wrapGH = func(g GitHub) GitHub { hold.GitHub = g; return hold }
			h.open()
			h.start()
			var released sync.Once
			release := func() { released.Do(func() { close(hold.release) }) }
			defer release() // before the harness stops, on failure too
			n := 100 + i
			task := h.enqueue(h.issue(n, "Deliver despite cancel", "scripted: write late.txt l"))
			<-hold.held
			ctl := h.enqueue(agentbot.Trigger{Kind: agentbot.KindControl, Control: agentbot.ControlCancel,
				Issue: agentbot.IssueRef{Repo: testRepo, Number: n}, CommentID: 8000 + int64(n)})
			answered := h.waitState(ctl.ID, agentbot.StateSucceeded)
			var reply string
			for _, c := range h.commentsOn(n) {
				if c.ID == answered.CommentID && answered.CommentID != 0 {
					reply = c.Body
				}
			}
			branch := fmt.Sprintf("agentbot/issue-%d-deliver-despite-cancel", n)
			for _, want := range []string{"Too late to cancel", task.ID, "delivering its result", branch} {
				if !strings.Contains(reply, want) {
					t.Errorf("the cancel's reply lacks %q:\n%s", want, reply)
				}
			}
			release()
			done := h.waitState(task.ID, agentbot.StateSucceeded)
			if done.Result.Branch != branch || done.Result.PRNumber == 0 {
				t.Errorf("result %+v", done.Result)
			}
			if prs := h.gh.PullRequests(testRepo); len(prs) != 1 {
				t.Errorf("%d pull requests, want 1", len(prs))
			}
		})
	}
}

// cancelAtWait cancels the task (as `/agent cancel` would) once its run's
// events have ended, before the dispatcher waits for its exit: the cancel
// is accepted, but the run has finished on its own.
type cancelAtWait struct {
	runner.Launcher
	h      *harness
	target func() *agentbot.Task
}

func (c *cancelAtWait) Start(ctx context.Context, job runner.Job) (runner.Run, error) {
	run, err := c.Launcher.Start(ctx, job)
	if err != nil {
		return nil, err
	}
	return &cancelAtWaitRun{Run: run, c: c}, nil
}

type cancelAtWaitRun struct {
	runner.Run
	c    *cancelAtWait
	once sync.Once
}

func (r *cancelAtWaitRun) Wait(ctx context.Context) (runner.Exit, error) {
	r.once.Do(func() {
		task, err := r.c.h.store.Get(ctx, r.c.target().ID)
		if err != nil {
			r.c.h.t.Errorf("get task: %v", err)
			return
		}
		if ok, err := r.c.h.d.cancelOne(ctx, task, "alice"); !ok || err != nil {
			r.c.h.t.Errorf("cancelOne = %v, %v; want the worker asked", ok, err)
		}
	})
	return r.Run.Wait(ctx)
}

// TestCancelAsTheAgentFinishesIsSaid: a cancel the worker accepted just as
// the run ended on its own does not stop the delivery, and the task's
// comment, where that cancel's answer was left, says it came too late.
func TestCancelAsTheAgentFinishesIsSaid(t *testing.T) {
	h := newHarness(t)
	h.store.Close()
	var task *agentbot.Task
	h.wrap = func(l runner.Launcher) runner.Launcher {
		return &cancelAtWait{Launcher: l, h: h, target: func() *agentbot.Task { return task }}
	}
	h.open()
	task = h.enqueue(h.issue(110, "Finish first", "scripted: write first.txt f"))
	h.start()
	done := h.waitState(task.ID, agentbot.StateSucceeded)
	if prs := h.gh.PullRequests(testRepo); len(prs) != 1 {
		t.Errorf("%d pull requests, want 1", len(prs))
	}
	if body := h.comment(done).Body; !strings.Contains(body, "@alice asked to cancel just as the agent finished") {
		t.Errorf("the final comment does not say the cancel came too late:\n%s", body)
	}
}
