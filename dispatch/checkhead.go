package dispatch

import (
	"context"

	"github.com/agentbot/agentbot"
)

// finalHead is the commit a terminal task's result check run goes on: the
// commit it pushed; for a new task that failed or was cancelled without
// one, the base it started from (the default branch's head), so the
// failure and its Retry button are still there to see. "" when the
// check run the task has stays where it is.
func (d *Dispatcher) finalHead(ctx context.Context, t *agentbot.Task) string {
	if t.Result.Commit != "" {
		return t.Result.Commit
	}
	if t.Trigger.Kind != agentbot.KindNew || !t.Acknowledged() ||
		(t.State != agentbot.StateFailed && t.State != agentbot.StateCancelled) {
		return ""
	}
	if t.Result.BaseSHA != "" {
		return t.Result.BaseSHA
	}
	inst, repo := t.Trigger.InstallationID, t.Ref().Repo
	branch := t.Result.BaseBranch
	if branch == "" {
		branch = t.Trigger.Repository.DefaultBranch
	}
	if branch == "" {
		info, err := d.gh.Repository(ctx, inst, repo)
		if err != nil {
			logFrom(ctx).Warn("cannot read the repository for the check run", "err", err)
			return ""
		}
		branch = info.DefaultBranch
	}
	head, err := d.gh.BranchHead(ctx, inst, repo, branch)
	if err != nil {
		logFrom(ctx).Warn("cannot read the base branch for the check run", "branch", branch, "err", err)
		return ""
	}
	return head
}
