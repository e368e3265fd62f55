package dispatch

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/agentbot/agentbot"
	"github.com/agentbot/agentbot/github"
)

// HelpText answers `/agent help`.
const HelpText = "**agentbot** commands, in a comment on an issue or on agentbot's pull request:\n\n" +
	"| command | what it does |\n|---|---|\n" +
	"| `/agent <instructions>` | run the agent on this issue (or, on agentbot's pull request, a follow-up on its branch) |\n" +
	"| `/agent cancel` | stop the running or queued task |\n" +
	"| `/agent retry` | run the last failed or cancelled task again |\n" +
	"| `/agent status` | say what agentbot is doing here |\n" +
	"| `/agent help` | this text |\n\n" +
	"Labelling an issue with the repository's trigger label (default `agent-task`) also starts a task. " +
	"Only people with write access may use agentbot; settings live in `.github/agentbot.yml`."

// control carries out a control command task: it claims the task (queued
// → running), acts, and ends it succeeded with what it answered.
func (d *Dispatcher) control(ctx context.Context, t *agentbot.Task) {
	log := logFrom(ctx)
	t, err := d.store.Transition(ctx, t.ID, agentbot.StateQueued, agentbot.StateRunning, nil)
	if err != nil {
		log.Debug("control task taken elsewhere", "err", err)
		return
	}
	reply, outcome := d.execControl(ctx, t)
	ref := t.Ref()
	var commentID int64
	if reply != "" && ref.Number != 0 {
		// The marker lets a reply GitHub made but answered with 5xx be
		// found (by github/ at once, by postComment after a restart
		// re-runs the command), so it is never posted twice.
		if commentID, err = d.conversationOf(t).Reply(ctx, reply); err != nil {
			log.Warn("cannot answer control command", "err", err)
		}
	}
	d.forgetConversation(t.ID)
	to := agentbot.StateSucceeded
	if outcome != "succeeded" {
		to = agentbot.StateFailed
	}
	if _, err := d.store.Transition(context.WithoutCancel(ctx), t.ID, agentbot.StateRunning, to, func(s *agentbot.Task) error {
		s.Result.Summary = reply
		s.CommentID = commentID
		s.Reported = true
		if outcome != "succeeded" {
			s.Result.Error = outcome
		}
		return nil
	}); err != nil {
		log.Warn("cannot finish control task", "err", err)
	}
	log.Info("control command done", "control", string(t.Trigger.Control), "outcome", outcome)
}

// execControl acts on a control command and returns the answer to post
// ("" for none) and the outcome.
func (d *Dispatcher) execControl(ctx context.Context, t *agentbot.Task) (reply, outcome string) {
	inst, ref, login := t.Trigger.InstallationID, t.Ref(), t.Trigger.Sender.Login
	if agentbot.IsBot(login, "") {
		return "", "ignored"
	}
	if t.Trigger.API != nil {
		// The task API checked its token's scope; it has no comment to
		// answer and no GitHub user to authorise.
		return d.act(ctx, t, github.DefaultSettings())
	}
	byChange := t.Trigger.Label != "" || t.Trigger.Assignee != ""
	if byChange && !d.anythingLive(ctx, t) {
		// Removing a label or an assignee is everyday issue triage:
		// with nothing of agentbot's running it says nothing.
		return "", "ignored"
	}
	settings, err := d.readSettings(ctx, inst, ref.Repo)
	var se *github.SettingsError
	if errors.As(err, &se) {
		// A broken settings file must not make a task uncancellable.
		settings = github.DefaultSettings()
	} else if err != nil {
		return "", "error: cannot read settings: " + err.Error()
	}
	if byChange && notTriggeredBy(t.Trigger, settings) != "" {
		return "", "ignored"
	}
	acc, err := d.gh.Authorize(ctx, inst, ref.Repo, login, settings)
	if err != nil {
		return "", "error: cannot check permission: " + err.Error()
	}
	if !acc.Allowed {
		if t.Trigger.CommentID == 0 { // a button or a label: no comment to answer
			return "", "refused"
		}
		return fmt.Sprintf("@%s agentbot did not act: %s.", login, strings.TrimSuffix(acc.Reason, ".")), "refused"
	}
	if t.Trigger.CommentID != 0 {
		d.react(ctx, t)
	}
	return d.act(ctx, t, settings)
}

