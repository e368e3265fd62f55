package dispatch

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/agentbot/agentbot"
	"github.com/agentbot/agentbot/bundle"
	"github.com/agentbot/agentbot/github"
	"github.com/agentbot/agentbot/runner"
)

// deliver fetches the bundle, has github/ verify and push it, and opens the
// draft PR (new task) or leaves the PR as it is (follow-up). What the
// sandbox reported is checked, never trusted: the branch is the one the
// dispatcher chose for the job, and the push's lease comes from the
// dispatcher's own record of the branch's old head.
func (a *attempt) deliver(ctx context.Context, p *plan, run runner.Run, rr *runner.RunResult) (agentbot.Result, *failure) {
	d, t := a.d, a.task
	res := agentbot.Result{
		Branch:       p.job.Branch,
		BaseBranch:   p.job.BaseBranch,
		BaseSHA:      rr.BaseSHA,
		Commit:       rr.Commit,
		Summary:      rr.Summary,
		CostUSD:      rr.CostUSD,
		FilesChanged: len(rr.Files),
	}
	if rr.Branch != "" && rr.Branch != p.job.Branch {
		return res, failf("pushing", "agentbot refused to push the agent's work: the sandbox reported branch %q, but this task's branch is %q", rr.Branch, p.job.Branch)
	}
	a.setPhase(ctx, "pushing")
	head, fail := a.push(ctx, p, run, rr)
	if fail != nil {
		return res, fail
	}
	res.Commit = head
	logFrom(ctx).Info("pushed", "branch", res.Branch, "commit", head)
	if t.Trigger.Kind == agentbot.KindFollowUp {
		if pr, err := d.gh.PullRequest(ctx, t.Trigger.InstallationID, t.Ref()); err == nil {
			res.PRNumber, res.PRURL = pr.Number, pr.HTMLURL
		}
		return res, nil
	}
	if r := t.Trigger.API; r != nil && r.NoPR {
		return res, nil // the request asked for a branch only
	}
	a.setPhase(ctx, "opening pull request")
	pr, created, err := d.gh.OpenPullRequest(ctx, t.Trigger.InstallationID, t.Ref().Repo, github.PROptions{
		Head:     res.Branch,
		Base:     p.job.BaseBranch,
		Title:    p.job.Prompt.Title,
		Body:     github.PullRequestBody(t.Ref().Number, rr.Summary, d.TaskURL(t.ID)),
		Draft:    p.settings.DraftPR,
		Reviewer: t.Trigger.Sender.Login,
	})
	if err != nil {
		return res, failf("opening pull request", "the branch %s was pushed, but the pull request could not be opened: %v", res.Branch, err)
	}
	res.PRNumber, res.PRURL = pr.Number, pr.HTMLURL
	if !created {
		a.addNote(continuingNote(pr.Number))
	}
	logFrom(ctx).Info("pull request ready", "pr", pr.Number, "created", created)
	return res, nil
}

// push fetches the run's bundle into a temporary file and has github/
// verify and push it.
func (a *attempt) push(ctx context.Context, p *plan, run runner.Run, rr *runner.RunResult) (string, *failure) {
	d, t := a.d, a.task
	f, err := os.CreateTemp(d.opts.TempDir, "agentbot-"+t.ID+"-*.bundle")
	if err != nil {
		return "", failf("pushing", "cannot store the bundle: %v", err)
	}
	defer os.Remove(f.Name())
	berr := run.Bundle(ctx, f)
	if cerr := f.Close(); berr == nil {
		berr = cerr
	}
	if berr != nil {
		d.metrics.launcherErrors.WithLabelValues("bundle").Inc()
		return "", failf("pushing", "cannot fetch the result bundle from the sandbox: %v", berr)
	}
	// A new branch's base must be on the base branch; a continued branch
	// is checked against its expected head instead.
	baseBranch := p.job.BaseBranch
	if p.job.FollowUp {
		baseBranch = ""
	}
	head, err := d.gh.PushBundle(ctx, t.Trigger.InstallationID, t.Ref().Repo, p.repo.CloneURL, f.Name(), bundle.Check{
		Branch:         p.job.Branch,
		BranchPrefix:   p.settings.BranchPrefix,
		BaseSHA:        rr.BaseSHA,
		BaseBranch:     baseBranch,
		ExpectedOldSHA: p.expectedOld,
		ProtectedPaths: a.d.protectedPaths(p.settings),
		MaxBytes:       d.opts.MaxBundleBytes,
		ObjectsFrom:    p.mirrorPath(),
	}, a.pushReadToken(ctx))
	var rej *bundle.Rejected
	switch {
	case errors.As(err, &rej):
		f := failf("pushing", "agentbot refused to push the agent's work: %s", rej.Reason)
		if rej.Protected {
			f = f.forGood()
		}
		return "", f
	case err != nil:
		return "", failf("pushing", "push failed: %v", err)
	}
	return head, nil
}

// continuingNote says that a new trigger on an issue whose branch and pull
// request exist adds to them rather than open another.
func continuingNote(pr int) string {
	return fmt.Sprintf("An earlier task on this issue opened a pull request, so this one is continuing on the existing pull request #%d.", pr)
}

// setPhase records and shows a phase of the dispatcher's own (pushing,
// opening the pull request).
func (a *attempt) setPhase(ctx context.Context, phase string) {
	d := a.d
	a.task = d.recordPhase(ctx, a.task, phase)
	if err := d.logs.Append(a.task.ID, runner.Event{Time: d.now(), Type: runner.EventPhase, Phase: phase}); err != nil {
		logFrom(ctx).Warn("cannot record event", "err", err)
	}
	a.conv.Update(ctx, d.view(a.task, nil, ""))
}

// protectedPaths are the patterns a push must not touch: the operator's
// floor and the repository's own, which can only add to it.
func (d *Dispatcher) protectedPaths(s github.Settings) []string {
	floor := d.opts.ProtectedPaths
	if floor == nil {
		floor = github.DefaultSettings().ProtectedPaths
	}
	return github.MergePaths(floor, s.ProtectedPaths)
}
