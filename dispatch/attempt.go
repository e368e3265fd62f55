package dispatch

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/agentbot/agentbot"
	"github.com/agentbot/agentbot/gateway"
	"github.com/agentbot/agentbot/github"
	"github.com/agentbot/agentbot/runner"
)

// attempt owns one run of one task, from the moment the scheduler gives it
// a worker to the task's end (or its return to the queue): the read token
// its sandbox holds, the standing note its reports add, the cancel asked of
// it, its logger and, once the agent is done, the branch it delivers to.
// run reads as the phases a user sees: prepare → launch → follow → deliver
// → finish.
type attempt struct {
	d    *Dispatcher
	task *agentbot.Task
	conv *conversation

	cancel chan string // who cancelled; buffered, sent to at most once

	mu          sync.Mutex
	requestedBy string
	// delivering is the branch the run's result is being delivered to,
	// once the run is past its agent; cancels are refused from then on.
	delivering string
	token      string // the run's read token, for redaction
	note       string // a sentence every report of this run adds
	// gw is the run's gateway task (nil without Options.Egress, or for a
	// run re-attached after a restart).
	gw     *gateway.Task
	egress egressLog

	// relayMu guards relay and renewed apart from mu: renewing mints over
	// the network, which a cancel or a progress render must not wait for.
	relayMu sync.Mutex
	// relay is the read token the git relay adds, renewed before it
	// expires (the sandbox never holds it, so a long task keeps fetching);
	// renewed lists every token minted after the first, for revocation.
	relay   github.Token
	renewed []string
}

func (d *Dispatcher) newAttempt(t *agentbot.Task) *attempt {
	return &attempt{d: d, task: t, conv: d.conversationOf(t), cancel: make(chan string, 1)}
}

// ctx is ctx with the attempt's logger.
func (a *attempt) ctx(ctx context.Context) context.Context { return a.d.taskContext(ctx, a.task) }

// requestCancel asks the attempt to stop its run. A run already delivering
// its result is not interrupted half-way (its branch may be pushed already):
// requestCancel then asks nothing and returns the branch and false.
func (a *attempt) requestCancel(by string) (delivering string, accepted bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.delivering != "" {
		return a.delivering, false
	}
	if a.requestedBy == "" {
		a.requestedBy = by
		a.cancel <- by
	}
	return "", true
}

// startDelivery marks the run as delivering its result to branch. A run
// reaches delivery only if no cancel stopped it, so it returns who asked to
// cancel, if anyone did, as the agent finished: too late, but unanswered.
func (a *attempt) startDelivery(branch string) (lateBy string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.delivering = branch
	return a.requestedBy
}

func (a *attempt) setToken(tok github.Token) {
	a.mu.Lock()
	a.token = tok.Value
	a.mu.Unlock()
	a.relayMu.Lock()
	a.relay = tok
	a.relayMu.Unlock()
}

// relayTokenMargin is how long before its expiry the relay's read token is
// replaced: GitHub's installation tokens live an hour, tasks may run longer.
const relayTokenMargin = 5 * time.Minute

// relayToken is the git relay's TokenSource: the attempt's read token, or
// a new one minted (for the same repository, contents:read) when it is
// within relayTokenMargin of its expiry.
func (a *attempt) relayToken(ctx context.Context) (string, error) {
	a.relayMu.Lock()
	defer a.relayMu.Unlock()
	if a.relay.ExpiresAt.IsZero() || time.Until(a.relay.ExpiresAt) > relayTokenMargin {
		return a.relay.Value, nil
	}
	t := a.task
	tok, err := a.d.gh.TokenFor(ctx, t.Trigger.InstallationID, t.Ref().Repo, github.Permissions{"contents": "read"})
	if err != nil {
		return "", fmt.Errorf("renew the read token: %w", err)
	}
	a.relay = tok
	a.renewed = append(a.renewed, tok.Value)
	return tok.Value, nil
}

// renewedTokens are the relay's tokens minted after the first.
func (a *attempt) renewedTokens() []string {
	a.relayMu.Lock()
	defer a.relayMu.Unlock()
	return slices.Clone(a.renewed)
}

// addNote adds a sentence to the ones every report of the run adds.
func (a *attempt) addNote(note string) {
	a.mu.Lock()
	if !strings.Contains(a.note, note) {
		a.note = strings.TrimSpace(a.note + " " + note)
	}
	a.mu.Unlock()
}

func (a *attempt) secrets() (token, note string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.token, a.note
}

