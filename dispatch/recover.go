package dispatch

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/agentbot/agentbot"
	"github.com/agentbot/agentbot/runner"
)

// attemptNote starts every attempt's part of a task log; seq numbers start
// again after it.
const attemptNote = "agentbot: attempt "

// recover rebuilds the work a previous process left: runs in progress are
// re-attached through the launcher, or re-queued once when their sandbox is
// gone (a second interruption fails the task); tasks that ended without
// their final comment and check run get them now. Queued tasks need nothing:
// the first scan picks them up.
func (d *Dispatcher) recover(ctx context.Context) error {
	running, err := d.store.ListByState(ctx, agentbot.StateRunning)
	if err != nil {
		return fmt.Errorf("dispatch: recover: list running tasks: %w", err)
	}
	for _, t := range running {
		ctx := d.taskContext(ctx, t)
		log := logFrom(ctx)
		if t.Trigger.Kind == agentbot.KindControl {
			if _, err := d.store.Transition(ctx, t.ID, agentbot.StateRunning, agentbot.StateQueued, nil); err != nil {
				log.Warn("cannot re-queue control command", "err", err)
			}
			continue
		}
		run, err := d.launch.Attach(ctx, t.ID, d.lastSeq(t.ID))
		if err == nil {
			log.Info("re-attached to running task", "launcher", d.launch.Name(), "phase", t.Phase)
			d.startAttempt(ctx, t, run)
			continue
		}
		if !errors.Is(err, runner.ErrGone) {
			d.metrics.launcherErrors.WithLabelValues("attach").Inc()
			log.Warn("cannot re-attach; treating the run as gone", "err", err)
		}
		d.interrupted(ctx, t)
	}

	// Only the unreported: listing every ended task read the whole file.
	ended, err := d.store.ListUnreported(ctx)
	if err != nil {
		return fmt.Errorf("dispatch: recover: list ended tasks: %w", err)
	}
	for _, t := range ended {
		if t.Reported || t.Trigger.Kind == agentbot.KindControl {
			continue
		}
		ctx := d.taskContext(ctx, t)
		logFrom(ctx).Info("repairing the comment and check run of a task that ended while agentbot was down")
		d.finalReport(ctx, t, nil)
	}
	return nil
}

// interrupted handles a run whose sandbox died with the previous process.
func (d *Dispatcher) interrupted(ctx context.Context, t *agentbot.Task) {
	log := logFrom(ctx)
	phase := t.Phase
	if t.Requeues == 0 {
		d.note(ctx, t.ID, fmt.Sprintf("agentbot: interrupted by a restart during phase %q; re-queued once", phase))
		nt, err := d.store.Transition(ctx, t.ID, agentbot.StateRunning, agentbot.StateQueued, func(s *agentbot.Task) error {
			s.Requeues++
			s.Phase = ""
			return nil
		})
		if err != nil {
			log.Warn("cannot re-queue interrupted task", "err", err)
			return
		}
		d.metrics.requeued.Inc()
		log.Info("interrupted task re-queued", "phase", phase)
		v := d.view(nt, nil, "")
		v.Note = fmt.Sprintf("agentbot restarted while this task was in phase %q; it has been re-queued once and will start again.", phase)
		d.cleanup(ctx, nt, false)
		d.conversationOf(nt).Settle(ctx, v)
		return
	}
	d.note(ctx, t.ID, fmt.Sprintf("agentbot: interrupted again during phase %q; giving up", phase))
	tail := d.logTail(t.ID)
	if _, err := d.finish(ctx, t, agentbot.StateRunning, agentbot.StateFailed, "failed", agentbot.Result{
		FailedPhase: phase,
		Error:       "agentbot was restarted twice while this task ran, so it was not re-queued again. Comment `/agent retry` to run it once more.",
	}, tail); err != nil {
		log.Warn("cannot fail interrupted task", "err", err)
	}
	d.cleanup(ctx, t, true)
}

// note writes a line of agentbot's own to a task's log.
func (d *Dispatcher) note(ctx context.Context, taskID, msg string) {
	if err := d.logs.Note(taskID, d.now(), msg); err != nil {
		logFrom(ctx).Warn("cannot write the task log", "err", err)
	}
}

// lastSeq is the last agent-runner event number the log holds for the
// current attempt, for Attach.
func (d *Dispatcher) lastSeq(taskID string) int {
	evs, _, err := d.logs.Read(taskID, 0, 0)
	if err != nil {
		return 0
	}
	last := 0
	for _, ev := range evs {
		if ev.Seq == 0 && strings.HasPrefix(ev.Message, attemptNote) {
			last = 0
		}
		if ev.Seq > last {
			last = ev.Seq
		}
	}
	return last
}

// logTail is the last lines of output the task log holds.
func (d *Dispatcher) logTail(taskID string) []string {
	evs, _, err := d.logs.Read(taskID, 0, 0)
	if err != nil {
		return nil
	}
	var tail []string
	for _, ev := range evs {
		if ev.Type == runner.EventLog {
			tail = appendTail(tail, ev.Message)
		}
	}
	return tail
}
