package github

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestCreatesAnsweredWithAnErrorAreNotDuplicated covers GitHub creating a
// comment, check run or pull request and then answering 502 (or the
// connection dropping): the call must find what it made and return it,
// never create a second.
func TestCreatesAnsweredWithAnErrorAreNotDuplicated(t *testing.T) {
	const marker = "<!-- agentbot task=01TASK -->"
	tests := []struct {
		name string
		// failAfter: the create is carried out, then answered with status.
		failAfter string
		// failBefore: the create is refused with status before it happens.
		failBefore string
		status     int
		times      int
		before     func(t *testing.T, h *harness)
		run        func(t *testing.T, h *harness) error
		want       func(t *testing.T, h *harness)
		wantErr    bool
	}{
		{
			name: "comment with a marker", failAfter: "/repos/acme/widgets/issues/3/comments", status: 502, times: 1,
			run: func(t *testing.T, h *harness) error {
				id, err := h.client.CreateComment(context.Background(), instID, h.ref(3), marker+"\nqueued")
				if err == nil && (id == 0 || h.gh.Comments(h.ref(3))[0].ID != id) {
					t.Fatalf("CreateComment returned id %d, not the comment it made", id)
				}
				return err
			},
			want: func(t *testing.T, h *harness) {
				if n := len(h.gh.Comments(h.ref(3))); n != 1 {
					t.Fatalf("%d comments, want 1", n)
				}
			},
		},
		{
			name: "comment with a marker, every attempt refused before acting", failBefore: "/repos/acme/widgets/issues/3/comments", status: 502, times: 2,
			run: func(t *testing.T, h *harness) error {
				_, err := h.client.CreateComment(context.Background(), instID, h.ref(3), marker+"\nqueued")
				return err
			},
			want: func(t *testing.T, h *harness) {
				if n := len(h.gh.Comments(h.ref(3))); n != 1 {
					t.Fatalf("%d comments, want 1 (retried after finding none)", n)
				}
			},
		},
		{
			name: "another task's comment is not taken for ours", failBefore: "/repos/acme/widgets/issues/3/comments", status: 502, times: 1,
			before: func(t *testing.T, h *harness) {
				if _, err := h.client.CreateComment(context.Background(), instID, h.ref(3), "<!-- agentbot task=01OTHER -->\nqueued"); err != nil {
					t.Fatal(err)
				}
			},
			run: func(t *testing.T, h *harness) error {
				id, err := h.client.CreateComment(context.Background(), instID, h.ref(3), marker+"\nqueued")
				if err == nil {
					if c := h.gh.Comments(h.ref(3)); c[len(c)-1].ID != id {
						t.Fatalf("CreateComment returned id %d, not the comment it made", id)
					}
				}
				return err
			},
			want: func(t *testing.T, h *harness) {
				if c := h.gh.Comments(h.ref(3)); len(c) != 2 || !strings.HasPrefix(c[1].Body, marker) {
					t.Fatalf("comments = %+v, want the other task's and ours", c)
				}
			},
		},
		{
			name: "comment without a marker is not retried", failAfter: "/repos/acme/widgets/issues/3/comments", status: 502, times: 1,
			run: func(t *testing.T, h *harness) error {
				_, err := h.client.CreateComment(context.Background(), instID, h.ref(3), "@alice agentbot did not act.")
				return err
			},
			wantErr: true,
			want: func(t *testing.T, h *harness) {
				if n := len(h.gh.Comments(h.ref(3))); n != 1 {
					t.Fatalf("%d comments, want 1", n)
				}
			},
		},
		{
			name: "check run", failAfter: "/repos/acme/widgets/check-runs", status: 504, times: 1,
			run: func(t *testing.T, h *harness) error {
				id, err := h.client.CreateCheckRun(context.Background(), instID, h.repo, CheckRun{HeadSHA: h.base, Status: "queued", ExternalID: "01TASK"})
				if err == nil && (id == 0 || h.gh.CheckRuns(h.repo)[0].ID != id) {
					t.Fatalf("CreateCheckRun returned id %d, not the run it made", id)
				}
				return err
			},
			want: func(t *testing.T, h *harness) {
				if n := len(h.gh.CheckRuns(h.repo)); n != 1 {
					t.Fatalf("%d check runs, want 1", n)
				}
			},
		},
		{
			name: "pull request", failAfter: "/repos/acme/widgets/pulls", status: 502, times: 1,
			run: func(t *testing.T, h *harness) error {
				h.gh.CommitFile(h.repo, "agentbot/issue-3", "x.txt", "x\n")
				pr, created, err := h.client.OpenPullRequest(context.Background(), instID, h.repo, PROptions{Head: "agentbot/issue-3", Base: "main", Title: "t", Draft: true})
				if err == nil && (!created || pr.Number == 0 || pr.HeadBranch != "agentbot/issue-3") {
					t.Fatalf("OpenPullRequest = %+v, created %v", pr, created)
				}
				return err
			},
			want: func(t *testing.T, h *harness) {
				if n := len(h.gh.PullRequests(h.repo)); n != 1 {
					t.Fatalf("%d pull requests, want 1", n)
				}
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			h.gh.AddIssue(h.repo, 3, "t", "b", "alice")
			// Mint the installation token first so failures hit the create.
			if _, err := h.client.Repository(context.Background(), instID, h.repo); err != nil {
				t.Fatal(err)
			}
			if tc.before != nil {
				tc.before(t, h)
			}
			if tc.failAfter != "" {
				h.gh.FailAfter("POST", tc.failAfter, tc.times, tc.status)
			}
			if tc.failBefore != "" {
				h.gh.FailNext("POST", tc.failBefore, tc.times, tc.status, nil)
			}
			err := tc.run(t, h)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, want error: %v", err, tc.wantErr)
			}
			h.logErr(err)
			tc.want(t, h)
		})
	}
}

