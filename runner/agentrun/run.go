// Package agentrun is agent-runner, the program inside every sandbox: it reads
// one runner.Job, clones the repository with the job's read-only token,
// creates or continues the branch, runs the template's init script and the
// coding agent, commits what the agent changed and bundles the new commits —
// writing runner.Events as JSON lines on standard output and to
// DIR/.agentbot/events.jsonl as it goes. Attach replays and follows that file
// for a launcher that lost its connection; WriteBundle hands out the bundle.
// docs/protocol.md describes the protocol for people.
package agentrun

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/agentbot/agentbot/internal/gitenv"
	"github.com/agentbot/agentbot/runner"
	"github.com/agentbot/agentbot/runner/agent"
)

const (
	// maxJob bounds the job document read from standard input.
	maxJob = 16 << 20
	// afterAgentGrace is the time committing and bundling get on their own
	// once the agent has finished in time: a finished agent's work is not
	// lost because the time limit passes during `git commit`.
	afterAgentGrace = 2 * time.Minute
)

var (
	// ErrCancelled is the cause callers give when they cancel Run's context
	// because agent-runner was told to stop (SIGTERM).
	ErrCancelled = errors.New("agent-runner was cancelled")
	errTimeLimit = errors.New("time limit reached")
)

// Options configure one run of agent-runner.
type Options struct {
	Workspace Workspace
	Stdin     io.Reader
	Stdout    io.Writer
	// Logger receives agent-runner's own diagnostics (not events).
	Logger *slog.Logger
	// Agents names the agent programs.
	Agents agent.Binaries
	// Environ is the environment init and the agent start from, before the
	// job's Env is added; nil means os.Environ().
	Environ []string
}

// Run runs the job read from opts.Stdin and returns agent-runner's exit code
// (runner.Exit*). Cancelling ctx kills whatever runs and ends the run with
// runner.ExitCancelled.
func Run(ctx context.Context, opts Options) int {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ws := opts.Workspace
	lock, err := ws.lock()
	if err != nil {
		log.Error("agent-runner cannot take the workspace", "workspace", ws.Dir, "err", err)
		return runner.ExitInternal
	}
	defer lock.Close()
	if err := ws.reset(); err != nil {
		log.Error("agent-runner cannot reset the workspace", "workspace", ws.Dir, "err", err)
		return runner.ExitInternal
	}
	em, err := newEmitter(ws.EventsFile(), opts.Stdout)
	if err != nil {
		log.Error("agent-runner cannot open its events file", "workspace", ws.Dir, "err", err)
		return runner.ExitInternal
	}
	environ := opts.Environ
	if environ == nil {
		environ = os.Environ()
	}
	r := &run{ws: ws, em: em, log: log, bins: opts.Agents, environ: environ, phaseSeconds: map[string]float64{}}
	code := r.do(ctx, opts.Stdin)
	if err := em.close(); err != nil {
		log.Error("agent-runner cannot close its events file", "workspace", ws.Dir, "err", err)
		code = runner.ExitInternal
	}
	if err := ws.writeExitCode(code); err != nil {
		log.Error("agent-runner cannot record its exit code", "workspace", ws.Dir, "err", err)
		return runner.ExitInternal
	}
	return code
}

type run struct {
	ws      Workspace
	em      *emitter
	log     *slog.Logger
	bins    agent.Binaries
	environ []string
	job     runner.Job
	git     gitRunner

	phase        string
	phaseStart   time.Time
	phaseSeconds map[string]float64
}

// stepError is a failed step: the exit code agent-runner ends with and what
// the error event says.
type stepError struct {
	code       int
	msg        string
	exitStatus int
	tail       []string
}

func (e *stepError) Error() string { return e.msg }

func fail(code int, format string, a ...any) *stepError {
	return &stepError{code: code, msg: fmt.Sprintf(format, a...)}
}

