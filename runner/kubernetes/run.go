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

// run is one agent-runner process in a sandbox pod, streamed over exec. Its
// loop goroutine belongs to the launcher, which waits for it in Close.
type run struct {
	l      *Launcher
	taskID string
	claim  string
	pod    string
	log    *slog.Logger
	// cancel ends the loop's context: Stop, Detach and (through the
	// launcher's lifetime context) Close stop following with it.
	cancel context.CancelFunc

	events chan runner.Event
	done   chan struct{}

	mu       sync.Mutex
	stopped  bool
	detached bool
	failure  error       // set by the claim watcher
	exit     runner.Exit // valid after done
	err      error       // valid after done
}

var _ runner.Run = (*run)(nil)

// follow starts the loop of a new run in the launcher's lifetime context,
// not the caller's: a run lives until it ends, Stop, Detach or Close.
func (l *Launcher) follow(taskID, claim, pod string, log *slog.Logger, command []string, stdin []byte, fromSeq int) (*run, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closing {
		return nil, fmt.Errorf("task %s: claim %s: %w", taskID, l.claimRef(claim), errClosed)
	}
	ctx, cancel := context.WithCancel(l.life)
	r := &run{
		l:      l,
		taskID: taskID,
		claim:  claim,
		pod:    pod,
		log:    log.With("pod", pod),
		cancel: cancel,
		events: make(chan runner.Event, 64),
		done:   make(chan struct{}),
	}
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		r.loop(ctx, command, stdin, fromSeq)
	}()
	return r, nil
}

// Events implements runner.Run.
func (r *run) Events() <-chan runner.Event { return r.events }

