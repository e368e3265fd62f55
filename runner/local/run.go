package local

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/agentbot/agentbot/runner"
)

// Run is one agent-runner child (or an `agent-runner attach` following one).
type Run struct {
	l      *Launcher
	taskID string
	cmd    *exec.Cmd
	pid    int
	events chan runner.Event
	// detach closes on Detach; done closes once the child is reaped and
	// the exit recorded (under mu, so Detach can tell whether it came
	// first).
	detach chan struct{}
	done   chan struct{}
	// stopTarget is the run Stop kills (an attach follows another run).
	stopTarget *Run
	// box is the run's sandbox (nil for an attach or isolation none).
	box *taskSandbox

	// sendMu orders deliveries with the closing of events: Detach closes
	// the channel while the follow goroutine still reads the child's
	// output.
	sendMu       sync.Mutex
	eventsClosed bool

	mu       sync.Mutex
	stopped  bool
	detached bool
	exit     runner.Exit
	waitErr  error
}

var _ runner.Run = (*Run)(nil)

func newRun(l *Launcher, taskID string, cmd *exec.Cmd) *Run {
	return &Run{
		l:      l,
		taskID: taskID,
		cmd:    cmd,
		pid:    cmd.Process.Pid,
		events: make(chan runner.Event, 256),
		detach: make(chan struct{}),
		done:   make(chan struct{}),
	}
}

// follow reads events until stdout ends, then reaps the child. It owns the
// child; done closes when it is finished. The launcher's WaitGroup owns
// follow.
func (r *Run) follow(stdout io.Reader) {
	sc := bufio.NewScanner(stdout)
	sc.Buffer(make([]byte, 64*1024), 16*1024*1024)
	for sc.Scan() {
		line := sc.Bytes()
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		var ev runner.Event
		if err := json.Unmarshal(line, &ev); err != nil {
			r.l.log.Warn("agent-runner wrote a line that is not an event", "task_id", r.taskID, "err", err)
			continue
		}
		r.deliver(ev)
	}
	if err := sc.Err(); err != nil {
		r.l.log.Warn("reading agent-runner output", "task_id", r.taskID, "err", err)
		// Drain so the child is not blocked on a full pipe.
		_, _ = io.Copy(io.Discard, stdout)
	}
	r.closeEvents()
	exit, waitErr := r.reap()
	r.mu.Lock()
	r.exit, r.waitErr = exit, waitErr
	close(r.done)
	r.mu.Unlock()
}

// deliver passes ev on, unless the run is detached or the launcher closed:
// then nobody reads any more, and the output is drained so that the child
// is not blocked on a full pipe.
func (r *Run) deliver(ev runner.Event) {
	r.sendMu.Lock()
	defer r.sendMu.Unlock()
	if r.eventsClosed {
		return
	}
	select {
	case r.events <- ev:
	case <-r.detach:
	case <-r.l.closed:
	}
}

func (r *Run) closeEvents() {
	r.sendMu.Lock()
	defer r.sendMu.Unlock()
	if !r.eventsClosed {
		r.eventsClosed = true
		close(r.events)
	}
}

// reap waits for the child, kills what the agent left behind and makes the
// run's exit.
func (r *Run) reap() (runner.Exit, error) {
	err := r.cmd.Wait()
	exit := runner.Exit{Code: runner.ExitOK}
	var waitErr error
	var exitErr *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &exitErr):
		exit.Code = exitErr.ExitCode()
		stopped := r.isStopped() || (r.stopTarget != nil && r.stopTarget.isStopped())
		switch {
		case stopped:
			// Killed by Stop (bwrap reports its child's death as 1).
			exit.Code = runner.ExitCancelled
		case exit.Code < 0: // killed by someone else's signal
			exit.Code = runner.ExitInternal
		}
	default:
		exit.Code = runner.ExitInternal
		waitErr = fmt.Errorf("local launcher: task %s: wait for agent-runner: %w", r.taskID, err)
	}
	// Anything the agent left behind goes with it. agent-runner puts the
	// agent in a process group of its own, which a SIGKILL of agent-runner
	// (a hung runner after the grace, Close) does not reach, but the
	// agent's processes stay in agent-runner's session unless they escape
	// with setsid. Inside bwrap the namespace's processes also die a moment
	// after bwrap itself.
	_ = syscall.Kill(-r.pid, syscall.SIGKILL)
	for i := 0; i < 200 && killSession(r.pid, ""); i++ {
		time.Sleep(10 * time.Millisecond)
	}
	// agent-runner's stderr lies next to the workspace, out of the
	// sandbox's reach; an attach reports the stderr of the run it follows.
	b, err := os.ReadFile(filepath.Join(r.l.taskDir(r.taskID), "agent-runner.stderr"))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		r.l.log.Warn("cannot read agent-runner's stderr", "task_id", r.taskID, "err", err)
	}
	exit.StderrTail = runner.TailLines(string(b), runner.StderrTailLines)
	if r.box != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		hit, err := r.box.finish(ctx)
		if err != nil {
			r.l.log.Warn("cannot remove the sandbox", "task_id", r.taskID, "err", err)
		}
		exit.LimitHit = hit
		if hit != "" && exit.Code == runner.ExitOK {
			exit.Code = runner.ExitAgent
		}
	}
	return exit, waitErr
}