func (r *run) do(ctx context.Context, stdin io.Reader) int {
	job, serr := readJob(stdin)
	if serr != nil {
		return r.failed(ctx, nil, serr)
	}
	r.job = job
	r.em.setRedactor(newRedactor(job))
	r.log = r.log.With("task_id", job.TaskID, "repo", job.Repo)

	jobCtx, cancel := context.WithTimeoutCause(ctx, time.Duration(job.TimeLimit), errTimeLimit)
	defer cancel()
	r.git = gitRunner{
		baseEnv: gitenv.Clean(r.environ),
		authEnv: gitenv.Auth(job.CloneURL, job.Token),
	}

	base, err := r.clone(jobCtx)
	if err != nil {
		return r.failed(jobCtx, ctx, err)
	}
	if err := r.init(jobCtx); err != nil {
		return r.failed(jobCtx, ctx, err)
	}
	rep, err := r.agent(jobCtx)
	if err != nil {
		return r.failed(jobCtx, ctx, err)
	}

	afterCtx, cancelAfter := context.WithTimeoutCause(ctx, afterAgentGrace, errTimeLimit)
	defer cancelAfter()
	head, files, err := r.commit(afterCtx, base)
	if err != nil {
		return r.failed(afterCtx, ctx, err)
	}
	res := &runner.RunResult{
		Branch:  job.Branch,
		BaseSHA: base,
		Summary: rep.Summary,
		CostUSD: rep.CostUSD,
		Usage:   rep.Usage,
	}
	if head == base {
		r.endPhase()
		res.Status = runner.StatusNoChanges
		res.PhaseSeconds = r.phaseSeconds
		r.emit(runner.Event{Type: runner.EventResult, Result: res})
		return runner.ExitOK
	}
	if err := r.bundle(afterCtx, base); err != nil {
		return r.failed(afterCtx, ctx, err)
	}
	r.endPhase()
	res.Status = runner.StatusSucceeded
	res.Commit = head
	res.Files = files
	res.BundlePath = r.ws.BundleFile()
	res.PhaseSeconds = r.phaseSeconds
	r.emit(runner.Event{Type: runner.EventResult, Result: res})
	return runner.ExitOK
}

// failed emits the error event for err and returns the exit code. A step
// cut short by the time limit or by cancellation reports that instead of
// its own failure.
func (r *run) failed(stepCtx, parent context.Context, err error) int {
	phase := r.phase
	r.endPhase()
	se := &stepError{code: runner.ExitInternal, msg: err.Error()}
	errors.As(err, &se)
	switch {
	case parent != nil && parent.Err() != nil:
		se = &stepError{code: runner.ExitCancelled, msg: "cancelled during " + orJob(phase), tail: se.tail}
	case stepCtx != nil && errors.Is(context.Cause(stepCtx), errTimeLimit):
		se = &stepError{code: runner.ExitTimeout, msg: fmt.Sprintf("time limit of %s reached during %s", time.Duration(r.job.TimeLimit), orJob(phase)), tail: se.tail}
	}
	r.log.Error("agent-runner failed", "phase", phase, "exit_code", se.code, "err", r.em.redact.String(se.msg))
	r.emit(runner.Event{Type: runner.EventError, Phase: phase, Message: se.msg, ExitCode: se.exitStatus, StderrTail: se.tail})
	return se.code
}

func orJob(phase string) string {
	if phase == "" {
		return "job"
	}
	return phase
}

func (r *run) emit(ev runner.Event) {
	if err := r.em.emit(ev); err != nil {
		r.log.Error("agent-runner cannot write an event", "err", err)
	}
}

// startPhase emits the phase event and closes the previous phase's clock.
func (r *run) startPhase(phase string) {
	r.endPhase()
	r.phase = phase
	r.phaseStart = time.Now()
	r.emit(runner.Event{Type: runner.EventPhase, Phase: phase})
}

func (r *run) endPhase() {
	if r.phase != "" && !r.phaseStart.IsZero() {
		secs := time.Since(r.phaseStart).Seconds()
		r.phaseSeconds[r.phase] = math.Round(secs*1000) / 1000
		r.phaseStart = time.Time{}
	}
}

var (
	templateName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)
	commitID     = regexp.MustCompile(`^[0-9a-f]{40}([0-9a-f]{24})?$`)
)

