package dispatch

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/agentbot/agentbot"
	"github.com/agentbot/agentbot/github"
)

// reportTimeout bounds GitHub calls made after a task's own context ended
// (cancel, shutdown), so its final state still reaches the conversation.
const reportTimeout = 30 * time.Second

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
	}
	switch {
	case !t.StartedAt.IsZero() && !t.FinishedAt.IsZero():
		v.Elapsed = t.FinishedAt.Sub(t.StartedAt)
	case !t.StartedAt.IsZero():
		v.Elapsed = d.now().Sub(t.StartedAt)
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
func (d *Dispatcher) render(t *agentbot.Task, v github.ProgressView) github.ProgressView {
	d.mu.Lock()
	note := d.notes[t.ID]
	d.mu.Unlock()
	if note != "" && !strings.Contains(v.Note, note) {
		v.Note = strings.TrimSpace(v.Note + " " + note)
	}
	return d.redactorFor(t.ID).View(v)
}

// report writes v to the task's comment and check run. Failures are logged:
// the conversation lags, the task goes on.
func (d *Dispatcher) report(ctx context.Context, t *agentbot.Task, v github.ProgressView) {
	log := d.taskLogger(t)
	inst, ref := t.Trigger.InstallationID, t.Ref()
	v = d.render(t, v)
	if t.CommentID != 0 {
		if err := d.gh.EditComment(ctx, inst, ref.Repo, t.CommentID, github.RenderComment(v)); err != nil {
			log.Warn("cannot update progress comment", "err", err)
		}
	}
	if t.CheckRunID != 0 {
		if err := d.gh.UpdateCheckRun(ctx, inst, ref.Repo, t.CheckRunID, github.RenderCheckRun(v)); err != nil {
			log.Warn("cannot update check run", "err", err)
		}
	}
}

// finalReport writes a terminal task's result to its comment and check run
// and records that it did, so a restart does not repeat it.
func (d *Dispatcher) finalReport(ctx context.Context, t *agentbot.Task, logTail []string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), reportTimeout)
	defer cancel()
	d.report(ctx, t, d.view(t, logTail, ""))
	// A new task's check run goes on the pushed commit, which only exists
	// now; a follow-up's check run was created on the PR head earlier.
	if t.CheckRunID == 0 && t.Result.Commit != "" {
		cr := github.RenderCheckRun(d.render(t, d.view(t, logTail, "")))
		cr.HeadSHA = t.Result.Commit
		if id, err := d.gh.CreateCheckRun(ctx, t.Trigger.InstallationID, t.Ref().Repo, cr); err != nil {
			d.taskLogger(t).Warn("cannot create check run", "err", err)
		} else {
			t.CheckRunID = id
		}
	}
	checkRunID := t.CheckRunID
	if _, err := d.store.Update(ctx, t.ID, func(s *agentbot.Task) error {
		s.Reported = true
		if s.CheckRunID == 0 {
			s.CheckRunID = checkRunID
		}
		return nil
	}); err != nil {
		d.taskLogger(t).Warn("cannot record that the result was reported", "err", err)
	}
}

// finish moves a task from one state to a terminal one with its result,
// reports it and counts it. It returns the stored task.
func (d *Dispatcher) finish(ctx context.Context, t *agentbot.Task, from, to agentbot.TaskState, outcome string, res agentbot.Result, logTail []string) (*agentbot.Task, error) {
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), reportTimeout)
	defer cancel()
	red := d.redactorFor(t.ID)
	res = red.Result(res)
	logTail = red.Lines(logTail)
	done, err := d.store.Transition(sctx, t.ID, from, to, func(s *agentbot.Task) error {
		s.Result = res
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("dispatch: finish %s: %w", t, err)
	}
	_ = d.logs.Note(t.ID, d.now(), "agentbot: task "+string(to))
	d.metrics.finished.WithLabelValues(outcome).Inc()
	if !done.StartedAt.IsZero() {
		d.metrics.duration.WithLabelValues(outcome).Observe(done.FinishedAt.Sub(done.StartedAt).Seconds())
	}
	d.taskLogger(done).Info("task finished", "outcome", outcome, "phase", res.FailedPhase, "err", res.Error)
	d.finalReport(ctx, done, logTail)
	return done, nil
}

