package dispatch

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/agentbot/agentbot"
	"github.com/agentbot/agentbot/github"
	"github.com/agentbot/agentbot/runner"
)

// logTailLines is how many lines of the agent's output a failure report
// quotes.
const logTailLines = 25

// stopTimeout bounds how long a cancel waits for the launcher to stop a run.
const stopTimeout = 30 * time.Second

// plan is what a run needs beyond the task: the repository's settings and
// coordinates, resolved when the run starts.
type plan struct {
	settings github.Settings
	repo     github.RepoInfo
	job      runner.Job
	// expectedOld is the branch head the push must replace ("" for a new
	// branch).
	expectedOld string
}

// failure is a task that went wrong at a known phase.
type failure struct {
	phase string
	msg   string
	tail  []string
}

func (f *failure) Error() string { return fmt.Sprintf("%s: %s", f.phase, f.msg) }

func failf(phase, format string, args ...any) *failure {
	return &failure{phase: phase, msg: fmt.Sprintf(format, args...)}
}

// work runs one task from queued (or, with attached, an already running
// run re-attached after a restart) to its end.
func (d *Dispatcher) work(ctx context.Context, t *agentbot.Task, attached runner.Run) {
	defer d.recoverPanic(t)
	log := d.taskLogger(t)
	act := &activeRun{cancel: make(chan string, 1)}
	d.mu.Lock()
	d.active[t.ID] = act
	d.mu.Unlock()

	if attached == nil {
		started, err := d.store.Transition(ctx, t.ID, agentbot.StateQueued, agentbot.StateRunning, func(s *agentbot.Task) error {
			s.Attempt++
			s.Phase = "starting"
			return nil
		})
		if err != nil {
			var te interface{ Stale() bool }
			if errors.As(err, &te) && te.Stale() {
				return // cancelled or taken meanwhile
			}
			log.Error("cannot start task", "err", err)
			return
		}
		t = started
		_ = d.logs.Note(t.ID, d.now(), fmt.Sprintf("%s%d started", attemptNote, t.Attempt))
		d.report(ctx, t, d.view(t, nil, ""))
	}

	p, fail := d.plan(ctx, t)
	if fail != nil {
		if ctx.Err() != nil {
			d.stopping(ctx, t, attached)
			return
		}
		d.fail(ctx, t, fail)
		return
	}
	d.setToken(t.ID, p.job.Token)
	run := attached
	if run == nil {
		var err error
		run, err = d.launch.Start(ctx, p.job)
		if err != nil {
			d.metrics.launcherErrors.WithLabelValues("start").Inc()
			if ctx.Err() != nil {
				d.stopping(ctx, t, nil)
				return
			}
			d.fail(ctx, t, failf("starting", "the %s launcher could not start the sandbox: %v", d.launch.Name(), err))
			d.cleanup(ctx, t, true)
			return
		}
		if t.Attempt == 1 && t.Requeues == 0 {
			d.metrics.timeToStart.Observe(d.now().Sub(t.CreatedAt).Seconds())
		}
		d.metrics.started.WithLabelValues(string(t.Trigger.Kind)).Inc()
		log.Info("runner started", "launcher", d.launch.Name(), "attempt", t.Attempt)
	}

	out := d.follow(ctx, t, run, act, p.job.TimeLimit)
	if out.shutdown {
		d.stopping(ctx, out.task, run)
		return
	}
	t = out.task
	switch {
	case out.cancelledBy != "":
		d.end(ctx, t, agentbot.StateCancelled, "cancelled", agentbot.Result{
			Error: "cancelled by @" + out.cancelledBy, FailedPhase: t.Phase,
		}, nil, false)
	case out.timedOut:
		d.fail(ctx, t, &failure{phase: t.Phase, msg: fmt.Sprintf("the task ran out of its time limit of %s", time.Duration(p.job.TimeLimit)), tail: out.tail})
	case errors.Is(out.waitErr, runner.ErrGone):
		// A re-attached sandbox whose agent-runner never started (the
		// previous process died between the claim turning Ready and the
		// exec) is an interruption like any other: re-queue it once.
		d.interrupted(ctx, t)
	case out.waitErr != nil:
		d.metrics.launcherErrors.WithLabelValues("wait").Inc()
		d.fail(ctx, t, &failure{phase: t.Phase, msg: "agentbot lost the sandbox: " + out.waitErr.Error(), tail: out.tail})
	case out.code != runner.ExitOK || out.result == nil:
		d.fail(ctx, t, runFailure(t, out, out.stderr))
	case out.result.Status == runner.StatusNoChanges:
		d.end(ctx, t, agentbot.StateSucceeded, "no_changes", agentbot.Result{
			NoChanges: true, Summary: out.result.Summary, CostUSD: out.result.CostUSD, BaseSHA: out.result.BaseSHA,
		}, nil, true)
	default:
		// The agent's work is done: it is delivered whole. A cancel from
		// now on is told it is too late, and a graceful stop lets the
		// delivery finish within the shutdown grace rather than run the
		// agent again.
		if by := act.startDelivery(deliveryBranch(p, out.result)); by != "" {
			// Asked as the agent finished: the reply was left to this
			// task's comment, which must say why it did not stop.
			d.addNote(t.ID, fmt.Sprintf("@%s asked to cancel just as the agent finished; it was too late to stop, so its result is delivered.", by))
		}
		dctx, done := d.deliveryContext(ctx)
		res, fail := d.deliver(dctx, t, p, run, out.result)
		cut := dctx.Err() != nil // the grace ran out
		done()
		if fail != nil {
			if cut {
				d.stopping(ctx, t, run)
				return
			}
			d.fail(ctx, t, fail)
			return
		}
		d.end(ctx, t, agentbot.StateSucceeded, "succeeded", res, nil, true)
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
			d.log.Warn("shutdown grace is over; delivery cut short")
			cancel()
		case <-dctx.Done():
		}
	})
	return dctx, func() {
		stop()
		cancel()
	}
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
		f.msg = exitMeaning(out.code)
	} else {
		f.msg += " (" + exitMeaning(out.code) + ")"
	}
	if len(f.tail) == 0 {
		f.tail = stderr
	}
	if f.phase == "" || f.phase == "starting" {
		f.phase = runner.PhaseCloning
	}
	return f
}

