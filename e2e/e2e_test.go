package e2e

import (
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/agentbot/agentbot"
	"github.com/agentbot/agentbot/github/githubtest"
	"github.com/agentbot/agentbot/internal/testtool"
	"github.com/agentbot/agentbot/runner"
	"github.com/agentbot/agentbot/web"
)

// TestIssueBecomesDraftPR is the product's main path and its neighbours,
// on one running agentbot: a labelled issue becomes a draft PR; /agent on
// that PR makes a follow-up commit on the same branch; a reader is refused
// and a bot ignored; cancel stops a long-running agent; an agent that
// touches .github/workflows is refused at push time.
func TestIssueBecomesDraftPR(t *testing.T) {
	w := newWorld(t)
	b := w.start()

	// 1. Label an issue.
	b.deliver("issues", w.issue(1, "Add a changelog", "scripted: write CHANGELOG.md # Changelog; summary Added CHANGELOG.md"))
	task := b.taskFor(1, agentbot.KindNew)
	page := b.waitDone(task.ID, 60*time.Second)
	if page.Task.State != agentbot.StateSucceeded {
		t.Fatalf("task ended %s: %+v", page.Task.State, page.Result)
	}
	branch := page.Result.Branch
	if !strings.HasPrefix(branch, "agentbot/issue-1-") {
		t.Fatalf("branch %q", branch)
	}
	if got, err := w.git.Show(repo.Owner, repo.Name, branch, "CHANGELOG.md"); err != nil || got != "# Changelog\n" {
		t.Fatalf("CHANGELOG.md on %s = %q, %v", branch, got, err)
	}
	prs := w.gh.PullRequests(repo)
	if len(prs) != 1 || !prs[0].Draft || prs[0].Head != branch || prs[0].Base != "main" || !strings.Contains(prs[0].Body, "Fixes #1") {
		t.Fatalf("pull requests: %+v", prs)
	}
	if r := w.gh.Reactions(ref(1)); len(r) != 1 || r[0].Content != "eyes" || r[0].CommentID != 0 {
		t.Errorf("reactions on #1: %+v", r)
	}
	comments := w.gh.Comments(ref(1))
	if len(comments) != 1 {
		t.Fatalf("want exactly one progress comment on #1, got %d: %+v", len(comments), comments)
	}
	final := comments[0]
	if len(final.Edits) == 0 || !strings.Contains(final.Body, fmt.Sprintf("/pull/%d", prs[0].Number)) {
		t.Errorf("progress comment was not edited to the result:\n%s", final.Body)
	}
	if !strings.Contains(final.Body, "https://agentbot.example/tasks/"+task.ID) {
		t.Errorf("comment does not link the task page:\n%s", final.Body)
	}
	runs := w.gh.CheckRuns(repo)
	if len(runs) != 1 || runs[0].Status != "completed" || runs[0].Conclusion != "success" || runs[0].HeadSHA != page.Result.Commit {
		t.Fatalf("check runs: %+v", runs)
	}
	if len(page.Timeline) < 4 {
		t.Errorf("task page timeline: %+v", page.Timeline)
	}
	checkRelayTokenRevoked(t, w, page)

	// 2. /agent on the PR: a follow-up commit on the same branch.
	first := w.git.RevParse(repo.Owner, repo.Name, branch)
	b.deliver("issue_comment", comment(prs[0].Number, true, "/agent also mention the date\nscripted: append CHANGELOG.md - 2026", "alice"))
	fu := b.taskFor(prs[0].Number, agentbot.KindFollowUp)
	fpage := b.waitDone(fu.ID, 60*time.Second)
	if fpage.Task.State != agentbot.StateSucceeded {
		t.Fatalf("follow-up ended %s: %+v", fpage.Task.State, fpage.Result)
	}
	if got, _ := w.git.Show(repo.Owner, repo.Name, branch, "CHANGELOG.md"); got != "# Changelog\n- 2026\n" {
		t.Errorf("after the follow-up CHANGELOG.md = %q", got)
	}
	if parent := w.git.RevParse(repo.Owner, repo.Name, branch+"^"); parent != first {
		t.Errorf("follow-up commit's parent is %s, want %s", parent, first)
	}
	if n := len(w.gh.PullRequests(repo)); n != 1 {
		t.Errorf("%d pull requests after the follow-up", n)
	}

	// 3. A reader is refused; nothing runs.
	w.gh.AddIssue(repo, 3, "Please do it", "scripted: write x.txt x", "mallory")
	b.deliver("issue_comment", comment(3, false, "/agent please", "mallory"))
	refused := b.taskFor(3, agentbot.KindNew)
	rpage := b.waitDone(refused.ID, 30*time.Second)
	if rpage.Task.State != agentbot.StateFailed || rpage.Attempt != 0 {
		t.Errorf("refused task: %+v attempt %d", rpage.Task, rpage.Attempt)
	}
	eventually(t, 10*time.Second, "a refusal comment on #3", func() bool {
		c := w.gh.Comments(ref(3))
		return len(c) == 1 && strings.Contains(c[0].Body, "@mallory") && strings.Contains(c[0].Body, "read")
	})

	// 4. A bot is ignored: no task, no comment.
	// agentbot answers 204 only for what it stored nothing for, and it
	// stores before answering, so the count right after is final.
	before := len(b.tasks())
	w.gh.AddIssue(repo, 4, "Bump deps", "", "dependabot[bot]")
	if st := b.deliver("issue_comment", comment(4, false, "/agent bump everything", "dependabot[bot]")); st != http.StatusNoContent {
		t.Errorf("a bot's comment answered %d, want 204 (ignored)", st)
	}
	if n := len(b.tasks()); n != before {
		t.Errorf("a bot's comment made a task")
	}
	if c := w.gh.Comments(ref(4)); len(c) != 0 {
		t.Errorf("a bot got an answer: %+v", c)
	}

	// 5. Cancel stops a long-running agent.
	b.deliver("issues", w.issue(5, "Think hard", "scripted: stdout thinking; sleep 120; write never.txt x"))
	long := b.taskFor(5, agentbot.KindNew)
	eventually(t, 30*time.Second, "the long task's agent phase", func() bool { return b.task(long.ID).Task.Phase == "agent" })
	b.deliver("issue_comment", comment(5, false, "/agent cancel", "alice"))
	cpage := b.waitDone(long.ID, 30*time.Second)
	if cpage.Task.State != agentbot.StateCancelled || !strings.Contains(cpage.Result.Error, "@alice") {
		t.Errorf("cancelled task: %s %+v", cpage.Task.State, cpage.Result)
	}
	eventually(t, 10*time.Second, "the cancelled comment", func() bool {
		c := w.gh.Comments(ref(5))
		return len(c) >= 1 && strings.Contains(strings.ToLower(c[0].Body), "cancel")
	})
	for _, br := range w.git.Branches(repo.Owner, repo.Name) {
		if strings.HasPrefix(br, "agentbot/issue-5") {
			t.Errorf("the cancelled task pushed %s", br)
		}
	}

	// 6. Workflow edits are refused at push time.
	b.deliver("issues", w.issue(6, "Speed up CI", "scripted: write .github/workflows/ci.yml on: push"))
	wf := b.taskFor(6, agentbot.KindNew)
	wpage := b.waitDone(wf.ID, 60*time.Second)
	if wpage.Task.State != agentbot.StateFailed || wpage.Result.FailedPhase != "pushing" || !strings.Contains(wpage.Result.Error, ".github/workflows") {
		t.Errorf("workflow task: %s %+v", wpage.Task.State, wpage.Result)
	}
	for _, br := range w.git.Branches(repo.Owner, repo.Name) {
		if strings.HasPrefix(br, "agentbot/issue-6") {
			t.Errorf("the workflow edit was pushed to %s", br)
		}
	}
	c := w.gh.Comments(ref(6))
	if len(c) != 1 || !strings.Contains(c[0].Body, "pushing") {
		t.Errorf("the workflow refusal does not say where it failed: %+v", c)
	}

	// No secret reached a comment, a page or the log.
	for _, tok := range w.gh.Tokens() {
		for _, n := range []int{1, 3, 5, 6, prs[0].Number} {
			for _, cm := range w.gh.Comments(ref(n)) {
				if strings.Contains(cm.Body, tok.Value) {
					t.Errorf("token in a comment on #%d", n)
				}
			}
		}
		if strings.Contains(b.log(), tok.Value) {
			t.Errorf("token in agentbot's log")
		}
	}
}

