package dispatch

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/agentbot/agentbot"
	"github.com/agentbot/agentbot/github"
	"github.com/agentbot/agentbot/github/githubtest"
)

// checkRunOn is the check run on commit sha, failing the test unless there
// is exactly one.
func (h *harness) checkRunOn(sha string) githubtest.CheckRun {
	h.t.Helper()
	var found []githubtest.CheckRun
	for _, r := range h.gh.CheckRuns(testRepo) {
		if r.HeadSHA == sha {
			found = append(found, r)
		}
	}
	if len(found) != 1 {
		h.t.Fatalf("check runs on %s: %+v (all: %+v)", sha, found, h.gh.CheckRuns(testRepo))
	}
	return found[0]
}

// A follow-up's result is on the commit it pushed, so the pull request's
// latest commit shows agentbot's check; the run left on the old head says
// it was superseded.
func TestFollowUpCheckRunMovesToThePushedCommit(t *testing.T) {
	h := newHarness(t)
	h.start()
	first := h.waitState(h.enqueue(h.issue(1, "Add a greeting", "scripted: write greeting.txt hello")).ID, agentbot.StateSucceeded)
	prRef := agentbot.IssueRef{Repo: testRepo, Number: first.Result.PRNumber}
	fu := h.enqueue(agentbot.Trigger{Kind: agentbot.KindFollowUp, Issue: prRef, IsPullRequest: true,
		Prompt: agentbot.Prompt{Instructions: "scripted: append greeting.txt again"}})
	done := h.waitState(fu.ID, agentbot.StateSucceeded)
	if done.Result.Commit == first.Result.Commit {
		t.Fatalf("follow-up pushed nothing: %+v", done.Result)
	}
	final := h.checkRunOn(done.Result.Commit)
	if final.ID != done.CheckRunID || final.Conclusion != "success" || done.CheckRunHead != done.Result.Commit {
		t.Errorf("the pushed commit's check run %+v; task's %d on %s", final, done.CheckRunID, done.CheckRunHead)
	}
	var old *githubtest.CheckRun
	for _, r := range h.gh.CheckRuns(testRepo) {
		if r.HeadSHA == first.Result.Commit && r.ID != first.CheckRunID {
			old = &r
		}
	}
	if old == nil || old.Status != "completed" || old.Conclusion != "neutral" || !strings.Contains(old.Summary, done.Result.Commit) || len(old.Actions) != 0 {
		t.Errorf("the follow-up's check run on the old head: %+v", old)
	}
}

// A new task that fails still gets a check run (on the commit it started
// from, neutral there, since that commit is not its work); one that would
// fail the same way again suggests no retry.
func TestProtectedPathFailureHasACheckRunAndNoRetry(t *testing.T) {
	h := newHarness(t)
	h.gh.SetFile(testRepo, github.SettingsPath, "agent: command\nprotected_paths: ['docs/**']\n")
	base := h.git.RevParse("octo", "demo", "main")
	h.start()
	// The repository's list adds to the default: workflows stay protected.
	done := h.waitState(h.enqueue(h.issue(5, "Touch CI", "scripted: write .github/workflows/ci.yml on: push")).ID, agentbot.StateFailed)
	if !strings.Contains(done.Result.Error, ".github/workflows") || !done.Result.Permanent {
		t.Fatalf("result %+v", done.Result)
	}
	body := h.comment(done).Body
	if strings.Contains(body, "/agent retry") || !strings.Contains(body, "protected") {
		t.Errorf("final comment:\n%s", body)
	}
	cr := h.checkRunOn(base)
	if cr.Status != "completed" || cr.Conclusion != "neutral" || !strings.Contains(cr.Title, "Failed") || hasAction(cr, "retry") {
		t.Errorf("check run %+v", cr)
	}
	// And the repository's own addition holds too.
	docs := h.waitState(h.enqueue(h.issue(6, "Touch docs", "scripted: write docs/a.md hi")).ID, agentbot.StateFailed)
	if !strings.Contains(docs.Result.Error, "docs/a.md") {
		t.Errorf("docs edit: %+v", docs.Result)
	}
}

// The operator's protected paths are a floor: a repository that lists
// other paths cannot lower it.
func TestOperatorProtectedPathsAreAFloor(t *testing.T) {
	h := newHarness(t)
	h.store.Close()
	h.tweak = func(o *Options) { o.ProtectedPaths = []string{"secrets/**"} }
	h.open()
	h.gh.SetFile(testRepo, github.SettingsPath, "agent: command\nprotected_paths: ['docs/**']\n")
	h.start()
	done := h.waitState(h.enqueue(h.issue(7, "Leak", "scripted: write secrets/key.pem x")).ID, agentbot.StateFailed)
	if done.Result.FailedPhase != "pushing" || !strings.Contains(done.Result.Error, "secrets/key.pem") {
		t.Fatalf("result %+v", done.Result)
	}
}