func exitMeaning(code int) string {
	switch code {
	case runner.ExitOK:
		return "agent-runner ended without a result"
	case runner.ExitBadJob:
		return "agent-runner refused the job"
	case runner.ExitClone:
		return "the repository could not be cloned"
	case runner.ExitInit:
		return "the template's init script failed"
	case runner.ExitAgent:
		return "the agent failed"
	case runner.ExitTimeout:
		return "the time limit passed"
	case runner.ExitCommit:
		return "the changes could not be committed"
	case runner.ExitBundle:
		return "the result could not be bundled"
	case runner.ExitCancelled:
		return "the run was cancelled"
	case runner.ExitInternal:
		return "agent-runner failed internally"
	}
	return fmt.Sprintf("agent-runner exited with code %d", code)
}

// followed is how a run went.
type followed struct {
	task        *agentbot.Task
	code        int
	waitErr     error
	result      *runner.RunResult
	errEvent    *runner.Event
	tail        []string
	stderr      []string // agent-runner's, redacted
	cancelledBy string
	timedOut    bool
	shutdown    bool
}

// follow consumes a run's events — recording them, moving the phase and
// reporting progress — until it ends, and stops it on cancel or when its
// time is up.
func (d *Dispatcher) follow(ctx context.Context, t *agentbot.Task, run runner.Run, act *activeRun, limit runner.Duration) followed {
	log := d.taskLogger(t)
	out := followed{task: t}
	deadline := time.NewTimer(d.backstop(t, limit))
	defer deadline.Stop()
	stopped := make(chan error, 1)
	stopping := false
	stop := func() {
		if stopping {
			return
		}
		stopping = true
		go func() {
			sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), stopTimeout)
			defer cancel()
			stopped <- run.Stop(sctx)
		}()
	}
	var lastReport time.Time
	var progress string
	red := d.redactorFor(t.ID)
	events := run.Events()
	for events != nil {
		select {
		case ev, ok := <-events:
			if !ok {
				events = nil
				break
			}
			ev = red.Event(ev)
			if err := d.logs.Append(t.ID, ev); err != nil {
				log.Warn("cannot record event", "err", err)
			}
			switch ev.Type {
			case runner.EventLog:
				out.tail = appendTail(out.tail, ev.Message)
			case runner.EventProgress:
				progress = ev.Message
				if d.now().Sub(lastReport) >= d.opts.ProgressInterval {
					lastReport = d.now()
					v := d.view(out.task, nil, "")
					v.Note = progress
					d.report(ctx, out.task, v)
				}
			case runner.EventPhase:
				if nt, err := d.store.Update(ctx, t.ID, func(s *agentbot.Task) error { s.Phase = ev.Phase; return nil }); err == nil {
					out.task = nt
				} else {
					out.task.Phase = ev.Phase
				}
				lastReport = d.now()
				d.report(ctx, out.task, d.view(out.task, nil, ""))
				log.Debug("phase", "phase", ev.Phase)
			case runner.EventResult:
				out.result = ev.Result
			case runner.EventError:
				e := ev
				out.errEvent = &e
			}
		case by := <-act.cancel:
			out.cancelledBy = by
			log.Info("cancelling run", "by", by)
			stop()
		case <-deadline.C:
			out.timedOut = true
			log.Warn("run outlived its time limit; stopping it")
			stop()
		case <-ctx.Done():
			// Shutdown: the worker stops the run (or leaves it to be
			// re-attached) and re-queues the task.
			out.shutdown = true
			return out
		}
	}
	exit, err := run.Wait(ctx)
	if ctx.Err() != nil {
		out.shutdown = true
		return out
	}
	code := exit.Code
	out.stderr = red.Lines(exit.StderrTail)
	if stopping {
		if serr := <-stopped; serr != nil {
			d.metrics.launcherErrors.WithLabelValues("stop").Inc()
			log.Warn("stopping run", "err", serr)
		}
	}
	out.code, out.waitErr = code, err
	// A cancel that raced the end of the run still counts as a cancel only
	// if the run did not finish on its own.
	if out.cancelledBy == "" {
		select {
		case by := <-act.cancel:
			if code != runner.ExitOK {
				out.cancelledBy = by
			}
		default:
		}
	}
	if code == runner.ExitCancelled && out.cancelledBy == "" && !out.timedOut {
		out.cancelledBy = "agentbot"
	}
	return out
}