// refuse ends a queued task that must not run, with a comment saying why
// (unless silent: bots and events that were never meant for agentbot).
func (d *Dispatcher) refuse(ctx context.Context, t *agentbot.Task, outcome, phase, reason string, silent bool) {
	log := d.taskLogger(t)
	to := agentbot.StateFailed
	if silent {
		to = agentbot.StateCancelled
	}
	if !silent {
		body := github.CommentMarker(t.ID) + "\n" + reason
		if id, err := d.postComment(ctx, t, body); err != nil {
			log.Warn("cannot post refusal", "err", err)
		} else {
			t.CommentID = id
		}
	}
	commentID := t.CommentID
	_, err := d.store.Transition(ctx, t.ID, agentbot.StateQueued, to, func(s *agentbot.Task) error {
		s.Result.Error = reason
		s.Result.FailedPhase = phase
		s.CommentID = commentID
		s.Reported = true
		return nil
	})
	if err != nil {
		log.Warn("cannot record refusal", "err", err)
		return
	}
	d.metrics.finished.WithLabelValues(outcome).Inc()
	log.Info("task not run", "outcome", outcome, "reason", reason)
}

// acknowledge checks a new task before it may run — settings readable,
// trigger label the configured one, sender allowed — then reacts 👀, opens
// the progress comment (saying what it waits behind) and, on a pull
// request, a queued check run. A task is runnable once it has its comment.
// Errors talking to GitHub leave it queued for the next scan.
func (d *Dispatcher) acknowledge(ctx context.Context, t *agentbot.Task) {
	log := d.taskLogger(t)
	inst, ref, login := t.Trigger.InstallationID, t.Ref(), t.Trigger.Sender.Login
	if agentbot.IsBot(login, "") {
		d.refuse(ctx, t, "ignored", "", "ignored: triggered by the bot account "+login, true)
		return
	}
	settings, err := d.gh.Settings(ctx, inst, ref.Repo)
	var se *github.SettingsError
	switch {
	case errors.As(err, &se):
		d.refuse(ctx, t, "refused", "settings", "agentbot did not run: the repository's settings file has problems.\n\n"+codeBlock(se.Error()), false)
		return
	case err != nil:
		log.Warn("cannot read settings; will retry", "err", err)
		return
	}
	if t.Trigger.Label != "" && !strings.EqualFold(t.Trigger.Label, settings.TriggerLabel) {
		d.refuse(ctx, t, "ignored", "", fmt.Sprintf("ignored: label %q is not the trigger label %q", t.Trigger.Label, settings.TriggerLabel), true)
		return
	}
	acc, err := d.gh.Authorize(ctx, inst, ref.Repo, login, settings)
	if err != nil {
		log.Warn("cannot check permission; will retry", "err", err)
		return
	}
	if !acc.Allowed {
		d.refuse(ctx, t, "refused", "permission", fmt.Sprintf("@%s agentbot did not run: %s.", login, strings.TrimSuffix(acc.Reason, ".")), false)
		return
	}
	if err := d.gh.React(ctx, inst, ref, t.Trigger.CommentID, "eyes"); err != nil {
		log.Warn("cannot react", "err", err)
	}
	behind := d.queuedBehind(ctx, t)
	commentID, err := d.postComment(ctx, t, github.RenderComment(d.view(t, nil, behind)))
	if err != nil {
		log.Warn("cannot open progress comment; will retry", "err", err)
		return
	}
	var checkRunID int64
	if t.Trigger.Kind == agentbot.KindFollowUp {
		head := t.Trigger.HeadSHA
		if head == "" {
			if pr, err := d.gh.PullRequest(ctx, inst, ref); err == nil {
				head = pr.HeadSHA
			} else {
				log.Warn("cannot read pull request for its check run", "err", err)
			}
		}
		if head != "" {
			cr := github.RenderCheckRun(d.view(t, nil, behind))
			cr.HeadSHA = head
			if checkRunID, err = d.gh.CreateCheckRun(ctx, inst, ref.Repo, cr); err != nil {
				log.Warn("cannot create check run", "err", err)
			}
		}
	}
	nt, err := d.store.Update(ctx, t.ID, func(s *agentbot.Task) error {
		s.CommentID = commentID
		if s.CheckRunID == 0 {
			s.CheckRunID = checkRunID
		}
		return nil
	})
	if err != nil {
		log.Error("cannot record progress comment", "err", err)
		return
	}
	if nt.State.Terminal() {
		// Cancelled while the comment was being opened: the cancel's
		// report had no comment to edit, so this one would say "queued"
		// for ever.
		d.finalReport(ctx, nt, nil)
		return
	}
	log.Info("task acknowledged", "comment_id", commentID, "queued_behind", behind)
}

