// Package local is the embedded launcher: it runs agent-runner as a child
// process of agentbot, one workspace directory per task under the data
// directory, in its own session and process group so that cancel kills the
// agent with it. Where bubblewrap (bwrap) is present it runs the child inside
// it: a read-only root, a private /tmp, an empty /run (the host's sockets
// live there), only the task's workspace writable, new PID/IPC/UTS
// namespaces, no capabilities even when agentbot runs as root, and the
// network kept because the agent needs its model API
// and the git host (which also leaves the host's loopback services and
// abstract Unix sockets reachable).
//
// The child dies with agentbot (PR_SET_PDEATHSIG, and bwrap's
// --die-with-parent), so after a restart Attach always reports
// runner.ErrGone and the dispatcher re-queues the task.
package local

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
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
)

// Isolation modes.
const (
	IsolationAuto  = "auto"
	IsolationBwrap = "bwrap"
	IsolationNone  = "none"
)

// Options configures a Launcher.
type Options struct {
	// DataDir is agentbot's data directory; workspaces live in
	// DataDir/workspaces/<task-id>.
	DataDir string
	// AgentRunner is the path of the agent-runner binary.
	AgentRunner string
	// Isolation is "auto" (bwrap when it works here, else none), "bwrap" or
	// "none". Empty means auto.
	Isolation string
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
	// HidePaths are hidden from the sandbox under bwrap (a directory gets an
	// empty tmpfs, a file /dev/null): the App's private key file, for
	// instance. The data directory is always hidden except the task's own
	// workspace.
	HidePaths []string
	// ReadOnlyPaths are bound read-only into the sandbox after /tmp is made
	// private, for binaries and repositories that live under /tmp. The
	// agent-runner binary, an absolute agent command and a file:// clone
	// URL's path are added automatically.
	ReadOnlyPaths []string
	Logger        *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Launcher runs agent-runner as a local child process. It implements
// runner.Launcher.
type Launcher struct {
	opts  Options
	root  string
	bwrap string // path of bwrap, "" when isolation is none
	log   *slog.Logger
	now   func() time.Time

	mu     sync.Mutex
	runs   map[string]*Run // live runs started by this process
	closed chan struct{}
	once   sync.Once
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
		closed: make(chan struct{}),
	}
	if err := os.MkdirAll(l.root, 0o700); err != nil {
		return nil, fmt.Errorf("local launcher: create %s: %w", l.root, err)
	}
	mode := opts.Isolation
	if mode == "" {
		mode = IsolationAuto
	}
	switch mode {
	case IsolationNone:
	case IsolationBwrap, IsolationAuto:
		path, why := probeBwrap()
		switch {
		case path != "":
			l.bwrap = path
		case mode == IsolationBwrap:
			return nil, fmt.Errorf("local launcher: AGENTBOT_LOCAL_ISOLATION=bwrap but bubblewrap cannot run here: %s", why)
		default:
			l.log.Warn("local launcher runs agents without isolation", "reason", why)
		}
	default:
		return nil, fmt.Errorf("local launcher: isolation %q is not one of auto, bwrap, none", opts.Isolation)
	}
	l.log.Info("local launcher ready", "isolation", l.Isolation(), "workspaces", l.root, "agent_runner", bin)
	return l, nil
}

// probeBwrap finds bwrap and checks that it can create the namespaces we
// ask for (it cannot without user namespaces when not root, for instance).
func probeBwrap() (path, why string) {
	p, err := exec.LookPath("bwrap")
	if err != nil {
		return "", "bwrap is not installed (Debian package bubblewrap)"
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, p, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc",
		"--tmpfs", "/tmp", "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--die-with-parent",
		"--cap-drop", "ALL", "--", "true").CombinedOutput()
	if err != nil {
		return "", fmt.Sprintf("bwrap fails here: %v: %s", err, strings.TrimSpace(string(out)))
	}
	return p, ""
}

// Name implements runner.Launcher.
func (l *Launcher) Name() string { return "local" }

// RunsEndWithProcess reports that a run never outlives the agentbot process
// that started it (PR_SET_PDEATHSIG), so a dispatcher that stops gracefully
// stops the runs itself and re-queues their tasks.
func (l *Launcher) RunsEndWithProcess() bool { return true }

