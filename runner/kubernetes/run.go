package kubernetes

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"time"

	extv1beta1 "sigs.k8s.io/agent-sandbox/extensions/api/v1beta1"

	"github.com/agentbot/agentbot/runner"
)

// maxReattaches bounds how often one run resumes a broken exec stream
// before it reports the run lost.
const maxReattaches = 5

// maxEventLine bounds one line of agent-runner output; longer lines are
// dropped (agent-runner truncates its own log lines far below this).
const maxEventLine = 4 << 20

// run is one agent-runner process in a sandbox pod, streamed over exec.
type run struct {
	l      *Launcher
	taskID string
	claim  string
	pod    string
	log    *slog.Logger
	ctx    context.Context
	cancel context.CancelFunc

	events chan runner.Event
	done   chan struct{}

	mu       sync.Mutex
	stopped  bool
	failure  error // set by the claim watcher
	exitCode int   // valid after done
	err      error // valid after done
}

var _ runner.Run = (*run)(nil)

func (l *Launcher) newRun(ctx context.Context, taskID, claim, pod string, log *slog.Logger) *run {
	rctx, cancel := context.WithCancel(ctx)
	return &run{
		l:      l,
		taskID: taskID,
		claim:  claim,
		pod:    pod,
		log:    log.With("pod", pod),
		ctx:    rctx,
		cancel: cancel,
		events: make(chan runner.Event, 64),
		done:   make(chan struct{}),
	}
}

// Events implements runner.Run.
func (r *run) Events() <-chan runner.Event { return r.events }

