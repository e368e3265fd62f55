// Package bundle checks a result bundle from the sandbox before anything
// from it reaches GitHub: one branch, the expected name, descending from
// the commit the task started from, objects that pass fsck, a size limit,
// and no commit touching a protected path (paths.go). The sandbox is
// hostile, so every refusal is a *Rejected and nothing is pushed; pushing
// a verified bundle is github.Client.PushBundle's.
package bundle

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/agentbot/agentbot/internal/gitenv"
)

// DefaultMaxBytes bounds a result bundle when Check.MaxBytes is 0.
const DefaultMaxBytes = 100 << 20

// Check is what a result bundle must satisfy before anything from it
// reaches GitHub.
type Check struct {
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
	// MaxBytes bounds the bundle file (0 = DefaultMaxBytes).
	MaxBytes int64
	// ObjectsFrom is a local git directory holding BaseSHA and
	// ExpectedOldSHA, for Verify on a thin bundle. github.PushBundle uses
	// it (agentbot's mirror of the repository) for the commits it holds
	// and fetches the others from GitHub.
	ObjectsFrom string
}

// Rejected says why a bundle was refused. Nothing was pushed.
type Rejected struct {
	Reason string
	// Protected: the bundle touches a protected path, which the same task
	// run again would do again.
	Protected bool
}

func (e *Rejected) Error() string { return "bundle rejected: " + e.Reason }

// Rejectf is a *Rejected, for refusals found outside this package (the
// branch moved on GitHub while the task ran).
func Rejectf(format string, args ...any) error {
	return &Rejected{Reason: fmt.Sprintf(format, args...)}
}

var shaPattern = regexp.MustCompile(`^[0-9a-f]{40}([0-9a-f]{24})?$`)