// backstopGrace is how long past its time limit a run may go before the
// dispatcher stops it: agent-runner enforces the limit itself and needs a
// moment to report it.
const backstopGrace = 2 * time.Minute

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

// plan resolves the repository, its settings and the branch, mints the
// read-only token and builds the job.
func (d *Dispatcher) plan(ctx context.Context, t *agentbot.Task) (*plan, *failure) {
	inst, ref := t.Trigger.InstallationID, t.Ref()
	settings, err := d.gh.Settings(ctx, inst, ref.Repo)
	if err != nil {
		return nil, failf("preparing", "cannot read the repository's settings: %v", err)
	}
	info, err := d.gh.Repository(ctx, inst, ref.Repo)
	if err != nil {
		return nil, failf("preparing", "cannot read the repository: %v", err)
	}
	limit, note := d.timeLimit(settings)
	if note != "" {
		d.setNote(t.ID, note)
		_ = d.logs.Note(t.ID, d.now(), "agentbot: "+note)
	}
	agent, fail := d.agentSpec(settings)
	if fail != nil {
		return nil, fail
	}
	p := &plan{settings: settings, repo: info}
	job := runner.Job{
		Version:     runner.ProtocolVersion,
		TaskID:      t.ID,
		Repo:        ref.Repo.FullName(),
		CloneURL:    info.CloneURL,
		Template:    settings.Template,
		Agent:       agent,
		TimeLimit:   runner.Duration(limit),
		AuthorName:  d.opts.AuthorName,
		AuthorEmail: d.opts.AuthorEmail,
		IssueNumber: ref.Number,
		Env:         d.opts.AgentEnv,
		Prompt: runner.JobPrompt{
			Title:        t.Trigger.Prompt.Title,
			Body:         t.Trigger.Prompt.Body,
			Instructions: t.Trigger.Prompt.Instructions,
		},
	}
	switch t.Trigger.Kind {
	case agentbot.KindFollowUp:
		pr, err := d.gh.PullRequest(ctx, inst, ref)
		if err != nil {
			return nil, failf("preparing", "cannot read pull request %s: %v", ref, err)
		}
		if !strings.HasPrefix(pr.HeadBranch, settings.BranchPrefix) || (pr.HeadRepo != "" && !strings.EqualFold(pr.HeadRepo, ref.Repo.FullName())) {
			return nil, failf("preparing", "pull request #%d's branch %q is not one of agentbot's (%s…); agentbot follows up only on its own pull requests", pr.Number, pr.HeadBranch, settings.BranchPrefix)
		}
		job.FollowUp = true
		job.Branch = pr.HeadBranch
		job.BaseBranch = pr.BaseBranch
		job.ExpectedHeadSHA = pr.HeadSHA
		p.expectedOld = pr.HeadSHA
		if job.Prompt.Title == "" {
			job.Prompt.Title, job.Prompt.Body = pr.Title, pr.Body
		}
		if rc, err := d.gh.ReviewComments(ctx, inst, ref); err == nil {
			job.Prompt.ReviewComments = rc
		} else {
			d.taskLogger(t).Warn("cannot read review comments", "err", err)
		}
	default:
		if job.Prompt.Title == "" {
			is, err := d.gh.Issue(ctx, inst, ref)
			if err != nil {
				return nil, failf("preparing", "cannot read issue %s: %v", ref, err)
			}
			job.Prompt.Title, job.Prompt.Body = is.Title, is.Body
		}
		job.BaseBranch = info.DefaultBranch
		job.Branch = github.BranchName(settings.BranchPrefix, ref.Number, job.Prompt.Title)
		head, err := d.gh.BranchHead(ctx, inst, ref.Repo, job.Branch)
		switch {
		case err == nil:
			// An earlier task (or an attempt cut short after its push)
			// left this branch: continue it rather than fork a second
			// history, so the push is a fast-forward guarded by its head.
			job.FollowUp = true
			job.ExpectedHeadSHA = head
			p.expectedOld = head
		case github.IsNotFound(err):
		default:
			return nil, failf("preparing", "cannot read branch %s: %v", job.Branch, err)
		}
	}
	tok, err := d.gh.TokenFor(ctx, inst, ref.Repo, github.Permissions{"contents": "read"})
	if err != nil {
		return nil, failf("preparing", "cannot mint a read-only token for %s: %v", ref.Repo, err)
	}
	job.Token = tok.Value
	p.job = job
	return p, nil
}

