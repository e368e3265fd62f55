package dispatch

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/agentbot/agentbot"
	"github.com/agentbot/agentbot/github"
)

// admit decides whether a queued task may run: never for a bot; the
// repository's settings must be readable and, for a label trigger, name that
// label; the sender must be allowed. It reacts 👀 as soon as the trigger is
// known to be meant for agentbot — a comment at once, a label once the
// settings confirm it — so the person who asked sees it within the first
// calls. more, if set, runs beside the permission check (an attempt's own
// lookups). ok=false means t was refused (and ended) or GitHub failed (t
// stays queued for the next scan).
func (d *Dispatcher) admit(ctx context.Context, t *agentbot.Task, more func(context.Context, github.Settings)) (github.Settings, bool) {
	if !d.resolveInstallation(ctx, t) {
		return github.Settings{}, false
	}
	inst, ref, login := t.Trigger.InstallationID, t.Ref(), t.Trigger.Sender.Login
	log := logFrom(ctx)
	if agentbot.IsBot(login, "") {
		d.refuse(ctx, t, "ignored", "", "ignored: triggered by the bot account "+login, true)
		return github.Settings{}, false
	}
	byComment := t.Trigger.Label == "" && t.Trigger.Assignee == ""
	if byComment {
		d.react(ctx, t)
	}
	settings, err := d.readSettings(ctx, inst, ref.Repo)
	var se *github.SettingsError
	switch {
	case errors.As(err, &se):
		d.refuse(ctx, t, "refused", "settings", "agentbot did not run: the repository's settings file has problems.\n\n"+codeBlock(se.Error()), false)
		return settings, false
	case err != nil:
		log.Warn("cannot read settings; will retry", "err", err)
		return settings, false
	}
	if !byComment {
		if why := notTriggeredBy(t.Trigger, settings); why != "" {
			d.refuse(ctx, t, "ignored", "", why, true)
			return settings, false
		}
		d.react(ctx, t)
	}
	var wg sync.WaitGroup
	if more != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			more(ctx, settings)
		}()
	}
	acc, err := d.authorize(ctx, t, settings)
	wg.Wait()
	if err != nil {
		log.Warn("cannot check permission; will retry", "err", err)
		return settings, false
	}
	if !acc.Allowed {
		d.refuse(ctx, t, "refused", "permission", fmt.Sprintf("@%s agentbot did not run: %s.", login, strings.TrimSuffix(acc.Reason, ".")), false)
		return settings, false
	}
	return settings, true
}

// readSettings reads repo's settings and passes good ones on to
// Options.OnSettings.
func (d *Dispatcher) readSettings(ctx context.Context, inst int64, repo agentbot.Repo) (github.Settings, error) {
	s, err := d.gh.Settings(ctx, inst, repo)
	if err == nil && d.opts.OnSettings != nil {
		d.opts.OnSettings(repo, s)
	}
	return s, err
}

// authorize checks the sender against the repository's rules; a task API
// request was authorised at intake by its token's repository scope.
func (d *Dispatcher) authorize(ctx context.Context, t *agentbot.Task, s github.Settings) (github.Access, error) {
	if t.Trigger.API != nil {
		return github.Access{Allowed: true, Reason: "task API token " + t.Trigger.API.Token}, nil
	}
	return d.gh.Authorize(ctx, t.Trigger.InstallationID, t.Ref().Repo, t.Trigger.Sender.Login, s)
}

// resolveInstallation finds the installation of a task API request's
// repository (intake stores the request before asking GitHub anything)
// and records it on t. false: GitHub failed (t stays queued) or the App
// is not installed there (t is refused).
func (d *Dispatcher) resolveInstallation(ctx context.Context, t *agentbot.Task) bool {
	if t.Trigger.InstallationID != 0 {
		return true
	}
	inst, err := d.gh.InstallationOf(ctx, t.Ref().Repo)
	switch {
	case github.IsNotFound(err):
		d.refuse(ctx, t, "refused", "preparing", fmt.Sprintf("agentbot is not installed on %s.", t.Ref().Repo), false)
		return false
	case err != nil:
		logFrom(ctx).Warn("cannot find the repository's installation; will retry", "err", err)
		return false
	}
	nt, err := d.store.Update(ctx, t.ID, func(s *agentbot.Task) error { s.Trigger.InstallationID = inst; return nil })
	if err != nil {
		logFrom(ctx).Warn("cannot record the installation; will retry", "err", err)
		return false
	}
	*t = *nt
	d.conversationOf(t).inst = inst
	return true
}

