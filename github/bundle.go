package github

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"strings"

	gh "github.com/google/go-github/v66/github"

	"github.com/agentbot/agentbot"
)

// DefaultMaxBundleBytes bounds a result bundle when BundleCheck.MaxBytes is 0.
const DefaultMaxBundleBytes = 100 << 20

// BundleCheck is what a result bundle must satisfy before anything from it
// reaches GitHub.
type BundleCheck struct {
	// Branch is the one branch the bundle must carry: the branch the task
	// was told to create, or the PR branch of a follow-up.
	Branch string
	// BranchPrefix, when set, must begin Branch (the configured prefix of
	// new tasks). Follow-ups on a branch from an older prefix may leave it "".
	BranchPrefix string
	// BaseSHA is the commit a new task started from; the bundle's head must
	// descend from it.
	BaseSHA string
	// BaseBranch is the branch BaseSHA must belong to: PushBundle confirms
	// on GitHub that BaseSHA is that branch's head or an ancestor of it, so
	// BaseSHA may come from the sandbox's RunResult. "" means the
	// repository's default branch for a new branch (and no check for a
	// follow-up, whose ExpectedOldSHA is checked against GitHub instead).
	BaseBranch string
	// ExpectedOldSHA is, for a follow-up, the branch's current head on
	// GitHub. The bundle's head must descend from it, protected paths are
	// checked from it, and the push succeeds only while the branch still
	// points there. "" means the branch must not exist yet.
	ExpectedOldSHA string
	// ProtectedPaths are patterns (Settings.ProtectedPaths) no commit in the
	// bundle may touch: "dir/**", "*.pem", ".github/workflows".
	ProtectedPaths []string
	// MaxBytes bounds the bundle file (0 = DefaultMaxBundleBytes).
	MaxBytes int64
	// ObjectsFrom is a local git directory holding BaseSHA and
	// ExpectedOldSHA, for VerifyBundle on a thin bundle. PushBundle fetches
	// them from GitHub itself and ignores this.
	ObjectsFrom string
}

// BundleRejected says why a bundle was refused. Nothing was pushed.
type BundleRejected struct {
	Reason string
}

func (e *BundleRejected) Error() string { return "bundle rejected: " + e.Reason }

func reject(format string, args ...any) error {
	return &BundleRejected{Reason: fmt.Sprintf(format, args...)}
}

var shaPattern = regexp.MustCompile(`^[0-9a-f]{40}([0-9a-f]{24})?$`)

func (chk BundleCheck) validate() error {
	if chk.Branch == "" {
		return errors.New("no branch named")
	}
	if chk.BaseSHA == "" && chk.ExpectedOldSHA == "" {
		return errors.New("neither a base commit nor an expected old head is given")
	}
	for _, s := range []string{chk.BaseSHA, chk.ExpectedOldSHA} {
		if s != "" && !shaPattern.MatchString(s) {
			return fmt.Errorf("%q is not a full commit SHA", s)
		}
	}
	for _, p := range chk.ProtectedPaths {
		if err := validPattern(p); err != nil {
			return err
		}
	}
	if chk.MaxBytes < 0 {
		return errors.New("MaxBytes is negative")
	}
	return nil
}

// ancestor is the commit the head must descend from and the start of the
// range whose paths are checked.
func (chk BundleCheck) ancestor() string {
	if chk.ExpectedOldSHA != "" {
		return chk.ExpectedOldSHA
	}
	return chk.BaseSHA
}

// VerifyBundle checks bundlePath against check in a scratch repository and
// returns the commit it would push. A refusal is a *BundleRejected; other
// errors mean the check itself could not run. A thin bundle (one that
// needs BaseSHA's objects) needs check.ObjectsFrom.
func VerifyBundle(ctx context.Context, gitPath, bundlePath string, check BundleCheck) (string, error) {
	if err := check.validate(); err != nil {
		return "", fmt.Errorf("github: verify bundle: %w", err)
	}
	g := gitRunner{path: orDefault(gitPath, "git")}
	dir, err := os.MkdirTemp("", "agentbot-verify-*")
	if err != nil {
		return "", fmt.Errorf("github: verify bundle: %w", err)
	}
	defer os.RemoveAll(dir)
	gitDir := filepath.Join(dir, "repo.git")
	if _, err := g.run(ctx, nil, "init", "-q", "--bare", gitDir); err != nil {
		return "", fmt.Errorf("github: verify bundle: %w", err)
	}
	if check.ObjectsFrom != "" {
		objs, err := g.run(ctx, nil, "--git-dir", check.ObjectsFrom, "rev-parse", "--path-format=absolute", "--git-path", "objects")
		if err != nil {
			return "", fmt.Errorf("github: verify bundle: objects of %s: %w", check.ObjectsFrom, err)
		}
		alt := filepath.Join(gitDir, "objects", "info", "alternates")
		if err := os.WriteFile(alt, []byte(strings.TrimSpace(objs)+"\n"), 0o600); err != nil {
			return "", fmt.Errorf("github: verify bundle: %w", err)
		}
	}
	return verifyIn(ctx, g, gitDir, bundlePath, check)
}