// TestCrashRecovery kills agentbot with SIGKILL while an agent runs: after
// a restart the task is re-queued once (its comment says so), finishes, and
// exactly one PR exists.
func TestCrashRecovery(t *testing.T) {
	w := newWorld(t)
	b := w.start()
	b.deliver("issues", w.issue(7, "Slow change", "scripted: stdout starting; sleep 3; write slow.txt done; summary Added slow.txt"))
	task := b.taskFor(7, agentbot.KindNew)
	eventually(t, 30*time.Second, "the agent phase", func() bool { return b.task(task.ID).Task.Phase == "agent" })
	b.kill()

	b2 := w.start()
	page := b2.waitDone(task.ID, 60*time.Second)
	if page.Task.State != agentbot.StateSucceeded || page.Requeues != 1 || page.Attempt != 2 {
		t.Fatalf("after restart: %s requeues=%d attempt=%d %+v", page.Task.State, page.Requeues, page.Attempt, page.Result)
	}
	if prs := w.gh.PullRequests(repo); len(prs) != 1 {
		t.Fatalf("%d pull requests, want exactly 1", len(prs))
	}
	comments := w.gh.Comments(ref(7))
	if len(comments) != 1 {
		t.Fatalf("%d comments on #7, want one progress comment", len(comments))
	}
	var said bool
	for _, body := range append(comments[0].Edits, comments[0].Body) {
		if strings.Contains(body, "re-queued") {
			said = true
		}
	}
	if !said {
		t.Errorf("no edit of the comment said the task was re-queued")
	}
	if got, _ := w.git.Show(repo.Owner, repo.Name, page.Result.Branch, "slow.txt"); got != "done\n" {
		t.Errorf("slow.txt = %q", got)
	}
}

