package github

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/agentbot/agentbot"
	"github.com/agentbot/agentbot/github/githubtest"
)

func TestCheckRunLifecycle(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	v := ProgressView{TaskID: "t-1", State: agentbot.StateQueued, TaskURL: "https://bot.example/tasks/t-1"}
	run := RenderCheckRun(v)
	run.HeadSHA = h.base
	id, err := h.client.CreateCheckRun(ctx, instID, h.repo, run)
	if err != nil {
		t.Fatalf("CreateCheckRun: %v", err)
	}

	steps := []struct {
		name           string
		view           ProgressView
		wantStatus     string
		wantConclusion string
		wantActions    string
		wantText       string
	}{
		{"running", ProgressView{State: agentbot.StateRunning, Phase: "agent", Elapsed: 90 * time.Second, LogTail: []string{"editing main.go"}},
			"in_progress", "", "cancel", "editing main.go"},
		{"failed", ProgressView{State: agentbot.StateFailed, FailedPhase: "test", Error: "tests failed", LogTail: []string{"FAIL x"}},
			"completed", "failure", "retry", "FAIL x"},
		{"retried and succeeded", ProgressView{State: agentbot.StateSucceeded, Summary: "Fixed it.", PRURL: "https://github.test/acme/widgets/pull/2"},
			"completed", "success", "", ""},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			st.view.TaskID, st.view.TaskURL = "t-1", "https://bot.example/tasks/t-1"
			if err := h.client.UpdateCheckRun(ctx, instID, h.repo, id, RenderCheckRun(st.view)); err != nil {
				t.Fatalf("UpdateCheckRun: %v", err)
			}
			runs := h.gh.CheckRuns(h.repo)
			if len(runs) != 1 {
				t.Fatalf("%d check runs", len(runs))
			}
			got := runs[0]
			var ids []string
			for _, a := range got.Actions {
				ids = append(ids, a.Identifier)
			}
			if got.Name != "agentbot" || got.HeadSHA != h.base || got.Status != st.wantStatus || got.Conclusion != st.wantConclusion ||
				strings.Join(ids, ",") != st.wantActions || !strings.Contains(got.Text, st.wantText) ||
				got.ExternalID != "t-1" || got.DetailsURL != "https://bot.example/tasks/t-1" {
				t.Fatalf("check run = %+v", got)
			}
		})
	}
}

func TestCheckRunRefusals(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	tests := []struct {
		name      string
		run       CheckRun
		wantCalls int
	}{
		{"no head", CheckRun{Status: "queued"}, 0},
		{"unknown commit", CheckRun{HeadSHA: strings.Repeat("a", 40), Status: "queued"}, 1},
		{"completed without conclusion", CheckRun{HeadSHA: h.base, Status: "completed"}, 0},
		{"conclusion while running", CheckRun{HeadSHA: h.base, Status: "in_progress", Conclusion: "success"}, 0},
		{"too many buttons", CheckRun{HeadSHA: h.base, Actions: []CheckAction{CancelAction(), RetryAction(), CancelAction(), RetryAction()}}, 0},
		{"label too long", CheckRun{HeadSHA: h.base, Actions: []CheckAction{{Label: "a very long label indeed", Description: "x", Identifier: "x"}}}, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := len(h.gh.CallsTo("POST", "/repos/acme/widgets/check-runs"))
			if _, err := h.client.CreateCheckRun(ctx, instID, h.repo, tc.run); err == nil {
				t.Fatal("CreateCheckRun succeeded")
			}
			if n := len(h.gh.CallsTo("POST", "/repos/acme/widgets/check-runs")) - before; n != tc.wantCalls {
				t.Fatalf("%d calls, want %d", n, tc.wantCalls)
			}
		})
	}
	if n := len(h.gh.CheckRuns(h.repo)); n != 0 {
		t.Fatalf("%d check runs created", n)
	}
}

func TestOpenPullRequestIsIdempotent(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	h.gh.SetPermission(h.repo, "alice", "write")
	h.gh.CommitFile(h.repo, "agentbot/issue-4-x", "x.txt", "x\n")
	opts := PROptions{
		Head: "agentbot/issue-4-x", Base: "main", Title: "Make x",
		Body: PullRequestBody(4, "Added x.", "https://bot.example/tasks/t-4"), Draft: true, Reviewer: "alice",
	}
	pr, created, err := h.client.OpenPullRequest(ctx, instID, h.repo, opts)
	if err != nil || !created {
		t.Fatalf("OpenPullRequest = %+v, %v, %v", pr, created, err)
	}
	again, created, err := h.client.OpenPullRequest(ctx, instID, h.repo, opts)
	if err != nil || created || again.Number != pr.Number {
		t.Fatalf("second OpenPullRequest = %+v, created=%v, %v", again, created, err)
	}
	prs := h.gh.PullRequests(h.repo)
	if len(prs) != 1 {
		t.Fatalf("%d pull requests", len(prs))
	}
	got := prs[0]
	if !got.Draft || got.Head != opts.Head || got.Base != "main" || !strings.HasPrefix(got.Body, "Fixes #4\n") ||
		!strings.Contains(got.Body, "Added x.") || !strings.Contains(got.Body, "https://bot.example/tasks/t-4") ||
		strings.Join(got.Reviewers, ",") != "alice" || got.Author != githubtest.BotLogin {
		t.Fatalf("pull request = %+v", got)
	}
	if pr.HeadSHA != h.git.RevParse("acme", "widgets", opts.Head) || pr.HTMLURL == "" || !pr.Draft {
		t.Fatalf("PRInfo = %+v", pr)
	}
}

func TestOpenPullRequestRefusals(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	h.gh.CommitFile(h.repo, "agentbot/issue-6", "x.txt", "x\n")
	tests := []struct {
		name    string
		opts    PROptions
		created bool
	}{
		{"branch does not exist", PROptions{Head: "agentbot/missing", Base: "main", Title: "t"}, false},
		{"no commits between", PROptions{Head: "main", Base: "main", Title: "t"}, false},
		{"reviewer is no collaborator: PR still opens", PROptions{Head: "agentbot/issue-6", Base: "main", Title: "t", Reviewer: "stranger"}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, created, err := h.client.OpenPullRequest(ctx, instID, h.repo, tc.opts)
			if created != tc.created {
				t.Fatalf("created = %v, err = %v", created, err)
			}
			if !tc.created && !errorsIsValidation(err) {
				t.Fatalf("err = %v, want ErrValidation", err)
			}
		})
	}
	if n := len(h.gh.PullRequests(h.repo)); n != 1 {
		t.Fatalf("%d pull requests", n)
	}
	if !strings.Contains(h.logs.String(), "review request failed") {
		t.Fatal("a failed review request is not logged")
	}
}

func errorsIsValidation(err error) bool {
	return err != nil && strings.Contains(err.Error(), "422") && IsValidation(err)
}
