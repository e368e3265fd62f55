package github

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	gh "github.com/google/go-github/v66/github"

	"github.com/agentbot/agentbot"
	"github.com/agentbot/agentbot/bundle"
	"github.com/agentbot/agentbot/internal/gitenv"
	"github.com/agentbot/agentbot/internal/secret"
)

// PushBundle verifies bundlePath and pushes its branch to repo. It fetches
// the base commits with a read-only token, verifies (see bundle.Verify),
// then mints a contents:write token for the one push and revokes both
// tokens afterwards. The token travels in an http.extraHeader set through
// git's environment for that command only — never in a URL, argument or
// file. A retry after a push that succeeded returns the same head.
func (c *Client) PushBundle(ctx context.Context, installationID int64, repo agentbot.Repo, cloneURL, bundlePath string, check bundle.Check) (string, error) {
	head, err := c.pushBundle(ctx, installationID, repo, cloneURL, bundlePath, check)
	var rej *bundle.Rejected
	switch {
	case errors.As(err, &rej):
		c.metrics.bundles.WithLabelValues("rejected").Inc()
		c.logger.LogAttrs(ctx, slog.LevelWarn, "bundle rejected", slog.String("repo", repo.FullName()),
			slog.String("branch", check.Branch), slog.String("reason", rej.Reason))
	case err != nil:
		c.metrics.bundles.WithLabelValues("failed").Inc()
	default:
		c.metrics.bundles.WithLabelValues("pushed").Inc()
		c.logger.LogAttrs(ctx, slog.LevelInfo, "bundle pushed", slog.String("repo", repo.FullName()),
			slog.String("branch", check.Branch), slog.String("head", head))
	}
	return head, err
}

