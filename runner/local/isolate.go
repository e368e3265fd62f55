package local

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"

	"github.com/agentbot/agentbot/runner/sandbox"
)

// DefaultSandboxUID is the host uid (and gid) sandboxes run as when
// Options.SandboxUID is zero: high enough to be nobody's account and
// outside the subordinate id ranges useradd hands out (100000 + 65536·n
// stay below it for thirty thousand users), and never written to the
// host's /etc/passwd.
const DefaultSandboxUID = 2_000_000_000

// diskInterval is how often the disk watchdog measures a workspace.
const diskInterval = 2 * time.Second

// chooseIsolation probes what mode asks for and returns the mode in force,
// or why it cannot be had. auto prefers gVisor, then bubblewrap, and says
// in the log which it took and why not the better one.
func (l *Launcher) chooseIsolation(mode string) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	tryRunsc := func() error {
		p, err := exec.LookPath("runsc")
		if err != nil {
			p = ""
		}
		r := sandbox.Runsc{Path: p, StateDir: filepath.Join(l.opts.DataDir, "runsc")}
		if err := os.MkdirAll(r.StateDir, 0o700); err != nil {
			return fmt.Errorf("create %s: %w", r.StateDir, err)
		}
		if err := r.Probe(ctx); err != nil {
			return err
		}
		l.runsc = &r
		l.isolation = IsolationGVisor
		return nil
	}
	tryBwrap := func() error {
		p, why := probeBwrap(l.uid, l.gid)
		if p == "" {
			return errors.New(why)
		}
		l.bwrap, l.isolation = p, IsolationBwrap
		return nil
	}
	switch mode {
	case IsolationNone:
		l.isolation = IsolationNone
	case IsolationGVisor:
		if err := tryRunsc(); err != nil {
			return fmt.Errorf("local launcher: AGENTBOT_LOCAL_ISOLATION=gvisor but runsc cannot run here: %w", err)
		}
	case IsolationBwrap:
		if err := tryBwrap(); err != nil {
			return fmt.Errorf("local launcher: AGENTBOT_LOCAL_ISOLATION=bwrap but bubblewrap cannot run here: %w", err)
		}
	case IsolationAuto:
		gerr := tryRunsc()
		if gerr == nil {
			break
		}
		if berr := tryBwrap(); berr != nil {
			l.isolation = IsolationNone
			l.log.Warn("local launcher runs agents without isolation", "reason", berr.Error(), "gvisor", gerr.Error())
			break
		}
		l.log.Info("local launcher uses bubblewrap: gVisor is not usable here", "reason", gerr.Error())
	default:
		return fmt.Errorf("local launcher: isolation %q is not one of auto, gvisor, bwrap, none", mode)
	}
	return nil
}

