package sandbox

import (
	"encoding/json"
	"testing"
	"time"
)

// TestAgentCannotTouchRunner runs agent-runner's part (non-dumpable, then
// the agent) inside the sandbox. A plain child of the same uid is refused
// its parent's memory and descriptors; a nested one does not even see its
// parent, and has the filter and a read-only /proc/sys.
func TestAgentCannotTouchRunner(t *testing.T) {
	bwrap := requireBwrap(t)
	requireRoot(t)
	p, _ := newTestPlan(t, true)
	self := p.Mounts[len(p.Mounts)-2].Source
	env := append(p.Env(), helperEnv+"=runner", "AGENTBOT_PROBE_BWRAP="+bwrap)
	cmd, closeFiles, err := p.BwrapCommand(BwrapOptions{Bwrap: bwrap, Argv: []string{self}, Env: env})
	if err != nil {
		t.Fatal(err)
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(runOutput(t, cmd, closeFiles, 30*time.Second), &raw); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		want map[string]string
	}{
		{"plain", map[string]string{"mem": "permission denied", "environ": "permission denied", "fd/1": "permission denied"}},
		// Two processes: the nested bwrap's init and the agent; whatever
		// the parent's pid is, that number is not agent-runner in here.
		{"nested", map[string]string{"procs": "2", "ptrace": "operation not permitted", "/proc/sys mount": "ro"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var got map[string]string
			if err := json.Unmarshal(raw[tc.name], &got); err != nil {
				t.Fatalf("%s: %q: %v", tc.name, raw[tc.name], err)
			}
			for k, w := range tc.want {
				if got[k] != w {
					t.Errorf("%s: got %q, want %q (all: %v)", k, got[k], w, got)
				}
			}
		})
	}
}