// Validate checks the check itself: a failure is the caller's mistake, not
// a refusal of the bundle.
func (chk Check) Validate() error {
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
		if err := ValidPattern(p); err != nil {
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
func (chk Check) ancestor() string {
	if chk.ExpectedOldSHA != "" {
		return chk.ExpectedOldSHA
	}
	return chk.BaseSHA
}

// Verify checks bundlePath against check in a scratch repository and
// returns the commit it would push. A refusal is a *Rejected; other errors
// mean the check itself could not run. A thin bundle (one that needs
// BaseSHA's objects) needs check.ObjectsFrom. gitPath "" is git on PATH.
func Verify(ctx context.Context, gitPath, bundlePath string, check Check) (string, error) {
	if err := check.Validate(); err != nil {
		return "", fmt.Errorf("bundle: verify: %w", err)
	}
	g := gitenv.Git{Path: gitPath}
	dir, err := os.MkdirTemp("", "agentbot-verify-*")
	if err != nil {
		return "", fmt.Errorf("bundle: verify: %w", err)
	}
	defer os.RemoveAll(dir)
	gitDir := filepath.Join(dir, "repo.git")
	if _, err := g.Run(ctx, nil, "init", "-q", "--bare", gitDir); err != nil {
		return "", fmt.Errorf("bundle: verify: %w", err)
	}
	if check.ObjectsFrom != "" {
		objs, err := g.Run(ctx, nil, "--git-dir", check.ObjectsFrom, "rev-parse", "--path-format=absolute", "--git-path", "objects")
		if err != nil {
			return "", fmt.Errorf("bundle: verify: objects of %s: %w", check.ObjectsFrom, err)
		}
		alt := filepath.Join(gitDir, "objects", "info", "alternates")
		if err := os.WriteFile(alt, []byte(strings.TrimSpace(objs)+"\n"), 0o600); err != nil {
			return "", fmt.Errorf("bundle: verify: %w", err)
		}
	}
	return VerifyIn(ctx, g, gitDir, bundlePath, check)
}

// VerifyIn does Verify's checks inside the bare repository gitDir, which
// must hold the objects of check's base commits (PushBundle fetches them
// from GitHub); it leaves the head at refs/agentbot/incoming. check must
// be valid.
func VerifyIn(ctx context.Context, g gitenv.Git, gitDir, bundlePath string, check Check) (string, error) {
	limit := check.MaxBytes
	if limit == 0 {
		limit = DefaultMaxBytes
	}
	st, err := os.Stat(bundlePath)
	if err != nil {
		return "", Rejectf("no bundle: %v", err)
	}
	if !st.Mode().IsRegular() {
		return "", Rejectf("the bundle is not a regular file")
	}
	if st.Size() > limit {
		return "", Rejectf("the bundle is %d bytes, over the limit of %d", st.Size(), limit)
	}
	heads, err := g.Run(ctx, nil, "--git-dir", gitDir, "bundle", "list-heads", bundlePath)
	if err != nil {
		return "", Rejectf("not a readable git bundle")
	}
	branchSHA, err := singleBranch(heads, check)
	if err != nil {
		return "", err
	}
	if _, err := g.Run(ctx, nil, "--git-dir", gitDir, "bundle", "verify", "-q", bundlePath); err != nil {
		return "", Rejectf("the bundle needs commits that are not in the history of %s, so it does not descend from it (%v)", ShortSHA(check.ancestor()), err)
	}
	if _, err := g.Run(ctx, nil, "--git-dir", gitDir,
		"-c", "fetch.fsckObjects=true", "-c", "transfer.fsckObjects=true",
		"fetch", "-q", "--no-tags", "--no-write-fetch-head", bundlePath,
		"+refs/heads/"+check.Branch+":refs/agentbot/incoming"); err != nil {
		return "", Rejectf("the bundle's objects failed verification: %v", err)
	}
	head, err := g.Run(ctx, nil, "--git-dir", gitDir, "rev-parse", "--verify", "refs/agentbot/incoming^{commit}")
	if err != nil {
		return "", Rejectf("the bundle's branch is not a commit")
	}
	head = strings.TrimSpace(head)
	if head != branchSHA {
		return "", Rejectf("the bundle's branch resolved to %s, not the %s it lists", ShortSHA(head), ShortSHA(branchSHA))
	}
	anc := check.ancestor()
	if _, err := g.Run(ctx, nil, "--git-dir", gitDir, "merge-base", "--is-ancestor", anc, head); err != nil {
		return "", Rejectf("the branch's history does not descend from %s", ShortSHA(anc))
	}
	if head == anc {
		return "", Rejectf("the bundle adds no commits to %s", ShortSHA(anc))
	}
	if len(check.ProtectedPaths) > 0 {
		// --raw gives each entry's modes: a symlink or submodule may not
		// stand where a protected directory would be, or a checkout would
		// put other content under the protected path without any commit
		// touching it.
		out, err := g.Run(ctx, nil, "--git-dir", gitDir, "log", "--no-renames", "--no-ext-diff", "--no-textconv",
			"-m", "--root", "--raw", "--no-abbrev", "--format=", "-z", anc+".."+head)
		if err != nil {
			return "", fmt.Errorf("bundle: verify: list changed paths: %w", err)
		}
		if err := checkProtected(out, check.ProtectedPaths); err != nil {
			return "", err
		}
	}
	return head, nil
}

// singleBranch parses `git bundle list-heads`: exactly one branch, named
// check.Branch (HEAD may point at it too), nothing else.
func singleBranch(listing string, check Check) (string, error) {
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
			return "", Rejectf("the bundle carries %s; only one branch is allowed", ref)
		}
	}
	switch {
	case len(refs) == 0:
		return "", Rejectf("the bundle carries no branch")
	case len(refs) > 1:
		return "", Rejectf("the bundle carries %d branches (%s); only one is allowed", len(refs), strings.Join(refs, ", "))
	}
	name := strings.TrimPrefix(refs[0], "refs/heads/")
	if name != check.Branch {
		return "", Rejectf("the bundle's branch is %q, not %q", name, check.Branch)
	}
	if check.BranchPrefix != "" && !strings.HasPrefix(name, check.BranchPrefix) {
		return "", Rejectf("the branch %q does not start with %q", name, check.BranchPrefix)
	}
	if headSHA != "" && headSHA != branchSHA {
		return "", Rejectf("the bundle's HEAD points elsewhere than its branch")
	}
	return branchSHA, nil
}

// ShortSHA is the first 12 characters of a commit id, for messages.
func ShortSHA(sha string) string {
	if len(sha) > 12 {
		return sha[:12]
	}
	return sha
}