// TestConcurrency labels 20 issues at once with an agent that sleeps 2 s:
// never more than AGENTBOT_MAX_CONCURRENT run at once, all finish, and each
// issue has exactly one PR.
func TestConcurrency(t *testing.T) {
	const n, max = 20, 5
	w := newWorld(t)
	b := w.start(fmt.Sprintf("AGENTBOT_MAX_CONCURRENT=%d", max))
	for i := 0; i < n; i++ {
		num := 100 + i
		w.gh.AddIssue(repo, num, fmt.Sprintf("Parallel %d", i), "", "alice")
	}
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		go func(i int) {
			defer func() { errs <- nil }()
			num := 100 + i
			b.deliver("issues", labeled(num, fmt.Sprintf("Parallel %d", i), fmt.Sprintf("scripted: sleep 2; write out/%d.txt %d", i, i), "alice"))
		}(i)
	}
	for i := 0; i < n; i++ {
		<-errs
	}
	eventually(t, 3*time.Minute, "all 20 tasks to end", func() bool {
		done := 0
		for _, s := range b.tasks() {
			if s.State.Terminal() {
				done++
			}
		}
		return done == n
	})
	type span struct{ start, end time.Time }
	var spans []span
	for _, s := range b.tasks() {
		page := b.task(s.ID)
		if page.Task.State != agentbot.StateSucceeded {
			t.Errorf("task %s for #%d ended %s: %+v", s.ID, s.Issue, page.Task.State, page.Result)
			continue
		}
		st, en := startEnd(page.Timeline)
		spans = append(spans, span{st, en})
	}
	// The most runs in progress at any moment.
	type edge struct {
		at    time.Time
		delta int
	}
	var edges []edge
	for _, s := range spans {
		edges = append(edges, edge{s.start, 1}, edge{s.end, -1})
	}
	sort.Slice(edges, func(i, j int) bool {
		if edges[i].at.Equal(edges[j].at) {
			return edges[i].delta < edges[j].delta
		}
		return edges[i].at.Before(edges[j].at)
	})
	cur, peak := 0, 0
	for _, e := range edges {
		cur += e.delta
		if cur > peak {
			peak = cur
		}
	}
	if peak > max {
		t.Errorf("%d runs overlapped; AGENTBOT_MAX_CONCURRENT=%d", peak, max)
	}
	if peak < 2 {
		t.Errorf("runs never overlapped (peak %d): the pool is not concurrent", peak)
	}
	prs := w.gh.PullRequests(repo)
	heads := map[string]int{}
	for _, pr := range prs {
		heads[pr.Head]++
	}
	if len(prs) != n || len(heads) != n {
		t.Errorf("%d pull requests on %d branches, want %d each", len(prs), len(heads), n)
	}
	// All on one repository at once: every task cloned from its mirror,
	// none fell back to a plain clone.
	if strings.Contains(b.log(), "no repository mirror for this run") {
		t.Error("a task ran without the repository mirror")
	}
	for _, s := range b.tasks() {
		for _, ev := range b.task(s.ID).Log {
			if strings.Contains(ev.Message, "mirror is not usable") {
				t.Errorf("task %s: %s", s.ID, ev.Message)
			}
		}
	}
	if m, _ := filepath.Glob(filepath.Join(w.dataDir, "mirrors", "*", "*", "*.git")); len(m) != 1 {
		t.Errorf("mirrors = %v, want the one repository's", m)
	}
	t.Logf("peak concurrency %d of %d", peak, max)
}

