package github

import (
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"strings"

	gh "github.com/google/go-github/v66/github"

	"github.com/agentbot/agentbot"
)

// Endpoint templates: metric labels and APIError.Endpoint.
const (
	epRepo             = "GET /repos/{owner}/{repo}"
	epBranch           = "GET /repos/{owner}/{repo}/branches/{branch}"
	epPermission       = "GET /repos/{owner}/{repo}/collaborators/{username}/permission"
	epTeamMembership   = "GET /orgs/{org}/teams/{team_slug}/memberships/{username}"
	epContents         = "GET /repos/{owner}/{repo}/contents/{path}"
	epIssue            = "GET /repos/{owner}/{repo}/issues/{number}"
	epCreateComment    = "POST /repos/{owner}/{repo}/issues/{number}/comments"
	epEditComment      = "PATCH /repos/{owner}/{repo}/issues/comments/{comment_id}"
	epIssueReaction    = "POST /repos/{owner}/{repo}/issues/{number}/reactions"
	epCommentReaction  = "POST /repos/{owner}/{repo}/issues/comments/{comment_id}/reactions"
	epPull             = "GET /repos/{owner}/{repo}/pulls/{number}"
	epListPulls        = "GET /repos/{owner}/{repo}/pulls"
	epCreatePull       = "POST /repos/{owner}/{repo}/pulls"
	epRequestReviewers = "POST /repos/{owner}/{repo}/pulls/{number}/requested_reviewers"
	epReviewComments   = "GET /repos/{owner}/{repo}/pulls/{number}/comments"
	epReviews          = "GET /repos/{owner}/{repo}/pulls/{number}/reviews"
	epCreateCheckRun   = "POST /repos/{owner}/{repo}/check-runs"
	epUpdateCheckRun   = "PATCH /repos/{owner}/{repo}/check-runs/{check_run_id}"
)

// Access is the answer to "may this user make agentbot act here?".
type Access struct {
	Allowed bool
	// Level is GitHub's role name for the user: admin, maintain, write,
	// triage, read or none.
	Level string
	// Reason explains a refusal in a sentence fit to post on the issue; it
	// also says what matched when access is allowed.
	Reason string
}

// writeLevels are the roles that may trigger agentbot.
var writeLevels = map[string]bool{"admin": true, "maintain": true, "write": true}

// CheckPermission asks GitHub for login's role on repo. Write, maintain and
// admin are allowed; anything else (and an unknown user) is refused with a
// reason. An error means GitHub could not be asked.
func (c *Client) CheckPermission(ctx context.Context, installationID int64, repo agentbot.Repo, login string) (Access, error) {
	if err := checkRepo(repo); err != nil {
		return Access{}, err
	}
	if login == "" {
		return Access{Level: "none", Reason: "no user to check"}, nil
	}
	var out gh.RepositoryPermissionLevel
	path := fmt.Sprintf("%s/collaborators/%s/permission", repoPath(repo), url.PathEscape(login))
	if _, err := c.call(ctx, installationID, epPermission, path, nil, &out); err != nil {
		if IsNotFound(err) {
			return Access{Level: "none", Reason: fmt.Sprintf("@%s is not a collaborator on %s", login, repo)}, nil
		}
		return Access{}, fmt.Errorf("github: permission of %s on %s: %w", login, repo, err)
	}
	level := out.GetRoleName()
	if level == "" {
		level = out.GetPermission()
	}
	if level == "" {
		level = "none"
	}
	if writeLevels[level] || writeLevels[out.GetPermission()] {
		return Access{Allowed: true, Level: level, Reason: fmt.Sprintf("@%s has %s access to %s", login, level, repo)}, nil
	}
	return Access{Level: level, Reason: fmt.Sprintf("@%s has %s access to %s; agentbot acts only for users with write, maintain or admin access", login, level, repo)}, nil
}