func (c *Client) pushBundle(ctx context.Context, installationID int64, repo agentbot.Repo, cloneURL, bundlePath string, check bundle.Check) (string, error) {
	where := fmt.Sprintf("%s:%s", repo, check.Branch)
	if err := checkRepo(repo); err != nil {
		return "", err
	}
	if err := check.Validate(); err != nil {
		return "", fmt.Errorf("github: push %s: %w", where, err)
	}
	remote, err := url.Parse(cloneURL)
	if err != nil || (remote.Scheme != "https" && remote.Scheme != "http") || remote.Host == "" || remote.User != nil {
		return "", fmt.Errorf("github: push %s: clone URL must be http(s) without credentials", where)
	}
	ctx, cancel := context.WithTimeout(ctx, c.gitTimeout)
	defer cancel()

	dir, err := os.MkdirTemp("", "agentbot-push-*")
	if err != nil {
		return "", fmt.Errorf("github: push %s: %w", where, err)
	}
	defer os.RemoveAll(dir)
	g := gitenv.Git{Path: c.gitPath}
	gitDir := filepath.Join(dir, "repo.git")
	if _, err := g.Run(ctx, nil, "init", "-q", "--bare", gitDir); err != nil {
		return "", fmt.Errorf("github: push %s: %w", where, err)
	}

	// A new branch's base decides which history is pushed unchecked, so it
	// must be in the base branch's history on GitHub whoever named it.
	if check.BaseSHA != "" && (check.ExpectedOldSHA == "" || check.BaseBranch != "") {
		branch := check.BaseBranch
		if branch == "" {
			info, err := c.Repository(ctx, installationID, repo)
			if err != nil {
				return "", fmt.Errorf("github: push %s: %w", where, err)
			}
			branch = info.DefaultBranch
		}
		if err := c.checkInHistory(ctx, installationID, repo, check.BaseSHA, branch); err != nil {
			return "", err
		}
	}

	readTok, err := c.TokenFor(ctx, installationID, repo, Permissions{"contents": "read"})
	if err != nil {
		return "", fmt.Errorf("github: push %s: %w", where, err)
	}
	defer c.revoke(ctx, readTok, repo)
	readEnv := gitenv.Auth(cloneURL, readTok.Value)
	for _, sha := range []string{check.BaseSHA, check.ExpectedOldSHA} {
		if sha == "" {
			continue
		}
		if _, err := g.Run(ctx, readEnv, "--git-dir", gitDir, "fetch", "-q", "--no-tags", "--depth=1", cloneURL,
			sha+":refs/agentbot/base-"+sha); err != nil {
			return "", fmt.Errorf("github: push %s: fetch base %s: %w", where, bundle.ShortSHA(sha), redactErr(err, readTok.Value))
		}
	}
	head, err := bundle.VerifyIn(ctx, g, gitDir, bundlePath, check)
	if err != nil {
		return "", err
	}

	// Where is the branch on GitHub now? A retry after a successful push
	// finds its own head there; anything else unexpected is a conflict.
	out, err := g.Run(ctx, readEnv, "ls-remote", cloneURL, "refs/heads/"+check.Branch)
	if err != nil {
		return "", fmt.Errorf("github: push %s: ls-remote: %w", where, redactErr(err, readTok.Value))
	}
	remoteSHA, _, _ := strings.Cut(strings.TrimSpace(out), "\t")
	switch {
	case remoteSHA == head:
		c.logger.LogAttrs(ctx, slog.LevelInfo, "branch already at bundle head", slog.String("repo", repo.FullName()), slog.String("branch", check.Branch))
		return head, nil
	case check.ExpectedOldSHA == "" && remoteSHA != "":
		return "", bundle.Rejectf("branch %q already exists on GitHub (at %s)", check.Branch, bundle.ShortSHA(remoteSHA))
	case check.ExpectedOldSHA != "" && remoteSHA != check.ExpectedOldSHA:
		now := "deleted"
		if remoteSHA != "" {
			now = "at " + bundle.ShortSHA(remoteSHA)
		}
		return "", bundle.Rejectf("branch %q moved on GitHub while the task ran (now %s, expected %s)", check.Branch, now, bundle.ShortSHA(check.ExpectedOldSHA))
	}

	writeTok, err := c.TokenFor(ctx, installationID, repo, Permissions{"contents": "write"})
	if err != nil {
		return "", fmt.Errorf("github: push %s: %w", where, err)
	}
	defer c.revoke(ctx, writeTok, repo)
	// The lease makes the push atomic with the check above: it fails if the
	// branch moved (or appeared) since.
	lease := "--force-with-lease=refs/heads/" + check.Branch + ":" + check.ExpectedOldSHA
	if _, err := g.Run(ctx, gitenv.Auth(cloneURL, writeTok.Value), "--git-dir", gitDir, "push", "-q", "--porcelain", "--no-verify",
		lease, cloneURL, head+":refs/heads/"+check.Branch); err != nil {
		return "", fmt.Errorf("github: push %s: %w", where, redactErr(err, writeTok.Value, readTok.Value))
	}
	return head, nil
}

const epCompare = "GET /repos/{owner}/{repo}/compare/{basehead}"

// checkInHistory makes sure sha is branch's head or one of its ancestors on
// GitHub, so that a base commit named by the sandbox cannot smuggle in
// history from elsewhere (another branch, a fork in the same network).
func (c *Client) checkInHistory(ctx context.Context, installationID int64, repo agentbot.Repo, sha, branch string) error {
	var cmp gh.CommitsComparison
	path := fmt.Sprintf("%s/compare/%s...%s?per_page=1", repoPath(repo), url.PathEscape(sha), url.PathEscape(branch))
	if _, err := c.call(ctx, installationID, epCompare, path, nil, &cmp); err != nil {
		if IsNotFound(err) {
			return bundle.Rejectf("base commit %s is not in %s's history", bundle.ShortSHA(sha), branch)
		}
		return fmt.Errorf("github: push %s: compare %s with %s: %w", repo, bundle.ShortSHA(sha), branch, err)
	}
	if st := cmp.GetStatus(); st != "identical" && st != "ahead" {
		return bundle.Rejectf("base commit %s is not in %s's history (%s)", bundle.ShortSHA(sha), branch, st)
	}
	return nil
}

// redactErr hides the tokens (and so their Basic credentials) in err's
// message.
func redactErr(err error, tokens ...string) error {
	msg := err.Error()
	if red := secret.New(tokens...).String(msg); red != msg {
		return errors.New(red)
	}
	return err
}