// run takes the task from queued (or, with attached, a run re-attached
// after a restart) to its end.
func (a *attempt) run(ctx context.Context, attached runner.Run) {
	var p *plan
	var fail *failure
	if attached == nil {
		var ok bool
		if p, ok = a.prepare(ctx); !ok {
			return
		}
		defer p.mirror.Release() // the task's clone borrows its objects until the end
	} else {
		p, fail = a.replan(ctx)
		if fail != nil {
			a.failed(ctx, fail)
			return
		}
	}
	run := attached
	if run == nil {
		var ok bool
		if run, ok = a.launch(ctx, p); !ok {
			return
		}
	}
	out := a.follow(ctx, run, p.job.TimeLimit)
	if out.shutdown {
		a.stopping(ctx, run)
		return
	}
	a.task = out.task
	a.conclude(ctx, p, run, out)
}

// prepare admits a task not yet acknowledged, claims it (queued →
// running), opens or updates its conversation and plans the run. ok=false
// means there is nothing to run: refused, taken meanwhile, failed while
// preparing, or agentbot stopping.
func (a *attempt) prepare(ctx context.Context) (*plan, bool) {
	d := a.d
	t := a.task
	var l lookups
	if !t.Acknowledged() {
		if _, ok := d.admit(ctx, t, l.fetch(d, t)); !ok {
			return nil, false
		}
		if l.err != nil && l.err.refusal {
			d.refuse(ctx, t, "refused", l.err.phase, fmt.Sprintf("@%s agentbot did not run: %s", t.Trigger.Sender.Login, l.err.msg), false)
			return nil, false
		}
	} else {
		l.err = l.fetchAll(ctx, d, t)
	}
	started, err := d.claim(ctx, t)
	if err != nil {
		if !isStale(err) {
			logFrom(ctx).Error("cannot start task", "err", err)
		}
		return nil, false
	}
	a.task = started
	d.note(ctx, started.ID, fmt.Sprintf("%s%d started", attemptNote, started.Attempt))
	if !a.openConversation(ctx, l.prHead(t)) {
		return nil, false
	}
	if l.err != nil {
		a.failed(ctx, l.err)
		return nil, false
	}
	p, fail := a.plan(ctx, &l)
	if fail != nil {
		if ctx.Err() != nil {
			a.stopping(ctx, nil)
		} else {
			a.failed(ctx, fail)
		}
		return nil, false
	}
	return p, true
}

// claim moves t from queued to running for a new attempt.
func (d *Dispatcher) claim(ctx context.Context, t *agentbot.Task) (*agentbot.Task, error) {
	return d.store.Transition(ctx, t.ID, agentbot.StateQueued, agentbot.StateRunning, func(s *agentbot.Task) error {
		s.Attempt++
		s.Phase = "starting"
		if s.FirstStartedAt.IsZero() {
			s.FirstStartedAt = d.now()
		}
		return nil
	})
}

// openConversation shows that the task started: a new comment (and check
// run on a pull request's head) for a task admitted just now, an edit of
// the one it has otherwise. ok=false if the task could not be
// acknowledged (it is back in the queue for the next scan).
func (a *attempt) openConversation(ctx context.Context, head string) bool {
	d, t := a.d, a.task
	if t.Acknowledged() {
		a.conv.Update(ctx, d.view(t, nil, ""))
		return true
	}
	if err := a.conv.Open(ctx, d.view(t, nil, ""), head); err != nil {
		logFrom(ctx).Warn("cannot open progress comment; will retry", "err", err)
		if _, rerr := d.store.Transition(context.WithoutCancel(ctx), t.ID, agentbot.StateRunning, agentbot.StateQueued, func(s *agentbot.Task) error {
			s.Attempt--
			s.Phase = ""
			return nil
		}); rerr != nil {
			logFrom(ctx).Error("cannot put task back in the queue", "err", rerr)
		}
		return false
	}
	nt, err := d.recordAcknowledged(ctx, t)
	if err != nil {
		logFrom(ctx).Error("cannot record progress comment", "err", err)
		return true
	}
	a.task = nt
	return true
}

// recordAcknowledged stores that t was acknowledged, with its comment and
// check run.
func (d *Dispatcher) recordAcknowledged(ctx context.Context, t *agentbot.Task) (*agentbot.Task, error) {
	commentID, _ := d.conversationOf(t).ids()
	checkRunID, head := d.conversationOf(t).checkRun()
	return d.store.Update(ctx, t.ID, func(s *agentbot.Task) error {
		s.CommentID = commentID
		if s.CheckRunID == 0 {
			s.CheckRunID, s.CheckRunHead = checkRunID, head
		}
		if s.AcknowledgedAt.IsZero() {
			s.AcknowledgedAt = d.now()
		}
		return nil
	})
}

