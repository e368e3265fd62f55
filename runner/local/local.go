// Package local is the embedded launcher: it runs agent-runner as a child
// process of agentbot, one workspace directory per task under the data
// directory, in its own session and process group so that cancel kills the
// agent with it. Unless isolation is none, the child runs in a sandbox
// built from runner/sandbox's mount plan, the agent as an unprivileged
// host uid, in its own cgroup with the task's limits: under gVisor's runsc
// (a kernel of its own between the agent and the host's; agent-runner is
// the guest's root there and starts the agent as the sandbox uid in PID
// and mount namespaces of its own) or under bubblewrap (new user, PID,
// IPC, UTS and cgroup namespaces; agent-runner then starts the agent in a
// nested sandbox of its own). The sandbox has a network namespace of its
// own with only a loopback: a job's gateway socket (runner.Job.Gateway) is
// bound in, and agent-runner forwards a loopback port to it.
// docs/security.md says what each protects against.
//
// The child dies with agentbot (PR_SET_PDEATHSIG, and bwrap's
// --die-with-parent), so after a restart Attach always reports
// runner.ErrGone and the dispatcher re-queues the task. For the same reason
// Close kills every child it started, while Detach only stops following one
// (it runs on, its output drained, until it exits or Close).
package local

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/agentbot/agentbot"
	"github.com/agentbot/agentbot/runner"
	"github.com/agentbot/agentbot/runner/sandbox"
)

// Isolation modes.
const (
	IsolationAuto   = "auto"
	IsolationGVisor = "gvisor"
	IsolationBwrap  = "bwrap"
	IsolationNone   = "none"
)

