package dispatch

import (
	"context"
	"fmt"
	"runtime/debug"
	"sync"

	"github.com/agentbot/agentbot"
	"github.com/agentbot/agentbot/runner"
)

// sideSlots bounds the goroutines that acknowledge waiting tasks and carry
// out control commands, which must not wait behind agent runs.
const sideSlots = 4

// scheduler owns who may start: the worker slots (at most max attempts at
// once), the per-issue serialisation (one attempt per issue or pull request)
// and the side slots. It never blocks: a task that cannot start now is left
// in the store for the next scan, which every release triggers.
type scheduler struct {
	max int
	wg  sync.WaitGroup

	mu       sync.Mutex
	running  int
	busy     map[string]string   // issue key -> the task id holding it
	attempts map[string]*attempt // task id -> its attempt, for cancel and reports
	side     map[string]bool     // task ids in side work
	sideFree int
}

func newScheduler(max, side int) *scheduler {
	return &scheduler{max: max, sideFree: side, busy: map[string]string{}, attempts: map[string]*attempt{}, side: map[string]bool{}}
}

func issueKey(ref agentbot.IssueRef) string { return ref.String() }

// tryStart takes a worker slot and t's issue for a, if both are free. A
// run re-attached after a restart (force) is already running: it takes
// them whatever the count.
func (s *scheduler) tryStart(a *attempt, force bool) bool {
	key := issueKey(a.task.Ref())
	s.mu.Lock()
	defer s.mu.Unlock()
	if !force && (s.busy[key] != "" || s.running >= s.max || s.side[a.task.ID]) {
		return false
	}
	s.busy[key] = a.task.ID
	s.attempts[a.task.ID] = a
	s.running++
	return true
}

// release gives back what tryStart took.
func (s *scheduler) release(a *attempt) {
	key := issueKey(a.task.Ref())
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.busy[key] == a.task.ID {
		delete(s.busy, key)
	}
	delete(s.attempts, a.task.ID)
	s.running--
}

// trySide takes a side slot for task id unless it is in hand already (in
// side work or held by an attempt) or no slot is free.
func (s *scheduler) trySide(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.side[id] || s.attempts[id] != nil || s.sideFree == 0 {
		return false
	}
	s.side[id] = true
	s.sideFree--
	return true
}

func (s *scheduler) doneSide(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.side, id)
	s.sideFree++
}

// inHand reports whether task id is being worked on here.
func (s *scheduler) inHand(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.side[id] || s.attempts[id] != nil
}

func (s *scheduler) attempt(id string) *attempt {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.attempts[id]
}

// holder is the task holding ref's issue, "" if none.
func (s *scheduler) holder(ref agentbot.IssueRef) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.busy[issueKey(ref)]
}

func (s *scheduler) runningCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.running
}

// wait returns once every goroutine the scheduler started has returned.
func (s *scheduler) wait() { s.wg.Wait() }

// schedule starts what may start, oldest first: control commands and the
// acknowledgement of tasks that must wait go to side slots; a task whose
// issue and a worker are free starts an attempt (which acknowledges it
// first if needed). A task never overtakes an older one on its issue.
func (d *Dispatcher) schedule(ctx context.Context) error {
	queued, err := d.store.ListByState(ctx, agentbot.StateQueued)
	if err != nil {
		return fmt.Errorf("dispatch: list queued tasks: %w", err)
	}
	d.metrics.queueDepth.Set(float64(len(queued)))
	blocked := map[string]bool{}
	for _, t := range queued {
		if t.Trigger.Kind == agentbot.KindControl {
			d.goSide(ctx, t, d.control)
			continue
		}
		key := issueKey(t.Ref())
		first := !blocked[key]
		blocked[key] = true
		if d.sched.inHand(t.ID) {
			continue
		}
		if first && d.startAttempt(ctx, t, nil) {
			continue
		}
		if !t.Acknowledged() {
			d.goSide(ctx, t, d.acknowledge)
		}
	}
	return nil
}

// startAttempt starts an attempt at t (attached: a run re-attached after a
// restart) if the scheduler has room for it.
func (d *Dispatcher) startAttempt(ctx context.Context, t *agentbot.Task, attached runner.Run) bool {
	a := d.newAttempt(t)
	if !d.sched.tryStart(a, attached != nil) {
		return false
	}
	d.metrics.running.Set(float64(d.sched.runningCount()))
	d.sched.wg.Add(1)
	go func() {
		defer d.sched.wg.Done()
		defer d.poke()
		defer func() {
			d.sched.release(a)
			d.metrics.running.Set(float64(d.sched.runningCount()))
		}()
		actx := a.ctx(ctx)
		defer func() {
			if r := recover(); r != nil {
				d.panicked(actx, r)
				// The task must not stay "running" for ever: it fails,
				// saying so, if it got that far.
				defer d.recoverPanic(actx)
				a.failed(actx, failf(a.task.Phase, "agentbot hit an internal error and stopped this task; its operator's log has the details. Comment `/agent retry` to run it again."))
			}
		}()
		a.run(actx, attached)
	}()
	return true
}

// goSide runs fn for t in a side slot, if one is free and t is not in hand
// already; otherwise a later scan tries again.
func (d *Dispatcher) goSide(ctx context.Context, t *agentbot.Task, fn func(context.Context, *agentbot.Task)) {
	if !d.sched.trySide(t.ID) {
		return
	}
	d.sched.wg.Add(1)
	go func() {
		defer d.sched.wg.Done()
		defer d.poke()
		defer d.sched.doneSide(t.ID)
		tctx := d.taskContext(ctx, t)
		defer d.recoverPanic(tctx)
		fn(tctx, t)
	}()
}

// recoverPanic turns a panic in a task's work into a logged error and a
// counted one; the rest of agentbot goes on.
func (d *Dispatcher) recoverPanic(ctx context.Context) {
	if r := recover(); r != nil {
		d.panicked(ctx, r)
	}
}

func (d *Dispatcher) panicked(ctx context.Context, r any) {
	d.metrics.panics.Inc()
	logFrom(ctx).Error("dispatch: panic handling task", "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
}

// Notify wakes the dispatcher to look at the store; webhook's Enqueued
// callback calls it. It never blocks.
func (d *Dispatcher) Notify(*agentbot.Task) { d.poke() }

func (d *Dispatcher) poke() {
	select {
	case d.wake <- struct{}{}:
	default:
	}
}