// startEnd is when a run held its worker: from its first phase to the
// task's end.
func startEnd(tl []web.Phase) (time.Time, time.Time) {
	if len(tl) == 0 {
		return time.Time{}, time.Time{}
	}
	last := tl[len(tl)-1]
	end := last.Started.Add(time.Duration(last.Seconds * float64(time.Second)))
	return tl[0].Started, end
}

// TestBubblewrapConfinesAgent runs the same escaping agent without and with
// bubblewrap: without, it can write outside its workspace (so the probe is
// real); with, it cannot.
func TestBubblewrapConfinesAgent(t *testing.T) {
	if _, err := lookBwrap(); err != nil {
		testtool.Missing(t, "AGENTBOT_REQUIRE_BWRAP", "bubblewrap is not available, so isolation cannot be tested here: "+err.Error())
	}
	cases := []struct {
		isolation   string
		wantEscaped bool
	}{
		{"none", true},
		{"bwrap", false},
	}
	for i, tc := range cases {
		t.Run(tc.isolation, func(t *testing.T) {
			w := newWorld(t)
			b := w.start("AGENTBOT_LOCAL_ISOLATION=" + tc.isolation)
			// One target under /tmp (private inside the sandbox) and one
			// under $HOME (read-only inside the sandbox).
			home, err := os.UserHomeDir()
			must(t, err)
			targets := []string{
				filepath.Join(t.TempDir(), "escaped.txt"),
				filepath.Join(home, fmt.Sprintf(".agentbot-e2e-escape-%d", time.Now().UnixNano())),
			}
			t.Cleanup(func() { os.Remove(targets[1]) })
			num := 200 + i
			b.deliver("issues", w.issue(num, "Escape", "scripted: write "+targets[0]+" pwned; write "+targets[1]+" pwned; write inside.txt ok"))
			task := b.taskFor(num, agentbot.KindNew)
			page := b.waitDone(task.ID, 60*time.Second)
			for _, p := range targets {
				_, err := os.Stat(p)
				if escaped := err == nil; escaped != tc.wantEscaped {
					t.Errorf("isolation %s: %s written on the host: %v (task %s %+v)", tc.isolation, p, escaped, page.Task.State, page.Result)
				}
			}
			if !tc.wantEscaped && page.Task.State == agentbot.StateSucceeded {
				// Writing into the read-only home failed, so the agent did.
				t.Errorf("the escaping agent succeeded under bwrap")
			}
		})
	}
}