// Isolation is the mode in force: "bwrap" or "none".
func (l *Launcher) Isolation() string {
	if l.bwrap != "" {
		return IsolationBwrap
	}
	return IsolationNone
}

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
// stdin.
func (l *Launcher) Start(ctx context.Context, job runner.Job) (runner.Run, error) {
	if err := checkTaskID(job.TaskID); err != nil {
		return nil, err
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
	if err := os.MkdirAll(filepath.Join(ws, "home"), 0o700); err != nil {
		return nil, fmt.Errorf("local launcher: task %s: create workspace: %w", job.TaskID, err)
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

	cmd := l.command(job, ws, "run", "--workspace", ws)
	cmd.Stdin = strings.NewReader(string(input))
	cmd.Stderr = stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("local launcher: task %s: %w", job.TaskID, err)
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("local launcher: task %s: start agent-runner: %w", job.TaskID, err)
	}
	r := newRun(l, job.TaskID, cmd, stdout)
	meta := runMeta{PID: cmd.Process.Pid, StartedAt: l.now()}
	if err := writeMeta(dir, meta); err != nil {
		l.log.Warn("cannot record run", "task_id", job.TaskID, "err", err)
	}
	l.mu.Lock()
	l.runs[job.TaskID] = r
	l.mu.Unlock()
	l.log.Debug("agent-runner started", "task_id", job.TaskID, "pid", r.pid, "isolation", l.Isolation())
	return r, nil
}

// command builds the agent-runner command line, inside bwrap when it is in
// force. The child gets its own session (and so process group, and no
// controlling terminal) and is killed if agentbot dies.
func (l *Launcher) command(job runner.Job, ws string, args ...string) *exec.Cmd {
	env := l.childEnv(ws)
	var cmd *exec.Cmd
	if l.bwrap == "" {
		cmd = exec.Command(l.opts.AgentRunner, args...)
	} else {
		b := []string{
			"--ro-bind", "/", "/",
			"--dev", "/dev",
			"--proc", "/proc",
			"--tmpfs", "/tmp",
			"--unshare-pid", "--unshare-ipc", "--unshare-uts",
			"--die-with-parent",
			// Run as root (a container's default), bwrap would otherwise
			// leave the agent every capability: CAP_SYS_ADMIN unmounts the
			// tmpfs hiding the data directory and the key, CAP_NET_ADMIN
			// acts on the host's network namespace.
			"--cap-drop", "ALL",
			"--hostname", "agentbot-sandbox",
		}
		// /run (and a /var/run that is not a link to it) holds the host's
		// sockets: the systemd user bus (systemd-run --user runs commands
		// outside the sandbox), docker.sock, gpg and ssh agents. A read-only
		// bind does not stop connect(), so they get an empty tmpfs; the
		// resolver's directory comes back when /etc/resolv.conf lives there.
		b = append(b, runMounts()...)
		// The data directory holds the store and other tasks' workspaces.
		b = append(b, "--tmpfs", l.opts.DataDir)
		readOnly := []string{l.opts.DataDir}
		for _, p := range l.opts.HidePaths {
			if p == "" {
				continue
			}
			if fi, err := os.Stat(p); err == nil {
				if fi.IsDir() {
					b = append(b, "--tmpfs", p)
					readOnly = append(readOnly, p)
				} else {
					b = append(b, "--ro-bind", "/dev/null", p)
				}
			}
		}
		for _, p := range l.readOnlyPaths(job) {
			b = append(b, "--ro-bind", p, p)
		}
		b = append(b, "--bind", ws, ws)
		// The empty tmpfs over hidden directories are made read-only last,
		// once the workspace's mount point inside them exists.
		for _, p := range readOnly {
			b = append(b, "--remount-ro", p)
		}
		b = append(b, "--chdir", ws, "--", l.opts.AgentRunner)
		cmd = exec.Command(l.bwrap, append(b, args...)...)
	}
	cmd.Dir = ws
	cmd.Env = env
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Pdeathsig: syscall.SIGKILL}
	return cmd
}

// runMounts hides the host's runtime directories from the sandbox, keeping
// the directory /etc/resolv.conf resolves into when it is one of them.
func runMounts() []string {
	var out, hidden []string
	for _, p := range []string{"/run", "/var/run"} {
		if fi, err := os.Lstat(p); err == nil && fi.IsDir() {
			out = append(out, "--tmpfs", p)
			hidden = append(hidden, p)
		}
	}
	if target, err := filepath.EvalSymlinks("/etc/resolv.conf"); err == nil {
		for _, h := range hidden {
			if strings.HasPrefix(target, h+"/") {
				dir := filepath.Dir(target)
				out = append(out, "--ro-bind", dir, dir)
				break
			}
		}
	}
	return out
}