// act carries out an authorised control command.
func (d *Dispatcher) act(ctx context.Context, t *agentbot.Task, settings github.Settings) (reply, outcome string) {
	switch t.Trigger.Control {
	case agentbot.ControlHelp:
		return HelpText, "succeeded"
	case agentbot.ControlStatus:
		return d.status(ctx, t, settings), "succeeded"
	case agentbot.ControlCancel:
		return d.cancel(ctx, t), "succeeded"
	case agentbot.ControlRetry:
		return d.retry(ctx, t), "succeeded"
	case agentbot.ControlTypo:
		return didYouMean(t.Trigger.Prompt.Instructions, t.Trigger.Suggestion), "succeeded"
	}
	return fmt.Sprintf("agentbot does not know the command %q. %s", t.Trigger.Control, "Try `/agent help`."), "unknown"
}

// target finds the task a control command is about: the one whose check
// run carried the button, else the newest agent task on the issue.
func (d *Dispatcher) target(ctx context.Context, t *agentbot.Task) (*agentbot.Task, error) {
	if id := t.Trigger.ExternalID; id != "" {
		o, err := d.store.Get(ctx, id)
		if err != nil {
			return nil, fmt.Errorf("dispatch: task %s named by check run: %w", id, err)
		}
		return o, nil
	}
	var tasks []*agentbot.Task
	var err error
	if t.Ref().Number != 0 {
		tasks, err = d.store.ListByIssue(ctx, t.Ref())
	} else {
		tasks, err = d.store.List(ctx, 1000)
	}
	if err != nil {
		return nil, fmt.Errorf("dispatch: tasks of %s: %w", t.Ref(), err)
	}
	if id := t.Trigger.CheckRunID; id != 0 {
		for _, o := range tasks {
			if o.CheckRunID == id && o.Trigger.Kind != agentbot.KindControl {
				return o, nil
			}
		}
		return nil, nil
	}
	var latest *agentbot.Task
	for _, o := range tasks {
		if o.Trigger.Kind == agentbot.KindControl || o.ID == t.ID {
			continue
		}
		if latest == nil || o.ID > latest.ID {
			latest = o
		}
	}
	return latest, nil
}

// cancel stops what a cancel is about: the task whose check run carried
// the button, or every running and queued task on the issue for a comment.
func (d *Dispatcher) cancel(ctx context.Context, t *agentbot.Task) string {
	login := t.Trigger.Sender.Login
	switch {
	case t.Trigger.Label != "":
		login += fmt.Sprintf(" (who removed the label `%s`)", inlineLabel(t.Trigger.Label))
	case t.Trigger.Assignee != "":
		login += fmt.Sprintf(" (who unassigned `%s`)", inlineLabel(t.Trigger.Assignee))
	case t.Trigger.API != nil:
		login = fmt.Sprintf("the task API (token `%s`)", inlineLabel(t.Trigger.API.Token))
	}
	var targets []*agentbot.Task
	if t.Trigger.ExternalID != "" || t.Trigger.CheckRunID != 0 {
		tgt, err := d.target(ctx, t)
		if err != nil {
			return "agentbot could not look up the task to cancel: " + err.Error()
		}
		if tgt != nil && !tgt.State.Terminal() {
			targets = append(targets, tgt)
		}
	} else {
		tasks, err := d.store.ListByIssue(ctx, t.Ref())
		if err != nil {
			return "agentbot could not look up the tasks to cancel: " + err.Error()
		}
		for _, o := range tasks {
			if o.Trigger.Kind != agentbot.KindControl && !o.State.Terminal() {
				targets = append(targets, o)
			}
		}
	}
	var problems, late []string
	cancelled := 0
	for _, tgt := range targets {
		ok, err := d.cancelOne(ctx, tgt, login)
		var tl *tooLate
		switch {
		case errors.As(err, &tl):
			late = append(late, tl.Error())
		case err != nil:
			problems = append(problems, err.Error())
		}
		if ok {
			cancelled++
		}
	}
	if len(problems) > 0 {
		return strings.Join(append([]string{"agentbot could not cancel everything: " + strings.Join(problems, "; ")}, late...), "\n\n")
	}
	if len(late) > 0 {
		return strings.Join(late, "\n\n")
	}
	if cancelled == 0 && t.Trigger.Label == "" && t.Trigger.Assignee == "" {
		return NothingToCancel
	}
	// The cancelled tasks' own comments say so.
	return ""
}