// postComment posts body, which starts with t's CommentMarker, as t's
// comment. A create is not idempotent: GitHub may post the comment and still
// fail the call, and github/'s own look-up after it may fail too (or agentbot
// may die before recording the id). So the first attempt is recorded on the
// task before it is made, and every later attempt first looks for the
// comment an earlier one may have posted, adopting it (with body) if found.
// A failed look-up is an error: posting blind could make a second comment.
func (d *Dispatcher) postComment(ctx context.Context, t *agentbot.Task, body string) (int64, error) {
	inst, ref := t.Trigger.InstallationID, t.Ref()
	var since time.Time
	if _, err := d.store.Update(ctx, t.ID, func(s *agentbot.Task) error {
		since = s.CommentAttemptedAt
		if since.IsZero() {
			s.CommentAttemptedAt = d.now()
		}
		return nil
	}); err != nil {
		return 0, fmt.Errorf("dispatch: record the comment attempt of %s: %w", t, err)
	}
	if !since.IsZero() {
		id, found, err := d.gh.FindComment(ctx, inst, ref, github.CommentMarker(t.ID), since)
		if err != nil {
			return 0, fmt.Errorf("dispatch: look for the comment an earlier attempt may have posted for %s: %w", t, err)
		}
		if found {
			d.taskLogger(t).Info("adopting the comment an earlier attempt posted", "comment_id", id)
			if err := d.gh.EditComment(ctx, inst, ref.Repo, id, body); err != nil {
				d.taskLogger(t).Warn("cannot update adopted comment", "comment_id", id, "err", err)
			}
			return id, nil
		}
	}
	return d.gh.CreateComment(ctx, inst, ref, body)
}

// codeBlock fences content as a Markdown code block whose fence is longer
// than any run of backticks inside it, so a key or value quoted from a
// settings file cannot close the block early.
func codeBlock(content string) string {
	longest, run := 0, 0
	for _, r := range content {
		if r == '`' {
			run++
			longest = max(longest, run)
		} else {
			run = 0
		}
	}
	fence := strings.Repeat("`", max(3, longest+1))
	return fence + "\n" + strings.TrimRight(content, "\n") + "\n" + fence
}

// queuedBehind names the task t waits for on its issue, if any.
func (d *Dispatcher) queuedBehind(ctx context.Context, t *agentbot.Task) string {
	d.mu.Lock()
	id := d.busy[issueKey(t.Ref())]
	d.mu.Unlock()
	if id != "" {
		return id
	}
	tasks, err := d.store.ListByIssue(ctx, t.Ref())
	if err != nil {
		return ""
	}
	for _, o := range tasks {
		if o.ID == t.ID {
			break
		}
		if o.Trigger.Kind != agentbot.KindControl && !o.State.Terminal() {
			id = o.ID
		}
	}
	return id
}