// Options configures a Launcher.
type Options struct {
	// DataDir is agentbot's data directory; workspaces live in
	// DataDir/workspaces/<task-id>.
	DataDir string
	// AgentRunner is the path of the agent-runner binary.
	AgentRunner string
	// Isolation is "auto" (gvisor when runsc works here, else bwrap when
	// bubblewrap does, else none), "gvisor", "bwrap" or "none". Empty
	// means auto.
	Isolation string
	// SandboxUID and SandboxGID are the host ids sandboxes run as; zero
	// means DefaultSandboxUID. Never 0: the kernel checks /proc/sys
	// writes by uid alone.
	SandboxUID, SandboxGID int
	// Limits bound each task (memory, processes, CPU, disk, tmpfs); the
	// zero value means sandbox.DefaultLimits().
	Limits sandbox.Limits
	// ShareNetwork keeps the host's network namespace in the sandbox
	// (every host service on 127.0.0.1 reachable); false, the default,
	// gives each sandbox only a loopback and the job's egress gateway.
	ShareNetwork bool
	// KeepFailed is how long a workspace kept for debugging survives before
	// a later Start or Cleanup sweeps it. Zero means 24 hours.
	KeepFailed time.Duration
	// StopGrace is how long Stop waits after SIGTERM before SIGKILL. Zero
	// means 10 seconds.
	StopGrace time.Duration
	// PassEnv names environment variables of agentbot passed to
	// agent-runner on top of a small default set (PATH, locale, proxies,
	// TLS roots). agentbot's own secrets are never passed wholesale.
	PassEnv []string
	// ReadOnlyPaths are shown read-only inside the sandbox at the same
	// path, beyond the mount plan's system directories: agent-runner, the
	// agents' install directories, an absolute agent command and a
	// file:// clone URL's path are added automatically. The sandbox's
	// host uid must be able to walk to each (bubblewrap opens them as it).
	ReadOnlyPaths []string
	Logger        *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Launcher runs agent-runner as a local child process. It implements
// runner.Launcher.
type Launcher struct {
	opts      Options
	root      string
	isolation string         // the mode in force: gvisor, bwrap or none
	bwrap     string         // path of bwrap under IsolationBwrap
	runsc     *sandbox.Runsc // under IsolationGVisor
	uid, gid  int            // the sandboxes' host ids
	// sandboxRunner is the copy of agent-runner the sandbox's uid can reach.
	sandboxRunner string
	// cgroupWhy says why tasks get no cgroup ("" when they do).
	cgroupWhy string
	log       *slog.Logger
	now       func() time.Time

	mu   sync.Mutex
	runs map[string]*Run // runs started by this process, by task
	// live holds every run whose follow goroutine runs (attaches too);
	// wg counts those goroutines for Close.
	live    map[*Run]struct{}
	closing bool
	closed  chan struct{} // closes when Close begins
	wg      sync.WaitGroup
}

var _ runner.Launcher = (*Launcher)(nil)

// defaultPassEnv is what a child gets from agentbot's environment.
var defaultPassEnv = []string{
	"PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "USER", "LOGNAME",
	"HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy",
	"SSL_CERT_FILE", "SSL_CERT_DIR", "GIT_SSL_CAINFO",
	// agent-runner's own settings: where the agents' CLIs are.
	"AGENTBOT_CLAUDE_BIN", "AGENTBOT_CODEX_BIN",
}

// New checks the options, picks the isolation mode and creates the
// workspace root.
func New(opts Options) (*Launcher, error) {
	if opts.DataDir == "" {
		return nil, errors.New("local launcher: data directory is not set")
	}
	if opts.AgentRunner == "" {
		return nil, errors.New("local launcher: agent-runner path is not set")
	}
	bin, err := exec.LookPath(opts.AgentRunner)
	if err != nil {
		return nil, fmt.Errorf("local launcher: agent-runner %q: %w", opts.AgentRunner, err)
	}
	if bin, err = filepath.Abs(bin); err != nil {
		return nil, fmt.Errorf("local launcher: agent-runner %q: %w", opts.AgentRunner, err)
	}
	opts.AgentRunner = bin
	if opts.KeepFailed == 0 {
		opts.KeepFailed = 24 * time.Hour
	}
	if opts.StopGrace == 0 {
		opts.StopGrace = 10 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Limits == (sandbox.Limits{}) {
		opts.Limits = sandbox.DefaultLimits()
	}
	dataDir, err := filepath.Abs(opts.DataDir)
	if err != nil {
		return nil, fmt.Errorf("local launcher: data directory %q: %w", opts.DataDir, err)
	}
	opts.DataDir = dataDir
	l := &Launcher{
		opts:   opts,
		root:   filepath.Join(dataDir, "workspaces"),
		log:    opts.Logger,
		now:    opts.Now,
		runs:   map[string]*Run{},
		live:   map[*Run]struct{}{},
		closed: make(chan struct{}),
	}
	if err := os.MkdirAll(l.root, 0o700); err != nil {
		return nil, fmt.Errorf("local launcher: create %s: %w", l.root, err)
	}
	mode := opts.Isolation
	if mode == "" {
		mode = IsolationAuto
	}
	l.uid, l.gid = opts.SandboxUID, opts.SandboxGID
	if l.uid == 0 {
		l.uid = DefaultSandboxUID
	}
	if l.gid == 0 {
		l.gid = l.uid
	}
	if err := l.chooseIsolation(mode); err != nil {
		return nil, err
	}
	if err := l.prepareSandboxes(); err != nil {
		return nil, err
	}
	l.log.Info("local launcher ready", "isolation", l.Isolation(), "workspaces", l.root, "agent_runner", bin,
		"sandbox_uid", l.uid, "limits", l.Readiness())
	return l, nil
}

// Name implements runner.Launcher.
func (l *Launcher) Name() string { return "local" }

// KeepsRuns implements runner.Launcher: a run never outlives the agentbot
// process that started it (PR_SET_PDEATHSIG), so a dispatcher that stops
// gracefully stops the runs itself and re-queues their tasks.
func (l *Launcher) KeepsRuns() bool { return false }

// Isolation is the mode in force: "gvisor", "bwrap" or "none".
func (l *Launcher) Isolation() string { return l.isolation }

// Workspace is the directory agent-runner works in for a task.
func (l *Launcher) Workspace(taskID string) string {
	return filepath.Join(l.root, taskID, "workspace")
}

func (l *Launcher) taskDir(taskID string) string { return filepath.Join(l.root, taskID) }

func checkTaskID(id string) error {
	if err := agentbot.CheckTaskID(id); err != nil {
		return fmt.Errorf("local launcher: %w", err)
	}
	return nil
}

// runMeta is written next to the workspace (outside the sandbox's reach) so
// that a restarted agentbot can find leftovers of a run.
type runMeta struct {
	PID       int       `json:"pid"`
	StartedAt time.Time `json:"started_at"`
	KeepUntil time.Time `json:"keep_until,omitempty"`
}

// Start implements runner.Launcher: it makes a fresh workspace for the task
// (a previous attempt's is replaced) and starts agent-runner with job on
// stdin. Starting a child takes no time worth bounding: ctx is only checked
// before.
func (l *Launcher) Start(ctx context.Context, job runner.Job) (runner.Run, error) {
	if err := checkTaskID(job.TaskID); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("local launcher: task %s: %w", job.TaskID, err)
	}
	l.sweep()
	l.mu.Lock()
	if r, ok := l.runs[job.TaskID]; ok && !r.exited() {
		l.mu.Unlock()
		return nil, fmt.Errorf("local launcher: task %s already runs (pid %d)", job.TaskID, r.pid)
	}
	l.mu.Unlock()

	dir := l.taskDir(job.TaskID)
	if err := os.RemoveAll(dir); err != nil {
		return nil, fmt.Errorf("local launcher: task %s: remove old workspace: %w", job.TaskID, err)
	}
	ws := l.Workspace(job.TaskID)
	// 0711: the sandbox's uid passes through to its workspace, and reads
	// nothing else here (agent-runner's stderr, the gVisor bundle).
	if err := os.MkdirAll(dir, 0o711); err != nil {
		return nil, fmt.Errorf("local launcher: task %s: create workspace: %w", job.TaskID, err)
	}
	if err := os.Chmod(dir, 0o711); err != nil {
		return nil, fmt.Errorf("local launcher: task %s: create workspace: %w", job.TaskID, err)
	}
	if l.isolation == IsolationNone {
		if err := os.MkdirAll(filepath.Join(ws, "home"), 0o700); err != nil {
			return nil, fmt.Errorf("local launcher: task %s: create workspace: %w", job.TaskID, err)
		}
	}
	job = l.showMirror(job)
	if err := l.gatewayFor(&job); err != nil {
		return nil, fmt.Errorf("local launcher: task %s: %w", job.TaskID, err)
	}
	input, err := json.Marshal(job)
	if err != nil {
		return nil, fmt.Errorf("local launcher: task %s: encode job: %w", job.TaskID, err)
	}
	stderr, err := os.OpenFile(filepath.Join(dir, "agent-runner.stderr"), os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("local launcher: task %s: %w", job.TaskID, err)
	}
	defer stderr.Close()

	cmd, box, err := l.command(job, ws, "run")
	if err != nil {
		return nil, fmt.Errorf("local launcher: task %s: %w", job.TaskID, err)
	}
	cmd.Stdin = strings.NewReader(string(input))
	cmd.Stderr = stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("local launcher: task %s: %w", job.TaskID, err)
	}
	r, err := l.startFollowing(job.TaskID, cmd, stdout, nil, box)
	if err != nil {
		return nil, err
	}
	meta := runMeta{PID: cmd.Process.Pid, StartedAt: l.now()}
	if err := writeMeta(dir, meta); err != nil {
		l.log.Warn("cannot record run", "task_id", job.TaskID, "err", err)
	}
	l.log.Debug("agent-runner started", "task_id", job.TaskID, "pid", r.pid, "isolation", l.Isolation())
	return r, nil
}