// tooLate is a cancel that came when the task's run was past its agent and
// delivering its result, which is not interrupted half-way.
type tooLate struct {
	taskID, branch string
}

func (e *tooLate) Error() string {
	return fmt.Sprintf("Too late to cancel: task `%s` has finished its agent run and is delivering its result (branch `%s`).", e.taskID, e.branch)
}

// NothingToCancel answers a cancel that found nothing running or queued.
const NothingToCancel = "Nothing is running on this issue: there is no agentbot task here to cancel."

// cancelOne cancels a queued task, or asks the worker of a running one to
// stop it (the worker reports the cancellation). It reports whether there
// was anything to cancel: a task that ended meanwhile was not. A run that
// is delivering its result is not stopped: the error is then a *tooLate.
func (d *Dispatcher) cancelOne(ctx context.Context, tgt *agentbot.Task, login string) (bool, error) {
	var late error
	askWorker := func() bool {
		act := d.sched.attempt(tgt.ID)
		if act == nil {
			return false
		}
		if branch, ok := act.requestCancel(login); !ok {
			late = &tooLate{taskID: tgt.ID, branch: branch}
		}
		return true
	}
	switch tgt.State {
	case agentbot.StateRunning:
		if askWorker() {
			return late == nil, late
		}
		// Running in the store but not here (between restart and
		// recovery): end it directly.
		_, err := d.finish(ctx, tgt, agentbot.StateRunning, agentbot.StateCancelled, "cancelled", agentbot.Result{Error: "cancelled by " + byWhom(login), FailedPhase: tgt.Phase}, nil)
		switch {
		case isStale(err):
			return false, nil // it ended meanwhile
		case err != nil:
			return false, err
		}
		d.cleanup(ctx, tgt, false)
		return true, nil
	case agentbot.StateQueued:
		_, err := d.finish(ctx, tgt, agentbot.StateQueued, agentbot.StateCancelled, "cancelled", agentbot.Result{Error: "cancelled by " + byWhom(login) + " before it started"}, nil)
		switch {
		case err == nil:
			return true, nil
		case isStale(err) && askWorker():
			return late == nil, late // it started meanwhile: its worker stops it
		case isStale(err):
			return false, nil // it ended meanwhile
		}
		return false, err
	}
	return false, nil
}

func (d *Dispatcher) retry(ctx context.Context, t *agentbot.Task) string {
	tgt, err := d.target(ctx, t)
	if err != nil {
		return "agentbot could not look up the task to retry: " + err.Error()
	}
	if tgt == nil {
		return "There is no agentbot task here to retry."
	}
	if !tgt.State.Terminal() {
		return fmt.Sprintf("Task `%s` is still %s; there is nothing to retry yet.", tgt.ID, tgt.State)
	}
	if tgt.State == agentbot.StateSucceeded {
		return fmt.Sprintf("The last task here (`%s`) succeeded; comment `/agent <instructions>` to ask for more.", tgt.ID)
	}
	trig := tgt.Trigger
	trig.Sender = t.Trigger.Sender
	trig.CommentID = t.Trigger.CommentID
	trig.CheckRunID = 0
	trig.Label, trig.Assignee = "", "" // the retry was asked for; no trigger to check
	nt := &agentbot.Task{Event: t.Event, Trigger: trig, RetryOf: tgt.ID}
	if _, err := d.store.CreateTask(ctx, "retry-"+t.ID, nt); err != nil {
		return "agentbot could not queue the retry: " + err.Error()
	}
	d.poke()
	return ""
}

