package dispatch

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/agentbot/agentbot"
	"github.com/agentbot/agentbot/github"
)

// minEditInterval is the least time between two edits of one comment or one
// check run: GitHub's secondary rate limits punish bursts of edits to one
// object, and a reader sees nothing of an edit replaced within a second.
const minEditInterval = time.Second

// conversation is what a task says on GitHub: its progress comment and its
// check run. It is the one place that creates them (crash-safe: a create
// GitHub may have carried out is adopted, never repeated), edits them
// (coalesced: never two edits of one object within minEditInterval; a
// later view replaces a pending one) and writes the final result once.
//
// The dispatcher keeps one conversation per live task, so an attempt, a
// cancel and an acknowledgement all speak through the same one.
type conversation struct {
	gh    GitHub
	store Store
	now   func() time.Time
	inst  int64
	ref   agentbot.IssueRef
	id    string
	// render turns a view into what is shown (standing notes, redaction).
	render func(github.ProgressView) github.ProgressView

	mu         sync.Mutex
	commentID  int64
	checkRunID int64
	checkHead  string    // the commit checkRunID is on
	lastEdit   time.Time // of the comment and the check run, edited together
	pending    *github.ProgressView
}

func (d *Dispatcher) newConversation(t *agentbot.Task) *conversation {
	return &conversation{
		gh: d.gh, store: d.store, now: d.now,
		inst: t.Trigger.InstallationID, ref: t.Ref(), id: t.ID,
		render:     func(v github.ProgressView) github.ProgressView { return d.render(t.ID, v) },
		commentID:  t.CommentID,
		checkRunID: t.CheckRunID,
		checkHead:  t.CheckRunHead,
	}
}

// conversationOf is the live conversation of t, made on first use.
func (d *Dispatcher) conversationOf(t *agentbot.Task) *conversation {
	d.mu.Lock()
	defer d.mu.Unlock()
	c := d.convs[t.ID]
	if c == nil {
		c = d.newConversation(t)
		d.convs[t.ID] = c
	}
	c.adopt(t)
	return c
}

// forgetConversation drops t's conversation once nothing more will be said.
func (d *Dispatcher) forgetConversation(id string) {
	d.mu.Lock()
	delete(d.convs, id)
	d.mu.Unlock()
}

// adopt takes the ids a stored copy of the task knows and this one not yet.
func (c *conversation) adopt(t *agentbot.Task) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.commentID == 0 {
		c.commentID = t.CommentID
	}
	if c.checkRunID == 0 {
		c.checkRunID, c.checkHead = t.CheckRunID, t.CheckRunHead
	}
}

// ids are the comment and check run spoken through so far.
func (c *conversation) ids() (comment, checkRun int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.commentID, c.checkRunID
}

// checkRun is the check run spoken through and the commit it is on.
func (c *conversation) checkRun() (id int64, head string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.checkRunID, c.checkHead
}

// Open posts the progress comment showing v and, when head is set (a
// follow-up on a pull request), a check run on it, and records both on the
// task. A comment an earlier attempt may have posted is adopted.
func (c *conversation) Open(ctx context.Context, v github.ProgressView, head string) error {
	v = c.render(v)
	commentID, err := c.postComment(ctx, github.RenderComment(v))
	if err != nil {
		return err
	}
	var checkRunID int64
	if head != "" {
		cr := github.RenderCheckRun(v)
		cr.HeadSHA = head
		if checkRunID, err = c.gh.CreateCheckRun(ctx, c.inst, c.ref.Repo, cr); err != nil {
			logFrom(ctx).Warn("cannot create check run", "err", err)
		}
	}
	c.mu.Lock()
	c.commentID = commentID
	if c.checkRunID == 0 && checkRunID != 0 {
		c.checkRunID, c.checkHead = checkRunID, head
	}
	c.lastEdit = c.now()
	c.mu.Unlock()
	return nil
}

// Reply posts body as the task's one comment (a refusal, a control
// command's answer), crash-safe like Open, and returns its id.
func (c *conversation) Reply(ctx context.Context, body string) (int64, error) {
	id, err := c.postComment(ctx, github.CommentMarker(c.id)+"\n"+body)
	if err != nil {
		return 0, err
	}
	c.mu.Lock()
	c.commentID = id
	c.mu.Unlock()
	return id, nil
}

// Update shows v, now or, if the last edit was less than minEditInterval
// ago, at the next Flush or Update after that (a newer view replaces it).
func (c *conversation) Update(ctx context.Context, v github.ProgressView) {
	c.mu.Lock()
	if c.now().Sub(c.lastEdit) < minEditInterval {
		c.pending = &v
		c.mu.Unlock()
		return
	}
	c.pending = nil
	c.mu.Unlock()
	c.edit(ctx, v)
}

// FlushAt is when a pending view may be sent; zero when none is pending.
func (c *conversation) FlushAt() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.pending == nil {
		return time.Time{}
	}
	return c.lastEdit.Add(minEditInterval)
}

// Flush sends the pending view if its time has come.
func (c *conversation) Flush(ctx context.Context) {
	c.mu.Lock()
	v := c.pending
	if v == nil || c.now().Sub(c.lastEdit) < minEditInterval {
		c.mu.Unlock()
		return
	}
	c.pending = nil
	c.mu.Unlock()
	c.edit(ctx, *v)
}

