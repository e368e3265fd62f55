// Package dispatch turns stored tasks into agent runs: a bounded pool of
// workers fed from the store, at most one run per issue or pull request at a
// time (later triggers wait behind it and say so), the permission and
// settings checks before anything runs, progress on the issue comment and
// check run at every phase, the bundle verified and pushed by the bot
// itself, the draft PR opened, and control commands (cancel, retry, status,
// help). At start it rebuilds its work from the store: runs that were in
// progress are re-attached through the launcher or re-queued once.
//
// Dependencies are small interfaces declared here (Store, GitHub) so the
// dispatcher is driven in tests by the real bbolt store and the fake GitHub.
package dispatch

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/agentbot/agentbot"
	"github.com/agentbot/agentbot/bundle"
	"github.com/agentbot/agentbot/github"
	"github.com/agentbot/agentbot/runner"
	"github.com/agentbot/agentbot/tasklog"
)

// Store is what the dispatcher needs of state.Store.
type Store interface {
	Get(ctx context.Context, id string) (*agentbot.Task, error)
	List(ctx context.Context, limit int) ([]*agentbot.Task, error)
	ListByState(ctx context.Context, states ...agentbot.TaskState) ([]*agentbot.Task, error)
	ListByIssue(ctx context.Context, ref agentbot.IssueRef) ([]*agentbot.Task, error)
	CreateTask(ctx context.Context, deliveryID string, t *agentbot.Task) (bool, error)
	Transition(ctx context.Context, id string, from, to agentbot.TaskState, mutate func(*agentbot.Task) error) (*agentbot.Task, error)
	Update(ctx context.Context, id string, mutate func(*agentbot.Task) error) (*agentbot.Task, error)
}

// GitHub is what the dispatcher needs of github.Client.
type GitHub interface {
	TokenFor(ctx context.Context, installationID int64, repo agentbot.Repo, perms github.Permissions) (github.Token, error)
	Authorize(ctx context.Context, installationID int64, repo agentbot.Repo, login string, s github.Settings) (github.Access, error)
	Settings(ctx context.Context, installationID int64, repo agentbot.Repo) (github.Settings, error)
	Repository(ctx context.Context, installationID int64, repo agentbot.Repo) (github.RepoInfo, error)
	BranchHead(ctx context.Context, installationID int64, repo agentbot.Repo, branch string) (string, error)
	Issue(ctx context.Context, installationID int64, ref agentbot.IssueRef) (github.IssueInfo, error)
	PullRequest(ctx context.Context, installationID int64, ref agentbot.IssueRef) (github.PRInfo, error)
	ReviewComments(ctx context.Context, installationID int64, ref agentbot.IssueRef) ([]string, error)
	React(ctx context.Context, installationID int64, ref agentbot.IssueRef, commentID int64, content string) error
	CreateComment(ctx context.Context, installationID int64, ref agentbot.IssueRef, body string) (int64, error)
	FindComment(ctx context.Context, installationID int64, ref agentbot.IssueRef, marker string, since time.Time) (int64, bool, error)
	EditComment(ctx context.Context, installationID int64, repo agentbot.Repo, commentID int64, body string) error
	CreateCheckRun(ctx context.Context, installationID int64, repo agentbot.Repo, run github.CheckRun) (int64, error)
	UpdateCheckRun(ctx context.Context, installationID int64, repo agentbot.Repo, id int64, run github.CheckRun) error
	PushBundle(ctx context.Context, installationID int64, repo agentbot.Repo, cloneURL, bundlePath string, check bundle.Check) (string, error)
	OpenPullRequest(ctx context.Context, installationID int64, repo agentbot.Repo, opts github.PROptions) (github.PRInfo, bool, error)
}

// logRetention is how long task logs (the task pages' timelines and logs)
// are kept after their last write; older ones are pruned at start.
const logRetention = 30 * 24 * time.Hour