// notTriggeredBy says why a label or an assignment is not this
// repository's trigger ("" when it is).
func notTriggeredBy(trig agentbot.Trigger, s github.Settings) string {
	switch {
	case trig.Assignee != "" && (s.Assignee == "" || !strings.EqualFold(trig.Assignee, s.Assignee)):
		return fmt.Sprintf("ignored: %q is not the repository's assignee %q", trig.Assignee, s.Assignee)
	case trig.Label != "" && !strings.EqualFold(trig.Label, s.TriggerLabel):
		return fmt.Sprintf("ignored: label %q is not the trigger label %q", trig.Label, s.TriggerLabel)
	}
	return ""
}

// react puts 👀 on the triggering comment, or on the issue for a label.
func (d *Dispatcher) react(ctx context.Context, t *agentbot.Task) {
	if t.Ref().Number == 0 {
		return // a task API request without an issue
	}
	if err := d.gh.React(ctx, t.Trigger.InstallationID, t.Ref(), t.Trigger.CommentID, "eyes"); err != nil {
		logFrom(ctx).Warn("cannot react", "err", err)
	}
}

// acknowledge admits a task that must wait (its issue or every worker is
// busy) and opens its progress comment saying what it waits behind and, on
// a pull request, a queued check run. Errors talking to GitHub leave it
// unacknowledged for the next scan.
func (d *Dispatcher) acknowledge(ctx context.Context, t *agentbot.Task) {
	settings, ok := d.admit(ctx, t, nil)
	if !ok {
		return
	}
	log := logFrom(ctx)
	conv := d.conversationOf(t)
	head := ""
	if t.Trigger.Kind == agentbot.KindFollowUp {
		if head = t.Trigger.HeadSHA; head == "" {
			pr, err := d.gh.PullRequest(ctx, t.Trigger.InstallationID, t.Ref())
			if err != nil {
				log.Warn("cannot read pull request for its check run", "err", err)
			} else if fail := notAgentbots(pr, settings, t.Ref()); fail != nil {
				d.refuse(ctx, t, "refused", fail.phase, fmt.Sprintf("@%s agentbot did not run: %s", t.Trigger.Sender.Login, fail.msg), false)
				return
			}
			head = pr.HeadSHA
		}
	}
	behind := d.queuedBehind(ctx, t)
	if err := conv.Open(ctx, d.view(t, nil, behind), head); err != nil {
		log.Warn("cannot open progress comment; will retry", "err", err)
		return
	}
	nt, err := d.recordAcknowledged(ctx, t)
	if err != nil {
		log.Error("cannot record progress comment", "err", err)
		return
	}
	if nt.State.Terminal() {
		// Cancelled while the comment was being opened: the cancel's
		// report had no comment to edit, so this one would say "queued"
		// for ever.
		conv.Finish(ctx, nt, d.view(nt, nil, ""), d.finalHead(ctx, nt))
		d.forgetConversation(nt.ID)
		return
	}
	log.Info("task acknowledged", "comment_id", nt.CommentID, "queued_behind", behind)
}

// refuse ends a queued task that must not run, with a comment saying why
// (unless silent: bots and events that were never meant for agentbot).
func (d *Dispatcher) refuse(ctx context.Context, t *agentbot.Task, outcome, phase, reason string, silent bool) {
	log := logFrom(ctx)
	to := agentbot.StateFailed
	if silent {
		to = agentbot.StateCancelled
	}
	var commentID int64
	if !silent {
		id, err := d.conversationOf(t).Reply(ctx, reason)
		if err != nil {
			log.Warn("cannot post refusal", "err", err)
		}
		commentID = id
		d.refuseInThread(ctx, t, reason)
	}
	defer d.forgetConversation(t.ID)
	_, err := d.store.Transition(ctx, t.ID, agentbot.StateQueued, to, func(s *agentbot.Task) error {
		s.Result.Error = reason
		s.Result.FailedPhase = phase
		if commentID != 0 {
			s.CommentID = commentID
		}
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

// queuedBehind names the task t waits for on its issue, if any.
func (d *Dispatcher) queuedBehind(ctx context.Context, t *agentbot.Task) string {
	if id := d.sched.holder(t.Ref()); id != "" && id != t.ID {
		return id
	}
	tasks, err := d.store.ListByIssue(ctx, t.Ref())
	if err != nil {
		return ""
	}
	id := ""
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
