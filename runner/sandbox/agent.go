package sandbox

import (
	"fmt"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// SetNonDumpable makes the calling process non-dumpable: its /proc/<pid>
// files (mem, fd/, environ) then belong to root, so a process of the same
// uid, the agent, can neither read its memory nor open its descriptors.
// agent-runner calls it before it reads the job.
func SetNonDumpable() error {
	if err := unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0); err != nil {
		return fmt.Errorf("sandbox: prctl(PR_SET_DUMPABLE, 0): %w", err)
	}
	return nil
}

// AgentBwrapEnv tells agent-runner which bwrap starts the agent's nested
// sandbox; unset, the agent runs as agent-runner's child.
const AgentBwrapEnv = "AGENTBOT_AGENT_BWRAP"

// AgentCommand is how agent-runner starts the agent in a nested sandbox
// inside its own: a second bwrap with new user and PID namespaces (so
// agent-runner's processes are not in the agent's /proc), a fresh /proc
// with /proc/sys read-only, no capabilities, a new session (no TIOCSTI
// into agent-runner's terminal), no further user namespaces, and the
// seccomp filter. The outer sandbox must come from a plan made with
// NestedAgent.
type AgentCommand struct {
	Path string
	Args []string
	// Seccomp holds the filter for the child at descriptor 3; the caller
	// passes it as the first extra file and closes it once the child runs.
	Seccomp *os.File
	// Cloneflags are the namespaces the child is created in (the gVisor
	// init's); 0 for bwrap, which makes its own.
	Cloneflags uintptr
}

// NewAgentCommand wraps argv (the agent's program and arguments) for the
// nested sandbox, with bwrap at bwrapPath and a filter from SeccompFilter.
// mounts are further bwrap mount options applied over the view of agent-
// runner's sandbox (agent-runner's own state made read-only, say).
func NewAgentCommand(bwrapPath string, filter []byte, argv []string, mounts ...string) (*AgentCommand, error) {
	f, err := memFile("agentbot-agent-seccomp", filter)
	if err != nil {
		return nil, err
	}
	args := []string{
		"--unshare-user", "--disable-userns",
		"--uid", strconv.Itoa(SandboxUID), "--gid", strconv.Itoa(SandboxGID),
		"--unshare-pid", "--dev-bind", "/", "/", "--proc", "/proc", "--ro-bind", "/proc/sys", "/proc/sys",
	}
	args = append(args, mounts...)
	args = append(args, "--new-session", "--die-with-parent", "--cap-drop", "ALL", "--seccomp", "3", "--")
	return &AgentCommand{Path: bwrapPath, Args: append(args, argv...), Seccomp: f}, nil
}