// Wait implements runner.Run.
func (r *run) Wait(ctx context.Context) (int, error) {
	select {
	case <-r.done:
		return r.exitCode, r.err
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// Stop implements runner.Run: it deletes the claim, which ends the pod and
// with it agent-runner and its agent, and ends the stream.
func (r *run) Stop(ctx context.Context) error {
	r.mu.Lock()
	r.stopped = true
	r.mu.Unlock()
	err := r.l.deleteClaim(ctx, r.claim)
	r.cancel()
	return err
}

// Bundle implements runner.Run.
func (r *run) Bundle(ctx context.Context, w io.Writer) error {
	stderr := &tailBuffer{max: 4096}
	code, err := r.l.exec.Exec(ctx, ExecRequest{
		Namespace: r.l.cfg.Namespace,
		Pod:       r.pod,
		Container: r.l.cfg.Container,
		Command:   r.l.bundleCommand(),
		Stdout:    w,
		Stderr:    stderr,
	})
	if err != nil {
		r.l.metrics.execErrors.WithLabelValues("bundle").Inc()
		return fmt.Errorf("bundle from claim %s: %w", r.l.claimRef(r.claim), err)
	}
	if code != 0 {
		return fmt.Errorf("bundle from claim %s: agent-runner bundle exited %d: %s", r.l.claimRef(r.claim), code, stderr.String())
	}
	return nil
}

// loop runs command (then, after a broken stream, `agent-runner attach`)
// until agent-runner's output ends, and records how it ended. It owns the
// claim watcher goroutine and waits for it.
func (r *run) loop(command []string, stdin []byte, lastSeq int) {
	defer close(r.done)
	defer close(r.events)
	defer r.cancel()

	execCtx, cancelExec := context.WithCancel(r.ctx)
	defer cancelExec()
	watchCtx, stopWatch := context.WithCancel(r.ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		r.watchSandbox(watchCtx, cancelExec)
	}()
	defer wg.Wait()
	defer stopWatch()

	out := &eventWriter{ctx: r.ctx, events: r.events, lastSeq: lastSeq, log: r.log}
	name := command[1]
	job := stdin
	rerun := false
	for attempt := 0; ; attempt++ {
		stderr := &tailBuffer{max: 4096}
		var in io.Reader
		if stdin != nil {
			in = bytes.NewReader(stdin)
		}
		code, err := r.l.exec.Exec(execCtx, ExecRequest{
			Namespace: r.l.cfg.Namespace,
			Pod:       r.pod,
			Container: r.l.cfg.Container,
			Command:   command,
			Stdin:     in,
			Stdout:    out,
			Stderr:    stderr,
		})
		out.flush()
		if tail := stderr.String(); tail != "" {
			r.l.keepStderr(r.taskID, tail)
		}
		stopped, failure := r.state()
		switch {
		case stopped:
			r.finish(runner.ExitCancelled, nil)
			return
		case failure != nil && (err != nil || code != runner.ExitOK):
			r.finish(code, failure)
			return
		case err == nil && name == "attach" && code == runner.ExitInternal && strings.Contains(stderr.String(), "runner is gone"):
			if job != nil && out.lastSeq == 0 && !rerun {
				// The first stream broke before agent-runner ever started:
				// start it now, once.
				r.log.Warn("agent-runner never started; starting it again")
				rerun, name, command, stdin = true, "run", r.l.runCommand(), job
				continue
			}
			r.finish(code, fmt.Errorf("claim %s: %w: %s", r.l.claimRef(r.claim), runner.ErrGone, strings.TrimSpace(stderr.String())))
			return
		case err == nil && code >= 128:
			// Killed by a signal: most likely the pod died under it. Give
			// the controller a moment to say so, for a better error.
			r.finish(code, r.l.awaitSandboxFailure(r.ctx, r.claim, 5*time.Second))
			return
		case err == nil:
			if code != runner.ExitOK {
				r.log.Info("agent-runner exited", "exit_code", code, "stderr", strings.TrimSpace(stderr.String()))
			}
			r.finish(code, nil)
			return
		}

		r.l.metrics.execErrors.WithLabelValues(name).Inc()
		if r.ctx.Err() != nil {
			r.finish(0, fmt.Errorf("claim %s: stream detached: %w", r.l.claimRef(r.claim), r.ctx.Err()))
			return
		}
		if attempt >= maxReattaches {
			r.finish(0, fmt.Errorf("claim %s: exec stream lost %d times, last: %w", r.l.claimRef(r.claim), attempt+1, err))
			return
		}
		r.log.Warn("exec stream broke; re-attaching", "err", err, "last_seq", out.lastSeq)
		select {
		case <-time.After(time.Duration(1<<attempt) * 250 * time.Millisecond):
		case <-execCtx.Done():
			// Stopped, failed or detached while backing off: the next
			// round reports which.
		}
		r.l.metrics.reattaches.Inc()
		name = "attach"
		command = r.l.attachCommand(out.lastSeq)
		stdin = nil
	}
}

func (r *run) state() (stopped bool, failure error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.stopped, r.failure
}

func (r *run) finish(code int, err error) {
	r.exitCode, r.err = code, err
	if err != nil {
		r.log.Warn("run ended", "exit_code", code, "err", err)
	}
}

// watchSandbox watches the claim while agent-runner runs. When the sandbox
// fails (its pod failed or finished, the claim expired or was deleted) it
// records why and cancels the exec, because a dead pod's exec stream does
// not always end by itself.
func (r *run) watchSandbox(ctx context.Context, cancelExec context.CancelFunc) {
	_, err := r.l.watchClaim(ctx, r.claim, func(c *extv1beta1.SandboxClaim) (bool, error) {
		if c == nil {
			return false, &SandboxError{Claim: r.l.claimRef(r.claim), Pod: r.pod, Reason: reasonClaimDeleted, Message: "the claim was deleted while agent-runner ran"}
		}
		if serr := r.l.sandboxFailure(ctx, c); serr != nil {
			return false, serr
		}
		return false, nil
	})
	var serr *SandboxError
	if !errors.As(err, &serr) {
		return
	}
	r.mu.Lock()
	stopped := r.stopped
	r.failure = serr
	r.mu.Unlock()
	if !stopped {
		r.l.countFailure(serr)
		r.log.Warn("sandbox failed", "reason", serr.Reason, "err", serr)
	}
	cancelExec()
}

// eventWriter turns agent-runner's stdout into events. It drops events it
// has delivered already (seq <= lastSeq), so a resumed stream does not
// repeat any.
type eventWriter struct {
	ctx     context.Context
	events  chan<- runner.Event
	lastSeq int
	log     *slog.Logger
	buf     []byte
	skip    bool // inside an over-long line
}

func (w *eventWriter) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			if !w.skip {
				w.buf = append(w.buf, p...)
				if len(w.buf) > maxEventLine {
					w.log.Warn("dropping over-long agent-runner output line")
					w.buf, w.skip = w.buf[:0], true
				}
			}
			break
		}
		switch {
		case w.skip:
		case len(w.buf)+i > maxEventLine:
			w.log.Warn("dropping over-long agent-runner output line")
		default:
			w.buf = append(w.buf, p[:i]...)
			if err := w.line(w.buf); err != nil {
				return 0, err
			}
		}
		w.buf, w.skip = w.buf[:0], false
		p = p[i+1:]
	}
	return n, nil
}

// flush handles a last line without a newline, at the end of a stream.
func (w *eventWriter) flush() {
	if len(w.buf) > 0 && !w.skip {
		_ = w.line(w.buf)
	}
	w.buf, w.skip = w.buf[:0], false
}

func (w *eventWriter) line(b []byte) error {
	b = bytes.TrimSpace(b)
	if len(b) == 0 {
		return nil
	}
	var ev runner.Event
	if err := json.Unmarshal(b, &ev); err != nil || ev.Type == "" {
		w.log.Warn("ignoring agent-runner output that is not an event", "line", truncate(string(b), 200))
		return nil
	}
	if ev.Seq != 0 && ev.Seq <= w.lastSeq {
		return nil
	}
	select {
	case w.events <- ev:
	case <-w.ctx.Done():
		return w.ctx.Err()
	}
	if ev.Seq > w.lastSeq {
		w.lastSeq = ev.Seq
	}
	return nil
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	b   []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if len(t.b) > t.max {
		t.b = append(t.b[:0], t.b[len(t.b)-t.max:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.b)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
