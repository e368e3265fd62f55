package dispatch

import (
	"strings"
	"testing"

	"github.com/agentbot/agentbot"
	"github.com/agentbot/agentbot/github"
	"github.com/agentbot/agentbot/runner"
)

// Assigning the repository's machine user starts a task; assigning anyone
// else is ignored without a word; unassigning it cancels, saying so.
func TestAssignmentStartsAndUnassignmentCancels(t *testing.T) {
	h := newHarness(t)
	h.gh.SetFile(testRepo, github.SettingsPath, "agent: command\nassignee: robo-user\n")
	h.start()
	h.gh.AddIssue(testRepo, 20, "Slow", "scripted: sleep 30; write slow.txt x", "alice")
	ref := agentbot.IssueRef{Repo: testRepo, Number: 20}
	other := h.enqueue(agentbot.Trigger{Kind: agentbot.KindNew, Issue: ref, Assignee: "carol",
		Prompt: agentbot.Prompt{Title: "Slow", Body: "scripted: sleep 30; write slow.txt x"}})
	if got := h.waitState(other.ID, agentbot.StateCancelled); len(h.commentsOn(20)) != 0 || got.Reported != true {
		t.Fatalf("assignment to carol: %+v, comments %+v", got, h.commentsOn(20))
	}
	task := h.enqueue(agentbot.Trigger{Kind: agentbot.KindNew, Issue: ref, Assignee: "Robo-User",
		Prompt: agentbot.Prompt{Title: "Slow", Body: "scripted: sleep 30; write slow.txt x"}})
	h.wait(task.ID, "in the agent phase", func(t *agentbot.Task) bool { return t.Phase == runner.PhaseAgent })
	if r := h.gh.Reactions(ref); len(r) != 1 || r[0].Content != "eyes" || r[0].CommentID != 0 {
		t.Errorf("reactions %+v", r)
	}
	h.enqueue(agentbot.Trigger{Kind: agentbot.KindControl, Control: agentbot.ControlCancel, Issue: ref, Assignee: "robo-user"})
	done := h.waitState(task.ID, agentbot.StateCancelled)
	body := h.comment(done).Body
	if !strings.Contains(body, "cancelled") || !strings.Contains(body, "unassigned `robo-user`") {
		t.Errorf("cancelled task's comment:\n%s", body)
	}
	if n := len(h.commentsOn(20)); n != 1 {
		t.Errorf("%d comments, want the task's one", n)
	}
}

// Removing the trigger label cancels a running task, saying so; removing
// it when nothing runs says nothing.
func TestUnlabelCancels(t *testing.T) {
	h := newHarness(t)
	h.start()
	quiet := h.waitState(h.enqueue(agentbot.Trigger{Kind: agentbot.KindControl, Control: agentbot.ControlCancel,
		Issue: agentbot.IssueRef{Repo: testRepo, Number: 21}, Label: "agent-task"}).ID, agentbot.StateFailed)
	if quiet.CommentID != 0 || len(h.commentsOn(21)) != 0 {
		t.Errorf("unlabel with nothing running commented: %+v", h.commentsOn(21))
	}
	first, trig := h.startSlow()
	h.enqueue(agentbot.Trigger{Kind: agentbot.KindControl, Control: agentbot.ControlCancel, Issue: trig.Issue, Label: "agent-task"})
	done := h.waitState(first.ID, agentbot.StateCancelled)
	if body := h.comment(done).Body; !strings.Contains(body, "removed the label `agent-task`") {
		t.Errorf("cancelled task's comment:\n%s", body)
	}
}

// A mistyped command is answered with the command it is near, and
// nothing runs.
func TestTypoGetsDidYouMean(t *testing.T) {
	h := newHarness(t)
	h.start()
	h.gh.AddIssue(testRepo, 22, "Typo", "", "alice")
	ref := agentbot.IssueRef{Repo: testRepo, Number: 22}
	task := h.enqueue(agentbot.Trigger{Kind: agentbot.KindControl, Control: agentbot.ControlTypo, Suggestion: agentbot.ControlCancel,
		Issue: ref, CommentID: 2201, Prompt: agentbot.Prompt{Instructions: "cancle"}})
	done := h.waitState(task.ID, agentbot.StateSucceeded)
	if body := h.comment(done).Body; !strings.Contains(body, "did you mean `/agent cancel`?") || !strings.Contains(body, "`/agent cancle`") {
		t.Errorf("reply:\n%s", body)
	}
	if len(h.gh.PullRequests(testRepo)) != 0 || len(h.git.Branches("octo", "demo")) != 1 {
		t.Errorf("a typo ran something: branches %v", h.git.Branches("octo", "demo"))
	}
}
