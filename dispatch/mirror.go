package dispatch

import (
	"context"

	"github.com/agentbot/agentbot/runner"
)

// attachMirror brings the repository's mirror up to date and leases it for
// the run, so the sandbox clones from it and the push verifies against it;
// agentbot fetches it with token (the read token, which the sandbox never
// holds once the gateway is on).
// A mirror that cannot be had only costs speed: the job clones plainly.
func (a *attempt) attachMirror(ctx context.Context, p *plan, token string) {
	m := a.d.opts.Mirrors
	if m == nil {
		return
	}
	t := a.task
	lease, err := m.Acquire(ctx, t.Trigger.InstallationID, t.Ref().Repo, p.job.CloneURL, token)
	if err != nil {
		logFrom(ctx).Warn("no repository mirror for this run; it clones from the origin", "err", a.redactor().String(err.Error()))
		return
	}
	heads := map[string]string{}
	for _, b := range []string{p.job.BaseBranch, p.job.Branch} {
		if sha := lease.Head(b); sha != "" {
			heads["refs/heads/"+b] = sha
		}
	}
	p.mirror = lease
	if a.d.opts.MirrorPushOnly {
		return
	}
	p.job.Mirror = &runner.JobMirror{Path: lease.Path, Heads: heads}
}

// mirrorPath is the mirror the run holds, "" for none.
func (p *plan) mirrorPath() string {
	if p.mirror == nil {
		return ""
	}
	return p.mirror.Path
}