// edit writes v to the comment and check run. Failures are logged: the
// conversation lags, the task goes on.
func (c *conversation) edit(ctx context.Context, v github.ProgressView) {
	c.mu.Lock()
	commentID, checkRunID := c.commentID, c.checkRunID
	c.mu.Unlock()
	// The interval counts from when GitHub has answered, so the next edit
	// arrives at least minEditInterval after this one did.
	defer func() {
		c.mu.Lock()
		c.lastEdit = c.now()
		c.mu.Unlock()
	}()
	v = c.render(v)
	log := logFrom(ctx)
	if commentID != 0 {
		if err := c.gh.EditComment(ctx, c.inst, c.ref.Repo, commentID, github.RenderComment(v)); err != nil {
			log.Warn("cannot update progress comment", "err", err)
		}
	}
	if checkRunID != 0 {
		if err := c.gh.UpdateCheckRun(ctx, c.inst, c.ref.Repo, checkRunID, github.RenderCheckRun(v)); err != nil {
			log.Warn("cannot update check run", "err", err)
		}
	}
}

// Settle shows v now: it waits out minEditInterval since the last edit
// (replacing anything pending) rather than leave v for a Flush that may
// never come — for the last words of an attempt.
func (c *conversation) Settle(ctx context.Context, v github.ProgressView) {
	c.mu.Lock()
	c.pending = nil
	wait := minEditInterval - c.now().Sub(c.lastEdit)
	c.mu.Unlock()
	if wait > 0 {
		timer := time.NewTimer(wait)
		select {
		case <-timer.C:
		case <-ctx.Done():
		}
		timer.Stop()
	}
	c.edit(ctx, v)
}

// Finish writes a terminal task's result (as Settle) and records on the
// task that it was reported, so a restart does not repeat it. The result's
// check run is on the commit the task ends at (finalHead): a new task's is
// created now, and one left on a commit the run pushed past (a follow-up's,
// opened on the pull request's old head) is completed as superseded.
func (c *conversation) Finish(ctx context.Context, t *agentbot.Task, v github.ProgressView, finalHead string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), reportTimeout)
	defer cancel()
	checkRunID, head := c.checkRun()
	moved := checkRunID != 0 && finalHead != "" && head != "" && head != finalHead
	if moved {
		// The old check run gets the superseded view in the same edit
		// as the comment's result.
		v.Superseded = finalHead
	}
	c.Settle(ctx, v)
	v.Superseded = ""
	if checkRunID == 0 || moved {
		checkRunID = c.createFinal(ctx, t, v, finalHead)
	}
	if _, err := c.store.Update(ctx, t.ID, func(s *agentbot.Task) error {
		s.Reported = true
		if checkRunID != 0 {
			s.CheckRunID, s.CheckRunHead = c.checkRun()
		}
		return nil
	}); err != nil {
		logFrom(ctx).Warn("cannot record that the result was reported", "err", err)
	}
}

// createFinal creates the check run showing a terminal task's result on
// head and returns its id (0 if there is none).
func (c *conversation) createFinal(ctx context.Context, t *agentbot.Task, v github.ProgressView, head string) int64 {
	if head == "" {
		return 0
	}
	cr := github.RenderCheckRun(c.render(v))
	cr.HeadSHA = head
	if t.Result.Commit == "" && cr.Conclusion == "failure" {
		// On a commit that is not the task's own work (the base it
		// started from): agentbot's failure must not mark that commit,
		// often the default branch's head, as broken.
		cr.Conclusion = "neutral"
	}
	id, err := c.gh.CreateCheckRun(ctx, c.inst, c.ref.Repo, cr)
	if err != nil {
		logFrom(ctx).Warn("cannot create check run", "err", err)
		return 0
	}
	c.mu.Lock()
	c.checkRunID, c.checkHead = id, head
	c.mu.Unlock()
	return id
}

// postComment posts body, which starts with the task's CommentMarker. A
// create is not idempotent: GitHub may post the comment and still fail the
// call, and github/'s own look-up after it may fail too (or agentbot may die
// before recording the id). So the first attempt is recorded on the task
// before it is made, and every later attempt first looks for the comment an
// earlier one may have posted, adopting it (with body) if found. A failed
// look-up is an error: posting blind could make a second comment.
func (c *conversation) postComment(ctx context.Context, body string) (int64, error) {
	if c.ref.Number == 0 {
		// A task API request without an issue has no conversation but
		// its check run; the API and the task page are where it is told.
		return 0, nil
	}
	var since time.Time
	if _, err := c.store.Update(ctx, c.id, func(s *agentbot.Task) error {
		since = s.CommentAttemptedAt
		if since.IsZero() {
			s.CommentAttemptedAt = c.now()
		}
		return nil
	}); err != nil {
		return 0, fmt.Errorf("dispatch: record the comment attempt of %s: %w", c.id, err)
	}
	if !since.IsZero() {
		id, found, err := c.gh.FindComment(ctx, c.inst, c.ref, github.CommentMarker(c.id), since)
		if err != nil {
			return 0, fmt.Errorf("dispatch: look for the comment an earlier attempt may have posted for %s: %w", c.id, err)
		}
		if found {
			logFrom(ctx).Info("adopting the comment an earlier attempt posted", "comment_id", id)
			if err := c.gh.EditComment(ctx, c.inst, c.ref.Repo, id, body); err != nil {
				logFrom(ctx).Warn("cannot update adopted comment", "comment_id", id, "err", err)
			}
			return id, nil
		}
	}
	return c.gh.CreateComment(ctx, c.inst, c.ref, body)
}