// gatewayFor makes the job's gateway socket reachable by the sandbox's
// host uid and names it as agent-runner will see it: bound in at
// sandbox.GatewaySocketTarget, or the host's path without a sandbox.
func (l *Launcher) gatewayFor(job *runner.Job) error {
	if job.Gateway == nil {
		return nil
	}
	gw := *job.Gateway
	job.Gateway = &gw
	if gw.HostSocket == "" || !filepath.IsAbs(gw.HostSocket) {
		return fmt.Errorf("the gateway socket %q is not an absolute path", gw.HostSocket)
	}
	if l.isolation == IsolationNone || l.opts.ShareNetwork {
		if err := ownLoopbackPort(job, &gw); err != nil {
			return err
		}
	}
	if l.isolation == IsolationNone {
		gw.Socket = gw.HostSocket
		return nil
	}
	gw.Socket = sandbox.GatewaySocketTarget
	// Only this task's sandbox sees this socket (its mounts show no other),
	// so giving it to the sandboxes' shared uid opens it to this task only.
	if os.Geteuid() == 0 {
		if err := os.Lchown(gw.HostSocket, l.uid, l.gid); err != nil {
			return fmt.Errorf("give the gateway socket to uid %d: %w", l.uid, err)
		}
	}
	if err := os.Chmod(gw.HostSocket, 0o600); err != nil {
		return fmt.Errorf("gateway socket: %w", err)
	}
	return nil
}