func lookBwrap() (string, error) { return exec.LookPath("bwrap") }

// checkRelayTokenRevoked: the sandbox cloned through the git relay (the
// task page's egress table has the relay's fetches), and the one read token
// that fetched from the git server — the relay's, as the sandbox holds
// none — was revoked by the time the task was reported, by a DELETE
// /installation/token that came with that token (the fake marks the token
// it was authenticated with).
func checkRelayTokenRevoked(t *testing.T, w *world, page web.TaskPage) {
	t.Helper()
	var relayed bool
	for _, r := range page.Egress {
		relayed = relayed || (r.Kind == runner.EgressGit && r.Allowed && r.BytesIn > 0)
	}
	if !relayed {
		t.Errorf("the task page shows no fetch through the git relay: %+v", page.Egress)
	}
	var readers []githubtest.Token
	for _, tok := range w.gh.Tokens() {
		if tok.GitReads > 0 {
			readers = append(readers, tok)
		}
	}
	if len(readers) != 1 {
		t.Fatalf("%d tokens fetched from the git server, want the relay's one", len(readers))
	}
	tok := readers[0]
	if tok.Permissions["contents"] != "read" || len(tok.Repos) != 1 || tok.Repos[0] != repo.FullName() {
		t.Errorf("the relay's token is not read-only for %s alone: %v %v", repo.FullName(), tok.Permissions, tok.Repos)
	}
	if !tok.Revoked {
		t.Errorf("the relay's read token is still live after the task ended (%d fetches with it)", tok.GitReads)
	}
}

// TestRelayRenewsTheReadToken: a task that outlives its read token still
// fetches through the git relay, which mints a new read token when the one
// it holds is about to expire; every token it used is revoked when the
// task ends. Tokens live 3 s here (an hour on GitHub) and the agent
// fetches 4 s into its run, after the first token expired.
func TestRelayRenewsTheReadToken(t *testing.T) {
	w := newWorld(t)
	w.gh.SetTokenLifetime(3 * time.Second)
	b := w.start()
	b.deliver("issues", w.issue(1, "Fetch late", "scripted: sleep 4; git fetch -q origin; write late.txt fetched"))
	task := b.taskFor(1, agentbot.KindNew)
	page := b.waitDone(task.ID, 60*time.Second)
	if page.Task.State != agentbot.StateSucceeded {
		t.Fatalf("task ended %s (%s): the fetch after the first token expired failed?", page.Task.State, page.Result.Error)
	}
	var readers []githubtest.Token
	for _, tok := range w.gh.Tokens() {
		if tok.GitReads > 0 {
			readers = append(readers, tok)
		}
	}
	if len(readers) < 2 {
		t.Fatalf("%d tokens fetched from the git server; want the relay to have renewed its token", len(readers))
	}
	for _, tok := range readers {
		if tok.Permissions["contents"] != "read" || len(tok.Repos) != 1 || tok.Repos[0] != repo.FullName() {
			t.Errorf("a relay token is not read-only for %s alone: %v %v", repo.FullName(), tok.Permissions, tok.Repos)
		}
		if !tok.Revoked && time.Until(tok.ExpiresAt) > 0 {
			t.Errorf("a relay token is still live after the task ended (%d fetches with it)", tok.GitReads)
		}
	}
}