// timeLimit is a run's time limit: the repository's, at most the
// operator's ceiling, else the operator's default. note says so when the
// repository's limit was cut down.
func (d *Dispatcher) timeLimit(s github.Settings) (limit time.Duration, note string) {
	limit = s.TimeLimit
	if limit <= 0 {
		limit = d.opts.TimeLimit
	}
	if limit > d.opts.MaxTimeLimit {
		note = fmt.Sprintf("The repository's time_limit of %s is above this agentbot's maximum, so the task may run for at most %s.", limit, d.opts.MaxTimeLimit)
		limit = d.opts.MaxTimeLimit
	}
	return limit, note
}

// agentSpec picks the agent. An operator who configured the command agent
// runs it for every repository (it is the operator's own wrapper, and a
// repository file never names a command); otherwise the repository's choice
// of claude or codex applies.
func (d *Dispatcher) agentSpec(s github.Settings) (runner.AgentSpec, *failure) {
	spec := d.opts.Agent
	if spec.Name != "command" && s.Agent != "" && s.Agent != spec.Name {
		spec = runner.AgentSpec{Name: s.Agent}
		if s.Agent == "command" {
			spec.Command = d.opts.Agent.Command
		}
	}
	if s.Model != "" {
		spec.Model = s.Model
	}
	if s.MaxTurns > 0 {
		spec.MaxTurns = s.MaxTurns
	}
	if spec.Name == "command" && spec.Command == "" {
		return spec, failf("preparing", "the repository asks for the command agent, but this agentbot has no AGENTBOT_AGENT_COMMAND")
	}
	return spec, nil
}

