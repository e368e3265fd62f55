package dispatch

import (
	"context"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agentbot/agentbot"
	"github.com/agentbot/agentbot/github"
	"github.com/agentbot/agentbot/runner"
)

func TestTimeLimit(t *testing.T) {
	d := &Dispatcher{opts: Options{TimeLimit: 45 * time.Minute, MaxTimeLimit: 2 * time.Hour}}
	cases := []struct {
		name     string
		repo     time.Duration
		want     time.Duration
		wantNote bool
	}{
		{"repository sets none: operator default", 0, 45 * time.Minute, false},
		{"repository's file without time_limit: operator default", github.DefaultSettings().TimeLimit, 45 * time.Minute, false},
		{"repository sets exactly 30m", 30 * time.Minute, 30 * time.Minute, false},
		{"repository's own limit", 90 * time.Minute, 90 * time.Minute, false},
		{"at the ceiling", 2 * time.Hour, 2 * time.Hour, false},
		{"above the ceiling is clamped", 6 * time.Hour, 2 * time.Hour, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, note := d.timeLimit(github.Settings{TimeLimit: tc.repo})
			if got != tc.want || (note != "") != tc.wantNote {
				t.Fatalf("timeLimit(%s) = %s, %q; want %s, note %v", tc.repo, got, note, tc.want, tc.wantNote)
			}
			if tc.wantNote && (!strings.Contains(note, "6h0m0s") || !strings.Contains(note, "2h0m0s")) {
				t.Errorf("note does not name both limits: %q", note)
			}
		})
	}
}

func TestNewRefusesDefaultAboveCeiling(t *testing.T) {
	h := newHarness(t)
	_, err := New(Options{Store: h.store, GitHub: h.client, Launcher: h.launcher, Logs: h.logs,
		TimeLimit: 3 * time.Hour, MaxTimeLimit: time.Hour})
	if err == nil || !strings.Contains(err.Error(), "MaxTimeLimit") {
		t.Fatalf("New = %v, want a MaxTimeLimit error", err)
	}
}

// jobRecorder keeps the jobs the dispatcher starts.
type jobRecorder struct {
	runner.Launcher
	mu   sync.Mutex
	jobs []runner.Job
}

func (j *jobRecorder) Start(ctx context.Context, job runner.Job) (runner.Run, error) {
	j.mu.Lock()
	j.jobs = append(j.jobs, job)
	j.mu.Unlock()
	return j.Launcher.Start(ctx, job)
}

// TestTimeLimitClampedAndSaid: a repository asking for more time than the
// operator allows gets the ceiling, and its comment says so.
func TestTimeLimitClampedAndSaid(t *testing.T) {
	h := newHarness(t)
	h.store.Close()
	rec := &jobRecorder{}
	h.wrap = func(l runner.Launcher) runner.Launcher { rec.Launcher = l; return rec }
	h.tweak = func(o *Options) { o.TimeLimit, o.MaxTimeLimit = 20*time.Minute, time.Hour }
	h.open()
	h.gh.SetFile(testRepo, github.SettingsPath, "agent: command\ntime_limit: 6h\n")
	h.start()
	task := h.enqueue(h.issue(82, "Long one", "scripted: write long.txt x"))
	done := h.waitState(task.ID, agentbot.StateSucceeded)
	rec.mu.Lock()
	jobs := rec.jobs
	rec.mu.Unlock()
	if len(jobs) != 1 || time.Duration(jobs[0].TimeLimit) != time.Hour {
		t.Fatalf("jobs %d, time limit %v; want one job limited to 1h", len(jobs), jobs)
	}
	if c := h.comment(done); !strings.Contains(c.Body, "time_limit of 6h0m0s is above this agentbot's maximum") || !strings.Contains(c.Body, "at most 1h0m0s") {
		t.Errorf("final comment does not say the limit was cut:\n%s", c.Body)
	}

	// Without a time_limit the operator's default applies.
	h.gh.SetFile(testRepo, github.SettingsPath, "agent: command\n")
	task = h.enqueue(h.issue(90, "Default one", "scripted: write default.txt x"))
	done = h.waitState(task.ID, agentbot.StateSucceeded)
	rec.mu.Lock()
	jobs = rec.jobs
	rec.mu.Unlock()
	if len(jobs) != 2 || time.Duration(jobs[1].TimeLimit) != 20*time.Minute {
		t.Fatalf("second job's time limit %v, want 20m", time.Duration(jobs[len(jobs)-1].TimeLimit))
	}
	if c := h.comment(done); strings.Contains(c.Body, "maximum") {
		t.Errorf("an unclamped task's comment mentions the maximum:\n%s", c.Body)
	}
}