// verifyIn does the checks inside gitDir, which must hold the objects of
// check's base commits; it leaves the head at refs/agentbot/incoming.
func verifyIn(ctx context.Context, g gitRunner, gitDir, bundlePath string, check BundleCheck) (string, error) {
	limit := check.MaxBytes
	if limit == 0 {
		limit = DefaultMaxBundleBytes
	}
	st, err := os.Stat(bundlePath)
	if err != nil {
		return "", reject("no bundle: %v", err)
	}
	if !st.Mode().IsRegular() {
		return "", reject("the bundle is not a regular file")
	}
	if st.Size() > limit {
		return "", reject("the bundle is %d bytes, over the limit of %d", st.Size(), limit)
	}
	heads, err := g.run(ctx, nil, "--git-dir", gitDir, "bundle", "list-heads", bundlePath)
	if err != nil {
		return "", reject("not a readable git bundle")
	}
	branchSHA, err := singleBranch(heads, check)
	if err != nil {
		return "", err
	}
	if _, err := g.run(ctx, nil, "--git-dir", gitDir, "bundle", "verify", "-q", bundlePath); err != nil {
		return "", reject("the bundle needs commits that are not in the history of %s, so it does not descend from it (%s)", short(check.ancestor()), firstLine(err.Error()))
	}
	if _, err := g.run(ctx, nil, "--git-dir", gitDir,
		"-c", "fetch.fsckObjects=true", "-c", "transfer.fsckObjects=true",
		"fetch", "-q", "--no-tags", "--no-write-fetch-head", bundlePath,
		"+refs/heads/"+check.Branch+":refs/agentbot/incoming"); err != nil {
		return "", reject("the bundle's objects failed verification: %s", firstLine(err.Error()))
	}
	head, err := g.run(ctx, nil, "--git-dir", gitDir, "rev-parse", "--verify", "refs/agentbot/incoming^{commit}")
	if err != nil {
		return "", reject("the bundle's branch is not a commit")
	}
	head = strings.TrimSpace(head)
	if head != branchSHA {
		return "", reject("the bundle's branch resolved to %s, not the %s it lists", short(head), short(branchSHA))
	}
	anc := check.ancestor()
	if _, err := g.run(ctx, nil, "--git-dir", gitDir, "merge-base", "--is-ancestor", anc, head); err != nil {
		return "", reject("the branch's history does not descend from %s", short(anc))
	}
	if head == anc {
		return "", reject("the bundle adds no commits to %s", short(anc))
	}
	if len(check.ProtectedPaths) > 0 {
		// --raw gives each entry's modes: a symlink or submodule may not
		// stand where a protected directory would be, or a checkout would
		// put other content under the protected path without any commit
		// touching it.
		out, err := g.run(ctx, nil, "--git-dir", gitDir, "log", "--no-renames", "--no-ext-diff", "--no-textconv",
			"-m", "--root", "--raw", "--no-abbrev", "--format=", "-z", anc+".."+head)
		if err != nil {
			return "", fmt.Errorf("github: verify bundle: list changed paths: %w", err)
		}
		if err := checkProtected(out, check.ProtectedPaths); err != nil {
			return "", err
		}
	}
	return head, nil
}