func readJob(stdin io.Reader) (runner.Job, error) {
	var job runner.Job
	if stdin == nil {
		return job, fail(runner.ExitBadJob, "bad job: no standard input")
	}
	// One JSON document, decoded as it arrives: a launcher need not close
	// standard input (an exec stream may not be able to) for the run to start.
	if err := json.NewDecoder(io.LimitReader(stdin, maxJob)).Decode(&job); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
			return job, fail(runner.ExitBadJob, "bad job: standard input ended before one whole JSON job (at most %d bytes)", maxJob)
		}
		return job, fail(runner.ExitBadJob, "bad job: %v", err)
	}
	var problems []string
	check := func(ok bool, problem string) {
		if !ok {
			problems = append(problems, problem)
		}
	}
	check(job.Version == runner.ProtocolVersion, fmt.Sprintf("version %d is not %d", job.Version, runner.ProtocolVersion))
	check(job.TaskID != "", "task_id is empty")
	check(job.CloneURL != "", "clone_url is empty")
	check(job.Branch != "" && validRef(job.Branch), fmt.Sprintf("branch %q is not a valid branch name", job.Branch))
	check(job.BaseBranch == "" || validRef(job.BaseBranch), fmt.Sprintf("base_branch %q is not a valid branch name", job.BaseBranch))
	if job.FollowUp {
		check(commitID.MatchString(job.ExpectedHeadSHA), "a follow-up needs expected_head_sha, a full commit id")
	}
	check(job.Template == "" || templateName.MatchString(job.Template), fmt.Sprintf("template %q is not a plain name", job.Template))
	check(job.TimeLimit > 0, "time_limit must be positive")
	check(job.AuthorName != "" && job.AuthorEmail != "", "author_name and author_email are needed")
	switch job.Agent.Name {
	case "claude", "codex":
	case "command":
		check(len(agent.SplitCommand(job.Agent.Command)) > 0, "agent.command is empty")
	default:
		problems = append(problems, fmt.Sprintf("agent.name %q is not claude, codex or command", job.Agent.Name))
	}
	if u := job.CloneURL; strings.Contains(u, "@") && (strings.HasPrefix(u, "http://") || strings.HasPrefix(u, "https://")) {
		problems = append(problems, "clone_url must not carry credentials (use token)")
	}
	if len(problems) > 0 {
		return job, fail(runner.ExitBadJob, "bad job: %s", strings.Join(problems, "; "))
	}
	return job, nil
}

// validRef accepts branch names git accepts and that cannot be read as
// options or ranges.
func validRef(name string) bool {
	if strings.HasPrefix(name, "-") || strings.HasPrefix(name, "/") || strings.HasSuffix(name, "/") ||
		strings.HasSuffix(name, ".lock") || strings.HasSuffix(name, ".") || strings.Contains(name, "..") ||
		strings.Contains(name, "@{") || strings.Contains(name, "//") {
		return false
	}
	for _, c := range name {
		if c < 0x20 || c == 0x7f || strings.ContainsRune(" ~^:?*[\\", c) {
			return false
		}
	}
	return true
}

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
	}
	from := job.BaseBranch
	if job.FollowUp {
		from = job.Branch
	}
	if from != "" {
		args = append(args, "--branch", from)
	}
	args = append(args, "--", job.CloneURL, r.ws.RepoDir())
	if _, err := r.git.run(ctx, r.ws.Dir, true, args...); err != nil {
		return "", r.gitFail(runner.ExitClone, "clone "+redactURL(job.CloneURL), err)
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

// initScript finds the template's init script: scripts/init.py (python3),
// scripts/init.sh (bash, else sh) or an executable scripts/init.
func (r *run) initScript() (path string, args []string, found bool) {
	dir := filepath.Join(r.ws.RepoDir(), ".task-templates", r.job.Template, "scripts")
	if fileExists(filepath.Join(dir, "init.py")) {
		return "python3", []string{filepath.Join(dir, "init.py")}, true
	}
	if fileExists(filepath.Join(dir, "init.sh")) {
		shell := "sh"
		if hasProgram("bash") {
			shell = "bash"
		}
		return shell, []string{filepath.Join(dir, "init.sh")}, true
	}
	if st, err := os.Stat(filepath.Join(dir, "init")); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
		return filepath.Join(dir, "init"), nil, true
	}
	return "", nil, false
}

func fileExists(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular()
}

func hasProgram(name string) bool {
	for _, dir := range filepath.SplitList(os.Getenv("PATH")) {
		if st, err := os.Stat(filepath.Join(dir, name)); err == nil && st.Mode()&0o111 != 0 {
			return true
		}
	}
	return false
}

// init runs the template's init script, if the job names a template and the
// repository has one.
func (r *run) init(ctx context.Context) error {
	if r.job.Template == "" {
		return nil
	}
	path, args, found := r.initScript()
	if !found {
		r.emit(runner.Event{Type: runner.EventLog, Message: fmt.Sprintf("template %s has no scripts/init.py, init.sh or init; nothing to initialise", r.job.Template)})
		return nil
	}
	r.startPhase(runner.PhaseInit)
	env := append(r.agentEnv(),
		"AGENTBOT_TEMPLATE="+r.job.Template,
		"AGENTBOT_TEMPLATE_DIR="+filepath.Join(r.ws.RepoDir(), ".task-templates", r.job.Template),
		"AGENTBOT_AGENT="+r.job.Agent.Name,
	)
	res, err := proc{
		Dir:    r.ws.RepoDir(),
		Path:   path,
		Args:   args,
		Env:    env,
		Stdout: r.logLine("stdout"),
		Stderr: r.logLine("stderr"),
	}.run(ctx)
	if err != nil {
		return &stepError{code: runner.ExitInit, msg: "template init: " + err.Error(), tail: res.StderrTail}
	}
	if res.ExitCode != 0 {
		return &stepError{code: runner.ExitInit, msg: fmt.Sprintf("template %s init exited with status %d", r.job.Template, res.ExitCode), exitStatus: res.ExitCode, tail: res.StderrTail}
	}
	return nil
}