// killSession SIGKILLs every live process of session sid (with within set,
// only those whose working directory is under it) and reports whether it
// found any.
func killSession(sid int, within string) bool {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return false
	}
	found := false
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid pgrp session ...; comm may hold spaces
		// and parens.
		i := bytes.LastIndexByte(b, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(b[i+1:]))
		if len(f) < 4 || f[0] == "Z" || f[0] == "X" || f[3] != strconv.Itoa(sid) {
			continue
		}
		if within != "" {
			cwd, err := os.Readlink(filepath.Join("/proc", e.Name(), "cwd"))
			if err != nil || (cwd != within && !strings.HasPrefix(cwd, within+string(filepath.Separator))) {
				continue
			}
		}
		found = true
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	return found
}

func (r *Run) exited() bool {
	select {
	case <-r.done:
		return true
	default:
		return false
	}
}

func (r *Run) isStopped() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.stopped
}

// Events implements runner.Run. The caller must drain it until it is closed.
func (r *Run) Events() <-chan runner.Event { return r.events }

// Wait implements runner.Run. A run that has ended answers even when ctx
// has ended too.
func (r *Run) Wait(ctx context.Context) (runner.Exit, error) {
	select {
	case <-r.done:
	case <-r.detach:
	default:
		select {
		case <-r.done:
		case <-r.detach:
		case <-ctx.Done():
			return runner.Exit{Code: -1}, ctx.Err()
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.detached {
		return runner.Exit{Code: -1}, fmt.Errorf("local launcher: task %s: %w", r.taskID, runner.ErrDetached)
	}
	return r.exit, r.waitErr
}

// Detach implements runner.Run: the events stop and Wait returns
// runner.ErrDetached, while the child goes on (its output drained) until it
// exits, is stopped, or the launcher closes. Attach follows it again.
func (r *Run) Detach() {
	r.mu.Lock()
	if r.detached || r.exited() {
		r.mu.Unlock()
		return
	}
	r.detached = true
	close(r.detach)
	r.mu.Unlock()
	r.closeEvents()
}

// Bundle implements runner.Run with `agent-runner bundle`.
func (r *Run) Bundle(ctx context.Context, w io.Writer) error {
	var stderr strings.Builder
	cmd := r.l.hostCommand(r.taskID, "bundle")
	cmd.Stdout = w
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("local launcher: task %s: agent-runner bundle: %w", r.taskID, err)
	}
	stop := context.AfterFunc(ctx, func() { _ = cmd.Process.Kill() })
	defer stop()
	if err := cmd.Wait(); err != nil {
		return fmt.Errorf("local launcher: task %s: agent-runner bundle: %w: %s", r.taskID, err, strings.TrimSpace(stderr.String()))
	}
	return nil
}

// Stop implements runner.Run: SIGTERM to agent-runner's process group
// (agent-runner then kills the agent's group and exits), SIGKILL after the
// grace period, and it returns once the child has exited and nothing is left
// in its session.
func (r *Run) Stop(ctx context.Context) error {
	target := r
	if r.stopTarget != nil {
		target = r.stopTarget
	}
	target.mu.Lock()
	target.stopped = true
	target.mu.Unlock()
	if target.exited() {
		return nil
	}
	_ = syscall.Kill(-target.pid, syscall.SIGTERM)
	timer := time.NewTimer(target.l.opts.StopGrace)
	defer timer.Stop()
	select {
	case <-target.done:
		return nil
	case <-timer.C:
	case <-ctx.Done():
	}
	_ = syscall.Kill(-target.pid, syscall.SIGKILL)
	select {
	case <-target.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("local launcher: task %s: stop: %w", r.taskID, ctx.Err())
	}
}
