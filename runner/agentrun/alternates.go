package agentrun

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/agentbot/agentbot/runner"
)

var commitPattern = regexp.MustCompile(`^[0-9a-f]{40}([0-9a-f]{24})?$`)

// cloneFromMirror makes the clone of branch from with agentbot's mirror as
// an alternate object store: a repository whose objects/info/alternates
// names the mirror's objects, a remote-tracking ref at the mirror's commit
// of the branch (so the fetch from the origin says it has that history and
// receives only what is newer), one fetch, and the checkout. The mirror is
// agentbot's, read-only here; a fetch into it while this clone uses it
// only adds objects, and agentbot never removes one while the task runs.
//
// The origin is the authority on what the branch is; the mirror only saves
// bytes. A mirror that is missing, corrupt or inconsistent must not make
// the task use wrong objects, so the cloned head must pass git fsck
// --connectivity-only (every object it reaches is present and parses) and
// the checkout must read every blob of its tree; any failure removes the
// repository and reports false, and clone makes a plain clone instead.
func (r *run) cloneFromMirror(ctx context.Context, from string) bool {
	m := r.job.Mirror
	if m == nil || from == "" || !filepath.IsAbs(m.Path) {
		return false
	}
	if !strings.HasPrefix(r.job.CloneURL, "https://") && !strings.HasPrefix(r.job.CloneURL, "http://") {
		return false
	}
	if err := r.mirrorClone(ctx, m, from); err != nil {
		if ctx.Err() != nil {
			return false
		}
		r.emit(runner.Event{Type: runner.EventLog, Message: "the repository mirror is not usable (" + err.Error() + "); cloning from the origin"})
		if rerr := os.RemoveAll(r.ws.RepoDir()); rerr != nil {
			r.emit(runner.Event{Type: runner.EventLog, Message: "cannot remove the half-made clone: " + rerr.Error()})
		}
		return false
	}
	return true
}

func (r *run) mirrorClone(ctx context.Context, m *runner.JobMirror, from string) error {
	objects := filepath.Join(m.Path, "objects")
	if fi, err := os.Stat(objects); err != nil || !fi.IsDir() {
		return fmt.Errorf("no objects at %s", objects)
	}
	repo := r.ws.RepoDir()
	if _, err := r.git.run(ctx, r.ws.Dir, false, "init", "-q", "--", repo); err != nil {
		return err
	}
	alt := filepath.Join(repo, ".git", "objects", "info", "alternates")
	if err := os.WriteFile(alt, []byte(objects+"\n"), 0o644); err != nil {
		return err
	}
	// Each git process costs tens of milliseconds on a busy machine, so
	// the remote and the seeded ref are written as files, as git would.
	tracking := "refs/remotes/origin/" + from
	remote := fmt.Sprintf("[remote \"origin\"]\n\turl = %s\n\tfetch = +refs/heads/%s:%s\n", quoteConfig(r.job.CloneURL), quoteConfig(from), quoteConfig(tracking))
	if err := appendFile(filepath.Join(repo, ".git", "config"), remote); err != nil {
		return err
	}
	if sha := m.Heads["refs/heads/"+from]; commitPattern.MatchString(sha) {
		// A commit the mirror does not hold fails the fetch (bad object)
		// or the fsck below, and so the mirror.
		ref := filepath.Join(repo, ".git", filepath.FromSlash(tracking))
		if err := os.MkdirAll(filepath.Dir(ref), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(ref, []byte(sha+"\n"), 0o644); err != nil {
			return err
		}
	}
	if _, err := r.git.run(ctx, repo, true, "fetch", "-q", "--no-tags", "--no-recurse-submodules", "origin"); err != nil {
		return err
	}
	if _, err := r.git.run(ctx, repo, false, "fsck", "--connectivity-only", "--no-dangling", "--no-progress", tracking); err != nil {
		return err
	}
	if _, err := r.git.run(ctx, repo, false, "checkout", "-q", "-b", from, "--track", "origin/"+from); err != nil {
		return err
	}
	return nil
}

// quoteConfig quotes a value for a git config file.
func quoteConfig(v string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`).Replace(v) + `"`
}

func appendFile(path, text string) error {
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	if _, err := f.WriteString(text); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
