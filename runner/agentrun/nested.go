package agentrun

import (
	"fmt"
	"os"
	"syscall"

	"github.com/agentbot/agentbot/runner/sandbox"
)

// nestedSandbox starts the template's init and the agent inside a sandbox
// of their own within agent-runner's: under bubblewrap a second bwrap
// (sandbox.AgentCommand), under gVisor agent-runner's own agent-init
// (sandbox.NewInitCommand) as the sandbox user. Either way they do not see
// agent-runner's processes, cannot create namespaces or trace, and see
// agent-runner's state directory read-only, so the events file the
// launcher may replay and the bundle are agent-runner's alone. Only the
// summary file there stays writable: a command agent leaves its summary in
// it.
type nestedSandbox struct {
	bwrap  string
	user   *syscall.Credential // under gVisor: who init and the agent run as
	self   string              // agent-runner's binary, for agent-init
	filter []byte
	state  string // agent-runner's state directory
	writes []string
}

func newNestedSandbox(bwrap string, user *syscall.Credential, ws Workspace) (*nestedSandbox, error) {
	filter, err := sandbox.SeccompFilter(sandbox.FilterOptions{})
	if err != nil {
		return nil, err
	}
	n := &nestedSandbox{bwrap: bwrap, user: user, filter: filter, state: ws.StateDir(), writes: []string{ws.SummaryFile()}}
	if user == nil {
		return n, nil
	}
	if n.self, err = os.Executable(); err != nil {
		return nil, fmt.Errorf("agentrun: nested sandbox: %w", err)
	}
	// Under gVisor the state is read-only to the agent by owner and mode
	// (root's, 0755), whoever made the directory.
	if err := os.Lchown(n.state, 0, 0); err != nil {
		return nil, fmt.Errorf("agentrun: nested sandbox: %w", err)
	}
	if err := os.Chmod(n.state, 0o755); err != nil {
		return nil, fmt.Errorf("agentrun: nested sandbox: %w", err)
	}
	return n, nil
}

// wrap returns the command that runs argv in the nested sandbox. The
// writable files must exist to be bound: they are created empty (and,
// under gVisor, given to the sandbox user).
func (n *nestedSandbox) wrap(argv []string) (*sandbox.AgentCommand, error) {
	binds := []string{"--ro-bind", n.state, n.state}
	for _, w := range n.writes {
		f, err := os.OpenFile(w, os.O_CREATE|os.O_WRONLY, 0o644)
		if err != nil {
			return nil, fmt.Errorf("agentrun: nested sandbox: %w", err)
		}
		if n.user != nil {
			err = f.Chown(int(n.user.Uid), int(n.user.Gid))
		}
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("agentrun: nested sandbox: %w", err)
		}
		binds = append(binds, "--bind", w, w)
	}
	if n.user != nil {
		in := sandbox.AgentInit{UID: int(n.user.Uid), GID: int(n.user.Gid), Pinned: []string{n.state}}
		return sandbox.NewInitCommand(n.self, in, n.filter, argv)
	}
	return sandbox.NewAgentCommand(n.bwrap, n.filter, argv, binds...)
}