// singleBranch parses `git bundle list-heads`: exactly one branch, named
// check.Branch (HEAD may point at it too), nothing else.
func singleBranch(listing string, check BundleCheck) (string, error) {
	var branchSHA, headSHA string
	var refs []string
	sc := bufio.NewScanner(strings.NewReader(listing))
	for sc.Scan() {
		sha, ref, ok := strings.Cut(strings.TrimSpace(sc.Text()), " ")
		if !ok || !shaPattern.MatchString(sha) {
			continue
		}
		switch {
		case ref == "HEAD":
			headSHA = sha
		case strings.HasPrefix(ref, "refs/heads/"):
			refs = append(refs, ref)
			branchSHA = sha
		default:
			return "", reject("the bundle carries %s; only one branch is allowed", ref)
		}
	}
	switch {
	case len(refs) == 0:
		return "", reject("the bundle carries no branch")
	case len(refs) > 1:
		return "", reject("the bundle carries %d branches (%s); only one is allowed", len(refs), strings.Join(refs, ", "))
	}
	name := strings.TrimPrefix(refs[0], "refs/heads/")
	if name != check.Branch {
		return "", reject("the bundle's branch is %q, not %q", name, check.Branch)
	}
	if check.BranchPrefix != "" && !strings.HasPrefix(name, check.BranchPrefix) {
		return "", reject("the branch %q does not start with %q", name, check.BranchPrefix)
	}
	if headSHA != "" && headSHA != branchSHA {
		return "", reject("the bundle's HEAD points elsewhere than its branch")
	}
	return branchSHA, nil
}

// checkProtected reads `git log --raw -z` and refuses an entry under a
// protected pattern, and a symlink or submodule (gitlink) whose path is a
// directory an anchored pattern covers something in.
func checkProtected(raw string, patterns []string) error {
	fields := strings.Split(raw, "\x00")
	for i := 0; i < len(fields); i++ {
		meta := strings.TrimLeft(fields[i], "\n")
		if !strings.HasPrefix(meta, ":") || i+1 >= len(fields) {
			continue
		}
		i++
		p := fields[i]
		// ":oldmode newmode oldsha newsha status"
		modes := strings.Fields(meta)
		newMode := ""
		if len(modes) >= 2 {
			newMode = modes[1]
		}
		for _, pat := range patterns {
			if matchPath(pat, p) {
				return reject("a commit changes %s, which is protected (%s)", p, pat)
			}
			if (newMode == "120000" || newMode == "160000") && coversBelow(pat, p) {
				kind := "symlink"
				if newMode == "160000" {
					kind = "submodule"
				}
				return reject("a commit makes %s a %s, where protected paths (%s) would be", p, kind, pat)
			}
		}
	}
	return nil
}

// coversBelow reports whether an anchored pattern can match a path strictly
// inside directory p (".github/workflows/**" covers something in ".github").
func coversBelow(pattern, p string) bool {
	pattern = strings.TrimPrefix(pattern, "/")
	if !strings.Contains(strings.TrimSuffix(pattern, "/"), "/") {
		return false
	}
	return coversSegs(strings.Split(strings.TrimSuffix(pattern, "/"), "/"), strings.Split(strings.ToLower(p), "/"))
}

func coversSegs(pat, segs []string) bool {
	if len(pat) == 0 {
		// p is the pattern's own directory, which covers what is inside.
		return len(segs) == 0
	}
	if len(segs) == 0 || pat[0] == "**" {
		return true
	}
	if ok, _ := path.Match(strings.ToLower(pat[0]), segs[0]); !ok {
		return false
	}
	return coversSegs(pat[1:], segs[1:])
}

// validPattern checks a protected-path pattern.
func validPattern(p string) error {
	if strings.TrimSpace(p) == "" {
		return errors.New("empty protected path pattern")
	}
	for _, seg := range strings.Split(strings.Trim(p, "/"), "/") {
		if seg == "" || seg == ".." || seg == "." {
			return fmt.Errorf("protected path pattern %q has an empty, . or .. segment", p)
		}
		if _, err := path.Match(seg, ""); err != nil {
			return fmt.Errorf("protected path pattern %q: %w", p, err)
		}
	}
	return nil
}

