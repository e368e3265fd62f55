package local

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/agentbot/agentbot/runner"
)

// gateJob is a job whose fake agent-runner blocks in the agent phase until
// the returned gate file exists.
func gateJob(t *testing.T, taskID string) (runner.Job, string) {
	gate := filepath.Join(t.TempDir(), "gate")
	return runner.Job{Version: 1, TaskID: taskID, Prompt: runner.JobPrompt{Instructions: "gate", Body: gate}}, gate
}

func openGate(t *testing.T, gate string) {
	t.Helper()
	if err := os.WriteFile(gate, nil, 0o600); err != nil {
		t.Fatal(err)
	}
}

// next returns r's next event, failing after a deadline.
func next(t *testing.T, r runner.Run) runner.Event {
	t.Helper()
	select {
	case ev, ok := <-r.Events():
		if !ok {
			t.Fatal("events ended early")
		}
		return ev
	case <-time.After(30 * time.Second):
		t.Fatal("no event within 30s")
	}
	panic("unreachable")
}

// drained fails unless r's events are closed: it reads what is buffered and
// must then find the channel closed, never empty and open.
func drained(t *testing.T, r runner.Run) {
	t.Helper()
	for {
		select {
		case _, ok := <-r.Events():
			if !ok {
				return
			}
		default:
			t.Fatal("events are still open")
		}
	}
}

// ended is a context that has ended: Wait must answer it from what it
// knows, without blocking.
func ended() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}

// followGoroutines counts the goroutines following children (the tests of
// this package do not run in parallel, and every launcher is closed when its
// test ends) and returns their stacks.
func followGoroutines() (int, string) {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	var found []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "runner/local.(*Run).follow") {
			found = append(found, g)
		}
	}
	return len(found), strings.Join(found, "\n\n")
}

func TestStartContextBoundsOnlyTheStart(t *testing.T) {
	l := newLauncher(t, IsolationNone)
	if _, err := l.Start(ended(), runner.Job{Version: 1, TaskID: "late", Prompt: runner.JobPrompt{Instructions: "ok"}}); !errors.Is(err, context.Canceled) {
		t.Fatalf("Start with an ended context = %v; want context.Canceled", err)
	}
	job, gate := gateJob(t, "s1")
	ctx, cancel := context.WithCancel(context.Background())
	r, err := l.Start(ctx, job)
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	// The gate opens only after the context has ended; the run must still
	// get through it.
	openGate(t, gate)
	var phases []string
	for ev := range r.Events() {
		phases = append(phases, ev.Phase)
	}
	exit, err := r.Wait(context.Background())
	if err != nil || exit.Code != runner.ExitOK {
		t.Fatalf("Wait = %+v, %v; want exit 0", exit, err)
	}
	if got := strings.Join(phases, ","); got != "cloning,agent,committing" {
		t.Errorf("phases %s; want cloning,agent,committing", got)
	}
}

func TestDetachLeavesTheChildRunning(t *testing.T) {
	l := newLauncher(t, IsolationNone)
	job, gate := gateJob(t, "d1")
	r, err := l.Start(context.Background(), job)
	if err != nil {
		t.Fatal(err)
	}
	next(t, r)
	agent := next(t, r)
	if agent.Phase != runner.PhaseAgent {
		t.Fatalf("second event %+v; want the agent phase", agent)
	}
	r.Detach()
	drained(t, r)
	if _, err := r.Wait(ended()); !errors.Is(err, runner.ErrDetached) {
		t.Fatalf("Wait after Detach = %v; want ErrDetached at once", err)
	}
	pid := r.(*Run).pid
	if err := syscall.Kill(pid, 0); err != nil || r.(*Run).exited() {
		t.Fatalf("agent-runner %d did not survive Detach: %v", pid, err)
	}

	a, err := l.Attach(context.Background(), job.TaskID, agent.Seq)
	if err != nil {
		t.Fatal(err)
	}
	openGate(t, gate)
	var rest []string
	for ev := range a.Events() {
		rest = append(rest, ev.Phase)
	}
	exit, err := a.Wait(context.Background())
	if err != nil || exit.Code != runner.ExitOK {
		t.Fatalf("attached Wait = %+v, %v", exit, err)
	}
	if strings.Join(rest, ",") != runner.PhaseCommitting {
		t.Errorf("attached events %v; want only the committing phase", rest)
	}
	if tail := exit.StderrTail; len(tail) == 0 || tail[len(tail)-1] != "gate passed" {
		t.Errorf("attached Exit.StderrTail = %q; want the run's stderr", tail)
	}
	if _, err := r.Wait(context.Background()); !errors.Is(err, runner.ErrDetached) {
		t.Errorf("detached run's Wait = %v once the run ended; want ErrDetached", err)
	}
}

func TestCloseStopsRunsAndWaits(t *testing.T) {
	l := newLauncher(t, IsolationNone)
	job, _ := gateJob(t, "c1")
	r, err := l.Start(context.Background(), job)
	if err != nil {
		t.Fatal(err)
	}
	first := next(t, r)
	a, err := l.Attach(context.Background(), job.TaskID, first.Seq)
	if err != nil {
		t.Fatal(err)
	}
	if ev := next(t, a); ev.Phase != runner.PhaseAgent {
		t.Fatalf("attached event %+v; want the agent phase", ev)
	}
	if n, _ := followGoroutines(); n != 2 {
		t.Fatalf("%d follow goroutines for a run and an attach; the count below would prove nothing", n)
	}
	closed := make(chan error, 1)
	go func() { closed <- l.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Close did not return")
	}
	if n, stacks := followGoroutines(); n != 0 {
		t.Fatalf("%d follow goroutines outlived Close:\n%s", n, stacks)
	}
	for name, run := range map[string]runner.Run{"run": r, "attach": a} {
		drained(t, run)
		if exit, err := run.Wait(ended()); err != nil || exit.Code != runner.ExitCancelled {
			t.Errorf("%s: Wait after Close = %+v, %v; want cancelled at once", name, exit, err)
		}
		if pid := run.(*Run).pid; syscall.Kill(pid, 0) == nil {
			t.Errorf("%s: process %d outlived Close", name, pid)
		}
	}
	if _, err := l.Start(context.Background(), runner.Job{Version: 1, TaskID: "c2", Prompt: runner.JobPrompt{Instructions: "ok"}}); !errors.Is(err, errClosed) {
		t.Errorf("Start after Close = %v; want errClosed", err)
	}
}