// launch starts the sandbox for p's job.
func (a *attempt) launch(ctx context.Context, p *plan) (runner.Run, bool) {
	d, t := a.d, a.task
	run, err := d.launch.Start(ctx, p.job)
	if err != nil {
		d.metrics.launcherErrors.WithLabelValues("start").Inc()
		if ctx.Err() != nil {
			a.stopping(ctx, nil)
			return nil, false
		}
		a.failed(ctx, failf("starting", "the %s launcher could not start the sandbox: %v", d.launch.Name(), err))
		d.cleanup(ctx, t, true)
		return nil, false
	}
	if t.Attempt == 1 && t.Requeues == 0 {
		d.metrics.timeToStart.Observe(d.now().Sub(t.CreatedAt).Seconds())
	}
	d.metrics.started.WithLabelValues(string(t.Trigger.Kind)).Inc()
	logFrom(ctx).Info("runner started", "launcher", d.launch.Name(), "attempt", t.Attempt)
	return run, true
}

// conclude ends the task the way its run went.
func (a *attempt) conclude(ctx context.Context, p *plan, run runner.Run, out followed) {
	d, t := a.d, a.task
	switch {
	case out.cancelledBy != "":
		a.end(ctx, agentbot.StateCancelled, "cancelled", agentbot.Result{
			Error: "cancelled by " + byWhom(out.cancelledBy), FailedPhase: t.Phase,
		}, nil, false)
	case out.budgetSpent:
		a.failed(ctx, &failure{phase: t.Phase, msg: a.budgetMessage(), tail: out.tail, permanent: true})
	case out.timedOut:
		a.failed(ctx, &failure{phase: t.Phase, msg: fmt.Sprintf("the task ran out of its time limit of %s", time.Duration(p.job.TimeLimit)), tail: out.tail})
	case errors.Is(out.waitErr, runner.ErrGone):
		// A re-attached sandbox whose agent-runner never started (the
		// previous process died between the claim turning Ready and the
		// exec) is an interruption like any other: re-queue it once.
		d.interrupted(ctx, t)
	case out.waitErr != nil:
		d.metrics.launcherErrors.WithLabelValues("wait").Inc()
		a.failed(ctx, &failure{phase: t.Phase, msg: "agentbot lost the sandbox: " + out.waitErr.Error(), tail: out.tail})
	case out.code != runner.ExitOK || out.result == nil:
		a.failed(ctx, runFailure(t, out, a.redactor().Lines(out.stderr)))
	case out.result.Status == runner.StatusNoChanges:
		a.end(ctx, agentbot.StateSucceeded, "no_changes", agentbot.Result{
			NoChanges: true, Summary: out.result.Summary, CostUSD: out.result.CostUSD, BaseSHA: out.result.BaseSHA,
		}, nil, true)
	default:
		a.deliverAndEnd(ctx, p, run, out.result)
	}
}

// deliverAndEnd delivers a finished agent's work whole. A cancel from now on
// is told it is too late, and a graceful stop lets the delivery finish
// within the shutdown grace rather than run the agent again.
func (a *attempt) deliverAndEnd(ctx context.Context, p *plan, run runner.Run, rr *runner.RunResult) {
	if by := a.startDelivery(p.job.Branch); by != "" {
		// Asked as the agent finished: the reply was left to this task's
		// comment, which must say why it did not stop.
		a.addNote(fmt.Sprintf("@%s asked to cancel just as the agent finished; it was too late to stop, so its result is delivered.", by))
	}
	dctx, done := a.d.deliveryContext(ctx)
	res, fail := a.deliver(dctx, p, run, rr)
	cut := dctx.Err() != nil // the grace ran out
	done()
	switch {
	case fail != nil && cut:
		a.stopping(ctx, run)
	case fail != nil:
		a.failed(ctx, fail)
	default:
		a.end(ctx, agentbot.StateSucceeded, "succeeded", res, nil, true)
	}
}

// deliveryContext is ctx that a graceful stop (ctx ending) cancels only
// after the shutdown grace. done releases it.
func (d *Dispatcher) deliveryContext(ctx context.Context) (context.Context, func()) {
	dctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	stop := context.AfterFunc(ctx, func() {
		grace := time.NewTimer(d.opts.ShutdownGrace)
		defer grace.Stop()
		select {
		case <-grace.C:
			logFrom(ctx).Warn("shutdown grace is over; delivery cut short")
			cancel()
		case <-dctx.Done():
		}
	})
	return dctx, func() {
		stop()
		cancel()
	}
}

// isStale reports whether err is the store's "the task is no longer in the
// state you expected" (cancelled or taken meanwhile).
func isStale(err error) bool {
	var te interface{ Stale() bool }
	return errors.As(err, &te) && te.Stale()
}
