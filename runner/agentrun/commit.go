package agentrun

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/agentbot/agentbot/runner"
)

// commit commits what the agent left in the work tree (keeping any commits
// it made itself) and returns the new head and the diffstat against base.
// head == base means the agent changed nothing.
func (r *run) commit(ctx context.Context, base string) (string, []runner.FileChange, error) {
	r.startPhase(runner.PhaseCommitting)
	if err := r.reclaimGitDir(); err != nil {
		return "", nil, err
	}
	repo := r.ws.RepoDir()
	g := r.git
	g.baseEnv = append(append([]string(nil), g.baseEnv...),
		"GIT_AUTHOR_NAME="+r.job.AuthorName, "GIT_AUTHOR_EMAIL="+r.job.AuthorEmail,
		"GIT_COMMITTER_NAME="+r.job.AuthorName, "GIT_COMMITTER_EMAIL="+r.job.AuthorEmail)
	gitc := func(args ...string) (string, error) {
		return g.run(ctx, repo, false, append(append([]string(nil), afterAgentOpts...), args...)...)
	}
	branch, err := gitc("symbolic-ref", "--quiet", "--short", "HEAD")
	if err != nil || strings.TrimSpace(branch) != r.job.Branch {
		return "", nil, fail(runner.ExitCommit, "the agent left the repository on %q, not on branch %s", strings.TrimSpace(branch), r.job.Branch)
	}
	if _, err := gitc("add", "--all"); err != nil {
		return "", nil, r.gitFail(runner.ExitCommit, "stage the changes", err)
	}
	staged, err := gitc("diff", "--cached", "--name-only")
	if err != nil {
		return "", nil, r.gitFail(runner.ExitCommit, "list the staged changes", err)
	}
	if strings.TrimSpace(staged) != "" {
		if _, err := gitc("commit", "--quiet", "--no-verify", "-m", commitMessage(r.job)); err != nil {
			return "", nil, r.gitFail(runner.ExitCommit, "commit", err)
		}
	}
	head, err := gitc("rev-parse", "--verify", "HEAD^{commit}")
	if err != nil {
		return "", nil, r.gitFail(runner.ExitCommit, "read the new head", err)
	}
	head = strings.TrimSpace(head)
	if head == base {
		r.emit(runner.Event{Type: runner.EventLog, Message: "the agent changed nothing"})
		return head, nil, nil
	}
	if _, err := gitc("merge-base", "--is-ancestor", base, head); err != nil {
		return "", nil, fail(runner.ExitCommit, "the agent rewrote history: %s is no longer an ancestor of %s", base, head)
	}
	numstat, err := gitc("diff", "--numstat", "--no-renames", "-z", base, head)
	if err != nil {
		return "", nil, r.gitFail(runner.ExitCommit, "diffstat", err)
	}
	files := parseNumstat(numstat)
	r.emit(runner.Event{Type: runner.EventLog, Message: fmt.Sprintf("committed %s: %d files changed", head, len(files))})
	return head, files, nil
}

// parseNumstat reads `git diff --numstat -z`: "added\tdeleted\tpath\0" per
// file, "-\t-" for binary files.
func parseNumstat(out string) []runner.FileChange {
	var files []runner.FileChange
	for _, rec := range strings.Split(out, "\x00") {
		rec = strings.TrimPrefix(rec, "\n")
		parts := strings.SplitN(rec, "\t", 3)
		if len(parts) != 3 || parts[2] == "" {
			continue
		}
		added, _ := strconv.Atoi(parts[0])
		deleted, _ := strconv.Atoi(parts[1])
		files = append(files, runner.FileChange{Path: parts[2], Added: added, Deleted: deleted})
	}
	return files
}

// bundle writes the new commits (base..branch) to the result bundle and
// verifies it.
func (r *run) bundle(ctx context.Context, base string) error {
	r.startPhase(runner.PhaseBundling)
	repo := r.ws.RepoDir()
	ref := "refs/heads/" + r.job.Branch
	// agent-runner writes the file, git only the stream: under gVisor git
	// runs as the sandbox user, who may not write agent-runner's state.
	f, err := os.OpenFile(r.ws.BundleFile(), os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return fail(runner.ExitBundle, "create the bundle: %v", err)
	}
	_, err = r.git.runTo(ctx, repo, false, f, "bundle", "create", "--quiet", "-", base+".."+ref)
	if cerr := f.Close(); err == nil && cerr != nil {
		return fail(runner.ExitBundle, "write the bundle: %v", cerr)
	}
	if err != nil {
		return r.gitFail(runner.ExitBundle, "bundle", err)
	}
	if _, err := r.git.run(ctx, repo, false, "bundle", "verify", "--quiet", r.ws.BundleFile()); err != nil {
		return r.gitFail(runner.ExitBundle, "verify the bundle", err)
	}
	if st, err := os.Stat(r.ws.BundleFile()); err == nil {
		r.emit(runner.Event{Type: runner.EventLog, Message: fmt.Sprintf("bundle of %s..%s: %d bytes", base[:12], r.job.Branch, st.Size())})
	}
	return nil
}
