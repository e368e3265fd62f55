package sandbox

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"strconv"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Under gVisor bubblewrap cannot nest (the guest is not allowed the user
// namespace it needs as an unprivileged uid), so agent-runner runs there as
// the guest's root, with only the capabilities RunnerCapabilities lists,
// and starts the agent itself: a child in new PID and mount namespaces
// running AgentInitCommand, agent-runner's own binary, which makes the
// mounts, becomes the sandbox user, loads the seccomp filter and starts the
// agent. The guest's root is the Sentry's, not the host's: the container
// has no user namespace, but runsc gives it no host capability and its
// files reach the host only through the mounts of the plan.

// AgentInitCommand is agent-runner's hidden subcommand that runs as the
// first process of the agent's PID namespace.
const AgentInitCommand = "agent-init"

// AgentUserEnv tells agent-runner, running as the guest's root, the
// "uid:gid" the agent runs as; unset, agent-runner starts no init of its
// own.
const AgentUserEnv = "AGENTBOT_AGENT_USER"

// RunnerCapabilities are all agent-runner keeps as the guest's root: new
// namespaces and mounts for the agent's init (SYS_ADMIN), switching to the
// sandbox user (SETUID, SETGID), giving it the summary file (CHOWN),
// reading and cleaning what the agent left whatever its modes
// (DAC_OVERRIDE, FOWNER), and killing the agent's processes (KILL).
var RunnerCapabilities = []string{
	"CAP_SYS_ADMIN", "CAP_SETUID", "CAP_SETGID", "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_KILL",
}

// AgentInit is what the agent's init does before it starts the agent.
type AgentInit struct {
	UID, GID int
	// Pinned are directories of agent-runner's (its state) bound over
	// themselves: a mount point cannot be renamed or removed, so the agent,
	// who owns the workspace above, cannot swap in one of its own. What is
	// inside belongs to root and so stays read-only to the agent but for
	// what agent-runner gave it (the summary file). gVisor has no
	// read-only bind (MS_REMOUNT|MS_BIND|MS_RDONLY is EINVAL there), so
	// ownership is what keeps them read-only.
	Pinned []string
}

// ParseAgentUser reads AgentUserEnv's "uid:gid"; neither may be 0.
func ParseAgentUser(v string) (uid, gid int, err error) {
	var u, g string
	for i := 0; i < len(v); i++ {
		if v[i] == ':' {
			u, g = v[:i], v[i+1:]
			break
		}
	}
	uid, err1 := strconv.Atoi(u)
	gid, err2 := strconv.Atoi(g)
	if err1 != nil || err2 != nil || uid <= 0 || gid <= 0 {
		return 0, 0, fmt.Errorf("sandbox: %s=%q is not a non-root uid:gid", AgentUserEnv, v)
	}
	return uid, gid, nil
}

// NewInitCommand wraps argv for the agent's init: self is agent-runner's
// binary, filter a program from SeccompFilter. The caller starts the
// command with Cloneflags (new PID and mount namespaces) as the guest's
// root and passes Seccomp as its first extra file.
func NewInitCommand(self string, in AgentInit, filter []byte, argv []string) (*AgentCommand, error) {
	if in.UID <= 0 || in.GID <= 0 {
		return nil, errors.New("sandbox: the agent's init needs a non-root uid and gid")
	}
	f, err := memFile("agentbot-agent-seccomp", filter)
	if err != nil {
		return nil, err
	}
	args := []string{AgentInitCommand, "--uid", strconv.Itoa(in.UID), "--gid", strconv.Itoa(in.GID)}
	for _, d := range in.Pinned {
		args = append(args, "--pin", d)
	}
	args = append(args, "--")
	return &AgentCommand{Path: self, Args: append(args, argv...), Seccomp: f,
		Cloneflags: unix.CLONE_NEWPID | unix.CLONE_NEWNS | unix.CLONE_NEWIPC}, nil
}

// RunAgentInit is AgentInitCommand: args are what NewInitCommand put after
// it. It returns only on failure, or with the agent's exit status.
func RunAgentInit(args []string, stderr io.Writer) int {
	in, argv, err := parseInitArgs(args)
	if err == nil {
		err = in.setup()
	}
	var agent int
	if err == nil {
		agent, err = startAgent(argv)
	}
	if err != nil {
		fmt.Fprintf(stderr, "agent-runner agent-init: %v\n", err)
		return 127
	}
	return reap(agent)
}

func parseInitArgs(args []string) (AgentInit, []string, error) {
	var in AgentInit
	var err error
	for i := 0; i < len(args); i++ {
		if args[i] == "--" {
			if i+1 == len(args) {
				break
			}
			return in, args[i+1:], nil
		}
		if i+1 == len(args) {
			break
		}
		v := args[i+1]
		switch args[i] {
		case "--uid":
			in.UID, err = strconv.Atoi(v)
		case "--gid":
			in.GID, err = strconv.Atoi(v)
		case "--pin":
			in.Pinned = append(in.Pinned, v)
		default:
			return in, nil, fmt.Errorf("unknown option %q", args[i])
		}
		if err != nil {
			return in, nil, fmt.Errorf("%s %q: %w", args[i], v, err)
		}
		i++
	}
	return in, nil, errors.New("no program to run")
}

// setup makes the init's mounts, reads the filter from descriptor 3, drops
// to the sandbox user and loads the filter on every thread.
func (in AgentInit) setup() error {
	if in.UID <= 0 || in.GID <= 0 {
		return errors.New("the agent must not run as root")
	}
	if err := in.mounts(); err != nil {
		return err
	}
	filter, err := readFilter(os.NewFile(3, "seccomp"))
	if err != nil {
		return err
	}
	if err := syscall.Setgroups([]int{}); err != nil {
		return fmt.Errorf("setgroups: %w", err)
	}
	if err := syscall.Setgid(in.GID); err != nil {
		return fmt.Errorf("setgid %d: %w", in.GID, err)
	}
	// From root to another uid: every capability goes with it.
	if err := syscall.Setuid(in.UID); err != nil {
		return fmt.Errorf("setuid %d: %w", in.UID, err)
	}
	if err := SetNonDumpable(); err != nil {
		return err
	}
	return loadFilter(filter)
}

// mounts gives the init a read-only /proc of its PID namespace
// (agent-runner is not in it; /proc/sys is read-only with it) and pins
// agent-runner's state.
func (in AgentInit) mounts() error {
	// Nothing of these mounts should reach agent-runner's namespace.
	// gVisor refuses the recursive change (EINVAL) and has no propagation
	// to stop. Debian 12's runsc (20221219) takes CLONE_NEWNS but shares
	// the mounts anyway: there this /proc covers agent-runner's too, which
	// reads nothing of /proc once it has started the agent, and the pins
	// are binds over themselves. The agent gets no way back to the
	// container's /proc either way: it can neither mount nor unmount.
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil && !errors.Is(err, unix.EINVAL) {
		return fmt.Errorf("make the mounts private: %w", err)
	}
	if err := unix.Mount("proc", "/proc", "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC|unix.MS_RDONLY, ""); err != nil {
		return fmt.Errorf("mount /proc: %w", err)
	}
	for _, d := range in.Pinned {
		if err := unix.Mount(d, d, "", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("pin %s: %w", d, err)
		}
	}
	return nil
}

func readFilter(f *os.File) ([]unix.SockFilter, error) {
	defer f.Close()
	raw, err := io.ReadAll(io.LimitReader(f, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("read the seccomp filter: %w", err)
	}
	if len(raw) == 0 || len(raw)%8 != 0 || len(raw)/8 > 4096 {
		return nil, fmt.Errorf("seccomp filter of %d bytes is malformed", len(raw))
	}
	prog := make([]unix.SockFilter, len(raw)/8)
	for i := range prog {
		b := raw[8*i:]
		prog[i] = unix.SockFilter{Code: binary.NativeEndian.Uint16(b), Jt: b[2], Jf: b[3], K: binary.NativeEndian.Uint32(b[4:])}
	}
	return prog, nil
}

// loadFilter sets no_new_privs and installs prog on every thread of the
// process (TSYNC), so whichever thread forks the agent passes it on.
func loadFilter(prog []unix.SockFilter) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("prctl(PR_SET_NO_NEW_PRIVS): %w", err)
	}
	fprog := unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]}
	_, _, errno := unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, unix.SECCOMP_FILTER_FLAG_TSYNC, uintptr(unsafe.Pointer(&fprog)))
	runtime.KeepAlive(prog)
	if errno != 0 {
		return fmt.Errorf("seccomp(SECCOMP_SET_MODE_FILTER, TSYNC): %w", errno)
	}
	return nil
}

// startAgent starts argv with the init's standard streams, directory and
// environment.
func startAgent(argv []string) (int, error) {
	path, err := exec.LookPath(argv[0])
	if err != nil {
		return 0, err
	}
	p, err := os.StartProcess(path, argv, &os.ProcAttr{
		Files: []*os.File{os.Stdin, os.Stdout, os.Stderr},
		Sys:   &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL},
	})
	if err != nil {
		return 0, err
	}
	return p.Pid, nil
}

// reap is the PID namespace's init: it forwards termination signals to the
// agent, reaps every orphan, and returns the agent's status once it exits
// (128+n for signal n, as a shell says it). Returning ends the namespace:
// the kernel kills whatever the agent left running.
func reap(agent int) int {
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGQUIT)
	go func() {
		for s := range sigs {
			_ = syscall.Kill(agent, s.(syscall.Signal))
		}
	}()
	for {
		var ws syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &ws, 0, nil)
		if errors.Is(err, syscall.EINTR) {
			continue
		}
		if err != nil {
			return 127 // ECHILD: the agent is gone without a status
		}
		if pid != agent {
			continue
		}
		if ws.Signaled() {
			return 128 + int(ws.Signal())
		}
		return ws.ExitStatus()
	}
}