// readOnlyPaths lists what must stay visible inside bwrap although /tmp is
// replaced: the binaries and a local repository the job names.
func (l *Launcher) readOnlyPaths(job runner.Job) []string {
	var out []string
	add := func(p string) {
		if p == "" || !filepath.IsAbs(p) {
			return
		}
		if _, err := os.Stat(p); err != nil {
			return
		}
		out = append(out, p)
	}
	add(l.opts.AgentRunner)
	if f := strings.Fields(job.Agent.Command); len(f) > 0 {
		add(f[0])
		for _, a := range f[1:] {
			if filepath.IsAbs(a) {
				add(a)
			}
		}
	}
	if u, err := url.Parse(job.CloneURL); err == nil && u.Scheme == "file" {
		add(u.Path)
	} else if filepath.IsAbs(job.CloneURL) {
		add(job.CloneURL)
	}
	for _, k := range []string{"AGENTBOT_CLAUDE_BIN", "AGENTBOT_CODEX_BIN"} {
		add(os.Getenv(k))
	}
	for _, p := range l.opts.ReadOnlyPaths {
		add(p)
	}
	return out
}

func (l *Launcher) childEnv(ws string) []string {
	seen := map[string]bool{}
	var env []string
	for _, k := range append(append([]string(nil), defaultPassEnv...), l.opts.PassEnv...) {
		if seen[k] {
			continue
		}
		seen[k] = true
		if v, ok := os.LookupEnv(k); ok {
			env = append(env, k+"="+v)
		}
	}
	// HOME and TMPDIR point into the workspace: under bwrap nothing else is
	// writable, and without it they keep the agent's litter out of the
	// operator's home.
	env = append(env, "HOME="+filepath.Join(ws, "home"), "TMPDIR="+filepath.Join(ws, "home"), "AGENTBOT_WORKSPACE="+ws)
	return env
}

// Attach implements runner.Launcher. A run started by this process is
// followed with `agent-runner attach`; anything older died with the process
// that started it, so Attach kills what may be left of it and reports
// runner.ErrGone.
func (l *Launcher) Attach(ctx context.Context, taskID string, fromSeq int) (runner.Run, error) {
	if err := checkTaskID(taskID); err != nil {
		return nil, err
	}
	l.mu.Lock()
	orig, ok := l.runs[taskID]
	l.mu.Unlock()
	if !ok || orig.exited() {
		l.killLeftovers(taskID)
		return nil, runner.ErrGone
	}
	ws := l.Workspace(taskID)
	cmd := exec.Command(l.opts.AgentRunner, "attach", "--workspace", ws, "--from", strconv.Itoa(fromSeq))
	cmd.Dir = ws
	cmd.Env = l.childEnv(ws)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Pdeathsig: syscall.SIGKILL}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("local launcher: task %s: %w", taskID, err)
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("local launcher: task %s: start agent-runner attach: %w", taskID, err)
	}
	r := newRun(l, taskID, cmd, stdout)
	r.stopTarget = orig
	return r, nil
}

// killLeftovers kills the process group of a run recorded by an earlier
// agentbot process, if it still exists and is still that run.
func (l *Launcher) killLeftovers(taskID string) {
	meta, err := readMeta(l.taskDir(taskID))
	if err != nil || meta.PID <= 0 {
		return
	}
	cmdline, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(meta.PID), "cmdline"))
	if err == nil && strings.Contains(string(cmdline), l.Workspace(taskID)) {
		l.log.Warn("killing leftover agent-runner", "task_id", taskID, "pid", meta.PID)
		_ = syscall.Kill(-meta.PID, syscall.SIGKILL)
	}
	// The agent's own children (its process group is not agent-runner's)
	// survive agent-runner's death; they are in its session and work in
	// the task's workspace, which tells them from strangers that reuse the
	// number.
	if killSession(meta.PID, l.Workspace(taskID)) {
		l.log.Warn("killed processes the agent left", "task_id", taskID, "session", meta.PID)
	}
}

// Close kills every run this launcher started and waits for them. An
// in-process agentbot that stops (tests, `agentbot run` interrupted) leaves
// no agents behind; a killed process relies on PR_SET_PDEATHSIG instead.
func (l *Launcher) Close() error {
	l.once.Do(func() { close(l.closed) })
	l.mu.Lock()
	runs := make([]*Run, 0, len(l.runs))
	for _, r := range l.runs {
		runs = append(runs, r)
	}
	l.mu.Unlock()
	for _, r := range runs {
		if !r.exited() {
			_ = syscall.Kill(-r.pid, syscall.SIGKILL)
		}
	}
	for _, r := range runs {
		<-r.done
	}
	return nil
}

