package dispatch

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/agentbot/agentbot"
	"github.com/agentbot/agentbot/github"
	"github.com/agentbot/agentbot/mirror"
	"github.com/agentbot/agentbot/runner"
)

// plan is what a run needs beyond the task: the repository's settings and
// coordinates, resolved when the run starts.
type plan struct {
	settings github.Settings
	repo     github.RepoInfo
	job      runner.Job
	// expectedOld is the branch head the push must replace ("" for a new
	// branch).
	expectedOld string
	// mirror is the run's lease on the repository's mirror (nil: none).
	mirror *mirror.Lease
}

// lookups are what an attempt reads from GitHub before it plans, each once:
// the settings first (the rest depends on them), then the repository and
// the branch (or pull request) side by side.
type lookups struct {
	settings github.Settings
	repo     github.RepoInfo
	pr       github.PRInfo // follow-ups
	title    string
	body     string
	branch   string
	head     string // the branch's head, "" when it does not exist yet
	// review is a review follow-up's thread (or review) material;
	// reviewed says it replaces the pull request's review feedback.
	review   []string
	reviewed bool
	err      *failure
}

// fetch is the lookups to run beside admit's permission check.
func (l *lookups) fetch(d *Dispatcher, t *agentbot.Task) func(context.Context, github.Settings) {
	return func(ctx context.Context, s github.Settings) {
		l.settings = withRequest(s, t.Trigger.API)
		l.err = l.resolve(ctx, d, t)
	}
}

// fetchAll reads the settings, then the rest.
func (l *lookups) fetchAll(ctx context.Context, d *Dispatcher, t *agentbot.Task) *failure {
	s, err := d.readSettings(ctx, t.Trigger.InstallationID, t.Ref().Repo)
	s = withRequest(s, t.Trigger.API)
	var se *github.SettingsError
	if errors.As(err, &se) {
		return failf("preparing", "the repository's settings file has problems: %v", err).forGood()
	}
	if err != nil {
		return failf("preparing", "cannot read the repository's settings: %v", err)
	}
	l.settings = s
	return l.resolve(ctx, d, t)
}

// resolve reads the repository (unless the delivery said what is needed of
// it) beside the pull request (follow-up) or the issue's branch (new task).
func (l *lookups) resolve(ctx context.Context, d *Dispatcher, t *agentbot.Task) *failure {
	inst, ref := t.Trigger.InstallationID, t.Ref()
	var wg sync.WaitGroup
	var repoErr error
	if facts := t.Trigger.Repository; facts.DefaultBranch != "" && facts.CloneURL != "" {
		l.repo = github.RepoInfo{DefaultBranch: facts.DefaultBranch, CloneURL: facts.CloneURL}
	} else {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l.repo, repoErr = d.gh.Repository(ctx, inst, ref.Repo)
		}()
	}
	var fail *failure
	if t.Trigger.Kind == agentbot.KindFollowUp {
		fail = l.pullRequest(ctx, d, t)
	} else {
		fail = l.issueBranch(ctx, d, t)
	}
	wg.Wait()
	if repoErr != nil {
		return failf("preparing", "cannot read the repository: %v", repoErr)
	}
	return fail
}

func (l *lookups) pullRequest(ctx context.Context, d *Dispatcher, t *agentbot.Task) *failure {
	ref := t.Ref()
	pr, err := d.gh.PullRequest(ctx, t.Trigger.InstallationID, ref)
	if err != nil {
		return failf("preparing", "cannot read pull request %s: %v", ref, err)
	}
	if fail := notAgentbots(pr, l.settings, ref); fail != nil {
		return fail
	}
	l.pr, l.branch, l.head = pr, pr.HeadBranch, pr.HeadSHA
	var fail *failure
	if l.review, l.reviewed, fail = d.reviewPrompt(ctx, t); fail != nil {
		return fail
	}
	l.title, l.body = t.Trigger.Prompt.Title, t.Trigger.Prompt.Body
	if l.title == "" {
		l.title, l.body = pr.Title, pr.Body
	}
	return nil
}

