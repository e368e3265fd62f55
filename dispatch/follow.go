package dispatch

import (
	"context"
	"strings"
	"time"

	"github.com/agentbot/agentbot"
	"github.com/agentbot/agentbot/github"
	"github.com/agentbot/agentbot/runner"
)

// logTailLines is how many lines of the agent's output a failure report
// quotes.
const logTailLines = runner.StderrTailLines

// stopTimeout bounds how long a cancel waits for the launcher to stop a run.
const stopTimeout = 30 * time.Second

// backstopGrace is how long past its time limit a run may go before the
// dispatcher stops it: agent-runner enforces the limit itself and needs a
// moment to report it.
const backstopGrace = 2 * time.Minute

// followed is how a run went.
type followed struct {
	task        *agentbot.Task
	code        int
	waitErr     error
	stderr      []string // agent-runner's last stderr lines, unredacted
	limitHit    string   // the launcher's runner.Exit.LimitHit
	result      *runner.RunResult
	errEvent    *runner.Event
	tail        []string
	cancelledBy string
	timedOut    bool
	// budgetSpent: the model relay measured the task's budget spent, and
	// the run was stopped.
	budgetSpent bool
	shutdown    bool
}

// follower is the state of following one run.
type follower struct {
	a          *attempt
	out        followed
	red        redactor
	lastReport time.Time
	// progressed: the agent reports progress events (claude); for one
	// that only prints (the command agent, codex) its last lines are the
	// progress shown.
	progressed bool
	stopping   bool
	stopped    chan error
}

// follow consumes a run's events — recording them, moving the phase and
// reporting progress — until it ends, and stops it on cancel or when its
// time is up.
func (a *attempt) follow(ctx context.Context, run runner.Run, limit runner.Duration) followed {
	f := &follower{a: a, out: followed{task: a.task}, red: a.redactor(), stopped: make(chan error, 1)}
	log := logFrom(ctx)
	deadline := time.NewTimer(a.d.backstop(a.task, limit))
	defer deadline.Stop()
	flush := time.NewTimer(time.Hour)
	defer flush.Stop()
	events := run.Events()
	budget := a.budgetSpent()
	for events != nil {
		flush.Reset(untilFlush(a.conv.FlushAt(), a.d.now()))
		select {
		case ev, ok := <-events:
			if !ok {
				events = nil
				break
			}
			f.event(ctx, ev)
		case <-flush.C:
			a.conv.Flush(ctx)
		case by := <-a.cancel:
			f.out.cancelledBy = by
			log.Info("cancelling run", "by", by)
			f.stop(ctx, run)
		case <-budget:
			budget = nil
			f.out.budgetSpent = true
			log.Warn("the task's model budget is spent; stopping the run")
			f.stop(ctx, run)
		case <-deadline.C:
			f.out.timedOut = true
			log.Warn("run outlived its time limit; stopping it")
			f.stop(ctx, run)
		case <-ctx.Done():
			// Shutdown: the attempt stops the run (or leaves it to be
			// re-attached) and re-queues the task.
			f.out.shutdown = true
			return f.out
		}
	}
	return f.end(ctx, run)
}

// untilFlush is how long to wait for a pending conversation edit; an hour
// (re-armed every event) when none is pending.
func untilFlush(at, now time.Time) time.Duration {
	if at.IsZero() {
		return time.Hour
	}
	return max(at.Sub(now), 0)
}

// event records one event and acts on it.
func (f *follower) event(ctx context.Context, ev runner.Event) {
	d, a := f.a.d, f.a
	ev = f.red.Event(ev)
	if err := d.logs.Append(a.task.ID, ev); err != nil {
		logFrom(ctx).Warn("cannot record event", "err", err)
	}
	switch ev.Type {
	case runner.EventLog:
		f.out.tail = appendTail(f.out.tail, ev.Message)
		if !f.progressed && d.now().Sub(f.lastReport) >= d.opts.ProgressInterval {
			f.lastReport = d.now()
			a.conv.Update(ctx, d.view(f.out.task, f.out.tail, ""))
		}
	case runner.EventProgress:
		f.progressed = true
		if d.now().Sub(f.lastReport) >= d.opts.ProgressInterval {
			f.lastReport = d.now()
			v := d.view(f.out.task, nil, "")
			v.Note = github.Inert(ev.Message) // the agent's words: no pings, no closing keywords
			a.conv.Update(ctx, v)
		}
	case runner.EventPhase:
		f.out.task = d.recordPhase(ctx, f.out.task, ev.Phase)
		f.lastReport = d.now()
		a.conv.Update(ctx, d.view(f.out.task, nil, ""))
		logFrom(ctx).Debug("phase", "phase", ev.Phase)
	case runner.EventResult:
		f.out.result = ev.Result
	case runner.EventError:
		e := ev
		f.out.errEvent = &e
	}
}

// recordPhase stores t's new phase, returning the stored task (or t with
// the phase, if the store failed: the report goes on).
func (d *Dispatcher) recordPhase(ctx context.Context, t *agentbot.Task, phase string) *agentbot.Task {
	nt, err := d.store.Update(ctx, t.ID, func(s *agentbot.Task) error { s.Phase = phase; return nil })
	if err != nil {
		logFrom(ctx).Warn("cannot record phase", "phase", phase, "err", err)
		c := *t
		c.Phase = phase
		return &c
	}
	return nt
}

// stop asks the launcher to stop the run, once, without waiting.
func (f *follower) stop(ctx context.Context, run runner.Run) {
	if f.stopping {
		return
	}
	f.stopping = true
	go func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), stopTimeout)
		defer cancel()
		f.stopped <- run.Stop(sctx)
	}()
}

// end waits for the run's exit once its events are over.
func (f *follower) end(ctx context.Context, run runner.Run) followed {
	exit, err := run.Wait(ctx)
	code := exit.Code
	if ctx.Err() != nil {
		f.out.shutdown = true
		return f.out
	}
	if f.stopping {
		if serr := <-f.stopped; serr != nil {
			f.a.d.metrics.launcherErrors.WithLabelValues("stop").Inc()
			logFrom(ctx).Warn("stopping run", "err", serr)
		}
	}
	f.out.code, f.out.waitErr = code, err
	f.out.stderr = exit.StderrTail
	f.out.limitHit = exit.LimitHit
	// A cancel that raced the end of the run still counts as a cancel only
	// if the run did not finish on its own.
	if f.out.cancelledBy == "" {
		select {
		case by := <-f.a.cancel:
			if code != runner.ExitOK {
				f.out.cancelledBy = by
			}
		default:
		}
	}
	if code == runner.ExitCancelled && f.out.cancelledBy == "" && !f.out.timedOut && !f.out.budgetSpent {
		f.out.cancelledBy = "agentbot"
	}
	return f.out
}

// backstop is how long from now a run may go on before the dispatcher stops
// it — the backstop for a runner that cannot enforce its limit (a hung
// sandbox). It counts from the attempt's start, not from now, so a run
// re-attached after a restart does not get its time limit afresh.
func (d *Dispatcher) backstop(t *agentbot.Task, limit runner.Duration) time.Duration {
	left := time.Duration(limit) + backstopGrace
	if !t.StartedAt.IsZero() {
		left -= d.now().Sub(t.StartedAt)
	}
	return max(left, 0)
}

func appendTail(tail []string, msg string) []string {
	for _, line := range strings.Split(strings.TrimRight(msg, "\n"), "\n") {
		tail = append(tail, line)
	}
	if len(tail) > logTailLines {
		tail = append(tail[:0:0], tail[len(tail)-logTailLines:]...)
	}
	return tail
}