// Wait implements runner.Run. A run that has ended answers even when ctx
// has ended too.
func (r *run) Wait(ctx context.Context) (runner.Exit, error) {
	select {
	case <-r.done:
	default:
		select {
		case <-r.done:
		case <-ctx.Done():
			return runner.Exit{Code: -1}, ctx.Err()
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.detached {
		return runner.Exit{Code: -1}, fmt.Errorf("claim %s: %w", r.l.claimRef(r.claim), runner.ErrDetached)
	}
	return r.exit, r.err
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

// Detach implements runner.Run: it ends the exec stream and returns when
// the loop has, leaving the claim, its pod and agent-runner running.
func (r *run) Detach() {
	r.mu.Lock()
	select {
	case <-r.done:
		r.mu.Unlock()
		return
	default:
	}
	r.detached = true
	r.mu.Unlock()
	r.cancel()
	<-r.done
}

// bundleTries bounds the exec streams Bundle sets up: one that fails
// before any byte of the bundle arrived (the API server timed out reaching
// the node, as a hundred sandboxes on a busy control plane showed) is
// tried again, since agent-runner bundle changes nothing.
const bundleTries = 3

// Bundle implements runner.Run.
func (r *run) Bundle(ctx context.Context, w io.Writer) error {
	stderr := &tailBuffer{max: 4096}
	out := &countingWriter{w: w}
	var code int
	var err error
	for try := 1; ; try++ {
		code, err = r.l.exec.Exec(ctx, ExecRequest{
			Namespace: r.l.cfg.Namespace,
			Pod:       r.pod,
			Container: r.l.cfg.Container,
			Command:   r.l.bundleCommand(),
			Stdout:    out,
			Stderr:    stderr,
		})
		if err == nil {
			break
		}
		r.l.metrics.execErrors.WithLabelValues("bundle").Inc()
		if out.n > 0 || try == bundleTries || ctx.Err() != nil {
			return fmt.Errorf("bundle from claim %s: %w", r.l.claimRef(r.claim), err)
		}
		r.log.Warn("bundle exec failed before any output; trying again", "err", err, "try", try)
		select {
		case <-time.After(time.Duration(try) * 500 * time.Millisecond):
		case <-ctx.Done():
			return fmt.Errorf("bundle from claim %s: %w", r.l.claimRef(r.claim), ctx.Err())
		}
	}
	if code != 0 {
		return fmt.Errorf("bundle from claim %s: agent-runner bundle exited %d: %s", r.l.claimRef(r.claim), code, stderr.String())
	}
	return nil
}

// loop runs command (then, after a broken stream, `agent-runner attach`)
// until agent-runner's output ends, and records how it ended. It owns the
// claim watcher goroutine and waits for it.
func (r *run) loop(ctx context.Context, command []string, stdin []byte, lastSeq int) {
	defer close(r.done)
	defer close(r.events)
	defer r.cancel()

	execCtx, cancelExec := context.WithCancel(ctx)
	defer cancelExec()
	defer r.watch(ctx, cancelExec)()

	out := &eventWriter{ctx: ctx, events: r.events, lastSeq: lastSeq, log: r.log}
	var stderrTail string // of the latest exec that wrote any
	finish := func(code int, err error) { r.finish(code, stderrTail, err) }
	name := command[1]
	job := stdin
	rerun := false
	for attempt := 0; ; attempt++ {
		code, stderr, err := r.execOnce(execCtx, command, stdin, out)
		if stderr != "" {
			stderrTail = stderr
		}
		stopped, failure := r.state()
		switch {
		case stopped:
			finish(runner.ExitCancelled, nil)
			return
		case failure != nil && (err != nil || code != runner.ExitOK):
			finish(code, failure)
			return
		case err == nil && name == "attach" && code == runner.ExitInternal && strings.Contains(stderr, "runner is gone"):
			if job != nil && out.lastSeq == 0 && !rerun {
				// The first stream broke before agent-runner ever started:
				// start it now, once.
				r.log.Warn("agent-runner never started; starting it again")
				rerun, name, command, stdin = true, "run", r.l.runCommand(), job
				continue
			}
			finish(code, fmt.Errorf("claim %s: %w: %s", r.l.claimRef(r.claim), runner.ErrGone, strings.TrimSpace(stderr)))
			return
		case err == nil && code >= 128:
			// Killed by a signal: most likely the pod died under it. Give
			// the controller a moment to say so, for a better error.
			finish(code, r.l.awaitSandboxFailure(ctx, r.claim, 5*time.Second))
			return
		case err == nil:
			if code != runner.ExitOK {
				r.log.Info("agent-runner exited", "exit_code", code, "stderr", strings.TrimSpace(stderr))
			}
			finish(code, nil)
			return
		}

		if ctx.Err() != nil {
			// Detach or Close: agent-runner goes on in the pod.
			finish(0, fmt.Errorf("claim %s: %w", r.l.claimRef(r.claim), runner.ErrDetached))
			return
		}
		r.l.metrics.execErrors.WithLabelValues(name).Inc()
		if attempt >= maxReattaches {
			finish(0, fmt.Errorf("claim %s: exec stream lost %d times, last: %w", r.l.claimRef(r.claim), attempt+1, err))
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

// execOnce runs command in the pod, its events going to out, and returns
// its exit code and the tail of its stderr.
func (r *run) execOnce(ctx context.Context, command []string, stdin []byte, out *eventWriter) (int, string, error) {
	stderr := &tailBuffer{max: 4096}
	var in io.Reader
	if stdin != nil {
		in = bytes.NewReader(stdin)
	}
	code, err := r.l.exec.Exec(ctx, ExecRequest{
		Namespace: r.l.cfg.Namespace,
		Pod:       r.pod,
		Container: r.l.cfg.Container,
		Command:   command,
		Stdin:     in,
		Stdout:    out,
		Stderr:    stderr,
	})
	out.flush()
	return code, stderr.String(), err
}

// watch starts the claim watcher; the function it returns stops the
// watcher and waits for it.
func (r *run) watch(ctx context.Context, cancelExec context.CancelFunc) func() {
	ctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		r.watchSandbox(ctx, cancelExec)
	}()
	return func() {
		stop()
		wg.Wait()
	}
}

func (r *run) state() (stopped bool, failure error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.stopped, r.failure
}

func (r *run) finish(code int, stderr string, err error) {
	r.mu.Lock()
	r.exit = runner.Exit{Code: code, StderrTail: runner.TailLines(stderr, runner.StderrTailLines)}
	r.err = err
	r.mu.Unlock()
	if err != nil && !errors.Is(err, runner.ErrDetached) {
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

// countingWriter counts the bytes passed on to w.
type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
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
