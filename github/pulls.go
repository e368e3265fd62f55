package github

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	gh "github.com/google/go-github/v66/github"

	"github.com/agentbot/agentbot"
)

// PROptions describe the pull request agentbot opens for a pushed branch.
type PROptions struct {
	Head, Base  string // branch names in the same repository
	Title, Body string // see PullRequestBody
	Draft       bool
	// Reviewer is asked for a review (the user who triggered the task);
	// "" or a bot asks nobody. Failing to ask does not fail the call.
	Reviewer string
}

// OpenPullRequest opens a pull request from opts.Head to opts.Base, unless
// one is already open for that head — then it returns that one with
// created=false, so a retry after a crash never opens a second. Where a
// repository does not support drafts, it opens a ready one.
func (c *Client) OpenPullRequest(ctx context.Context, installationID int64, repo agentbot.Repo, opts PROptions) (PRInfo, bool, error) {
	if err := checkRepo(repo); err != nil {
		return PRInfo{}, false, err
	}
	where := fmt.Sprintf("%s:%s", repo, opts.Head)
	if opts.Head == "" || opts.Base == "" || strings.TrimSpace(opts.Title) == "" {
		return PRInfo{}, false, fmt.Errorf("github: pull request %s: head, base and title are required", where)
	}
	// No look-up first: an open pull request for the head makes the create
	// fail with 422 "already exists", and that (or an uncertain failure)
	// is when the existing one is looked for.
	body := map[string]any{
		"title": truncateRunes(opts.Title, 256),
		"head":  opts.Head,
		"base":  opts.Base,
		"body":  FitComment(opts.Body),
		"draft": opts.Draft,
	}
	var out gh.PullRequest
	var found *PRInfo
	find := func(ctx context.Context) (bool, error) {
		pr, ok, err := c.findOpenPR(ctx, installationID, repo, opts.Head)
		if ok {
			found = &pr
		}
		return ok, err
	}
	err := c.create(ctx, installationID, epCreatePull, repoPath(repo)+"/pulls", body, &out, find)
	var apiErr *APIError
	if errors.As(err, &apiErr) && apiErr.Status == http.StatusUnprocessableEntity {
		msg := strings.ToLower(apiErr.Message)
		switch {
		case strings.Contains(msg, "already exists"):
			// Lost a race with ourselves (or a crash after create).
			pr, ok, ferr := c.findOpenPR(ctx, installationID, repo, opts.Head)
			if ferr == nil && ok {
				c.requestReview(ctx, installationID, repo, pr.Number, opts.Reviewer)
				return pr, false, nil
			}
		case opts.Draft && strings.Contains(msg, "draft"):
			c.logger.LogAttrs(ctx, slog.LevelInfo, "draft pull requests not supported; opening a ready one",
				slog.String("repo", repo.FullName()))
			body["draft"] = false
			err = c.create(ctx, installationID, epCreatePull, repoPath(repo)+"/pulls", body, &out, find)
		}
	}
	if err != nil {
		return PRInfo{}, false, fmt.Errorf("github: pull request %s into %s: %w", where, opts.Base, err)
	}
	pr := prInfo(&out)
	if found != nil {
		// An attempt answered with an error had opened it.
		pr = *found
	}
	c.requestReview(ctx, installationID, repo, pr.Number, opts.Reviewer)
	return pr, true, nil
}

// findOpenPR finds the open pull request whose head is branch in repo.
func (c *Client) findOpenPR(ctx context.Context, installationID int64, repo agentbot.Repo, branch string) (PRInfo, bool, error) {
	q := url.Values{"head": {repo.Owner + ":" + branch}, "state": {"open"}, "per_page": {"10"}}
	var prs []*gh.PullRequest
	if _, err := c.call(ctx, installationID, epListPulls, repoPath(repo)+"/pulls?"+q.Encode(), nil, &prs); err != nil {
		return PRInfo{}, false, fmt.Errorf("github: find pull request for %s:%s: %w", repo, branch, err)
	}
	for _, pr := range prs {
		if pr.GetHead().GetRef() == branch && pr.GetState() == "open" {
			return prInfo(pr), true, nil
		}
	}
	return PRInfo{}, false, nil
}

func (c *Client) requestReview(ctx context.Context, installationID int64, repo agentbot.Repo, number int, reviewer string) {
	if reviewer == "" || number == 0 || strings.HasSuffix(reviewer, "[bot]") {
		return
	}
	path := fmt.Sprintf("%s/pulls/%d/requested_reviewers", repoPath(repo), number)
	if _, err := c.call(ctx, installationID, epRequestReviewers, path, map[string][]string{"reviewers": {reviewer}}, nil); err != nil {
		c.logError(ctx, "review request failed", repo, err)
	}
}

const epRevokeToken = "DELETE /installation/token"

// RevokeToken ends an installation token's life now instead of in an
// hour: the dispatcher revokes the read token it gave a sandbox once the
// task is over. Best effort, as revoke.
func (c *Client) RevokeToken(ctx context.Context, repo agentbot.Repo, token string) {
	c.revoke(ctx, Token{Value: token}, repo)
}

// revoke ends tok's life now instead of in an hour. Best effort: it runs
// even when ctx is done, briefly.
func (c *Client) revoke(ctx context.Context, tok Token, repo agentbot.Repo) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	cl := c.newAPIClient(&retryTransport{next: &staticToken{value: tok.Value, next: c.inner}, policy: c.policy})
	req, err := cl.NewRequest(http.MethodDelete, "installation/token", nil)
	if err == nil {
		_, err = cl.Do(withEndpoint(ctx, epRevokeToken), req, nil)
	}
	if err != nil {
		c.logError(ctx, "token revocation failed", repo, toAPIError(epRevokeToken, err))
	}
}

// staticToken authenticates with one fixed installation token.
type staticToken struct {
	value string
	next  http.RoundTripper
}

func (s *staticToken) RoundTrip(req *http.Request) (*http.Response, error) {
	r := req.Clone(req.Context())
	r.Header.Set("Authorization", "token "+s.value)
	return s.next.RoundTrip(r)
}
