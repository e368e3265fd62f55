package github

import (
	"context"
	"fmt"
	"strings"

	gh "github.com/google/go-github/v66/github"

	"github.com/agentbot/agentbot"
)

const (
	epReplyReviewComment = "POST /repos/{owner}/{repo}/pulls/{number}/comments/{comment_id}/replies"
	epReviewOwnComments  = "GET /repos/{owner}/{repo}/pulls/{number}/reviews/{review_id}/comments"
)

// Thread is a review thread as a follow-up prompt shows it.
type Thread struct {
	// Resolved: the thread was resolved on GitHub; agentbot answers only
	// open threads.
	Resolved bool
	// Lines are the prompt's review items: where the thread is (file, line
	// range, side, diff hunk), then its comments up to the one that asked,
	// in order, by users with write access only.
	Lines []string
}

// ReviewThread reads the thread of the review comment r names on pull
// request ref: whether it is resolved (GraphQL reviewThreads), and its
// comments (REST, the pull request's review comments whose thread root is
// r.ThreadRoot), leaving out bots and anyone without write access.
func (c *Client) ReviewThread(ctx context.Context, installationID int64, ref agentbot.IssueRef, r agentbot.ReviewRef) (Thread, error) {
	if err := checkRef(ref); err != nil {
		return Thread{}, err
	}
	resolved, err := c.ThreadResolved(ctx, installationID, ref, r.ThreadRoot)
	if err != nil {
		return Thread{}, err
	}
	if resolved {
		return Thread{Resolved: true}, nil
	}
	items, err := c.threadItems(ctx, installationID, ref, r)
	if err != nil {
		return Thread{}, err
	}
	lines, err := c.writersOnly(ctx, installationID, ref, items)
	if err != nil {
		return Thread{}, err
	}
	return Thread{Lines: append([]string{threadLocation(r)}, lines...)}, nil
}

// threadLocation is where a thread is, with its diff hunk.
func threadLocation(r agentbot.ReviewRef) string {
	where := r.Path
	switch {
	case r.StartLine > 0 && r.StartLine != r.Line:
		where = fmt.Sprintf("%s lines %d–%d", where, r.StartLine, r.Line)
	case r.Line > 0:
		where = fmt.Sprintf("%s line %d", where, r.Line)
	}
	if r.Side != "" {
		where += fmt.Sprintf(" (%s side of the diff)", strings.ToLower(r.Side))
	}
	s := "The review thread is on " + where + "."
	if h := strings.TrimSpace(r.DiffHunk); h != "" {
		s += "\n```diff\n" + truncateUTF8(h, maxReviewItemBytes) + "\n```"
	}
	return s
}

// threadItems lists the thread's comments up to (and with) the one that
// asked, oldest first, leaving bots out.
func (c *Client) threadItems(ctx context.Context, installationID int64, ref agentbot.IssueRef, r agentbot.ReviewRef) ([]reviewItem, error) {
	var items []reviewItem
	base := fmt.Sprintf("%s/pulls/%d", repoPath(ref.Repo), ref.Number)
	for page := 1; page <= maxReviewPages; page++ {
		var comments []*gh.PullRequestComment
		resp, err := c.call(ctx, installationID, epReviewComments, fmt.Sprintf("%s/comments?per_page=100&page=%d", base, page), nil, &comments)
		if err != nil {
			return nil, fmt.Errorf("github: review thread of %s: %w", ref, err)
		}
		for _, cm := range comments {
			inThread := cm.GetID() == r.ThreadRoot || cm.GetInReplyTo() == r.ThreadRoot
			if !inThread || cm.GetID() > r.CommentID || cm.GetUser().GetType() == "Bot" {
				continue
			}
			login := cm.GetUser().GetLogin()
			items = append(items, reviewItem{login, fmt.Sprintf("@%s: %s", login, cm.GetBody())})
		}
		if resp.NextPage == 0 {
			break
		}
	}
	return items, nil
}

// ReviewBody gathers a submitted review's comments for a follow-up on its
// body: each with its file, line and diff hunk. They are the reviewer's
// own (the sender, whose write access admission checked), bots' left out.
func (c *Client) ReviewBody(ctx context.Context, installationID int64, ref agentbot.IssueRef, reviewID int64) ([]string, error) {
	if err := checkRef(ref); err != nil {
		return nil, err
	}
	var comments []*gh.PullRequestComment
	path := fmt.Sprintf("%s/pulls/%d/reviews/%d/comments?per_page=100", repoPath(ref.Repo), ref.Number, reviewID)
	if _, err := c.call(ctx, installationID, epReviewOwnComments, path, nil, &comments); err != nil {
		return nil, fmt.Errorf("github: comments of review %d on %s: %w", reviewID, ref, err)
	}
	var items []reviewItem
	for _, cm := range comments {
		if cm.GetUser().GetType() == "Bot" {
			continue
		}
		loc := agentbot.ReviewRef{Path: cm.GetPath(), Line: cm.GetLine(), StartLine: cm.GetStartLine(), Side: cm.GetSide(), DiffHunk: cm.GetDiffHunk()}
		if loc.Line == 0 {
			loc.Line = cm.GetOriginalLine()
		}
		login := cm.GetUser().GetLogin()
		items = append(items, reviewItem{login, fmt.Sprintf("@%s: %s\n%s", login, cm.GetBody(), threadLocation(loc))})
	}
	return c.writersOnly(ctx, installationID, ref, items)
}

// writersOnly keeps the items by users with write access, bounded as
// ReviewComments bounds its own.
func (c *Client) writersOnly(ctx context.Context, installationID int64, ref agentbot.IssueRef, items []reviewItem) ([]string, error) {
	writers := map[string]bool{}
	var out []string
	for _, it := range items {
		allowed, seen := writers[it.login]
		if !seen {
			if len(writers) >= maxReviewAuthors {
				continue
			}
			acc, err := c.CheckPermission(ctx, installationID, ref.Repo, it.login)
			if err != nil {
				return nil, fmt.Errorf("github: review feedback of %s: %w", ref, err)
			}
			allowed = acc.Allowed
			writers[it.login] = allowed
		}
		if !allowed {
			continue
		}
		s := it.text
		if len(s) > maxReviewItemBytes {
			s = truncateUTF8(s, maxReviewItemBytes) + " …(truncated)"
		}
		if out = append(out, s); len(out) >= maxReviewItems {
			break
		}
	}
	return out, nil
}

// ReplyInThread posts body as a reply in the review thread whose comment
// commentID is on pull request ref, and returns the reply's id.
func (c *Client) ReplyInThread(ctx context.Context, installationID int64, ref agentbot.IssueRef, commentID int64, body string) (int64, error) {
	if err := checkRef(ref); err != nil {
		return 0, err
	}
	if commentID <= 0 {
		return 0, fmt.Errorf("github: reply on %s: comment id %d is not valid", ref, commentID)
	}
	var out gh.PullRequestComment
	path := fmt.Sprintf("%s/pulls/%d/comments/%d/replies", repoPath(ref.Repo), ref.Number, commentID)
	// Not retried on an uncertain failure: a second reply is worse than
	// none, and the progress comment holds the same result.
	if err := c.create(ctx, installationID, epReplyReviewComment, path, map[string]string{"body": FitComment(body)}, &out, nil); err != nil {
		return 0, fmt.Errorf("github: reply in the thread of comment %d on %s: %w", commentID, ref, err)
	}
	return out.GetID(), nil
}
