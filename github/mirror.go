package github

import (
	"context"
	"os"
	"path/filepath"
)

// fromMirror makes the push's scratch repository borrow the objects of
// check.ObjectsFrom (agentbot's own mirror of the repository, see package
// mirror) and reports whether it holds commit sha, whose fetch from GitHub
// is then skipped. The mirror only saves the fetch: where sha came from is
// still checked against GitHub (ls-remote, compare), and a commit the
// mirror lacks or cannot read is fetched as before.
func (p *pusher) fromMirror(ctx context.Context, sha string) bool {
	dir := p.check.ObjectsFrom
	if dir == "" || !filepath.IsAbs(dir) {
		return false
	}
	alt := filepath.Join(p.gitDir, "objects", "info", "alternates")
	if _, err := os.Stat(alt); err != nil {
		if err := os.WriteFile(alt, []byte(filepath.Join(dir, "objects")+"\n"), 0o600); err != nil {
			return false
		}
	}
	// The commit and its tree must be readable, not merely present:
	// the checks walk the base's tree.
	_, err := p.g.Run(ctx, nil, "--git-dir", p.gitDir, "rev-parse", "--verify", "--quiet", sha+"^{tree}")
	return err == nil
}