// Options configures a Dispatcher.
type Options struct {
	Store    Store
	GitHub   GitHub
	Launcher runner.Launcher
	Logs     *tasklog.Store

	// MaxConcurrent bounds agent runs in progress (AGENTBOT_MAX_CONCURRENT,
	// default 10).
	MaxConcurrent int
	// PublicURL is where the task pages are reachable
	// (AGENTBOT_PUBLIC_URL); comments and check runs link to them when set.
	PublicURL string
	// Agent is the operator's agent: its Name is used when a repository's
	// settings name none, and Command is the only source of a "command"
	// agent's command line (a repository file never names a command).
	Agent runner.AgentSpec
	// AgentEnv goes into every job's environment (the model API key, for
	// instance); the values are secrets.
	AgentEnv map[string]string
	// AuthorName and AuthorEmail sign the agent's commits.
	AuthorName, AuthorEmail string
	// TimeLimit is used when a repository's settings give none
	// (AGENTBOT_TIME_LIMIT, default 30m).
	TimeLimit time.Duration
	// MaxTimeLimit is the ceiling of any task's time limit
	// (AGENTBOT_MAX_TIME_LIMIT, default 2h): a repository's time_limit
	// above it is cut down to it, and the task's comment says so.
	MaxTimeLimit time.Duration
	// TempDir holds bundles between fetch and push ("" = os.TempDir()).
	TempDir string
	// ProgressInterval throttles comment edits for progress events between
	// phases (default 15s). Phase changes are always reported.
	ProgressInterval time.Duration
	// KeepFailedWorkspaces asks the launcher to keep a failed task's
	// workspace for debugging.
	KeepFailedWorkspaces bool
	// MaxBundleBytes bounds a pushed bundle (0 = github's default).
	MaxBundleBytes int64
	// ShutdownGrace is how long a run already past its agent (fetching the
	// bundle, pushing, opening the pull request) may go on delivering after
	// a graceful stop began (default 20s); only runs still in the agent's
	// phases are stopped and re-queued at once.
	ShutdownGrace time.Duration
	// RescanInterval is how often the store is scanned without a wake-up
	// (default 15s), to retry acknowledgements GitHub refused.
	RescanInterval time.Duration

	Registry *prometheus.Registry
	Logger   *slog.Logger
	Now      func() time.Time
}

// Dispatcher runs queued tasks. Create it with New, start it with Run and
// feed it wake-ups with Notify.
type Dispatcher struct {
	opts    Options
	store   Store
	gh      GitHub
	launch  runner.Launcher
	logs    *tasklog.Store
	log     *slog.Logger
	now     func() time.Time
	metrics *metrics

	wake chan struct{}
	// side bounds the goroutines that acknowledge tasks and run control
	// commands, which must not wait behind agent runs.
	side chan struct{}
	wg   sync.WaitGroup

	mu      sync.Mutex
	running int
	busy    map[string]string     // issue key -> running task id
	pending map[string]bool       // task ids in acknowledgement or control
	active  map[string]*activeRun // running task id -> its worker
	tokens  map[string]string     // running task id -> its run's read token, for redaction
	notes   map[string]string     // running task id -> a sentence every report of its run adds
}

// activeRun is a worker's handle for cancel.
type activeRun struct {
	cancel chan string // who cancelled; buffered, sent to at most once

	mu          sync.Mutex
	requestedBy string
	// delivering is the branch the run's result is being delivered to,
	// once the run is past its agent; cancels are refused from then on.
	delivering string
}

// requestCancel asks the worker to stop its run. A run already delivering
// its result is not interrupted half-way (its branch may be pushed already):
// requestCancel then asks nothing and returns the branch and false.
func (a *activeRun) requestCancel(by string) (delivering string, accepted bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.delivering != "" {
		return a.delivering, false
	}
	if a.requestedBy == "" {
		a.requestedBy = by
		a.cancel <- by
	}
	return "", true
}