// Authorize combines CheckPermission with a repository's allow-lists: the
// user needs write access and, when Settings names allowed users or teams,
// must be one of those users or an active member of one of those teams
// (team entries are "org/team-slug" or a slug in the repository owner's
// organisation). Checking teams needs the App's members:read permission.
func (c *Client) Authorize(ctx context.Context, installationID int64, repo agentbot.Repo, login string, s Settings) (Access, error) {
	acc, err := c.CheckPermission(ctx, installationID, repo, login)
	if err != nil || !acc.Allowed {
		return acc, err
	}
	if len(s.AllowedUsers) == 0 && len(s.AllowedTeams) == 0 {
		return acc, nil
	}
	for _, u := range s.AllowedUsers {
		if strings.EqualFold(strings.TrimPrefix(u, "@"), login) {
			acc.Reason = fmt.Sprintf("@%s is listed in allowed_users", login)
			return acc, nil
		}
	}
	for _, team := range s.AllowedTeams {
		org, slug, ok := strings.Cut(strings.TrimPrefix(team, "@"), "/")
		if !ok {
			org, slug = repo.Owner, org
		}
		var m gh.Membership
		path := fmt.Sprintf("orgs/%s/teams/%s/memberships/%s", url.PathEscape(org), url.PathEscape(slug), url.PathEscape(login))
		_, err := c.call(ctx, installationID, epTeamMembership, path, nil, &m)
		switch {
		case IsNotFound(err):
			continue
		case err != nil:
			return Access{}, fmt.Errorf("github: membership of %s in %s/%s: %w", login, org, slug, err)
		case m.GetState() == "active":
			acc.Reason = fmt.Sprintf("@%s is a member of %s/%s", login, org, slug)
			return acc, nil
		}
	}
	return Access{Level: acc.Level, Reason: fmt.Sprintf("@%s has %s access, but %s/.github/agentbot.yml allows only the users and teams it lists", login, acc.Level, repo)}, nil
}

// RepoInfo is what agentbot needs to know about a repository.
type RepoInfo struct {
	DefaultBranch, CloneURL, HTMLURL string
	Private                          bool
}

// Repository reads repo's default branch, clone URL and visibility.
func (c *Client) Repository(ctx context.Context, installationID int64, repo agentbot.Repo) (RepoInfo, error) {
	if err := checkRepo(repo); err != nil {
		return RepoInfo{}, err
	}
	var out gh.Repository
	if _, err := c.call(ctx, installationID, epRepo, repoPath(repo), nil, &out); err != nil {
		return RepoInfo{}, fmt.Errorf("github: repository %s: %w", repo, err)
	}
	return RepoInfo{
		DefaultBranch: out.GetDefaultBranch(),
		CloneURL:      out.GetCloneURL(),
		HTMLURL:       out.GetHTMLURL(),
		Private:       out.GetPrivate(),
	}, nil
}

// BranchHead is the commit SHA at the tip of branch; a missing branch is an
// error matching ErrNotFound.
func (c *Client) BranchHead(ctx context.Context, installationID int64, repo agentbot.Repo, branch string) (string, error) {
	if err := checkRepo(repo); err != nil {
		return "", err
	}
	if branch == "" {
		return "", fmt.Errorf("github: head of %s: no branch named", repo)
	}
	var out gh.Branch
	path := repoPath(repo) + "/branches/" + url.PathEscape(branch)
	if _, err := c.call(ctx, installationID, epBranch, path, nil, &out); err != nil {
		return "", fmt.Errorf("github: head of %s:%s: %w", repo, branch, err)
	}
	sha := out.GetCommit().GetSHA()
	if sha == "" {
		return "", fmt.Errorf("github: head of %s:%s: GitHub returned no commit", repo, branch)
	}
	return sha, nil
}

// IssueInfo is an issue or pull request as the issues API shows it.
type IssueInfo struct {
	Number               int
	Title, Body, HTMLURL string
	IsPullRequest        bool
	Author               string
}

// Issue reads an issue (or a pull request through the issues API).
func (c *Client) Issue(ctx context.Context, installationID int64, ref agentbot.IssueRef) (IssueInfo, error) {
	if err := checkRef(ref); err != nil {
		return IssueInfo{}, err
	}
	var out gh.Issue
	if _, err := c.call(ctx, installationID, epIssue, issuePath(ref), nil, &out); err != nil {
		return IssueInfo{}, fmt.Errorf("github: issue %s: %w", ref, err)
	}
	return IssueInfo{
		Number:        out.GetNumber(),
		Title:         out.GetTitle(),
		Body:          out.GetBody(),
		HTMLURL:       out.GetHTMLURL(),
		IsPullRequest: out.IsPullRequest(),
		Author:        out.GetUser().GetLogin(),
	}, nil
}

// PRInfo is a pull request. HeadRepo is "owner/name" of the head branch's
// repository (a fork's differs from the base's).
type PRInfo struct {
	Number                                                                      int
	URL, HTMLURL, HeadBranch, HeadSHA, BaseBranch, HeadRepo, Title, Body, State string
	Draft                                                                       bool
}

func prInfo(pr *gh.PullRequest) PRInfo {
	return PRInfo{
		Number:     pr.GetNumber(),
		URL:        pr.GetURL(),
		HTMLURL:    pr.GetHTMLURL(),
		HeadBranch: pr.GetHead().GetRef(),
		HeadSHA:    pr.GetHead().GetSHA(),
		BaseBranch: pr.GetBase().GetRef(),
		HeadRepo:   pr.GetHead().GetRepo().GetFullName(),
		Title:      pr.GetTitle(),
		Body:       pr.GetBody(),
		State:      pr.GetState(),
		Draft:      pr.GetDraft(),
	}
}