func (d *Dispatcher) status(ctx context.Context, t *agentbot.Task, s github.Settings) string {
	tasks, err := d.store.ListByIssue(ctx, t.Ref())
	if err != nil {
		return "agentbot could not look up its tasks here: " + err.Error()
	}
	var b strings.Builder
	b.WriteString("**agentbot status**\n\n| task | state | phase | result |\n|---|---|---|---|\n")
	n := 0
	for i := len(tasks) - 1; i >= 0 && n < 10; i-- {
		o := tasks[i]
		if o.Trigger.Kind == agentbot.KindControl {
			continue
		}
		n++
		id := "`" + o.ID + "`"
		if u := d.TaskURL(o.ID); u != "" {
			id = "[" + o.ID + "](" + u + ")"
		}
		phase, result := statusCells(o)
		fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", id, o.State, phase, result)
	}
	// Labelling with another label is ignored without a word, so status
	// is where a user learns which one this repository listens to.
	label := fmt.Sprintf("This repository's trigger label is `%s` (`trigger_label` in `%s`).", inlineLabel(s.TriggerLabel), github.SettingsPath)
	if n == 0 {
		return "agentbot has no tasks on this issue. " + label
	}
	fmt.Fprintf(&b, "\n%d of at most %d runs in progress on this agentbot. %s", d.sched.runningCount(), d.opts.MaxConcurrent, label)
	return b.String()
}

// statusCells are a task's phase and result as `/agent status` shows them:
// a finished task has no phase any more (the last one it reported would
// read as if it were still there) but an outcome.
func statusCells(o *agentbot.Task) (phase, result string) {
	cell := func(s string) string { return strings.ReplaceAll(firstLine(s), "|", "\\|") }
	if !o.State.Terminal() {
		return cell(o.Phase), ""
	}
	switch {
	case o.State == agentbot.StateSucceeded && o.Result.NoChanges:
		result = "no changes"
	case o.State == agentbot.StateSucceeded && o.Result.PRURL != "":
		result = "pull request " + o.Result.PRURL
	case o.State == agentbot.StateSucceeded && o.Result.Branch != "":
		result = "branch `" + cell(o.Result.Branch) + "`"
	case o.State == agentbot.StateSucceeded:
		result = "done"
	case o.Result.Error != "":
		result = cell(o.Result.Error)
	}
	if o.Result.FailedPhase != "" && o.State != agentbot.StateSucceeded {
		result = "during " + cell(o.Result.FailedPhase) + ": " + result
	}
	return "—", result
}

// byWhom names who cancelled: a login as a mention, the task API as it is.
func byWhom(by string) string {
	if strings.HasPrefix(by, "the task API") {
		return by
	}
	return "@" + by
}

// anythingLive reports whether an agent task on t's issue is queued or
// running (true when the store cannot say: then the cancel goes ahead).
func (d *Dispatcher) anythingLive(ctx context.Context, t *agentbot.Task) bool {
	tasks, err := d.store.ListByIssue(ctx, t.Ref())
	if err != nil {
		return true
	}
	for _, o := range tasks {
		if o.Trigger.Kind != agentbot.KindControl && !o.State.Terminal() {
			return true
		}
	}
	return false
}

// didYouMean answers a lone word near a command word, which agentbot does
// not run as instructions: one word is almost always a mistyped command.
func didYouMean(typed string, near agentbot.Control) string {
	return fmt.Sprintf("`/agent %s` is not an agentbot command: did you mean `/agent %s`? Nothing was started. (Instructions of more than one word are run as they are.)",
		inlineLabel(typed), inlineLabel(string(near)))
}

// inlineLabel makes a label safe inside single backticks.
func inlineLabel(l string) string { return strings.ReplaceAll(firstLine(l), "`", "'") }

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}
