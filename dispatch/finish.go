package dispatch

import (
	"context"
	"fmt"
	"maps"
	"strings"
	"time"

	"github.com/agentbot/agentbot"
	"github.com/agentbot/agentbot/github"
	"github.com/agentbot/agentbot/runner"
)

// reportTimeout bounds GitHub calls made after a task's own context ended
// (cancel, shutdown), so its final state still reaches the conversation.
const reportTimeout = 30 * time.Second

// failure is a task that went wrong at a known phase.
type failure struct {
	phase string
	msg   string
	tail  []string
	// permanent: the same task would fail the same way again.
	permanent bool
	// refusal: not a failure of agentbot's but a trigger it does not act
	// on; a task not yet acknowledged is refused with a reply instead.
	refusal bool
}

func (f *failure) Error() string { return fmt.Sprintf("%s: %s", f.phase, f.msg) }

func failf(phase, format string, args ...any) *failure {
	return &failure{phase: phase, msg: fmt.Sprintf(format, args...)}
}

// forGood marks f as a failure a retry would only repeat.
func (f *failure) forGood() *failure {
	f.permanent = true
	return f
}

// runFailure explains a run that ended badly from its error event, its
// exit code and the last lines it printed — never a bare exit code.
func runFailure(t *agentbot.Task, out followed, stderr []string) *failure {
	f := &failure{phase: t.Phase, tail: out.tail}
	if out.errEvent != nil {
		if out.errEvent.Phase != "" {
			f.phase = out.errEvent.Phase
		}
		f.msg = out.errEvent.Message
		// The log tail interleaves stdout and stderr as the agent wrote
		// them; the error's stderr tail is the fallback.
		if len(f.tail) == 0 {
			f.tail = out.errEvent.StderrTail
		}
	}
	if f.msg == "" {
		f.msg = runner.ExitMeaning(out.code)
	} else {
		f.msg += " (" + runner.ExitMeaning(out.code) + ")"
	}
	if len(f.tail) == 0 {
		f.tail = stderr
	}
	if out.limitHit != "" {
		// What the agent says of its own death (killed, out of memory)
		// matters less than which limit killed it.
		f.msg = out.limitHit + ": " + f.msg
	}
	if f.phase == "" || f.phase == "starting" {
		f.phase = runner.PhaseCloning
	}
	return f
}

// view builds what the comment and check run show for t.
func (d *Dispatcher) view(t *agentbot.Task, logTail []string, behind string) github.ProgressView {
	v := github.ProgressView{
		TaskID:       t.ID,
		State:        t.State,
		Phase:        t.Phase,
		TaskURL:      d.TaskURL(t.ID),
		Summary:      t.Result.Summary,
		Error:        t.Result.Error,
		FailedPhase:  t.Result.FailedPhase,
		LogTail:      logTail,
		CostUSD:      t.Result.CostUSD,
		PRURL:        t.Result.PRURL,
		Branch:       t.Result.Branch,
		QueuedBehind: behind,
		Permanent:    t.Result.Permanent,
	}
	start := t.FirstStartedAt
	if start.IsZero() {
		start = t.StartedAt // stored before FirstStartedAt was
	}
	switch {
	case !start.IsZero() && !t.FinishedAt.IsZero():
		v.Elapsed = t.FinishedAt.Sub(start)
	case !start.IsZero():
		v.Elapsed = d.now().Sub(start)
	}
	if t.Result.NoChanges {
		v.Note = "The agent made no changes, so there is nothing to push."
	}
	if t.Requeues > 0 && !t.State.Terminal() {
		v.Note = "agentbot restarted while this task ran; it was re-queued once and started again."
	}
	return v
}

// render is v as it is shown: with the run's standing note, redacted.
func (d *Dispatcher) render(id string, v github.ProgressView) github.ProgressView {
	token, note := "", ""
	if a := d.sched.attempt(id); a != nil {
		token, note = a.secrets()
	}
	if note != "" && !strings.Contains(v.Note, note) {
		v.Note = strings.TrimSpace(v.Note + " " + note)
	}
	return newRedactor(token, d.opts.AgentEnv).View(v)
}

// redactor hides the attempt's secrets: its read token and the operator's
// agent environment.
func (a *attempt) redactor() redactor {
	token, _ := a.secrets()
	env := a.d.opts.AgentEnv
	if key := a.gatewayKey(); key != "" {
		env = maps.Clone(env)
		if env == nil {
			env = map[string]string{}
		}
		env["AGENTBOT_GATEWAY_KEY"] = key
	}
	return newRedactor(token, env)
}