func (l *lookups) issueBranch(ctx context.Context, d *Dispatcher, t *agentbot.Task) *failure {
	inst, ref := t.Trigger.InstallationID, t.Ref()
	l.title, l.body = t.Trigger.Prompt.Title, t.Trigger.Prompt.Body
	if l.title == "" && ref.Number != 0 {
		is, err := d.gh.Issue(ctx, inst, ref)
		if err != nil {
			return failf("preparing", "cannot read issue %s: %v", ref, err)
		}
		l.title, l.body = is.Title, is.Body
	}
	l.branch = github.BranchName(l.settings.BranchPrefix, ref.Number, l.title)
	if ref.Number == 0 {
		l.branch = github.TaskBranchName(l.settings.BranchPrefix, t.ID, l.title)
	}
	head, err := d.gh.BranchHead(ctx, inst, ref.Repo, l.branch)
	switch {
	case err == nil:
		// An earlier task (or an attempt cut short after its push) left
		// this branch: continue it rather than fork a second history, so
		// the push is a fast-forward guarded by its head.
		l.head = head
		l.pr.Number = d.earlierPR(ctx, t, l.branch)
	case github.IsNotFound(err):
	default:
		return failf("preparing", "cannot read branch %s: %v", l.branch, err)
	}
	return nil
}

// withRequest is s with what a task API request chose instead (checked at
// intake with the settings file's own rules).
func withRequest(s github.Settings, r *agentbot.APIRequest) github.Settings {
	if r == nil {
		return s
	}
	if r.Template != "" {
		s.Template = r.Template
	}
	if r.Agent != "" {
		s.Agent = r.Agent
	}
	if r.Model != "" {
		s.Model = r.Model
	}
	return s
}

// notAgentbots refuses a follow-up on a pull request whose branch is not
// one of agentbot's (a person's, or a fork's): agentbot never pushes there,
// and says so in a reply rather than a failed check run on their PR.
func notAgentbots(pr github.PRInfo, s github.Settings, ref agentbot.IssueRef) *failure {
	prefix := s.BranchPrefix
	if strings.HasPrefix(pr.HeadBranch, prefix) && (pr.HeadRepo == "" || strings.EqualFold(pr.HeadRepo, ref.Repo.FullName())) {
		return nil
	}
	f := failf("preparing", "pull request #%d's branch `%s` is not one of agentbot's (`%s…`); agentbot follows up only on its own pull requests. Comment `/agent <instructions>` on an issue to start a new task.", pr.Number, pr.HeadBranch, prefix).forGood()
	f.refusal = true
	return f
}

// earlierPR is the pull request an earlier task on t's issue opened for
// branch, from the store (0 if none is known).
func (d *Dispatcher) earlierPR(ctx context.Context, t *agentbot.Task, branch string) int {
	tasks, err := d.store.ListByIssue(ctx, t.Ref())
	if err != nil {
		logFrom(ctx).Warn("cannot list the issue's earlier tasks", "err", err)
		return 0
	}
	n := 0
	for _, o := range tasks {
		if o.ID != t.ID && o.Result.Branch == branch && o.Result.PRNumber != 0 {
			n = o.Result.PRNumber
		}
	}
	return n
}

// prHead is the pull request head a follow-up's check run goes on.
func (l *lookups) prHead(t *agentbot.Task) string {
	if t.Trigger.Kind != agentbot.KindFollowUp {
		return ""
	}
	if t.Trigger.HeadSHA != "" {
		return t.Trigger.HeadSHA
	}
	return l.pr.HeadSHA
}

// plan builds the job from the lookups and mints its read-only token.
func (a *attempt) plan(ctx context.Context, l *lookups) (*plan, *failure) {
	d, t := a.d, a.task
	inst, ref := t.Trigger.InstallationID, t.Ref()
	limit, note := d.timeLimit(l.settings)
	if note != "" {
		a.addNote(note)
		d.note(ctx, t.ID, "agentbot: "+note)
	}
	agent, notes, fail := d.agentSpec(l.settings)
	if fail != nil {
		return nil, fail
	}
	for _, n := range notes {
		a.addNote(n)
		d.note(ctx, t.ID, "agentbot: "+n)
	}
	if t.Trigger.Kind == agentbot.KindNew && l.pr.Number != 0 {
		a.addNote(continuingNote(l.pr.Number))
	}
	p := &plan{settings: l.settings, repo: l.repo, expectedOld: l.head}
	p.job = runner.Job{
		Version:         runner.ProtocolVersion,
		TaskID:          t.ID,
		Repo:            ref.Repo.FullName(),
		CloneURL:        l.repo.CloneURL,
		Template:        l.settings.Template,
		Agent:           agent,
		TimeLimit:       runner.Duration(limit),
		AuthorName:      d.opts.AuthorName,
		AuthorEmail:     d.opts.AuthorEmail,
		IssueNumber:     ref.Number,
		Env:             d.opts.AgentEnv,
		Branch:          l.branch,
		BaseBranch:      l.repo.DefaultBranch,
		FollowUp:        l.head != "",
		ExpectedHeadSHA: l.head,
		Prompt: runner.JobPrompt{
			Title:        l.title,
			Body:         l.body,
			Instructions: t.Trigger.Prompt.Instructions,
		},
	}
	if r := t.Trigger.API; r != nil && r.BaseBranch != "" {
		p.job.BaseBranch = r.BaseBranch
	}
	if t.Trigger.Kind == agentbot.KindFollowUp {
		p.job.BaseBranch = l.pr.BaseBranch
		if l.reviewed {
			p.job.Prompt.ReviewComments = l.review
		} else if rc, err := d.gh.ReviewComments(ctx, inst, ref); err == nil {
			p.job.Prompt.ReviewComments = rc
		} else {
			logFrom(ctx).Warn("cannot read review comments", "err", err)
		}
	}
	if ctx.Err() != nil {
		return nil, failf("preparing", "agentbot is stopping")
	}
	tok, err := d.gh.TokenFor(ctx, inst, ref.Repo, github.Permissions{"contents": "read"})
	if err != nil {
		return nil, failf("preparing", "cannot mint a read-only token for %s: %v", ref.Repo, err)
	}
	a.setToken(tok)
	a.attachMirror(ctx, p, tok.Value)
	if fail := a.openGateway(ctx, p, tok.Value); fail != nil {
		return nil, fail
	}
	return p, nil
}