// startDelivery marks the run as delivering its result to branch. A run
// reaches delivery only if no cancel stopped it, so it returns who asked to
// cancel, if anyone did, as the agent finished: too late, but unanswered.
func (a *activeRun) startDelivery(branch string) (lateBy string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.delivering = branch
	return a.requestedBy
}

// New checks the options and registers the metrics.
func New(opts Options) (*Dispatcher, error) {
	var errs []error
	if opts.Store == nil {
		errs = append(errs, errors.New("dispatch: Store is not set"))
	}
	if opts.GitHub == nil {
		errs = append(errs, errors.New("dispatch: GitHub is not set"))
	}
	if opts.Launcher == nil {
		errs = append(errs, errors.New("dispatch: Launcher is not set"))
	}
	if opts.Logs == nil {
		errs = append(errs, errors.New("dispatch: Logs is not set"))
	}
	if opts.MaxConcurrent < 0 {
		errs = append(errs, errors.New("dispatch: MaxConcurrent must not be negative"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if opts.MaxConcurrent == 0 {
		opts.MaxConcurrent = 10
	}
	if opts.TimeLimit == 0 {
		opts.TimeLimit = 30 * time.Minute
	}
	if opts.MaxTimeLimit == 0 {
		opts.MaxTimeLimit = 2 * time.Hour
	}
	if opts.TimeLimit > opts.MaxTimeLimit {
		return nil, fmt.Errorf("dispatch: TimeLimit %s is above MaxTimeLimit %s", opts.TimeLimit, opts.MaxTimeLimit)
	}
	if opts.ProgressInterval == 0 {
		opts.ProgressInterval = 15 * time.Second
	}
	if opts.ShutdownGrace == 0 {
		opts.ShutdownGrace = 20 * time.Second
	}
	if opts.RescanInterval == 0 {
		opts.RescanInterval = 15 * time.Second
	}
	if opts.TempDir == "" {
		opts.TempDir = os.TempDir()
	}
	if opts.AuthorName == "" {
		opts.AuthorName = "agentbot"
	}
	if opts.AuthorEmail == "" {
		opts.AuthorEmail = "agentbot@users.noreply.github.com"
	}
	if opts.Agent.Name == "" {
		opts.Agent.Name = "claude"
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	m := newMetrics()
	if err := m.register(opts.Registry); err != nil {
		return nil, err
	}
	return &Dispatcher{
		opts:    opts,
		store:   opts.Store,
		gh:      opts.GitHub,
		launch:  opts.Launcher,
		logs:    opts.Logs,
		log:     opts.Logger,
		now:     opts.Now,
		metrics: m,
		wake:    make(chan struct{}, 1),
		side:    make(chan struct{}, 4),
		busy:    map[string]string{},
		pending: map[string]bool{},
		active:  map[string]*activeRun{},
		tokens:  map[string]string{},
		notes:   map[string]string{},
	}, nil
}

// Notify wakes the dispatcher to look at the store; webhook's Enqueued
// callback calls it. It never blocks.
func (d *Dispatcher) Notify(*agentbot.Task) { d.poke() }

func (d *Dispatcher) poke() {
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

// Run recovers the work a previous process left and then schedules queued
// tasks until ctx ends. It returns once every worker it started has
// returned. Ending ctx is a graceful stop: runs that cannot outlive this
// process (the local launcher's) are stopped and their tasks re-queued
// without counting as an interruption; runs a launcher keeps (Kubernetes)
// stay "running" in the store for the next start to re-attach.
func (d *Dispatcher) Run(ctx context.Context) error {
	defer d.wg.Wait()
	if n, err := d.logs.Prune(d.now(), logRetention); err != nil {
		d.log.Warn("dispatch: prune task logs", "err", err)
	} else if n > 0 {
		d.log.Info("pruned old task logs", "count", n)
	}
	if err := d.recover(ctx); err != nil {
		return err
	}
	tick := time.NewTicker(d.opts.RescanInterval)
	defer tick.Stop()
	for {
		if err := d.schedule(ctx); err != nil && ctx.Err() == nil {
			d.log.Error("dispatch: scan of queued tasks failed", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-d.wake:
		case <-tick.C:
		}
	}
}

// Running reports how many agent runs are in progress.
func (d *Dispatcher) Running() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.running
}

func issueKey(ref agentbot.IssueRef) string { return ref.String() }

// schedule starts what may start: control commands and acknowledgements on
// the side pool, agent runs on free workers, oldest first, at most one per
// issue, a task never overtaking an older one on the same issue.
func (d *Dispatcher) schedule(ctx context.Context) error {
	queued, err := d.store.ListByState(ctx, agentbot.StateQueued)
	if err != nil {
		return fmt.Errorf("dispatch: list queued tasks: %w", err)
	}
	d.metrics.queueDepth.Set(float64(len(queued)))
	blocked := map[string]bool{}
	for _, t := range queued {
		if t.Trigger.Kind == agentbot.KindControl {
			d.goSide(ctx, t, d.control)
			continue
		}
		key := issueKey(t.Ref())
		if t.CommentID == 0 {
			// Not yet acknowledged (checked, reacted to, commented on).
			blocked[key] = true
			d.goSide(ctx, t, d.acknowledge)
			continue
		}
		d.mu.Lock()
		if blocked[key] || d.busy[key] != "" || d.running >= d.opts.MaxConcurrent {
			blocked[key] = true
			d.mu.Unlock()
			continue
		}
		d.busy[key] = t.ID
		d.running++
		d.metrics.running.Set(float64(d.running))
		blocked[key] = true
		d.mu.Unlock()
		d.wg.Add(1)
		go func(t *agentbot.Task) {
			defer d.wg.Done()
			defer d.release(key, t.ID)
			d.work(ctx, t, nil)
		}(t)
	}
	return nil
}

func (d *Dispatcher) release(key, id string) {
	d.mu.Lock()
	if d.busy[key] == id {
		delete(d.busy, key)
	}
	delete(d.active, id)
	delete(d.tokens, id)
	delete(d.notes, id)
	d.running--
	d.metrics.running.Set(float64(d.running))
	d.mu.Unlock()
	d.poke()
}

// goSide runs fn for t on the side pool unless it is already in hand. It
// blocks while the side pool is full, which bounds it.
func (d *Dispatcher) goSide(ctx context.Context, t *agentbot.Task, fn func(context.Context, *agentbot.Task)) {
	d.mu.Lock()
	if d.pending[t.ID] {
		d.mu.Unlock()
		return
	}
	d.pending[t.ID] = true
	d.mu.Unlock()
	select {
	case d.side <- struct{}{}:
	case <-ctx.Done():
		d.mu.Lock()
		delete(d.pending, t.ID)
		d.mu.Unlock()
		return
	}
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		defer func() {
			<-d.side
			d.mu.Lock()
			delete(d.pending, t.ID)
			d.mu.Unlock()
			d.poke()
		}()
		defer d.recoverPanic(t)
		fn(ctx, t)
	}()
}

func (d *Dispatcher) recoverPanic(t *agentbot.Task) {
	if r := recover(); r != nil {
		d.log.Error("dispatch: panic handling task", "task_id", t.ID, "panic", fmt.Sprint(r))
	}
}

// taskLogger is the logger with the task's fixed keys.
func (d *Dispatcher) taskLogger(t *agentbot.Task) *slog.Logger {
	return d.log.With("task_id", t.ID, "repo", t.Ref().Repo.FullName(), "issue", t.Ref().Number)
}

// TaskURL is the task page's address, "" without a public URL.
func (d *Dispatcher) TaskURL(id string) string {
	if d.opts.PublicURL == "" {
		return ""
	}
	return trimSlash(d.opts.PublicURL) + "/tasks/" + id
}

func trimSlash(s string) string {
	for len(s) > 0 && s[len(s)-1] == '/' {
		s = s[:len(s)-1]
	}
	return s
}