// PullRequest reads pull request ref.
func (c *Client) PullRequest(ctx context.Context, installationID int64, ref agentbot.IssueRef) (PRInfo, error) {
	if err := checkRef(ref); err != nil {
		return PRInfo{}, err
	}
	var out gh.PullRequest
	path := fmt.Sprintf("%s/pulls/%d", repoPath(ref.Repo), ref.Number)
	if _, err := c.call(ctx, installationID, epPull, path, nil, &out); err != nil {
		return PRInfo{}, fmt.Errorf("github: pull request %s: %w", ref, err)
	}
	return prInfo(&out), nil
}

// reactionContents are the reactions GitHub accepts.
var reactionContents = map[string]bool{"+1": true, "-1": true, "laugh": true, "confused": true, "heart": true, "hooray": true, "rocket": true, "eyes": true}

// React adds a reaction ("eyes" for 👀) to comment commentID on ref, or to
// the issue itself when commentID is 0. Reacting twice is harmless.
func (c *Client) React(ctx context.Context, installationID int64, ref agentbot.IssueRef, commentID int64, content string) error {
	if err := checkRef(ref); err != nil {
		return err
	}
	if !reactionContents[content] {
		return fmt.Errorf("github: react on %s: %q is not a GitHub reaction", ref, content)
	}
	body := map[string]string{"content": content}
	var err error
	if commentID == 0 {
		_, err = c.call(ctx, installationID, epIssueReaction, issuePath(ref)+"/reactions", body, nil)
	} else {
		_, err = c.call(ctx, installationID, epCommentReaction, fmt.Sprintf("%s/issues/comments/%d/reactions", repoPath(ref.Repo), commentID), body, nil)
	}
	if err != nil {
		return fmt.Errorf("github: react %s on %s (comment %d): %w", content, ref, commentID, err)
	}
	return nil
}

// CreateComment posts body on issue or pull request ref and returns the new
// comment's id. A body beyond GitHub's limit is cut to fit. When GitHub
// answers 5xx (or the connection drops) a body that starts with a
// CommentMarker is looked for before it is posted again, so it is never
// posted twice; any other body is then not retried.
func (c *Client) CreateComment(ctx context.Context, installationID int64, ref agentbot.IssueRef, body string) (int64, error) {
	if err := checkRef(ref); err != nil {
		return 0, err
	}
	var out gh.IssueComment
	var find func(context.Context) (bool, error)
	if marker := markerOf(body); marker != "" {
		since := c.now().Add(-lookupWindow)
		find = func(ctx context.Context) (bool, error) {
			id, ok, err := c.findComment(ctx, installationID, ref, marker, since)
			out.ID = &id
			return ok, err
		}
	}
	if err := c.create(ctx, installationID, epCreateComment, issuePath(ref)+"/comments", map[string]string{"body": FitComment(body)}, &out, find); err != nil {
		return 0, fmt.Errorf("github: comment on %s: %w", ref, err)
	}
	if out.GetID() == 0 {
		return 0, fmt.Errorf("github: comment on %s: GitHub returned no comment id", ref)
	}
	return out.GetID(), nil
}

// EditComment replaces the body of comment commentID in repo.
func (c *Client) EditComment(ctx context.Context, installationID int64, repo agentbot.Repo, commentID int64, body string) error {
	if err := checkRepo(repo); err != nil {
		return err
	}
	if commentID <= 0 {
		return fmt.Errorf("github: edit comment on %s: comment id %d is not valid", repo, commentID)
	}
	path := fmt.Sprintf("%s/issues/comments/%d", repoPath(repo), commentID)
	if _, err := c.call(ctx, installationID, epEditComment, path, map[string]string{"body": FitComment(body)}, nil); err != nil {
		return fmt.Errorf("github: edit comment %d on %s: %w", commentID, repo, err)
	}
	return nil
}

func checkRef(ref agentbot.IssueRef) error {
	if err := checkRepo(ref.Repo); err != nil {
		return err
	}
	if ref.Number <= 0 {
		return fmt.Errorf("github: %s: issue number must be positive", ref)
	}
	return nil
}

func issuePath(ref agentbot.IssueRef) string {
	return fmt.Sprintf("%s/issues/%d", repoPath(ref.Repo), ref.Number)
}

// logError logs a failed best-effort call; the caller carries on.
func (c *Client) logError(ctx context.Context, msg string, repo agentbot.Repo, err error) {
	c.logger.LogAttrs(ctx, slog.LevelWarn, msg, slog.String("repo", repo.FullName()), slog.String("err", err.Error()))
}