// dropAfter carries out the first n POSTs and then loses their answers, as
// a connection reset after the request went out would.
type dropAfter struct {
	n    int
	next http.RoundTripper
}

func (d *dropAfter) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Method != http.MethodPost || d.n == 0 || strings.HasSuffix(r.URL.Path, "/access_tokens") {
		return d.next.RoundTrip(r)
	}
	d.n--
	resp, err := d.next.RoundTrip(r)
	if err == nil {
		drain(resp)
	}
	return nil, errors.New("read: connection reset by peer")
}

func TestCreateAfterALostAnswerIsNotRepeated(t *testing.T) {
	drop := &dropAfter{next: http.DefaultTransport}
	h := newHarness(t, func(c *Config) { c.Transport = drop })
	h.gh.AddIssue(h.repo, 3, "t", "b", "alice")
	drop.n = 1
	id, err := h.client.CreateComment(context.Background(), instID, h.ref(3), CommentMarker("01TASK")+"\nqueued")
	if err != nil {
		t.Fatal(err)
	}
	if c := h.gh.Comments(h.ref(3)); len(c) != 1 || c[0].ID != id {
		t.Fatalf("comments = %+v, id %d", c, id)
	}
}

func TestCreateLostBeforeGitHubIsRetriedOnce(t *testing.T) {
	ft := &flaky{next: http.DefaultTransport}
	h := newHarness(t, func(c *Config) { c.Transport = ft })
	h.gh.AddIssue(h.repo, 3, "t", "b", "alice")
	if _, err := h.client.Repository(context.Background(), instID, h.repo); err != nil {
		t.Fatal(err)
	}
	ft.n = 1 // the create's first attempt never reaches GitHub
	id, err := h.client.CreateComment(context.Background(), instID, h.ref(3), CommentMarker("01TASK")+"\nqueued")
	if err != nil {
		t.Fatal(err)
	}
	if c := h.gh.Comments(h.ref(3)); len(c) != 1 || c[0].ID != id {
		t.Fatalf("comments = %+v, id %d", c, id)
	}
	if n := len(h.gh.CallsTo("GET", "/repos/acme/widgets/issues/3/comments")); n != 1 {
		t.Fatalf("%d look-ups, want 1 before the retry", n)
	}
	if metricValue(t, h, "agentbot_github_retries_total", map[string]string{"reason": "network"}) != 1 {
		t.Fatal("the retry is not counted as a network retry")
	}
}

// TestFindComment: a caller whose earlier create failed finds the comment
// it may have posted by its marker, and only that one.
func TestFindComment(t *testing.T) {
	h := newHarness(t)
	h.gh.AddIssue(h.repo, 3, "t", "b", "alice")
	ctx := context.Background()
	if _, err := h.client.CreateComment(ctx, instID, h.ref(3), CommentMarker("01OTHER")+"\nqueued"); err != nil {
		t.Fatal(err)
	}
	ours, err := h.client.CreateComment(ctx, instID, h.ref(3), CommentMarker("01TASK")+"\nqueued")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		marker  string
		since   time.Time
		wantID  int64
		wantErr bool
	}{
		{name: "ours among others", marker: CommentMarker("01TASK"), wantID: ours},
		{name: "recent enough", marker: CommentMarker("01TASK"), since: time.Now(), wantID: ours},
		{name: "updated before since", marker: CommentMarker("01TASK"), since: time.Now().Add(time.Hour)},
		{name: "no such task", marker: CommentMarker("01NONE")},
		{name: "not a marker", marker: "queued", wantErr: true},
		{name: "empty marker", marker: "", wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			id, found, err := h.client.FindComment(ctx, instID, h.ref(3), tc.marker, tc.since)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, want error: %v", err, tc.wantErr)
			}
			if id != tc.wantID || found != (tc.wantID != 0) {
				t.Fatalf("FindComment = %d, %v; want %d", id, found, tc.wantID)
			}
		})
	}
}
