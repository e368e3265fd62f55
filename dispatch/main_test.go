package dispatch

import (
	"fmt"
	"os"
	"testing"

	"github.com/agentbot/agentbot/internal/scriptedagent"
)

// Binaries built once for the package's tests: the real agent-runner and the
// scripted agent it runs.
var (
	agentRunnerBin   string
	scriptedAgentBin string
)

func TestMain(m *testing.M) {
	os.Exit(testMain(m))
}

func testMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "dispatch-test-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	if agentRunnerBin, err = scriptedagent.BuildAgentRunnerTo(dir); err != nil {
		fmt.Fprintln(os.Stderr, "build agent-runner:", err)
		return 1
	}
	if scriptedAgentBin, err = scriptedagent.BuildTo(dir); err != nil {
		fmt.Fprintln(os.Stderr, "build scripted agent:", err)
		return 1
	}
	return m.Run()
}