func (r *run) logLine(stream string) func(string) {
	return func(line string) {
		r.emit(runner.Event{Type: runner.EventLog, Stream: stream, Message: line})
	}
}

// agentEnv is the environment of init and the agent: agent-runner's own,
// without git redirections and without anything holding the token, plus the
// job's Env and agentbot's variables.
func (r *run) agentEnv() []string {
	var env []string
	for _, kv := range gitenv.Clean(r.environ) {
		if r.job.Token != "" && strings.Contains(kv, r.job.Token) {
			continue
		}
		k, _, _ := strings.Cut(kv, "=")
		if _, overridden := r.job.Env[k]; overridden {
			continue
		}
		env = append(env, kv)
	}
	keys := make([]string, 0, len(r.job.Env))
	for k := range r.job.Env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		env = append(env, k+"="+r.job.Env[k])
	}
	return append(env,
		"AGENTBOT_TASK_ID="+r.job.TaskID,
		"AGENTBOT_REPO="+r.job.Repo,
		"AGENTBOT_BRANCH="+r.job.Branch,
		"AGENTBOT_ISSUE="+strconv.Itoa(r.job.IssueNumber),
		"AGENTBOT_PROMPT_FILE="+r.ws.PromptFile(),
		"AGENTBOT_SUMMARY_FILE="+r.ws.SummaryFile(),
	)
}

// agent runs the coding agent and returns what it reported.
func (r *run) agent(ctx context.Context) (agent.Report, error) {
	r.startPhase(runner.PhaseAgent)
	if err := os.WriteFile(r.ws.PromptFile(), []byte(composePrompt(r.job)), 0o644); err != nil {
		return agent.Report{}, fail(runner.ExitInternal, "write the prompt: %v", err)
	}
	ad, err := agent.Lookup(r.job.Agent.Name, r.bins)
	if err != nil {
		return agent.Report{}, fail(runner.ExitBadJob, "%v", err)
	}
	req := agent.Request{
		RepoDir:     r.ws.RepoDir(),
		PromptFile:  r.ws.PromptFile(),
		SummaryFile: r.ws.SummaryFile(),
		Spec:        r.job.Agent,
	}
	inv, err := ad.Invocation(req)
	if err != nil {
		return agent.Report{}, fail(runner.ExitBadJob, "%v", err)
	}
	parser := ad.NewParser(req)
	p := proc{
		Dir:  r.ws.RepoDir(),
		Path: inv.Path,
		Args: inv.Args,
		Env:  r.agentEnv(),
		Stdout: func(line string) {
			for _, o := range parser.Line(line) {
				ev := runner.Event{Type: o.Type, Message: o.Message, Tool: o.Tool, File: o.File}
				if o.Type == runner.EventLog {
					ev.Stream = "stdout"
				}
				r.emit(ev)
			}
		},
		Stderr: r.logLine("stderr"),
	}
	if inv.StdinPromptFile {
		p.Stdin = r.ws.PromptFile()
	}
	r.log.Info("agent-runner starts the agent", "phase", runner.PhaseAgent, "agent", ad.Name(), "path", inv.Path)
	res, err := p.run(ctx)
	rep := parser.Report()
	if err != nil {
		return rep, &stepError{code: runner.ExitAgent, msg: fmt.Sprintf("agent %s: %v", ad.Name(), err), tail: res.StderrTail}
	}
	if res.ExitCode != 0 {
		msg := fmt.Sprintf("agent %s exited with status %d", ad.Name(), res.ExitCode)
		if rep.Reason != "" {
			msg += " (" + rep.Reason + ")"
		}
		return rep, &stepError{code: runner.ExitAgent, msg: msg, exitStatus: res.ExitCode, tail: res.StderrTail}
	}
	if rep.Failed {
		return rep, &stepError{code: runner.ExitAgent, msg: fmt.Sprintf("agent %s failed: %s", ad.Name(), rep.Reason), tail: res.StderrTail}
	}
	return rep, nil
}

// commit commits what the agent left in the work tree (keeping any commits
// it made itself) and returns the new head and the diffstat against base.
// head == base means the agent changed nothing.
func (r *run) commit(ctx context.Context, base string) (string, []runner.FileChange, error) {
	r.startPhase(runner.PhaseCommitting)
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
	if _, err := r.git.run(ctx, repo, false, "bundle", "create", "--quiet", r.ws.BundleFile(), base+".."+ref); err != nil {
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