// prepareSandboxes readies what every sandbox of this launcher shares: the
// host uid, the limits and how they are enforced, a copy of agent-runner
// the sandbox's uid can reach, and search (not read) permission on the
// directories above the workspaces, since bubblewrap opens its bind
// sources as that uid.
func (l *Launcher) prepareSandboxes() error {
	if l.isolation == IsolationNone {
		return nil
	}
	if os.Geteuid() != 0 {
		return errors.New("local launcher: a sandbox runs as an unprivileged host uid of its own, which only root can switch to; run agentbot as root or set AGENTBOT_LOCAL_ISOLATION=none")
	}
	for _, d := range []string{l.opts.DataDir, l.root} {
		if err := os.Chmod(d, 0o711); err != nil {
			return fmt.Errorf("local launcher: let the sandbox's uid through %s: %w", d, err)
		}
	}
	bin := filepath.Join(l.opts.DataDir, "bin")
	if err := os.MkdirAll(bin, 0o711); err != nil {
		return fmt.Errorf("local launcher: create %s: %w", bin, err)
	}
	copied := filepath.Join(bin, "agent-runner")
	if err := copyExecutable(l.opts.AgentRunner, copied); err != nil {
		return fmt.Errorf("local launcher: copy agent-runner for the sandbox: %w", err)
	}
	l.sandboxRunner = copied
	probe, err := sandbox.NewCgroup("probe-"+strconv.Itoa(os.Getpid()), l.opts.Limits)
	if err != nil {
		l.cgroupWhy = err.Error()
		l.log.Warn("sandbox limits fall back to rlimits and a disk watchdog", "reason", l.cgroupWhy)
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return probe.Remove(ctx)
}

// copyExecutable copies src to dst (replacing it) with mode 0755.
func copyExecutable(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	tmp := dst + ".tmp"
	out, err := os.OpenFile(tmp, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	if err := out.Close(); err != nil {
		return err
	}
	if err := os.Chmod(tmp, 0o755); err != nil {
		return err
	}
	return os.Rename(tmp, dst)
}

// Readiness is a line for /readyz: the isolation in force and how the
// limits are enforced.
func (l *Launcher) Readiness() string {
	switch {
	case l.isolation == IsolationNone:
		return "isolation none: agents run unconfined, without limits"
	case l.cgroupWhy != "":
		return "isolation " + l.isolation + "; limits by rlimits and a disk watchdog only: " + l.cgroupWhy
	}
	return "isolation " + l.isolation + "; limits by cgroup"
}

// taskSandbox is one run's sandbox as the launcher sees it from outside:
// what it measures and removes once the run is over.
type taskSandbox struct {
	limits      sandbox.Limits
	cgroup      *sandbox.Cgroup // nil without cgroups
	closeFiles  func()          // descriptors bwrap reads at start
	runsc       *sandbox.Runsc
	containerID string
	workspace   string

	stopDisk context.CancelFunc
	diskDone chan error // the watchdog's verdict, once it has returned
}

// start starts cmd in the task's cgroup (so nothing it forks escapes
// between start and placement) and the disk watchdog, which kills the
// run's session when the workspace outgrows the limit.
func (s *taskSandbox) start(cmd *exec.Cmd) error {
	var err error
	if s.cgroup != nil {
		err = s.cgroup.Start(cmd)
	} else {
		err = cmd.Start()
	}
	if s.closeFiles != nil {
		s.closeFiles()
	}
	if err != nil || s.limits.Disk <= 0 {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.stopDisk, s.diskDone = cancel, make(chan error, 1)
	pid := cmd.Process.Pid
	go func() {
		err := sandbox.WatchDisk(ctx, s.workspace, s.limits.Disk, diskInterval)
		if err != nil {
			s.kill(pid)
		}
		s.diskDone <- err
	}()
	return nil
}

// kill ends everything of the run: the cgroup's processes (the agent's
// double-forked, setsid ones too) and agent-runner's session.
func (s *taskSandbox) kill(pid int) {
	killSession(pid, "")
	if s.cgroup != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = s.cgroup.Kill(ctx)
	}
}

// discard undoes a sandbox whose command never started.
func (s *taskSandbox) discard() {
	if s == nil {
		return
	}
	if s.closeFiles != nil {
		s.closeFiles()
	}
	if s.cgroup != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = s.cgroup.Remove(ctx)
	}
}

// finish stops the watchdog, reads which limit the run hit, and removes
// the cgroup and the gVisor container with whatever is left in them. It
// returns the limit in the words of a failure comment, or "".
func (s *taskSandbox) finish(ctx context.Context) (string, error) {
	var hit string
	var errs []error
	if s.stopDisk != nil {
		s.stopDisk()
		if err := <-s.diskDone; err != nil {
			hit = err.Error()
		}
	}
	if s.runsc != nil {
		errs = append(errs, s.runsc.Remove(ctx, s.containerID))
	}
	if s.cgroup != nil {
		h, err := s.cgroup.Hit()
		errs = append(errs, err)
		if d := h.Describe(s.limits); d != "" && hit == "" {
			hit = d
		}
		errs = append(errs, s.cgroup.Remove(ctx))
	}
	return hit, errors.Join(errs...)
}
