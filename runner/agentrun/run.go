// Package agentrun is agent-runner, the program inside every sandbox: it reads
// one runner.Job, clones the repository with the job's read-only token,
// creates or continues the branch, runs the template's init script and the
// coding agent, commits what the agent changed and bundles the new commits —
// writing runner.Events as JSON lines on standard output and to
// DIR/.agentbot/events.jsonl as it goes. Attach replays and follows that file
// for a launcher that lost its connection; WriteBundle hands out the bundle.
// docs/protocol.md describes the protocol for people.
package agentrun

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"syscall"
	"time"

	"github.com/agentbot/agentbot/internal/gitenv"
	"github.com/agentbot/agentbot/runner"
	"github.com/agentbot/agentbot/runner/agent"
)

const (
	// maxJob bounds the job document read from standard input.
	maxJob = 16 << 20
	// afterAgentGrace is the time committing and bundling get on their own
	// once the agent has finished in time: a finished agent's work is not
	// lost because the time limit passes during `git commit`.
	afterAgentGrace = 2 * time.Minute
)

var (
	// ErrCancelled is the cause callers give when they cancel Run's context
	// because agent-runner was told to stop (SIGTERM).
	ErrCancelled = errors.New("agent-runner was cancelled")
	errTimeLimit = errors.New("time limit reached")
)

// Options configure one run of agent-runner.
type Options struct {
	Workspace Workspace
	Stdin     io.Reader
	Stdout    io.Writer
	// Logger receives agent-runner's own diagnostics (not events).
	Logger *slog.Logger
	// Agents names the agent programs.
	Agents agent.Binaries
	// Environ is the environment init and the agent start from, before the
	// job's Env is added; nil means os.Environ().
	Environ []string
	// AgentBwrap, when set, is the bwrap that starts init and the agent in
	// a nested sandbox (see nestedSandbox); empty, they are children of
	// agent-runner.
	AgentBwrap string
	// AgentUser, when set, is the sandbox user agent-runner (the gVisor
	// guest's root) starts init and the agent as, in namespaces of their
	// own made by its agent-init (see nestedSandbox); its git runs as that
	// user too, so the workspace stays the sandbox user's.
	AgentUser *syscall.Credential
}

// Run runs the job read from opts.Stdin and returns agent-runner's exit code
// (runner.Exit*). Cancelling ctx kills whatever runs and ends the run with
// runner.ExitCancelled.
func Run(ctx context.Context, opts Options) int {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ws := opts.Workspace
	lock, err := ws.lock()
	if err != nil {
		log.Error("agent-runner cannot take the workspace", "workspace", ws.Dir, "err", err)
		return runner.ExitInternal
	}
	defer lock.Close()
	if err := ws.reset(); err != nil {
		log.Error("agent-runner cannot reset the workspace", "workspace", ws.Dir, "err", err)
		return runner.ExitInternal
	}
	em, err := newEmitter(ws.EventsFile(), opts.Stdout)
	if err != nil {
		log.Error("agent-runner cannot open its events file", "workspace", ws.Dir, "err", err)
		return runner.ExitInternal
	}
	environ := opts.Environ
	if environ == nil {
		environ = os.Environ()
	}
	r := &run{ws: ws, em: em, log: log, bins: opts.Agents, environ: environ, phaseSeconds: map[string]float64{}}
	if opts.AgentBwrap != "" || opts.AgentUser != nil {
		if r.nested, err = newNestedSandbox(opts.AgentBwrap, opts.AgentUser, ws); err != nil {
			log.Error("agent-runner cannot prepare the agent's sandbox", "workspace", ws.Dir, "err", err)
			return runner.ExitInternal
		}
	}
	code := r.do(ctx, opts.Stdin)
	if err := em.close(); err != nil {
		log.Error("agent-runner cannot close its events file", "workspace", ws.Dir, "err", err)
		code = runner.ExitInternal
	}
	if err := ws.writeExitCode(code); err != nil {
		log.Error("agent-runner cannot record its exit code", "workspace", ws.Dir, "err", err)
		return runner.ExitInternal
	}
	return code
}

type run struct {
	ws      Workspace
	em      *emitter
	log     *slog.Logger
	bins    agent.Binaries
	environ []string
	job     runner.Job
	git     gitRunner
	nested  *nestedSandbox // nil: init and the agent are plain children
	// gitConfig is the repository's .git/config as the clone left it,
	// restored before agent-runner's own git runs after the agent.
	gitConfig []byte

	phase        string
	phaseStart   time.Time
	phaseSeconds map[string]float64
}

// stepError is a failed step: the exit code agent-runner ends with and what
// the error event says.
type stepError struct {
	code       int
	msg        string
	exitStatus int
	tail       []string
}

