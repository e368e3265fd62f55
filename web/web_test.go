package web

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/agentbot/agentbot"
	"github.com/agentbot/agentbot/runner"
	"github.com/agentbot/agentbot/state"
	"github.com/agentbot/agentbot/tasklog"
)

type fixture struct {
	store *state.Store
	logs  *tasklog.Store
	done  *agentbot.Task // succeeded, with a log
	live  *agentbot.Task // running
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	dir := t.TempDir()
	st, err := state.Open(filepath.Join(dir, "agentbot.db"), state.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	logs, err := tasklog.Open(filepath.Join(dir, "logs"), 0)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	mk := func(delivery string, n int, title string) *agentbot.Task {
		task := &agentbot.Task{Trigger: agentbot.Trigger{
			Kind:   agentbot.KindNew,
			Issue:  agentbot.IssueRef{Repo: agentbot.Repo{Owner: "octo", Name: "demo"}, Number: n},
			Prompt: agentbot.Prompt{Title: title},
			Sender: agentbot.Sender{Login: "alice"},
		}}
		if _, err := st.CreateTask(ctx, delivery, task); err != nil {
			t.Fatal(err)
		}
		if _, err := st.Transition(ctx, task.ID, agentbot.StateQueued, agentbot.StateRunning, func(x *agentbot.Task) error { x.Attempt = 1; x.Phase = "agent"; return nil }); err != nil {
			t.Fatal(err)
		}
		return task
	}
	f := &fixture{store: st, logs: logs}
	f.done = mk("d1", 1, "Add <b>hello</b>")
	now := time.Now()
	logs.Append(f.done.ID,
		runner.Event{Seq: 1, Time: now, Type: runner.EventPhase, Phase: "cloning"},
		runner.Event{Seq: 2, Time: now.Add(time.Second), Type: runner.EventPhase, Phase: "agent"},
		runner.Event{Seq: 3, Time: now.Add(2 * time.Second), Type: runner.EventLog, Message: "wrote <script>alert(1)</script>"},
	)
	done, err := st.Transition(ctx, f.done.ID, agentbot.StateRunning, agentbot.StateSucceeded, func(x *agentbot.Task) error {
		x.Result = agentbot.Result{PRURL: "https://github.example/octo/demo/pull/2", Branch: "agentbot/issue-1-add-hello", Summary: "Added hello"}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	f.done = done
	f.live = mk("d2", 2, "Still going")
	return f
}

// testToken is the bearer token f.server's pages take unless a test sets
// its own Auth; get sends it.
const testToken = "test-pages-token"

func (f *fixture) server(t *testing.T, opts Options) *httptest.Server {
	t.Helper()
	if !opts.Auth.Configured() {
		opts.Auth = Auth{BearerToken: testToken}
	}
	return f.serverAs(t, opts)
}

// serverAs serves opts' Auth as it is, none included.
func (f *fixture) serverAs(t *testing.T, opts Options) *httptest.Server {
	t.Helper()
	opts.Store, opts.Logs = f.store, f.logs
	if opts.Heartbeat == 0 {
		opts.Heartbeat = time.Hour // tests wake streams through the log
	}
	h, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv
}

func get(t *testing.T, url string, hdr map[string]string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	req.Header.Set("Authorization", "Bearer "+testToken)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

func TestPages(t *testing.T) {
	f := newFixture(t)
	srv := f.server(t, Options{})
	cases := []struct {
		name     string
		path     string
		accept   string
		status   int
		contains []string
		absent   []string
	}{
		{"list html", "/tasks", "text/html", 200, []string{f.done.ID, f.live.ID, "octo/demo#1", "succeeded", "running"}, nil},
		{"list json", "/tasks", "application/json", 200, []string{`"tasks"`, `"state": "succeeded"`}, nil},
		{"task html escapes", "/tasks/" + f.done.ID, "text/html", 200,
			[]string{"Add &lt;b&gt;hello&lt;/b&gt;", "agentbot/issue-1-add-hello", "https://github.example/octo/demo/pull/2", "wrote &lt;script&gt;", "cloning"},
			[]string{"<script>alert", "EventSource"}},
		{"running task streams", "/tasks/" + f.live.ID, "text/html", 200, []string{"EventSource", "(live)"}, nil},
		{"task json", "/tasks/" + f.done.ID, "application/json", 200, []string{`"timeline"`, `"name": "cloning"`, `"pr_url"`}, nil},
		{"unknown task", "/tasks/nope", "text/html", 404, nil, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := get(t, srv.URL+tc.path, map[string]string{"Accept": tc.accept})
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tc.status, body)
			}
			for _, s := range tc.contains {
				if !strings.Contains(body, s) {
					t.Errorf("body lacks %q:\n%s", s, body)
				}
			}
			for _, s := range tc.absent {
				if strings.Contains(body, s) {
					t.Errorf("body holds %q", s)
				}
			}
		})
	}
	// The JSON timeline has durations.
	_, body := get(t, srv.URL+"/tasks/"+f.done.ID, map[string]string{"Accept": "application/json"})
	var page TaskPage
	if err := json.Unmarshal([]byte(body), &page); err != nil {
		t.Fatal(err)
	}
	if len(page.Timeline) != 2 || page.Timeline[0].Seconds < 0.9 {
		t.Errorf("timeline %+v", page.Timeline)
	}
}

func TestAuth(t *testing.T) {
	f := newFixture(t)
	cases := []struct {
		name   string
		opts   Options
		hdr    map[string]string
		basic  [2]string
		status int
	}{
		{"refused without credentials configured", Options{}, nil, [2]string{}, 403},
		{"refused without credentials configured, whatever is sent", Options{}, map[string]string{"Authorization": "Bearer "}, [2]string{"", ""}, 403},
		{"bearer accepted", Options{Auth: Auth{BearerToken: "tok"}}, map[string]string{"Authorization": "Bearer tok"}, [2]string{}, 200},
		{"bearer wrong", Options{Auth: Auth{BearerToken: "tok"}}, map[string]string{"Authorization": "Bearer nope"}, [2]string{}, 401},
		{"bearer missing", Options{Auth: Auth{BearerToken: "tok"}}, nil, [2]string{}, 401},
		{"bearer is not basic", Options{Auth: Auth{BearerToken: "tok"}}, nil, [2]string{"tok", "tok"}, 401},
		{"basic accepted", Options{Auth: Auth{BasicUser: "ops", BasicPassword: "pw"}}, nil, [2]string{"ops", "pw"}, 200},
		{"basic wrong", Options{Auth: Auth{BasicUser: "ops", BasicPassword: "pw"}}, nil, [2]string{"ops", "x"}, 401},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv := f.serverAs(t, tc.opts)
			req, _ := http.NewRequest("GET", srv.URL+"/tasks", nil)
			for k, v := range tc.hdr {
				req.Header.Set(k, v)
			}
			if tc.basic[0] != "" {
				req.SetBasicAuth(tc.basic[0], tc.basic[1])
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d", resp.StatusCode, tc.status)
			}
		})
	}
}