// ownLoopbackPort moves the forwarder of a run that shares the host's
// network off the job's fixed address (every such run would want the same
// port) to a free loopback port, and points the job's proxy variables at
// it. A sandbox with a network namespace of its own keeps the fixed one.
func ownLoopbackPort(job *runner.Job, gw *runner.JobGateway) error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("gateway: a loopback port for the forwarder: %w", err)
	}
	addr := ln.Addr().String()
	ln.Close()
	old := gw.Listen
	gw.Listen = addr
	env := make(map[string]string, len(job.Env))
	for k, v := range job.Env {
		env[k] = strings.ReplaceAll(v, old, addr)
	}
	job.Env = env
	return nil
}

// Attach implements runner.Launcher. A run started by this process is
// followed with `agent-runner attach`; anything older died with the process
// that started it, so Attach kills what may be left of it and reports
// runner.ErrGone.
func (l *Launcher) Attach(ctx context.Context, taskID string, fromSeq int) (runner.Run, error) {
	if err := checkTaskID(taskID); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("local launcher: task %s: %w", taskID, err)
	}
	l.mu.Lock()
	orig, ok := l.runs[taskID]
	l.mu.Unlock()
	if !ok || orig.exited() {
		l.killLeftovers(taskID)
		return nil, runner.ErrGone
	}
	cmd := l.hostCommand(taskID, "attach", "--from", strconv.Itoa(fromSeq))
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("local launcher: task %s: %w", taskID, err)
	}
	return l.startFollowing(taskID, cmd, stdout, orig, nil)
}

// hostCommand runs agent-runner outside the sandbox on a task's workspace
// (attach, bundle). With a sandbox it runs as the sandbox's host uid: the
// workspace is the agent's, and root following a link the agent left
// there would read what the agent may not.
func (l *Launcher) hostCommand(taskID string, args ...string) *exec.Cmd {
	ws := l.Workspace(taskID)
	bin := l.opts.AgentRunner
	attr := &syscall.SysProcAttr{Setsid: true, Pdeathsig: syscall.SIGKILL}
	if l.isolation != IsolationNone {
		bin = l.sandboxRunner
		attr.Credential = &syscall.Credential{Uid: uint32(l.uid), Gid: uint32(l.gid), Groups: []uint32{}}
	}
	cmd := exec.Command(bin, append(args, "--workspace", ws)...)
	cmd.Dir = ws
	cmd.Env = l.childEnv(ws)
	cmd.SysProcAttr = attr
	return cmd
}

// startFollowing starts cmd and the goroutine that follows it, which the
// launcher owns. A run started with orig nil is the task's run; an attach
// names the run it follows, which its Stop stops.
func (l *Launcher) startFollowing(taskID string, cmd *exec.Cmd, stdout io.ReadCloser, orig *Run, box *taskSandbox) (*Run, error) {
	what := "agent-runner run"
	if orig != nil {
		what = "agent-runner attach"
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	start := cmd.Start
	if box != nil {
		start = func() error { return box.start(cmd) }
	}
	if l.closing {
		stdout.Close()
		box.discard()
		return nil, fmt.Errorf("local launcher: task %s: start %s: %w", taskID, what, errClosed)
	}
	if err := start(); err != nil {
		box.discard()
		return nil, fmt.Errorf("local launcher: task %s: start %s: %w", taskID, what, err)
	}
	r := newRun(l, taskID, cmd)
	r.box = box
	r.stopTarget = orig
	if orig == nil {
		l.runs[taskID] = r
	}
	l.live[r] = struct{}{}
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		r.follow(stdout)
		l.mu.Lock()
		delete(l.live, r)
		l.mu.Unlock()
	}()
	return r, nil
}

// errClosed is returned by Start and Attach after Close.
var errClosed = errors.New("the launcher is closed")

// Close implements runner.Launcher: its runs cannot outlive it, so it
// kills every child it started (runs and attaches) at once and returns when
// each is reaped and its goroutine has returned. An in-process agentbot that
// stops (tests, `agentbot run` interrupted) leaves no agents behind; a
// killed process relies on PR_SET_PDEATHSIG instead.
func (l *Launcher) Close() error {
	l.mu.Lock()
	if !l.closing {
		l.closing = true
		close(l.closed)
	}
	live := make([]*Run, 0, len(l.live))
	for r := range l.live {
		live = append(live, r)
	}
	l.mu.Unlock()
	for _, r := range live {
		r.mu.Lock()
		r.stopped = true
		r.mu.Unlock()
		_ = syscall.Kill(-r.pid, syscall.SIGKILL)
	}
	l.wg.Wait()
	return nil
}
