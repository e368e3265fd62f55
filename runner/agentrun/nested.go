package agentrun

import (
	"fmt"
	"os"

	"github.com/agentbot/agentbot/runner/sandbox"
)

// nestedSandbox starts the template's init and the agent inside a sandbox
// of their own within agent-runner's (sandbox.AgentCommand): they do not
// see agent-runner's processes, cannot create namespaces or trace, and see
// agent-runner's state directory read-only, so the events file the
// launcher may replay and the bundle are agent-runner's alone. Only the
// summary file there stays writable: a command agent leaves its summary in
// it.
type nestedSandbox struct {
	bwrap  string
	filter []byte
	state  string // agent-runner's state directory
	writes []string
}

func newNestedSandbox(bwrap string, ws Workspace) (*nestedSandbox, error) {
	filter, err := sandbox.SeccompFilter(sandbox.FilterOptions{})
	if err != nil {
		return nil, err
	}
	return &nestedSandbox{bwrap: bwrap, filter: filter, state: ws.StateDir(), writes: []string{ws.SummaryFile()}}, nil
}

// wrap returns the command that runs argv in the nested sandbox. The
// writable files must exist to be bound: they are created empty.
func (n *nestedSandbox) wrap(argv []string) (*sandbox.AgentCommand, error) {
	binds := []string{"--ro-bind", n.state, n.state}
	for _, w := range n.writes {
		f, err := os.OpenFile(w, os.O_CREATE|os.O_WRONLY, 0o644)
		if err != nil {
			return nil, fmt.Errorf("agentrun: nested sandbox: %w", err)
		}
		f.Close()
		binds = append(binds, "--bind", w, w)
	}
	return sandbox.NewAgentCommand(n.bwrap, n.filter, argv, binds...)
}
