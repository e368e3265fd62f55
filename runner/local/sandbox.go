package local

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/agentbot/agentbot/runner"
)

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