// deliver fetches the bundle, has github/ verify and push it, and opens the
// draft PR (new task) or leaves the PR as it is (follow-up).
func (d *Dispatcher) deliver(ctx context.Context, t *agentbot.Task, p *plan, run runner.Run, rr *runner.RunResult) (agentbot.Result, *failure) {
	log := d.taskLogger(t)
	inst, ref := t.Trigger.InstallationID, t.Ref()
	res := agentbot.Result{
		BaseBranch:   p.job.BaseBranch,
		BaseSHA:      rr.BaseSHA,
		Commit:       rr.Commit,
		Summary:      rr.Summary,
		CostUSD:      rr.CostUSD,
		FilesChanged: len(rr.Files),
	}
	res.Branch = deliveryBranch(p, rr)
	d.setPhase(ctx, t, "pushing")
	f, err := os.CreateTemp(d.opts.TempDir, "agentbot-"+t.ID+"-*.bundle")
	if err != nil {
		return res, failf("pushing", "cannot store the bundle: %v", err)
	}
	defer os.Remove(f.Name())
	berr := run.Bundle(ctx, f)
	if cerr := f.Close(); berr == nil {
		berr = cerr
	}
	if berr != nil {
		d.metrics.launcherErrors.WithLabelValues("bundle").Inc()
		return res, failf("pushing", "cannot fetch the result bundle from the sandbox: %v", berr)
	}
	expectedOld := p.expectedOld
	if p.job.FollowUp && rr.BaseSHA != "" {
		expectedOld = rr.BaseSHA
	}
	// A new branch's base must be on the base branch; a continued branch
	// is checked against its expected head instead.
	baseBranch := p.job.BaseBranch
	if p.job.FollowUp {
		baseBranch = ""
	}
	head, err := d.gh.PushBundle(ctx, inst, ref.Repo, p.repo.CloneURL, f.Name(), github.BundleCheck{
		Branch:         res.Branch,
		BranchPrefix:   p.settings.BranchPrefix,
		BaseSHA:        rr.BaseSHA,
		BaseBranch:     baseBranch,
		ExpectedOldSHA: expectedOld,
		ProtectedPaths: p.settings.ProtectedPaths,
		MaxBytes:       d.opts.MaxBundleBytes,
	})
	var rej *github.BundleRejected
	switch {
	case errors.As(err, &rej):
		return res, failf("pushing", "agentbot refused to push the agent's work: %s", rej.Reason)
	case err != nil:
		return res, failf("pushing", "push failed: %v", err)
	}
	res.Commit = head
	log.Info("pushed", "branch", res.Branch, "commit", head)
	if t.Trigger.Kind == agentbot.KindFollowUp {
		if pr, err := d.gh.PullRequest(ctx, inst, ref); err == nil {
			res.PRNumber, res.PRURL = pr.Number, pr.HTMLURL
		}
		return res, nil
	}
	d.setPhase(ctx, t, "opening pull request")
	title := t.Trigger.Prompt.Title
	if title == "" {
		title = p.job.Prompt.Title
	}
	pr, created, err := d.gh.OpenPullRequest(ctx, inst, ref.Repo, github.PROptions{
		Head:     res.Branch,
		Base:     p.job.BaseBranch,
		Title:    title,
		Body:     github.PullRequestBody(ref.Number, rr.Summary, d.TaskURL(t.ID)),
		Draft:    p.settings.DraftPR,
		Reviewer: t.Trigger.Sender.Login,
	})
	if err != nil {
		return res, failf("opening pull request", "the branch %s was pushed, but the pull request could not be opened: %v", res.Branch, err)
	}
	res.PRNumber, res.PRURL = pr.Number, pr.HTMLURL
	log.Info("pull request ready", "pr", pr.Number, "created", created)
	return res, nil
}

// deliveryBranch is the branch a run's result is pushed to.
func deliveryBranch(p *plan, rr *runner.RunResult) string {
	if rr.Branch != "" {
		return rr.Branch
	}
	return p.job.Branch
}

func (d *Dispatcher) setPhase(ctx context.Context, t *agentbot.Task, phase string) {
	nt, err := d.store.Update(ctx, t.ID, func(s *agentbot.Task) error { s.Phase = phase; return nil })
	if err == nil {
		*t = *nt
	} else {
		t.Phase = phase
	}
	_ = d.logs.Append(t.ID, runner.Event{Time: d.now(), Type: runner.EventPhase, Phase: phase})
	d.report(ctx, t, d.view(t, nil, ""))
}

// fail ends a running task as failed with its phase and log tail.
func (d *Dispatcher) fail(ctx context.Context, t *agentbot.Task, f *failure) {
	d.end(ctx, t, agentbot.StateFailed, "failed", agentbot.Result{FailedPhase: f.phase, Error: f.msg}, f.tail, false)
}

// end finishes a running task and cleans up its sandbox (kept on failure
// when configured).
func (d *Dispatcher) end(ctx context.Context, t *agentbot.Task, to agentbot.TaskState, outcome string, res agentbot.Result, tail []string, ok bool) {
	if res.Summary == "" {
		res.Summary = t.Result.Summary
	}
	if _, err := d.finish(ctx, t, agentbot.StateRunning, to, outcome, res, tail); err != nil {
		d.taskLogger(t).Error("cannot finish task", "err", err)
	}
	d.cleanup(ctx, t, !ok && to == agentbot.StateFailed)
}

func (d *Dispatcher) cleanup(ctx context.Context, t *agentbot.Task, failed bool) {
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), reportTimeout)
	defer cancel()
	if err := d.launch.Cleanup(cctx, t.ID, failed && d.opts.KeepFailedWorkspaces); err != nil {
		d.metrics.launcherErrors.WithLabelValues("cleanup").Inc()
		d.taskLogger(t).Warn("cannot clean up sandbox", "err", err)
	}
}