// matchPath reports whether file path p falls under pattern. A pattern
// without a slash matches a file or directory name at any depth ("*.pem",
// "secrets"); otherwise it is anchored at the root, "**" spans any number
// of directories, and a pattern naming a directory covers what is inside
// (".github/workflows" protects ".github/workflows/ci.yml"). Matching
// ignores case.
func matchPath(pattern, p string) bool {
	// Case is folded: a checkout on a case-insensitive file system puts
	// ".GitHub/Workflows/x.yml" where ".github/workflows/x.yml" would be.
	pattern = strings.ToLower(strings.TrimPrefix(pattern, "/"))
	p = strings.ToLower(p)
	if strings.HasSuffix(pattern, "/") {
		pattern += "**"
	}
	segs := strings.Split(p, "/")
	if !strings.Contains(pattern, "/") && pattern != "**" {
		for _, s := range segs {
			if ok, _ := path.Match(pattern, s); ok {
				return true
			}
		}
		return false
	}
	return matchSegs(strings.Split(pattern, "/"), segs)
}

// matchSegs matches pattern segments against a prefix of path segments (a
// matched directory covers its contents).
func matchSegs(pat, segs []string) bool {
	if len(pat) == 0 {
		return true
	}
	if pat[0] == "**" {
		for i := 0; i <= len(segs); i++ {
			if matchSegs(pat[1:], segs[i:]) {
				return true
			}
		}
		return false
	}
	if len(segs) == 0 {
		return false
	}
	if ok, _ := path.Match(pat[0], segs[0]); !ok {
		return false
	}
	return matchSegs(pat[1:], segs[1:])
}

