package local

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/agentbot/agentbot/runner"
	"github.com/agentbot/agentbot/runner/sandbox"
)

// probeBwrap finds bwrap and checks that it can create the namespaces the
// sandbox asks for as the sandbox's host uid (without user namespaces
// for unprivileged users it cannot, for instance).
func probeBwrap(uid, gid int) (path, why string) {
	p, err := exec.LookPath("bwrap")
	if err != nil {
		return "", "bwrap is not installed (Debian package bubblewrap)"
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, p, "--unshare-user", "--unshare-pid", "--unshare-ipc", "--unshare-uts",
		"--ro-bind", "/usr", "/usr", "--symlink", "usr/bin", "/bin", "--symlink", "usr/lib", "/lib",
		"--symlink", "usr/lib64", "/lib64", "--dev", "/dev", "--proc", "/proc",
		"--die-with-parent", "--new-session", "--cap-drop", "ALL", "--", "/usr/bin/true")
	if os.Geteuid() == 0 {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}}}
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Sprintf("bwrap fails here as uid %d: %v: %s", uid, err, strings.TrimSpace(string(out)))
	}
	return p, ""
}

// command builds the agent-runner command of a task: a plain child with
// isolation none, else agent-runner inside the task's sandbox, built from
// one mount plan for bubblewrap and gVisor alike. The child gets its own
// session (and so process group, and no controlling terminal) and is
// killed if agentbot dies.
func (l *Launcher) command(job runner.Job, ws string, args ...string) (*exec.Cmd, *taskSandbox, error) {
	if l.isolation == IsolationNone {
		cmd := exec.Command(l.opts.AgentRunner, append(args, "--workspace", ws)...)
		cmd.Dir = ws
		cmd.Env = l.childEnv(ws)
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Pdeathsig: syscall.SIGKILL}
		return cmd, nil, nil
	}
	plan, err := sandbox.NewPlan(sandbox.PlanOptions{
		Workspace: ws, ReadOnly: l.readOnlyPaths(job),
		HostUID: l.uid, HostGID: l.gid, Limits: l.opts.Limits,
		ShareNet: l.opts.ShareNetwork, NestedAgent: l.isolation == IsolationBwrap,
		RunnerRoot: l.isolation == IsolationGVisor, GatewaySocket: gatewaySocket(job),
	})
	if err != nil {
		return nil, nil, err
	}
	if err := plan.PrepareWorkspace(); err != nil {
		return nil, nil, err
	}
	box := &taskSandbox{limits: l.opts.Limits, workspace: ws}
	if l.cgroupWhy == "" {
		cg := l.opts.Limits
		if l.isolation == IsolationGVisor && cg.PIDs > 0 {
			// runsc, its sentry and gofer are host threads of the task's
			// cgroup too, as is a host thread per guest thread on the
			// ptrace platform.
			cg.PIDs += gvisorThreads
		}
		if box.cgroup, err = sandbox.NewCgroup("task-"+job.TaskID, cg); err != nil {
			l.log.Warn("task runs without a cgroup: rlimits and the disk watchdog only", "task_id", job.TaskID, "err", err)
		}
	}
	env := l.sandboxEnv(plan, box.cgroup == nil)
	argv := append([]string{l.sandboxRunner}, append(args, "--workspace", sandbox.WorkspaceTarget)...)
	var cmd *exec.Cmd
	if l.isolation == IsolationGVisor {
		cmd, err = l.runscCommand(plan, box, job.TaskID, argv, env)
	} else {
		cmd, err = l.bwrapCommand(plan, box, argv, env)
	}
	if err != nil {
		if box.cgroup != nil {
			_ = box.cgroup.Remove(context.Background())
		}
		return nil, nil, err
	}
	return cmd, box, nil
}

func gatewaySocket(job runner.Job) string {
	if job.Gateway == nil {
		return ""
	}
	return job.Gateway.HostSocket
}

// gvisorThreads is what gVisor's own processes take of the task's pids
// limit, measured with an idle container (about 150 threads) and doubled.
const gvisorThreads = 300

// bwrapCommand runs argv under bubblewrap. agent-runner there starts the
// agent in a nested sandbox (sandbox.AgentCommand), so its own filter must
// leave namespaces alone; the agent's denies them.
func (l *Launcher) bwrapCommand(plan *sandbox.Plan, box *taskSandbox, argv, env []string) (*exec.Cmd, error) {
	filter, err := sandbox.SeccompFilter(sandbox.FilterOptions{AllowNamespaces: true})
	if err != nil {
		return nil, err
	}
	cmd, closeFiles, err := plan.BwrapCommand(sandbox.BwrapOptions{Bwrap: l.bwrap, Seccomp: filter, Argv: argv,
		Env: append(env, sandbox.AgentBwrapEnv+"="+l.bwrap)})
	if err != nil {
		return nil, err
	}
	box.closeFiles = closeFiles
	return cmd, nil
}