// replan is the plan of a run re-attached after a restart: the same
// lookups, no new token (the sandbox has its own).
func (a *attempt) replan(ctx context.Context) (*plan, *failure) {
	var l lookups
	if fail := l.fetchAll(ctx, a.d, a.task); fail != nil {
		return nil, fail
	}
	limit, _ := a.d.timeLimit(l.settings)
	p := &plan{settings: l.settings, repo: l.repo, expectedOld: l.head}
	p.job = runner.Job{
		TaskID: a.task.ID, Repo: a.task.Ref().Repo.FullName(), CloneURL: l.repo.CloneURL,
		TimeLimit: runner.Duration(limit), Branch: l.branch, BaseBranch: l.repo.DefaultBranch,
		FollowUp: l.head != "", ExpectedHeadSHA: l.head,
		Prompt: runner.JobPrompt{Title: l.title, Body: l.body},
	}
	if r := a.task.Trigger.API; r != nil && r.BaseBranch != "" {
		p.job.BaseBranch = r.BaseBranch
	}
	if a.task.Trigger.Kind == agentbot.KindFollowUp {
		p.job.BaseBranch = l.pr.BaseBranch
	}
	return p, nil
}

// timeLimit is a run's time limit: the repository's, at most the
// operator's ceiling, else the operator's default. note says so when the
// repository's limit was cut down.
func (d *Dispatcher) timeLimit(s github.Settings) (limit time.Duration, note string) {
	limit = s.TimeLimit
	if limit <= 0 {
		limit = d.opts.TimeLimit
	}
	if limit > d.opts.MaxTimeLimit {
		note = fmt.Sprintf("The repository's time_limit of %s is above this agentbot's maximum, so the task may run for at most %s.", limit, d.opts.MaxTimeLimit)
		limit = d.opts.MaxTimeLimit
	}
	return limit, note
}

// agentSpec picks the agent. An operator who configured the command agent
// runs it for every repository (it is the operator's own wrapper, and a
// repository file never names a command); otherwise the repository's choice
// of claude or codex applies. The repository's permission_mode and
// allowed_tools narrow the operator's, never widen them; notes say what
// was refused.
func (d *Dispatcher) agentSpec(s github.Settings) (runner.AgentSpec, []string, *failure) {
	spec := d.opts.Agent
	if spec.Name != "command" && s.Agent != "" && s.Agent != spec.Name {
		// The operator's narrowing holds whichever agent the repository picks.
		spec = runner.AgentSpec{Name: s.Agent, PermissionMode: spec.PermissionMode, AllowedTools: spec.AllowedTools}
		if s.Agent == "command" {
			spec.Command = d.opts.Agent.Command
		}
	}
	var notes []string
	var modeNote, toolsNote string
	spec.PermissionMode, modeNote = narrowMode(spec.PermissionMode, s.PermissionMode)
	spec.AllowedTools, toolsNote = narrowTools(spec.AllowedTools, s.AllowedTools)
	for _, n := range []string{modeNote, toolsNote} {
		if n != "" {
			notes = append(notes, n)
		}
	}
	if s.Model != "" {
		spec.Model = s.Model
	}
	if s.MaxTurns > 0 {
		spec.MaxTurns = s.MaxTurns
	}
	if spec.Name == "command" && spec.Command == "" {
		return spec, nil, failf("preparing", "the repository asks for the command agent, but this agentbot has no AGENTBOT_AGENT_COMMAND").forGood()
	}
	return spec, notes, nil
}