func TestLiveLog(t *testing.T) {
	f := newFixture(t)
	srv := f.server(t, Options{})
	ctx := context.Background()

	// Polling continues from an index.
	_, body := get(t, srv.URL+"/tasks/"+f.done.ID+"/log?from=1", nil)
	var chunk LogChunk
	if err := json.Unmarshal([]byte(body), &chunk); err != nil {
		t.Fatal(err)
	}
	if len(chunk.Events) != 2 || chunk.Next != 3 || chunk.State != agentbot.StateSucceeded {
		t.Fatalf("chunk %+v", chunk)
	}

	// The stream of a running task delivers events as they are appended
	// and ends when the task does.
	req, _ := http.NewRequest(http.MethodGet, srv.URL+"/tasks/"+f.live.ID+"/events", nil)
	req.Header.Set("Authorization", "Bearer "+testToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("content type %q", ct)
	}
	lines := make(chan string, 64)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	// Every wait has a deadline: a stream that stalls fails the test
	// instead of hanging it.
	expect := func(want string) {
		t.Helper()
		deadline := time.NewTimer(10 * time.Second)
		defer deadline.Stop()
		for {
			select {
			case line, ok := <-lines:
				if !ok {
					t.Fatalf("stream ended before %q", want)
				}
				if strings.Contains(line, want) {
					return
				}
			case <-deadline.C:
				resp.Body.Close()
				t.Fatalf("no %q on the stream within 10s", want)
			}
		}
	}
	expect("event: state")
	f.logs.Append(f.live.ID, runner.Event{Seq: 1, Type: runner.EventLog, Message: "line from the agent"})
	expect("line from the agent")
	if _, err := f.store.Transition(ctx, f.live.ID, agentbot.StateRunning, agentbot.StateFailed, nil); err != nil {
		t.Fatal(err)
	}
	f.logs.Append(f.live.ID, runner.Event{Type: runner.EventLog, Stream: "agentbot", Message: "agentbot: task failed"})
	expect("event: end")
}
