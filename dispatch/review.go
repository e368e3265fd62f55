package dispatch

import (
	"context"
	"fmt"

	"github.com/agentbot/agentbot"
	"github.com/agentbot/agentbot/github"
)

// Follow-ups asked in a review thread (or a review's body). The prompt
// holds the thread — where it is, its diff hunk, its earlier comments by
// users with write access — instead of the pull request's whole review
// feedback; a resolved thread is refused with a reply and nothing runs.
// Progress stays in the task's comment on the pull request, as for any
// follow-up; the final answer is also posted as a reply in the thread.

// ReviewGitHub is what review-thread follow-ups need of github.Client.
type ReviewGitHub interface {
	ReviewThread(ctx context.Context, installationID int64, ref agentbot.IssueRef, r agentbot.ReviewRef) (github.Thread, error)
	ReviewBody(ctx context.Context, installationID int64, ref agentbot.IssueRef, reviewID int64) ([]string, error)
	ReplyInThread(ctx context.Context, installationID int64, ref agentbot.IssueRef, commentID int64, body string) (int64, error)
}

// reviewGitHub is d's GitHub as a ReviewGitHub, nil when it is not one
// (then review follow-ups fall back to the pull request's review feedback).
func (d *Dispatcher) reviewGitHub() ReviewGitHub {
	rg, _ := d.gh.(ReviewGitHub)
	return rg
}

// reviewPrompt is the review material of a follow-up asked in a review:
// ok=false when it was not (the caller gathers the pull request's review
// feedback as before). A resolved thread is a refusal.
func (d *Dispatcher) reviewPrompt(ctx context.Context, t *agentbot.Task) (lines []string, ok bool, fail *failure) {
	r, rg := t.Trigger.Review, d.reviewGitHub()
	if r == nil || rg == nil {
		return nil, false, nil
	}
	inst, ref := t.Trigger.InstallationID, t.Ref()
	if !r.InThread() {
		lines, err := rg.ReviewBody(ctx, inst, ref, r.ReviewID)
		if err != nil {
			return nil, true, failf("preparing", "cannot read the review's comments: %v", err)
		}
		return lines, true, nil
	}
	th, err := rg.ReviewThread(ctx, inst, ref, *r)
	if err != nil {
		return nil, true, failf("preparing", "cannot read the review thread: %v", err)
	}
	if th.Resolved {
		f := failf("preparing", "this review thread is resolved, so agentbot did not act on it. Unresolve the thread, or comment `/agent <instructions>` on the pull request.").forGood()
		f.refusal = true
		return nil, true, f
	}
	return th.Lines, true, nil
}

// replyInThread posts a finished review-thread task's result as a reply in
// the thread that asked (rendered as the progress comment is: redacted,
// inert). Best effort: the progress comment holds the same result.
func (d *Dispatcher) replyInThread(ctx context.Context, t *agentbot.Task, v github.ProgressView) {
	r, rg := t.Trigger.Review, d.reviewGitHub()
	if !r.InThread() || rg == nil || t.Trigger.Kind != agentbot.KindFollowUp {
		return
	}
	v = d.render(t.ID, v)
	body := github.RenderComment(v)
	if t.Result.Commit != "" {
		body = fmt.Sprintf("Pushed %s to `%s`.\n\n%s", t.Result.Commit, t.Result.Branch, body)
	}
	if _, err := rg.ReplyInThread(ctx, t.Trigger.InstallationID, t.Ref(), r.CommentID, body); err != nil {
		logFrom(ctx).Warn("cannot reply in the review thread", "err", err)
	}
}

// refuseInThread is refuse for a review-thread task: the reply goes in the
// thread too.
func (d *Dispatcher) refuseInThread(ctx context.Context, t *agentbot.Task, reason string) {
	r, rg := t.Trigger.Review, d.reviewGitHub()
	if !r.InThread() || rg == nil {
		return
	}
	if _, err := rg.ReplyInThread(ctx, t.Trigger.InstallationID, t.Ref(), r.CommentID, reason); err != nil {
		logFrom(ctx).Warn("cannot reply in the review thread", "err", err)
	}
}
