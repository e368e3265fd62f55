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

// PushBundle verifies bundlePath and pushes its branch to repo. With a
// read token — readToken, the one the task's sandbox was given, or one
// minted here and revoked after when it is "" — it lists the branch and its
// base (one ls-remote), fetches the base commits and verifies (see
// bundle.Verify); only a bundle that passes gets a contents:write token,
// minted for the one push and revoked after it. Tokens travel in an
// http.extraHeader set through git's environment for that command only —
// never in a URL, argument or file. A retry after a push that succeeded
// returns the same head.
func (c *Client) PushBundle(ctx context.Context, installationID int64, repo agentbot.Repo, cloneURL, bundlePath string, check bundle.Check, readToken string) (string, error) {
	head, err := c.pushBundle(ctx, installationID, repo, cloneURL, bundlePath, check, readToken)
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

func (c *Client) pushBundle(ctx context.Context, installationID int64, repo agentbot.Repo, cloneURL, bundlePath string, check bundle.Check, readToken string) (string, error) {
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
	p := &pusher{c: c, inst: installationID, repo: repo, url: cloneURL, check: check, where: where,
		g: gitenv.Git{Path: c.gitPath}, gitDir: filepath.Join(dir, "repo.git")}
	if _, err := p.g.Run(ctx, nil, "init", "-q", "--bare", p.gitDir); err != nil {
		return "", fmt.Errorf("github: push %s: %w", where, err)
	}
	p.read = readToken
	if p.read == "" {
		tok, err := c.TokenFor(ctx, installationID, repo, Permissions{"contents": "read"})
		if err != nil {
			return "", fmt.Errorf("github: push %s: %w", where, err)
		}
		defer c.revoke(ctx, tok, repo)
		p.read = tok.Value
	}
	return p.push(ctx, bundlePath)
}

// pusher is one verified push of a bundle.
type pusher struct {
	c      *Client
	inst   int64
	repo   agentbot.Repo
	url    string
	check  bundle.Check
	where  string
	g      gitenv.Git
	gitDir string
	read   string // the read token
}

// git runs git with token for the remote.
func (p *pusher) git(ctx context.Context, token string, args ...string) (string, error) {
	out, err := p.g.Run(ctx, gitenv.Auth(p.url, token), args...)
	if err != nil {
		return out, redactErr(err, token, p.read)
	}
	return out, nil
}

func (p *pusher) push(ctx context.Context, bundlePath string) (string, error) {
	check := p.check
	baseBranch := check.BaseBranch
	if check.BaseSHA != "" && check.ExpectedOldSHA == "" && baseBranch == "" {
		info, err := p.c.Repository(ctx, p.inst, p.repo)
		if err != nil {
			return "", fmt.Errorf("github: push %s: %w", p.where, err)
		}
		baseBranch = info.DefaultBranch
	}
	// Where are the branch and its base on GitHub now? One ls-remote says.
	refs := []string{"refs/heads/" + check.Branch}
	if baseBranch != "" {
		refs = append(refs, "refs/heads/"+baseBranch)
	}
	out, err := p.git(ctx, p.read, append([]string{"ls-remote", p.url}, refs...)...)
	if err != nil {
		return "", fmt.Errorf("github: push %s: ls-remote: %w", p.where, err)
	}
	heads := lsRemote(out)
	// A new branch's base decides which history is pushed unchecked, so it
	// must be in the base branch's history on GitHub whoever named it: the
	// base branch's head itself (the usual case, no API call) or, after
	// the base moved on, one of its ancestors (GitHub's compare says).
	if check.BaseSHA != "" && baseBranch != "" && heads["refs/heads/"+baseBranch] != check.BaseSHA {
		if err := p.c.checkInHistory(ctx, p.inst, p.repo, check.BaseSHA, baseBranch); err != nil {
			return "", err
		}
	}
	for _, sha := range []string{check.BaseSHA, check.ExpectedOldSHA} {
		if sha == "" || p.fromMirror(ctx, sha) {
			continue
		}
		if _, err := p.git(ctx, p.read, "--git-dir", p.gitDir, "fetch", "-q", "--no-tags", "--depth=1", p.url, sha+":refs/agentbot/base-"+sha); err != nil {
			return "", fmt.Errorf("github: push %s: fetch base %s: %w", p.where, bundle.ShortSHA(sha), err)
		}
	}
	head, err := bundle.VerifyIn(ctx, p.g, p.gitDir, bundlePath, check)
	if err != nil {
		return "", err
	}
	return p.pushHead(ctx, head, heads["refs/heads/"+check.Branch])
}

// pushHead pushes head, the verified bundle's, over the branch's remote
// head remoteSHA: a retry after a successful push finds its own head there;
// anything else unexpected is a conflict.
func (p *pusher) pushHead(ctx context.Context, head, remoteSHA string) (string, error) {
	check := p.check
	switch {
	case remoteSHA == head:
		p.c.logger.LogAttrs(ctx, slog.LevelInfo, "branch already at bundle head", slog.String("repo", p.repo.FullName()), slog.String("branch", check.Branch))
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
	tok, err := p.c.TokenFor(ctx, p.inst, p.repo, Permissions{"contents": "write"})
	if err != nil {
		return "", fmt.Errorf("github: push %s: %w", p.where, err)
	}
	defer p.c.revoke(ctx, tok, p.repo)
	// The lease makes the push atomic with the check above: it fails if the
	// branch moved (or appeared) since.
	lease := "--force-with-lease=refs/heads/" + check.Branch + ":" + check.ExpectedOldSHA
	if _, err := p.git(ctx, tok.Value, "--git-dir", p.gitDir, "push", "-q", "--porcelain", "--no-verify",
		lease, p.url, head+":refs/heads/"+check.Branch); err != nil {
		return "", fmt.Errorf("github: push %s: %w", p.where, err)
	}
	return head, nil
}

// lsRemote maps each ref git ls-remote listed to its SHA.
func lsRemote(out string) map[string]string {
	heads := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if sha, ref, ok := strings.Cut(line, "\t"); ok {
			heads[ref] = sha
		}
	}
	return heads
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
