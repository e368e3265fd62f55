package github

import (
	"context"
	"fmt"
	"strings"

	gh "github.com/google/go-github/v66/github"

	"github.com/agentbot/agentbot"
)

// Limits on what ReviewComments gathers for a follow-up prompt.
const (
	maxReviewItems     = 100
	maxReviewItemBytes = 4000
	maxReviewPages     = 5
	// maxReviewAuthors bounds the permission look-ups one prompt makes;
	// feedback from authors past it is left out.
	maxReviewAuthors = 20
)

// reviewItem is one piece of review feedback and who wrote it.
type reviewItem struct {
	login, text string
}

// ReviewComments gathers a pull request's review feedback for a follow-up
// prompt: review summaries and inline comments, oldest first, each as one
// string naming its author (and file and line). Only feedback from people
// with write access goes in — anyone may review a public pull request,
// and what they write would otherwise steer the agent — and bots' is left
// out; the result is bounded.
func (c *Client) ReviewComments(ctx context.Context, installationID int64, ref agentbot.IssueRef) ([]string, error) {
	if err := checkRef(ref); err != nil {
		return nil, err
	}
	items, err := c.reviewItems(ctx, installationID, ref)
	if err != nil {
		return nil, err
	}
	return c.writersOnly(ctx, installationID, ref, items)
}

// reviewItems lists the reviews with a body, then the inline comments,
// leaving bots out.
func (c *Client) reviewItems(ctx context.Context, installationID int64, ref agentbot.IssueRef) ([]reviewItem, error) {
	var items []reviewItem
	base := fmt.Sprintf("%s/pulls/%d", repoPath(ref.Repo), ref.Number)
	for page := 1; page <= maxReviewPages; page++ {
		var reviews []*gh.PullRequestReview
		resp, err := c.call(ctx, installationID, epReviews, fmt.Sprintf("%s/reviews?per_page=100&page=%d", base, page), nil, &reviews)
		if err != nil {
			return nil, fmt.Errorf("github: reviews of %s: %w", ref, err)
		}
		for _, r := range reviews {
			if r.GetUser().GetType() == "Bot" || strings.TrimSpace(r.GetBody()) == "" {
				continue
			}
			login := r.GetUser().GetLogin()
			items = append(items, reviewItem{login, fmt.Sprintf("@%s (%s): %s", login, strings.ToLower(r.GetState()), r.GetBody())})
		}
		if resp.NextPage == 0 {
			break
		}
	}
	for page := 1; page <= maxReviewPages; page++ {
		var comments []*gh.PullRequestComment
		resp, err := c.call(ctx, installationID, epReviewComments, fmt.Sprintf("%s/comments?per_page=100&page=%d", base, page), nil, &comments)
		if err != nil {
			return nil, fmt.Errorf("github: review comments of %s: %w", ref, err)
		}
		for _, cm := range comments {
			if cm.GetUser().GetType() == "Bot" {
				continue
			}
			where := cm.GetPath()
			if line := cm.GetLine(); line > 0 {
				where = fmt.Sprintf("%s:%d", where, line)
			} else if line := cm.GetOriginalLine(); line > 0 {
				where = fmt.Sprintf("%s:%d (outdated)", where, line)
			}
			login := cm.GetUser().GetLogin()
			items = append(items, reviewItem{login, fmt.Sprintf("@%s on %s: %s", login, where, cm.GetBody())})
		}
		if resp.NextPage == 0 {
			break
		}
	}
	return items, nil
}