func TestBackstop(t *testing.T) {
	start := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	cases := []struct {
		name    string
		started time.Time
		now     time.Time
		want    time.Duration
	}{
		{"fresh attempt", start, start, 30*time.Minute + backstopGrace},
		{"re-attached 10m in", start, start.Add(10 * time.Minute), 20*time.Minute + backstopGrace},
		{"re-attached past the limit", start, start.Add(3 * time.Hour), 0},
		{"no start recorded", time.Time{}, start, 30*time.Minute + backstopGrace},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d := &Dispatcher{now: func() time.Time { return tc.now }}
			got := d.backstop(&agentbot.Task{StartedAt: tc.started}, runner.Duration(30*time.Minute))
			if got != tc.want {
				t.Fatalf("backstop = %s, want %s", got, tc.want)
			}
		})
	}
}

// attachHung re-attaches to a run that never ends on its own (a hung
// sandbox): only Stop ends it.
type attachHung struct{ runner.Launcher }

func (a attachHung) Attach(context.Context, string, int) (runner.Run, error) {
	return &hungRun{events: make(chan runner.Event), stopped: make(chan struct{})}, nil
}

type hungRun struct {
	events  chan runner.Event
	stopped chan struct{}
	once    sync.Once
}

func (r *hungRun) Events() <-chan runner.Event { return r.events }
func (r *hungRun) Wait(ctx context.Context) (runner.Exit, error) {
	select {
	case <-r.stopped:
		return runner.Exit{Code: runner.ExitCancelled}, nil
	case <-ctx.Done():
		return runner.Exit{Code: runner.ExitInternal}, ctx.Err()
	}
}
func (r *hungRun) Bundle(context.Context, io.Writer) error { return runner.ErrGone }
func (r *hungRun) Detach()                                 {}
func (r *hungRun) Stop(context.Context) error {
	r.once.Do(func() { close(r.stopped); close(r.events) })
	return nil
}

// TestBackstopCountsFromAttemptStart: a hung run re-attached after a restart,
// whose attempt started longer ago than its time limit, is stopped at once
// as out of time instead of getting the whole limit again.
func TestBackstopCountsFromAttemptStart(t *testing.T) {
	h := newHarness(t)
	h.store.Close()
	h.wrap = func(l runner.Launcher) runner.Launcher { return attachHung{l} }
	h.open()
	ctx := context.Background()
	task := h.enqueue(h.issue(84, "Hung", "scripted: write hung.txt h"))
	if _, err := h.store.Transition(ctx, task.ID, agentbot.StateQueued, agentbot.StateRunning, func(s *agentbot.Task) error {
		s.Attempt, s.Phase = 1, runner.PhaseAgent
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.store.Update(ctx, task.ID, func(s *agentbot.Task) error {
		s.StartedAt = time.Now().Add(-3 * time.Hour)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	h.start()
	done := h.waitState(task.ID, agentbot.StateFailed)
	if !strings.Contains(done.Result.Error, "time limit") || done.Result.FailedPhase != runner.PhaseAgent {
		t.Fatalf("result %+v, want a time-limit failure in the agent phase", done.Result)
	}
}
