package agentrun

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/agentbot/agentbot/runner"
)

// clone clones the repository, checks the branch out and returns the base
// commit: the base branch's head for a new task, the branch's expected head
// for a follow-up.
func (r *run) clone(ctx context.Context) (string, error) {
	r.startPhase(runner.PhaseCloning)
	job := r.job
	args := []string{"clone", "--quiet", "--no-tags", "--single-branch"}
	if strings.HasPrefix(job.CloneURL, "https://") || strings.HasPrefix(job.CloneURL, "http://") {
		// Blobs arrive only for the checked-out tree; history stays light.
		args = append(args, "--filter=blob:none")
	} else if strings.HasPrefix(job.CloneURL, "file://") || strings.HasPrefix(job.CloneURL, "/") {
		// A local repository (agentbot run) belongs to the operator, not to
		// the sandbox's uid, and git serves only its user's repositories
		// unless told otherwise. This clone alone is told: the operator
		// chose the repository. A plain path is read by clone itself; a
		// file:// URL by an upload-pack, to which git passes no -c options,
		// so they go in its command.
		args = append([]string{"-c", "safe.directory=*"}, append(args, "--upload-pack", "git -c safe.directory=* upload-pack")...)
	}
	from := job.BaseBranch
	if job.FollowUp {
		from = job.Branch
	}
	if from != "" {
		args = append(args, "--branch", from)
	}
	args = append(args, "--", job.CloneURL, r.ws.RepoDir())
	if !r.cloneFromMirror(ctx, from) {
		if _, err := r.git.run(ctx, r.ws.Dir, true, args...); err != nil {
			return "", r.gitFail(runner.ExitClone, "clone "+redactURL(job.CloneURL), err)
		}
	}
	repo := r.ws.RepoDir()
	head, err := r.git.run(ctx, repo, false, "rev-parse", "--verify", "HEAD^{commit}")
	if err != nil {
		return "", r.gitFail(runner.ExitClone, "read the cloned head", err)
	}
	head = strings.TrimSpace(head)
	for _, kv := range [][2]string{{"user.name", job.AuthorName}, {"user.email", job.AuthorEmail}} {
		if _, err := r.git.run(ctx, repo, false, "config", kv[0], kv[1]); err != nil {
			return "", r.gitFail(runner.ExitClone, "configure the commit author", err)
		}
	}
	if job.FollowUp {
		if head != job.ExpectedHeadSHA {
			return "", fail(runner.ExitClone, "branch %s moved: its head is %s, not the expected %s; refusing to continue it", job.Branch, head, job.ExpectedHeadSHA)
		}
		r.emit(runner.Event{Type: runner.EventLog, Message: fmt.Sprintf("continuing branch %s at %s", job.Branch, head)})
		return head, nil
	}
	if _, err := r.git.run(ctx, repo, false, "checkout", "--quiet", "-b", job.Branch); err != nil {
		return "", r.gitFail(runner.ExitClone, "create branch "+job.Branch, err)
	}
	r.emit(runner.Event{Type: runner.EventLog, Message: fmt.Sprintf("created branch %s from %s at %s", job.Branch, orDefault(job.BaseBranch), head)})
	return head, nil
}

func orDefault(branch string) string {
	if branch == "" {
		return "the default branch"
	}
	return branch
}

// redactURL drops any user information from a URL for messages.
func redactURL(u string) string {
	if i := strings.Index(u, "://"); i >= 0 {
		rest := u[i+3:]
		if at := strings.Index(rest, "@"); at >= 0 && at < strings.IndexAny(rest+"/", "/") {
			return u[:i+3] + rest[at+1:]
		}
	}
	return u
}

func (r *run) gitFail(code int, what string, err error) error {
	se := &stepError{code: code, msg: what + ": " + err.Error()}
	var ge *gitError
	if errors.As(err, &ge) {
		se.exitStatus = ge.code
		se.tail = ge.tail
	}
	return se
}