// `/agent` on a person's pull request is answered, and nothing of
// agentbot's is left on their pull request's checks.
func TestFollowUpOnAPersonsPullRequestOnlyReplies(t *testing.T) {
	h := newHarness(t)
	head := h.gh.CommitFile(testRepo, "feature/mine", "mine.txt", "mine")
	pr := h.gh.AddPullRequest(testRepo, "feature/mine", "main", "My change", "by hand", "bob")
	h.start()
	task := h.enqueue(agentbot.Trigger{Kind: agentbot.KindFollowUp, Issue: agentbot.IssueRef{Repo: testRepo, Number: pr},
		IsPullRequest: true, CommentID: 4242, Prompt: agentbot.Prompt{Instructions: "fix it"}})
	done := h.waitState(task.ID, agentbot.StateFailed)
	if runs := h.gh.CheckRuns(testRepo); len(runs) != 0 {
		t.Errorf("check runs on %s: %+v", head, runs)
	}
	comments := h.commentsOn(pr)
	if len(comments) != 1 || !strings.Contains(comments[0].Body, "not one of agentbot's") || !strings.Contains(comments[0].Body, "@alice") {
		t.Fatalf("comments %+v (task %+v)", comments, done.Result)
	}
}

// A second trigger on an issue whose task finished says that it adds to
// the pull request already there; `/agent status` then shows each task's
// outcome, not the phase it last passed.
func TestSecondTriggerSaysItContinuesThePullRequest(t *testing.T) {
	h := newHarness(t)
	h.start()
	trig := h.issue(8, "Greeting", "scripted: write greeting.txt hello")
	first := h.waitState(h.enqueue(trig).ID, agentbot.StateSucceeded)
	trig.Label, trig.CommentID = "", 8001
	trig.Prompt.Instructions = "scripted: append greeting.txt more"
	second := h.waitState(h.enqueue(trig).ID, agentbot.StateSucceeded)
	if second.Result.PRNumber != first.Result.PRNumber {
		t.Fatalf("second task's PR %d, first's %d", second.Result.PRNumber, first.Result.PRNumber)
	}
	want := "continuing on the existing pull request #" + strconv.Itoa(first.Result.PRNumber)
	if body := h.comment(second).Body; !strings.Contains(body, want) {
		t.Errorf("second task's comment lacks %q:\n%s", want, body)
	}
	status := h.waitState(h.enqueue(agentbot.Trigger{Kind: agentbot.KindControl, Control: agentbot.ControlStatus, Issue: trig.Issue, CommentID: 8002}).ID, agentbot.StateSucceeded)
	body := h.comment(status).Body
	for _, want := range []string{first.ID, second.ID, "pull request " + first.Result.PRURL, "trigger label is `agent-task`"} {
		if !strings.Contains(body, want) {
			t.Errorf("status lacks %q:\n%s", want, body)
		}
	}
	if strings.Contains(body, "opening pull request") {
		t.Errorf("status shows a finished task's last phase:\n%s", body)
	}
}

// An agent that only prints (the command agent) shows its last lines in
// the progress comment while it runs, under the same throttle.
func TestPlainOutputShowsInTheProgressComment(t *testing.T) {
	h := newHarness(t)
	h.store.Close()
	h.tweak = func(o *Options) { o.ProgressInterval = 50 * time.Millisecond }
	h.open()
	h.start()
	task := h.enqueue(h.issue(9, "Build", "scripted: stdout compiling step one; sleep 1.5; stdout compiling step two; sleep 1.5; write out.txt ok"))
	done := h.waitState(task.ID, agentbot.StateSucceeded)
	c := h.comment(done)
	shown := false
	for _, e := range c.Edits {
		if strings.Contains(e, "agentbot: running") && strings.Contains(e, "compiling step one") {
			shown = true
		}
	}
	if !shown {
		t.Errorf("no running edit showed the agent's output; edits:\n%s", strings.Join(c.Edits, "\n----\n"))
	}
}

// The time a task took counts every attempt, not the last one only.
func TestElapsedCountsEveryAttempt(t *testing.T) {
	h := newHarness(t)
	now := time.Date(2026, 1, 2, 10, 0, 0, 0, time.UTC)
	task := &agentbot.Task{ID: "t1", State: agentbot.StateSucceeded,
		FirstStartedAt: now, StartedAt: now.Add(5 * time.Minute), FinishedAt: now.Add(5*time.Minute + 400*time.Millisecond)}
	if v := h.d.view(task, nil, ""); v.Elapsed != 5*time.Minute+400*time.Millisecond {
		t.Errorf("elapsed %s", v.Elapsed)
	}
}