// PushBundle verifies bundlePath and pushes its branch to repo. It fetches
// the base commits with a read-only token, verifies (see VerifyBundle),
// then mints a contents:write token for the one push and revokes both
// tokens afterwards. The token travels in an http.extraHeader set through
// git's environment for that command only — never in a URL, argument or
// file. A retry after a push that succeeded returns the same head.
func (c *Client) PushBundle(ctx context.Context, installationID int64, repo agentbot.Repo, cloneURL, bundlePath string, check BundleCheck) (string, error) {
	head, err := c.pushBundle(ctx, installationID, repo, cloneURL, bundlePath, check)
	var rej *BundleRejected
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

func (c *Client) pushBundle(ctx context.Context, installationID int64, repo agentbot.Repo, cloneURL, bundlePath string, check BundleCheck) (string, error) {
	where := fmt.Sprintf("%s:%s", repo, check.Branch)
	if err := checkRepo(repo); err != nil {
		return "", err
	}
	if err := check.validate(); err != nil {
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
	g := gitRunner{path: c.gitPath}
	gitDir := filepath.Join(dir, "repo.git")
	if _, err := g.run(ctx, nil, "init", "-q", "--bare", gitDir); err != nil {
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
	readEnv := authEnv(remote, readTok.Value)
	for _, sha := range []string{check.BaseSHA, check.ExpectedOldSHA} {
		if sha == "" {
			continue
		}
		if _, err := g.run(ctx, readEnv, "--git-dir", gitDir, "fetch", "-q", "--no-tags", "--depth=1", cloneURL,
			sha+":refs/agentbot/base-"+sha); err != nil {
			return "", fmt.Errorf("github: push %s: fetch base %s: %w", where, short(sha), redactErr(err, readTok.Value))
		}
	}
	head, err := verifyIn(ctx, g, gitDir, bundlePath, check)
	if err != nil {
		return "", err
	}

	// Where is the branch on GitHub now? A retry after a successful push
	// finds its own head there; anything else unexpected is a conflict.
	out, err := g.run(ctx, readEnv, "ls-remote", cloneURL, "refs/heads/"+check.Branch)
	if err != nil {
		return "", fmt.Errorf("github: push %s: ls-remote: %w", where, redactErr(err, readTok.Value))
	}
	remoteSHA, _, _ := strings.Cut(strings.TrimSpace(out), "\t")
	switch {
	case remoteSHA == head:
		c.logger.LogAttrs(ctx, slog.LevelInfo, "branch already at bundle head", slog.String("repo", repo.FullName()), slog.String("branch", check.Branch))
		return head, nil
	case check.ExpectedOldSHA == "" && remoteSHA != "":
		return "", reject("branch %q already exists on GitHub (at %s)", check.Branch, short(remoteSHA))
	case check.ExpectedOldSHA != "" && remoteSHA != check.ExpectedOldSHA:
		now := "deleted"
		if remoteSHA != "" {
			now = "at " + short(remoteSHA)
		}
		return "", reject("branch %q moved on GitHub while the task ran (now %s, expected %s)", check.Branch, now, short(check.ExpectedOldSHA))
	}

	writeTok, err := c.TokenFor(ctx, installationID, repo, Permissions{"contents": "write"})
	if err != nil {
		return "", fmt.Errorf("github: push %s: %w", where, err)
	}
	defer c.revoke(ctx, writeTok, repo)
	// The lease makes the push atomic with the check above: it fails if the
	// branch moved (or appeared) since.
	lease := "--force-with-lease=refs/heads/" + check.Branch + ":" + check.ExpectedOldSHA
	if _, err := g.run(ctx, authEnv(remote, writeTok.Value), "--git-dir", gitDir, "push", "-q", "--porcelain", "--no-verify",
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
			return reject("base commit %s is not in %s's history", short(sha), branch)
		}
		return fmt.Errorf("github: push %s: compare %s with %s: %w", repo, short(sha), branch, err)
	}
	if st := cmp.GetStatus(); st != "identical" && st != "ahead" {
		return reject("base commit %s is not in %s's history (%s)", short(sha), branch, st)
	}
	return nil
}

// authEnv sets the token as an Authorization header for remote's origin
// only, through git's GIT_CONFIG_* environment.
func authEnv(remote *url.URL, token string) []string {
	basic := base64.StdEncoding.EncodeToString([]byte("x-access-token:" + token))
	origin := remote.Scheme + "://" + remote.Host + "/"
	return []string{
		"GIT_CONFIG_COUNT=1",
		"GIT_CONFIG_KEY_0=http." + origin + ".extraHeader",
		"GIT_CONFIG_VALUE_0=Authorization: Basic " + basic,
	}
}

func redactErr(err error, secrets ...string) error {
	all := append([]string(nil), secrets...)
	for _, s := range secrets {
		if s != "" {
			all = append(all, base64.StdEncoding.EncodeToString([]byte("x-access-token:"+s)))
		}
	}
	msg := err.Error()
	if red := Redact(msg, all...); red != msg {
		return errors.New(red)
	}
	return err
}

func short(sha string) string {
	if len(sha) > 12 {
		return sha[:12]
	}
	return sha
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(strings.TrimSpace(s), "\n")
	return truncateUTF8(s, 300)
}

// gitRunner runs git with a clean environment: no user or system config,
// no prompts, nothing inherited from a surrounding GIT_DIR.
type gitRunner struct {
	path string
}

func (g gitRunner) run(ctx context.Context, extraEnv []string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, g.path, args...)
	env := []string{
		"GIT_TERMINAL_PROMPT=0",
		"GIT_CONFIG_NOSYSTEM=1",
		"GIT_CONFIG_GLOBAL=" + os.DevNull,
		"GIT_ASKPASS=",
		"SSH_ASKPASS=",
		"LC_ALL=C",
	}
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "GIT_") || k == "LC_ALL" || k == "SSH_ASKPASS" {
			continue
		}
		env = append(env, kv)
	}
	cmd.Env = append(env, extraEnv...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			return "", fmt.Errorf("git %s: %w", args[0], ctx.Err())
		}
		// Redact before cutting to one line: a cut through the header
		// would leave a piece of it that no longer matches the secret.
		msg := Redact(stderr.String(), secretsOf(extraEnv)...)
		return stdout.String(), fmt.Errorf("git %s: %w: %s", gitVerb(args), err, firstLine(msg))
	}
	return stdout.String(), nil
}

// secretsOf returns the credentials in an environment made by authEnv: the
// Basic credential of the extraHeader and the token inside it.
func secretsOf(env []string) []string {
	var out []string
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		if !strings.HasPrefix(k, "GIT_CONFIG_VALUE_") {
			continue
		}
		_, cred, ok := strings.Cut(v, "Basic ")
		if !ok || cred == "" {
			continue
		}
		out = append(out, cred)
		if raw, err := base64.StdEncoding.DecodeString(cred); err == nil {
			if _, tok, ok := strings.Cut(string(raw), ":"); ok && tok != "" {
				out = append(out, tok)
			}
		}
	}
	return out
}

// gitVerb names the subcommand of a git invocation for error messages.
func gitVerb(args []string) string {
	for i := 0; i < len(args); i++ {
		switch args[i] {
		case "--git-dir", "-c", "-C":
			i++
			continue
		}
		if !strings.HasPrefix(args[i], "-") {
			return args[i]
		}
	}
	return "?"
}