// Cleanup implements runner.Launcher. With keep, the workspace stays for
// Options.KeepFailed and is swept by a later Start or Cleanup.
func (l *Launcher) Cleanup(ctx context.Context, taskID string, keep bool) error {
	if err := checkTaskID(taskID); err != nil {
		return err
	}
	l.mu.Lock()
	r := l.runs[taskID]
	delete(l.runs, taskID)
	l.mu.Unlock()
	if r != nil && !r.exited() {
		// Cleanup goes on to remove the workspace either way; a run that
		// cannot be stopped is worth a line in the log.
		if err := r.Stop(ctx); err != nil {
			l.log.Warn("cleanup: cannot stop the run", "task_id", taskID, "err", err)
		}
	}
	dir := l.taskDir(taskID)
	if keep {
		meta, _ := readMeta(dir)
		meta.KeepUntil = l.now().Add(l.opts.KeepFailed)
		if err := writeMeta(dir, meta); err != nil {
			return fmt.Errorf("local launcher: task %s: keep workspace: %w", taskID, err)
		}
		l.log.Info("workspace kept for debugging", "task_id", taskID, "path", dir, "until", meta.KeepUntil)
	} else if err := removeAll(dir); err != nil {
		return fmt.Errorf("local launcher: task %s: remove workspace: %w", taskID, err)
	}
	l.sweep()
	return nil
}

// sweep removes kept workspaces whose time is up.
func (l *Launcher) sweep() {
	entries, err := os.ReadDir(l.root)
	if err != nil {
		return
	}
	now := l.now()
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		dir := filepath.Join(l.root, e.Name())
		meta, err := readMeta(dir)
		if err != nil || meta.KeepUntil.IsZero() || now.Before(meta.KeepUntil) {
			continue
		}
		l.mu.Lock()
		_, live := l.runs[e.Name()]
		l.mu.Unlock()
		if live {
			continue
		}
		if err := removeAll(dir); err != nil {
			l.log.Warn("cannot remove expired workspace", "path", dir, "err", err)
		}
	}
}

// removeAll removes dir, first making read-only directories (git's object
// store, Go's module cache) writable again.
func removeAll(dir string) error {
	if err := os.RemoveAll(dir); err == nil {
		return nil
	}
	_ = filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			_ = os.Chmod(p, 0o700)
		}
		return nil
	})
	return os.RemoveAll(dir)
}

func writeMeta(dir string, m runMeta) error {
	b, err := json.Marshal(m)
	if err != nil {
		return err
	}
	tmp := filepath.Join(dir, "run.json.tmp")
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(dir, "run.json"))
}

func readMeta(dir string) (runMeta, error) {
	var m runMeta
	b, err := os.ReadFile(filepath.Join(dir, "run.json"))
	if err != nil {
		return m, err
	}
	err = json.Unmarshal(b, &m)
	return m, err
}