// runscCommand runs argv in a gVisor container whose bundle lies next to
// the workspace, out of the sandbox's reach.
func (l *Launcher) runscCommand(plan *sandbox.Plan, box *taskSandbox, taskID string, argv, env []string) (*exec.Cmd, error) {
	id, err := sandbox.ContainerID(taskID)
	if err != nil {
		return nil, err
	}
	bundle := filepath.Join(l.taskDir(taskID), "bundle")
	env = append(env, sandbox.AgentUserEnv+"="+strconv.Itoa(plan.HostUID)+":"+strconv.Itoa(plan.HostGID))
	if err := plan.WriteOCIBundle(bundle, argv, env); err != nil {
		return nil, err
	}
	box.runsc, box.containerID = l.runsc, id
	return l.runsc.Command(bundle, id), nil
}

// sandboxEnv is agent-runner's environment inside a sandbox: the plan's
// (HOME, TMPDIR and the workspace inside), the variables passed on, and,
// without a cgroup, the limits agent-runner lowers its own rlimits to.
func (l *Launcher) sandboxEnv(plan *sandbox.Plan, rlimits bool) []string {
	env := plan.Env()
	for _, kv := range l.passedEnv() {
		k, _, _ := strings.Cut(kv, "=")
		if k != "HOME" && k != "TMPDIR" && k != "USER" && k != "LOGNAME" {
			env = append(env, kv)
		}
	}
	if rlimits {
		env = append(env, sandbox.RlimitsEnv+"="+sandbox.EncodeLimits(l.opts.Limits))
	}
	return env
}

// readOnlyPaths lists what the sandbox sees read-only besides the system:
// agent-runner, the agents' install directories, an absolute agent command
// and its absolute arguments, a local repository the job names, and the
// operator's extra paths.
func (l *Launcher) readOnlyPaths(job runner.Job) []string {
	var out []string
	seen := map[string]bool{}
	add := func(p string) {
		if p == "" || !filepath.IsAbs(p) || seen[p] {
			return
		}
		if _, err := os.Stat(p); err != nil || systemPath(p) {
			return
		}
		seen[p] = true
		out = append(out, p)
	}
	add(l.sandboxRunner)
	if f := strings.Fields(job.Agent.Command); len(f) > 0 {
		add(f[0])
		for _, a := range f[1:] {
			add(a)
		}
	}
	if u, err := url.Parse(job.CloneURL); err == nil && u.Scheme == "file" {
		add(u.Path)
	} else if filepath.IsAbs(job.CloneURL) {
		add(job.CloneURL)
	}
	// Only the CLI the job runs: the sandbox sees no more than it needs.
	switch job.Agent.Name {
	case "claude":
		add(toolRoot(os.Getenv("AGENTBOT_CLAUDE_BIN")))
	case "codex":
		add(toolRoot(os.Getenv("AGENTBOT_CODEX_BIN")))
	}
	for _, p := range l.opts.ReadOnlyPaths {
		add(p)
	}
	if job.Mirror != nil {
		add(job.Mirror.Path) // the repository mirror the clone borrows from
	}
	return out
}

// systemPath reports whether the mount plan shows p already, as part of
// the system directories (/bin/sh as an agent command, say).
func systemPath(p string) bool {
	if r, err := filepath.EvalSymlinks(p); err == nil {
		p = r
	}
	for _, d := range []string{"/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"} {
		if p == d || strings.HasPrefix(p, d+"/") {
			return true
		}
	}
	return false
}

// toolRoot is the directory an agent CLI must bring along: an npm install
// (node_modules/.bin/claude links into node_modules) whole, else the
// directory of the program the path resolves to.
func toolRoot(bin string) string {
	if bin == "" || !filepath.IsAbs(bin) {
		return ""
	}
	if i := strings.LastIndex(bin, "/node_modules/"); i >= 0 {
		return bin[:i+len("/node_modules")]
	}
	resolved, err := filepath.EvalSymlinks(bin)
	if err != nil {
		return ""
	}
	return filepath.Dir(resolved)
}

// passedEnv is what a child gets of agentbot's environment: the default
// set and Options.PassEnv, nothing else (agentbot's secrets stay out).
func (l *Launcher) passedEnv() []string {
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
	return env
}

// childEnv is the environment of an unsandboxed child. HOME and TMPDIR
// point into the workspace to keep the agent's litter out of the
// operator's home.
func (l *Launcher) childEnv(ws string) []string {
	return append(l.passedEnv(), "HOME="+filepath.Join(ws, "home"), "TMPDIR="+filepath.Join(ws, "home"), "AGENTBOT_WORKSPACE="+ws)
}