// failed ends the attempt's task as failed with its phase and log tail.
func (a *attempt) failed(ctx context.Context, f *failure) {
	a.end(ctx, agentbot.StateFailed, "failed", agentbot.Result{FailedPhase: f.phase, Error: f.msg, Permanent: f.permanent}, f.tail, false)
}

// end finishes the attempt's running task and cleans up its sandbox (kept
// on failure when configured).
func (a *attempt) end(ctx context.Context, to agentbot.TaskState, outcome string, res agentbot.Result, tail []string, ok bool) {
	d, t := a.d, a.task
	if res.Summary == "" {
		res.Summary = t.Result.Summary
	}
	// The run is over: its read token goes first, so a task reported
	// finished holds no live token. The cost is the model relay's measure
	// where there is one, not the agent's own report.
	if cost, ok := a.revokeToken(ctx); ok {
		res.CostUSD = cost
		d.metrics.modelCost.Add(cost)
	}
	if note := a.egress.note(); note != "" {
		a.addNote(note)
	}
	if _, err := d.finish(ctx, t, agentbot.StateRunning, to, outcome, res, tail); err != nil {
		logFrom(ctx).Error("cannot finish task", "err", err)
	}
	d.cleanup(ctx, t, !ok && to == agentbot.StateFailed)
}

// pushReadToken is the read token the push verifies with: the attempt's,
// renewed if it is about to expire (after a long task); "" for a run
// re-attached after a restart, or when no new one can be minted (the push
// then mints its own).
func (a *attempt) pushReadToken(ctx context.Context) string {
	token, err := a.relayToken(ctx)
	if err != nil {
		logFrom(ctx).Warn("cannot renew the read token for the push", "err", err)
		return ""
	}
	return token
}

// revokeToken revokes the read token the attempt gave its sandbox, once
// the sandbox is done with it (the task ended, or its run was stopped).
// The token stays known for redaction.
//
// The gateway task closes first, so that nothing uses the token any more;
// it returns the model cost the relay measured (ok false without a
// gateway).
func (a *attempt) revokeToken(ctx context.Context) (costUSD float64, ok bool) {
	costUSD, ok = a.closeGateway()
	if token, _ := a.secrets(); token != "" {
		a.d.gh.RevokeToken(ctx, a.task.Ref().Repo, token)
	}
	for _, token := range a.renewedTokens() {
		a.d.gh.RevokeToken(ctx, a.task.Ref().Repo, token)
	}
	return costUSD, ok
}

// finish moves a task from one state to a terminal one with its result,
// reports it and counts it. It returns the stored task.
func (d *Dispatcher) finish(ctx context.Context, t *agentbot.Task, from, to agentbot.TaskState, outcome string, res agentbot.Result, logTail []string) (*agentbot.Task, error) {
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), reportTimeout)
	defer cancel()
	red := newRedactor("", d.opts.AgentEnv)
	if a := d.sched.attempt(t.ID); a != nil {
		red = a.redactor()
	}
	res = red.Result(res)
	logTail = red.Lines(logTail)
	done, err := d.store.Transition(sctx, t.ID, from, to, func(s *agentbot.Task) error {
		s.Result = res
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("dispatch: finish %s: %w", t, err)
	}
	d.note(ctx, t.ID, "agentbot: task "+string(to))
	d.metrics.finished.WithLabelValues(outcome).Inc()
	if !done.StartedAt.IsZero() {
		d.metrics.duration.WithLabelValues(outcome).Observe(done.FinishedAt.Sub(done.StartedAt).Seconds())
	}
	logFrom(ctx).Info("task finished", "outcome", outcome, "phase", res.FailedPhase, "reason", res.Error)
	d.finalReport(sctx, done, logTail)
	return done, nil
}

// finalReport writes a terminal task's result through its conversation,
// which is then done.
func (d *Dispatcher) finalReport(ctx context.Context, t *agentbot.Task, logTail []string) {
	v := d.view(t, logTail, "")
	d.conversationOf(t).Finish(ctx, t, v, d.finalHead(ctx, t))
	d.replyInThread(ctx, t, v)
	d.forgetConversation(t.ID)
}

func (d *Dispatcher) cleanup(ctx context.Context, t *agentbot.Task, failed bool) {
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), reportTimeout)
	defer cancel()
	if err := d.launch.Cleanup(cctx, t.ID, failed && d.opts.KeepFailedWorkspaces); err != nil {
		d.metrics.launcherErrors.WithLabelValues("cleanup").Inc()
		logFrom(ctx).Warn("cannot clean up sandbox", "err", err)
	}
}