func (e *stepError) Error() string { return e.msg }

func fail(code int, format string, a ...any) *stepError {
	return &stepError{code: code, msg: fmt.Sprintf(format, a...)}
}

func (r *run) do(ctx context.Context, stdin io.Reader) int {
	job, serr := readJob(stdin)
	if serr != nil {
		return r.failed(ctx, nil, serr)
	}
	r.job = job
	r.em.setRedactor(newRedactor(job))
	r.log = r.log.With("task_id", job.TaskID, "repo", job.Repo)

	jobCtx, cancel := context.WithTimeoutCause(ctx, time.Duration(job.TimeLimit), errTimeLimit)
	defer cancel()
	r.git = gitRunner{
		baseEnv: gitenv.Clean(append(append([]string(nil), r.environ...), gitProxyEnv(job)...)),
		authEnv: gitenv.Auth(job.CloneURL, job.Token),
	}
	if r.nested != nil {
		r.git.user = r.nested.user
	}
	stopGateway, err := r.startGateway(jobCtx)
	if err != nil {
		return r.failed(jobCtx, ctx, err)
	}
	defer stopGateway()

	base, err := r.clone(jobCtx)
	if err != nil {
		return r.failed(jobCtx, ctx, err)
	}
	if err := r.keepGitConfig(); err != nil {
		return r.failed(jobCtx, ctx, err)
	}
	if err := r.init(jobCtx); err != nil {
		return r.failed(jobCtx, ctx, err)
	}
	rep, err := r.agent(jobCtx)
	if err != nil {
		return r.failed(jobCtx, ctx, err)
	}

	afterCtx, cancelAfter := context.WithTimeoutCause(ctx, afterAgentGrace, errTimeLimit)
	defer cancelAfter()
	head, files, err := r.commit(afterCtx, base)
	if err != nil {
		return r.failed(afterCtx, ctx, err)
	}
	res := &runner.RunResult{
		Branch:  job.Branch,
		BaseSHA: base,
		Summary: rep.Summary,
		CostUSD: rep.CostUSD,
		Usage:   rep.Usage,
	}
	if head == base {
		r.endPhase()
		res.Status = runner.StatusNoChanges
		res.PhaseSeconds = r.phaseSeconds
		r.emit(runner.Event{Type: runner.EventResult, Result: res})
		return runner.ExitOK
	}
	if err := r.bundle(afterCtx, base); err != nil {
		return r.failed(afterCtx, ctx, err)
	}
	r.endPhase()
	res.Status = runner.StatusSucceeded
	res.Commit = head
	res.Files = files
	res.BundlePath = r.ws.BundleFile()
	res.PhaseSeconds = r.phaseSeconds
	r.emit(runner.Event{Type: runner.EventResult, Result: res})
	return runner.ExitOK
}

// failed emits the error event for err and returns the exit code. A step
// cut short by the time limit or by cancellation reports that instead of
// its own failure.
func (r *run) failed(stepCtx, parent context.Context, err error) int {
	phase := r.phase
	r.endPhase()
	se := &stepError{code: runner.ExitInternal, msg: err.Error()}
	errors.As(err, &se)
	switch {
	case parent != nil && parent.Err() != nil:
		se = &stepError{code: runner.ExitCancelled, msg: "cancelled during " + orJob(phase), tail: se.tail}
	case stepCtx != nil && errors.Is(context.Cause(stepCtx), errTimeLimit):
		se = &stepError{code: runner.ExitTimeout, msg: fmt.Sprintf("time limit of %s reached during %s", time.Duration(r.job.TimeLimit), orJob(phase)), tail: se.tail}
	}
	r.log.Error("agent-runner failed", "phase", phase, "exit_code", se.code, "err", r.em.redact.String(se.msg))
	r.emit(runner.Event{Type: runner.EventError, Phase: phase, Message: se.msg, ExitCode: se.exitStatus, StderrTail: se.tail})
	return se.code
}

func orJob(phase string) string {
	if phase == "" {
		return "job"
	}
	return phase
}

func (r *run) emit(ev runner.Event) {
	if err := r.em.emit(ev); err != nil {
		r.log.Error("agent-runner cannot write an event", "err", err)
	}
}

// startPhase emits the phase event and closes the previous phase's clock.
func (r *run) startPhase(phase string) {
	r.endPhase()
	r.phase = phase
	r.phaseStart = time.Now()
	r.emit(runner.Event{Type: runner.EventPhase, Phase: phase})
}

func (r *run) endPhase() {
	if r.phase != "" && !r.phaseStart.IsZero() {
		secs := time.Since(r.phaseStart).Seconds()
		r.phaseSeconds[r.phase] = math.Round(secs*1000) / 1000
		r.phaseStart = time.Time{}
	}
}
