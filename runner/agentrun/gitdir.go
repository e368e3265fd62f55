package agentrun

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"

	"github.com/agentbot/agentbot/runner"
)

// The agent owns the workspace, .git included. git reads the repository's
// own configuration on every command, and that configuration can name
// programs: a filter driver (activated by any .gitattributes line), a diff
// textconv, gpg.program, core.pager, an include.path, a commondir that
// moves the whole configuration elsewhere. agent-runner's git after the
// agent must not run anything the agent chose, so it keeps the
// configuration as the clone left it, and puts it back before its first
// command after the agent.

// gitControlFiles are the files under .git through which configuration or
// the repository's location could be redirected; a clone makes none of them.
var gitControlFiles = []string{"commondir", "config.worktree"}

// keepGitConfig remembers the repository's configuration as agent-runner
// left it before the agent runs. It stays in agent-runner's memory, which
// the agent cannot read (agent-runner is not dumpable and in another PID
// namespace).
func (r *run) keepGitConfig() error {
	b, err := os.ReadFile(filepath.Join(r.ws.RepoDir(), ".git", "config"))
	if err != nil {
		return fail(runner.ExitClone, "read the clone's git configuration: %v", err)
	}
	r.gitConfig = b
	return nil
}

// reclaimGitDir undoes what the agent may have done to the repository's
// control files: .git must still be a directory (not a symlink or a
// gitdir: file pointing elsewhere), its configuration is the one kept
// before the agent, and the files that could redirect it are removed.
func (r *run) reclaimGitDir() error {
	dir := filepath.Join(r.ws.RepoDir(), ".git")
	fi, err := os.Lstat(dir)
	if err != nil || !fi.IsDir() {
		return fail(runner.ExitCommit, "the agent replaced the repository's .git directory; refusing to commit from it")
	}
	for _, name := range gitControlFiles {
		if err := removeAny(filepath.Join(dir, name)); err != nil {
			return fail(runner.ExitCommit, "reset the repository's git files: %v", err)
		}
	}
	cfg := filepath.Join(dir, "config")
	if err := removeAny(cfg); err != nil {
		return fail(runner.ExitCommit, "reset the repository's git configuration: %v", err)
	}
	// O_EXCL: a name the agent recreated in between is not followed.
	f, err := os.OpenFile(cfg, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o644)
	if err != nil {
		return fail(runner.ExitCommit, "reset the repository's git configuration: %v", err)
	}
	if _, err := f.Write(r.gitConfig); err != nil {
		f.Close()
		return fail(runner.ExitCommit, "reset the repository's git configuration: %v", err)
	}
	if err := f.Close(); err != nil {
		return fail(runner.ExitCommit, "reset the repository's git configuration: %v", err)
	}
	if r.git.user != nil {
		// The git after the agent runs as the sandbox user; the file must
		// stay its, as the clone made it.
		if err := os.Chown(cfg, int(r.git.user.Uid), int(r.git.user.Gid)); err != nil {
			return fail(runner.ExitCommit, "reset the repository's git configuration: %v", err)
		}
	}
	return nil
}

// removeAny removes path whatever it is (a file, a symlink, a directory
// tree); a path that is not there is fine.
func removeAny(path string) error {
	err := os.RemoveAll(path)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove %s: %w", filepath.Base(path), err)
	}
	return nil
}