// StderrTail returns the last n lines agent-runner wrote to stderr, for
// failure reports when it died before it could say why in an event.
func (l *Launcher) StderrTail(taskID string, n int) []string {
	if checkTaskID(taskID) != nil {
		return nil
	}
	b, err := os.ReadFile(filepath.Join(l.taskDir(taskID), "agent-runner.stderr"))
	if err != nil {
		return nil
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	if len(lines) == 1 && lines[0] == "" {
		return nil
	}
	return lines
}

// Run is one agent-runner child (or an `agent-runner attach` following one).
type Run struct {
	l      *Launcher
	taskID string
	cmd    *exec.Cmd
	pid    int
	events chan runner.Event
	done   chan struct{}
	// stopTarget is the run Stop kills (an attach follows another run).
	stopTarget *Run

	mu       sync.Mutex
	stopped  bool
	exitCode int
	waitErr  error
}

var _ runner.Run = (*Run)(nil)

func newRun(l *Launcher, taskID string, cmd *exec.Cmd, stdout io.ReadCloser) *Run {
	r := &Run{
		l:      l,
		taskID: taskID,
		cmd:    cmd,
		pid:    cmd.Process.Pid,
		events: make(chan runner.Event, 256),
		done:   make(chan struct{}),
	}
	go r.follow(stdout)
	return r
}

// follow reads events until stdout ends, then reaps the child. It owns the
// events channel and the child; done closes when both are finished.
func (r *Run) follow(stdout io.Reader) {
	defer close(r.done)
	sc := bufio.NewScanner(stdout)
	sc.Buffer(make([]byte, 64*1024), 16*1024*1024)
	for sc.Scan() {
		line := sc.Bytes()
		if len(strings.TrimSpace(string(line))) == 0 {
			continue
		}
		var ev runner.Event
		if err := json.Unmarshal(line, &ev); err != nil {
			r.l.log.Warn("agent-runner wrote a line that is not an event", "task_id", r.taskID, "err", err)
			continue
		}
		select {
		case r.events <- ev:
		case <-r.l.closed:
			// Nobody reads any more; keep draining so the child is not
			// blocked on a full pipe while it is killed.
		}
	}
	if err := sc.Err(); err != nil {
		r.l.log.Warn("reading agent-runner output", "task_id", r.taskID, "err", err)
		// Drain so the child is not blocked on a full pipe.
		_, _ = io.Copy(io.Discard, stdout)
	}
	close(r.events)
	err := r.cmd.Wait()
	r.mu.Lock()
	defer r.mu.Unlock()
	var exitErr *exec.ExitError
	switch {
	case err == nil:
		r.exitCode = runner.ExitOK
	case errors.As(err, &exitErr):
		r.exitCode = exitErr.ExitCode()
		stopped := r.stopped || (r.stopTarget != nil && r.stopTarget.isStopped())
		switch {
		case stopped:
			// Killed by Stop (bwrap reports its child's death as 1).
			r.exitCode = runner.ExitCancelled
		case r.exitCode < 0: // killed by someone else's signal
			r.exitCode = runner.ExitInternal
		}
	default:
		r.exitCode = runner.ExitInternal
		r.waitErr = fmt.Errorf("local launcher: task %s: wait for agent-runner: %w", r.taskID, err)
	}
	// Anything the agent left behind goes with it. agent-runner puts the
	// agent in a process group of its own, which a SIGKILL of agent-runner
	// (a hung runner after the grace, Close) does not reach, but the
	// agent's processes stay in agent-runner's session unless they escape
	// with setsid. Inside bwrap the namespace's processes also die a moment
	// after bwrap itself.
	_ = syscall.Kill(-r.pid, syscall.SIGKILL)
	for i := 0; i < 200 && killSession(r.pid, ""); i++ {
		time.Sleep(10 * time.Millisecond)
	}
}

// killSession SIGKILLs every live process of session sid (with within set,
// only those whose working directory is under it) and reports whether it
// found any.
func killSession(sid int, within string) bool {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return false
	}
	found := false
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid pgrp session ...; comm may hold spaces
		// and parens.
		i := bytes.LastIndexByte(b, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(b[i+1:]))
		if len(f) < 4 || f[0] == "Z" || f[0] == "X" || f[3] != strconv.Itoa(sid) {
			continue
		}
		if within != "" {
			cwd, err := os.Readlink(filepath.Join("/proc", e.Name(), "cwd"))
			if err != nil || (cwd != within && !strings.HasPrefix(cwd, within+string(filepath.Separator))) {
				continue
			}
		}
		found = true
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	return found
}

func (r *Run) exited() bool {
	select {
	case <-r.done:
		return true
	default:
		return false
	}
}

func (r *Run) isStopped() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.stopped
}

// Events implements runner.Run. The caller must drain it until it is closed.
func (r *Run) Events() <-chan runner.Event { return r.events }

// Wait implements runner.Run.
func (r *Run) Wait(ctx context.Context) (int, error) {
	select {
	case <-r.done:
	case <-ctx.Done():
		return -1, ctx.Err()
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.exitCode, r.waitErr
}

// Bundle implements runner.Run with `agent-runner bundle`.
func (r *Run) Bundle(ctx context.Context, w io.Writer) error {
	ws := r.l.Workspace(r.taskID)
	var stderr strings.Builder
	cmd := exec.CommandContext(ctx, r.l.opts.AgentRunner, "bundle", "--workspace", ws)
	cmd.Env = r.l.childEnv(ws)
	cmd.Stdout = w
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("local launcher: task %s: agent-runner bundle: %w: %s", r.taskID, err, strings.TrimSpace(stderr.String()))
	}
	return nil
}

// Stop implements runner.Run: SIGTERM to agent-runner's process group
// (agent-runner then kills the agent's group and exits), SIGKILL after the
// grace period, and it returns once the child has exited and nothing is left
// in its session.
func (r *Run) Stop(ctx context.Context) error {
	target := r
	if r.stopTarget != nil {
		target = r.stopTarget
	}
	target.mu.Lock()
	target.stopped = true
	target.mu.Unlock()
	if target.exited() {
		return nil
	}
	_ = syscall.Kill(-target.pid, syscall.SIGTERM)
	timer := time.NewTimer(target.l.opts.StopGrace)
	defer timer.Stop()
	select {
	case <-target.done:
		return nil
	case <-timer.C:
	case <-ctx.Done():
	}
	_ = syscall.Kill(-target.pid, syscall.SIGKILL)
	select {
	case <-target.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("local launcher: task %s: stop: %w", r.taskID, ctx.Err())
	}
}
