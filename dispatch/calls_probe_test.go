package dispatch

import (
	"testing"

	"github.com/agentbot/agentbot"
)

func TestProbeCalls(t *testing.T) {
	h := newHarness(t)
	h.start()
	task := h.enqueue(h.issue(1, "Add a greeting", "scripted: write greeting.txt hello; summary Added greeting.txt"))
	h.waitState(task.ID, agentbot.StateSucceeded)
	for i, c := range h.gh.Calls() {
		t.Logf("%2d %s", i+1, c)
	}
}
