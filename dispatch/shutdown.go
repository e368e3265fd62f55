package dispatch

import (
	"context"
	"fmt"

	"github.com/agentbot/agentbot"
	"github.com/agentbot/agentbot/runner"
)

// stoppedNote is what the task log and the progress comment say about a run
// that a graceful stop of agentbot (a deploy, SIGTERM) cut short.
const stoppedNote = "agentbot was stopped; the task will start again"

// stopping handles an attempt that saw agentbot stop (ctx ended). A
// graceful stop is not a crash: the run this process owns is stopped and the
// task goes back to queued without counting as an interruption, so deploys
// never use up the one re-queue that crashes get. run is nil when no sandbox
// was started yet. A run the launcher keeps across restarts is detached,
// left running for the next start to re-attach.
func (a *attempt) stopping(ctx context.Context, run runner.Run) {
	d, t := a.d, a.task
	if run != nil && d.launch.KeepsRuns() {
		run.Detach()
		return
	}
	log := logFrom(ctx)
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), stopTimeout)
	defer cancel()
	if run != nil {
		a.stopAndDrain(sctx, run)
	}
	a.revokeToken(sctx)
	phase := t.Phase
	nt, err := d.store.Transition(sctx, t.ID, agentbot.StateRunning, agentbot.StateQueued, func(s *agentbot.Task) error {
		s.Phase = ""
		return nil
	})
	if err != nil {
		// Cancelled or finished meanwhile; the next start sorts out the rest.
		log.Warn("cannot re-queue task at shutdown", "err", err)
		return
	}
	d.note(sctx, t.ID, fmt.Sprintf("agentbot: %s (it was in phase %q)", stoppedNote, phase))
	log.Info("task re-queued at shutdown", "phase", phase)
	v := d.view(nt, nil, "")
	v.Note = stoppedNote + "."
	a.conv.Settle(sctx, v)
	d.cleanup(sctx, nt, false)
}

// stopAndDrain stops run, recording the events it still sends: a run
// blocked on a full event pipe cannot stop.
func (a *attempt) stopAndDrain(ctx context.Context, run runner.Run) {
	stopped := make(chan error, 1)
	go func() { stopped <- run.Stop(ctx) }()
	red := a.redactor()
	events := run.Events()
drain:
	for events != nil {
		select {
		case ev, ok := <-events:
			if !ok {
				break drain
			}
			if err := a.d.logs.Append(a.task.ID, red.Event(ev)); err != nil {
				logFrom(ctx).Warn("cannot record event", "err", err)
			}
		case <-ctx.Done():
			break drain
		}
	}
	if err := <-stopped; err != nil {
		a.d.metrics.launcherErrors.WithLabelValues("stop").Inc()
		logFrom(ctx).Warn("stopping run at shutdown", "err", err)
	}
}
