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
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/agentbot/agentbot"
	"github.com/agentbot/agentbot/bundle"
	"github.com/agentbot/agentbot/github"
	"github.com/agentbot/agentbot/mirror"
	"github.com/agentbot/agentbot/runner"
	"github.com/agentbot/agentbot/tasklog"
)

// Store is what the dispatcher needs of state.Store.
type Store interface {
	Get(ctx context.Context, id string) (*agentbot.Task, error)
	List(ctx context.Context, limit int) ([]*agentbot.Task, error)
	ListByState(ctx context.Context, states ...agentbot.TaskState) ([]*agentbot.Task, error)
	ListByIssue(ctx context.Context, ref agentbot.IssueRef) ([]*agentbot.Task, error)
	// ListUnreported lists the ended tasks whose final report is not written.
	ListUnreported(ctx context.Context) ([]*agentbot.Task, error)
	CreateTask(ctx context.Context, deliveryID string, t *agentbot.Task) (bool, error)
	Transition(ctx context.Context, id string, from, to agentbot.TaskState, mutate func(*agentbot.Task) error) (*agentbot.Task, error)
	Update(ctx context.Context, id string, mutate func(*agentbot.Task) error) (*agentbot.Task, error)
}

// GitHub is what the dispatcher needs of github.Client.
type GitHub interface {
	TokenFor(ctx context.Context, installationID int64, repo agentbot.Repo, perms github.Permissions) (github.Token, error)
	Authorize(ctx context.Context, installationID int64, repo agentbot.Repo, login string, s github.Settings) (github.Access, error)
	Settings(ctx context.Context, installationID int64, repo agentbot.Repo) (github.Settings, error)
	InstallationOf(ctx context.Context, repo agentbot.Repo) (int64, error)
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
	PushBundle(ctx context.Context, installationID int64, repo agentbot.Repo, cloneURL, bundlePath string, check bundle.Check, readToken string) (string, error)
	RevokeToken(ctx context.Context, repo agentbot.Repo, token string)
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
	// Egress, when set, is the sandboxes' only way out (see Egress); nil
	// hands the sandbox a read token and AgentEnv's model key.
	Egress *Egress
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
	// ProtectedPaths are the operator's protected path patterns
	// (AGENTBOT_PROTECTED_PATHS; nil = github's defaults): a floor every
	// push keeps, whatever a repository's protected_paths say.
	ProtectedPaths []string
	// OnSettings, if set, is told each repository's settings as they are
	// read (intake learns the repositories' trigger labels from it).
	OnSettings func(agentbot.Repo, github.Settings)
	// MaxBundleBytes bounds a pushed bundle (0 = github's default).
	MaxBundleBytes int64
	// ShutdownGrace is how long a run already past its agent (fetching the
	// bundle, pushing, opening the pull request) may go on delivering after
	// a graceful stop began (default 20s); only runs still in the agent's
	// phases are stopped and re-queued at once.
	ShutdownGrace time.Duration
	// Mirrors keeps the repositories' mirrors the sandboxes clone from and
	// bundles are verified against (nil: plain clones, base fetched from
	// GitHub).
	Mirrors *mirror.Manager
	// MirrorPushOnly keeps the mirrors out of the jobs: the sandboxes
	// cannot see the bot's disk (Kubernetes pods) and clone plainly; the
	// mirror still spares the push its fetch of the base.
	MirrorPushOnly bool
	// RescanInterval is how often the store is scanned without a wake-up
	// (default 15s), to retry acknowledgements GitHub refused.
	RescanInterval time.Duration

	Registry *prometheus.Registry
	Logger   *slog.Logger
	Now      func() time.Time
}

// Dispatcher runs queued tasks. Create it with New, start it with Run and
// feed it wake-ups with Notify. It wires the parts: a scheduler (which task
// may start), an attempt per run (its phases), a conversation per task (what
// it says on GitHub).
type Dispatcher struct {
	opts    Options
	store   Store
	gh      GitHub
	launch  runner.Launcher
	logs    *tasklog.Store
	log     *slog.Logger
	now     func() time.Time
	metrics *metrics
	sched   *scheduler

	wake chan struct{}

	mu    sync.Mutex
	convs map[string]*conversation // live task id -> what it says on GitHub
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
		sched:   newScheduler(opts.MaxConcurrent, sideSlots),
		wake:    make(chan struct{}, 1),
		convs:   map[string]*conversation{},
	}, nil
}

// Run recovers the work a previous process left and then schedules queued
// tasks until ctx ends. It returns once every goroutine it started has
// returned. Ending ctx is a graceful stop: runs that cannot outlive this
// process (the local launcher's) are stopped and their tasks re-queued
// without counting as an interruption; runs a launcher keeps (Kubernetes)
// stay "running" in the store for the next start to re-attach.
func (d *Dispatcher) Run(ctx context.Context) error {
	defer d.sched.wait()
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
func (d *Dispatcher) Running() int { return d.sched.runningCount() }

// TaskURL is the task page's address, "" without a public URL.
func (d *Dispatcher) TaskURL(id string) string {
	if d.opts.PublicURL == "" {
		return ""
	}
	return strings.TrimRight(d.opts.PublicURL, "/") + "/tasks/" + id
}
