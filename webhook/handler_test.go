package webhook

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/agentbot/agentbot"
	"github.com/agentbot/agentbot/internal/testtool"
	"github.com/agentbot/agentbot/state"
)

var secret = []byte("It's a Secret to Everybody")

// intake is a handler over a real bbolt store behind a real HTTP server.
type intake struct {
	store    *state.Store
	srv      *httptest.Server
	reg      *prometheus.Registry
	logs     *testtool.Buffer
	mu       sync.Mutex
	enqueued []*agentbot.Task
}

func newIntake(t *testing.T, path string) *intake {
	t.Helper()
	if path == "" {
		path = filepath.Join(t.TempDir(), "agentbot.db")
	}
	in := &intake{reg: prometheus.NewRegistry(), logs: &testtool.Buffer{}}
	var err error
	in.store, err = state.Open(path, state.Options{})
	if err != nil {
		t.Fatal(err)
	}
	h, err := New(Config{
		Secret:   secret,
		Store:    in.store,
		Logger:   slog.New(slog.NewJSONHandler(in.logs, nil)),
		Registry: in.reg,
		MaxBody:  64 << 10,
		Enqueued: func(t *agentbot.Task) {
			in.mu.Lock()
			defer in.mu.Unlock()
			in.enqueued = append(in.enqueued, t)
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	in.srv = httptest.NewServer(h)
	t.Cleanup(in.close)
	return in
}

func (in *intake) close() {
	in.srv.Close()
	in.store.Close()
}

func (in *intake) tasks(t *testing.T) []*agentbot.Task {
	t.Helper()
	all, err := in.store.List(context.Background(), 0)
	if err != nil {
		t.Fatal(err)
	}
	return all
}

type testDelivery struct {
	method      string
	event       string
	id          string
	body        []byte
	signature   string // "" signs body with secret; "-" sends none
	contentType string
}

func (in *intake) send(t *testing.T, d testDelivery) (int, string) {
	t.Helper()
	if d.method == "" {
		d.method = http.MethodPost
	}
	req, err := http.NewRequest(d.method, in.srv.URL, bytes.NewReader(d.body))
	if err != nil {
		t.Fatal(err)
	}
	if d.contentType == "" {
		d.contentType = "application/json"
	}
	req.Header.Set("Content-Type", d.contentType)
	if d.event != "" {
		req.Header.Set("X-GitHub-Event", d.event)
	}
	if d.id != "" {
		req.Header.Set("X-GitHub-Delivery", d.id)
	}
	switch d.signature {
	case "":
		req.Header.Set("X-Hub-Signature-256", Signature(secret, d.body))
	case "-":
	default:
		req.Header.Set("X-Hub-Signature-256", d.signature)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func readTestdata(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestRefusalsStoreNothing(t *testing.T) {
	in := newIntake(t, "")
	labeled := readTestdata(t, "issues.labeled.json")
	tests := []struct {
		name       string
		d          testDelivery
		wantStatus int
	}{
		{"missing signature", testDelivery{event: "issues", id: "r1", body: labeled, signature: "-"}, http.StatusUnauthorized},
		{"wrong secret", testDelivery{event: "issues", id: "r2", body: labeled, signature: Signature([]byte("guess"), labeled)}, http.StatusUnauthorized},
		{"signature of another body", testDelivery{event: "issues", id: "r3", body: labeled, signature: Signature(secret, []byte("{}"))}, http.StatusUnauthorized},
		{"sha1 signature", testDelivery{event: "issues", id: "r4", body: labeled, signature: "sha1=" + strings.Repeat("0", 40)}, http.StatusUnauthorized},
		{"signature not hex", testDelivery{event: "issues", id: "r5", body: labeled, signature: "sha256=" + strings.Repeat("z", 64)}, http.StatusUnauthorized},
		{"missing event", testDelivery{id: "r6", body: labeled}, http.StatusBadRequest},
		{"missing delivery id", testDelivery{event: "issues", body: labeled}, http.StatusBadRequest},
		{"overlong delivery id", testDelivery{event: "issues", id: strings.Repeat("x", 300), body: labeled}, http.StatusBadRequest},
		{"delivery id with a space", testDelivery{event: "issues", id: "a b", body: labeled}, http.StatusBadRequest},
		{"delivery id not ASCII", testDelivery{event: "issues", id: "d\xda", body: labeled}, http.StatusBadRequest},
		{"malformed JSON", testDelivery{event: "issues", id: "r7", body: []byte(`{"action":"labeled",`)}, http.StatusBadRequest},
		{"malformed JSON, unhandled event", testDelivery{event: "push", id: "r8", body: []byte(`nope`)}, http.StatusBadRequest},
		{"oversized body", testDelivery{event: "issues", id: "r9", body: append(labeled, bytes.Repeat([]byte(" "), 64<<10)...)}, http.StatusRequestEntityTooLarge},
		{"form body without payload", testDelivery{event: "issues", id: "r10", body: []byte("x=1"), contentType: "application/x-www-form-urlencoded"}, http.StatusBadRequest},
		{"GET", testDelivery{method: http.MethodGet, event: "issues", id: "r11"}, http.StatusMethodNotAllowed},
		{"unhandled event", testDelivery{event: "pull_request", id: "r12", body: []byte(`{"action":"opened"}`)}, http.StatusNoContent},
		{"ignored comment", testDelivery{event: "issue_comment", id: "r13", body: payload(t, "issue_comment.created.issue.json", set("comment.body", "thanks"))}, http.StatusNoContent},
		{"bot comment", testDelivery{event: "issue_comment", id: "r14", body: payload(t, "issue_comment.created.issue.json", set("sender.type", "Bot"))}, http.StatusNoContent},
		{"ping", testDelivery{event: "ping", id: "r15", body: readTestdata(t, "ping.json")}, http.StatusOK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, body := in.send(t, tt.d)
			if status != tt.wantStatus {
				t.Fatalf("status %d (%q), want %d", status, body, tt.wantStatus)
			}
			if tt.d.event == "ping" && strings.TrimSpace(body) != "pong" {
				t.Errorf("ping answered %q", body)
			}
			if tt.d.id != "" && len(tt.d.id) <= state.MaxDeliveryIDLen {
				if seen, _ := in.store.SeenDelivery(context.Background(), tt.d.id); seen {
					t.Errorf("delivery %s was recorded", tt.d.id)
				}
			}
		})
	}
	if n := len(in.tasks(t)); n != 0 {
		t.Errorf("%d tasks stored by refused deliveries", n)
	}
	if len(in.enqueued) != 0 {
		t.Errorf("Enqueued called %d times", len(in.enqueued))
	}
	if strings.Contains(in.logs.String(), string(secret)) {
		t.Error("the secret appears in the logs")
	}
}

func TestDeliveriesCreateTasksOnce(t *testing.T) {
	in := newIntake(t, "")
	form := url.Values{"payload": {string(readTestdata(t, "issue_comment.created.pr.json"))}}.Encode()
	tests := []struct {
		name  string
		d     testDelivery
		check func(t *testing.T, task *agentbot.Task)
	}{
		{"label", testDelivery{event: "issues", id: "d-label", body: readTestdata(t, "issues.labeled.json")}, func(t *testing.T, task *agentbot.Task) {
			if task.Trigger.Kind != agentbot.KindNew || task.Ref().Number != 1 || task.Trigger.Label != "agent-task" || task.Event != "issues" {
				t.Errorf("task %+v", task)
			}
		}},
		{"comment on an issue", testDelivery{event: "issue_comment", id: "d-issue", body: readTestdata(t, "issue_comment.created.issue.json")}, func(t *testing.T, task *agentbot.Task) {
			if task.Trigger.Kind != agentbot.KindNew || task.Trigger.Prompt.Instructions == "" || task.Trigger.Sender.AuthorAssociation != "OWNER" {
				t.Errorf("task %+v", task)
			}
		}},
		{"comment on a PR, form-encoded", testDelivery{event: "issue_comment", id: "d-pr", body: []byte(form), contentType: "application/x-www-form-urlencoded"}, func(t *testing.T, task *agentbot.Task) {
			if task.Trigger.Kind != agentbot.KindFollowUp || !task.Trigger.IsPullRequest || task.Ref().Number != 2 {
				t.Errorf("task %+v", task)
			}
		}},
		{"check run cancel", testDelivery{event: "check_run", id: "d-cancel", body: readTestdata(t, "check_run.requested_action.json")}, func(t *testing.T, task *agentbot.Task) {
			if task.Trigger.Kind != agentbot.KindControl || task.Trigger.Control != agentbot.ControlCancel || task.Trigger.CheckRunID != 1494503112 {
				t.Errorf("task %+v", task)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, body := in.send(t, tt.d)
			if status != http.StatusAccepted {
				t.Fatalf("status %d (%q), want 202", status, body)
			}
			var resp struct {
				Outcome string `json:"outcome"`
				TaskID  string `json:"task_id"`
			}
			if err := json.Unmarshal([]byte(body), &resp); err != nil || resp.Outcome != "queued" || resp.TaskID == "" {
				t.Fatalf("202 body %q", body)
			}
			// The 202 came after the commit: the task is readable now.
			task, err := in.store.Get(context.Background(), resp.TaskID)
			if err != nil {
				t.Fatalf("Get(%s) after 202: %v", resp.TaskID, err)
			}
			if task.DeliveryID != tt.d.id || task.State != agentbot.StateQueued {
				t.Errorf("stored task delivery %q state %q", task.DeliveryID, task.State)
			}
			tt.check(t, task)

			// Redelivery: 200, nothing new.
			before := len(in.tasks(t))
			status, body = in.send(t, tt.d)
			if status != http.StatusOK || !strings.Contains(body, "duplicate") {
				t.Errorf("redelivery: status %d (%q), want 200 duplicate", status, body)
			}
			if after := len(in.tasks(t)); after != before {
				t.Errorf("redelivery stored %d new tasks", after-before)
			}
		})
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	if len(in.enqueued) != len(tests) {
		t.Errorf("Enqueued called %d times, want %d (once per created task)", len(in.enqueued), len(tests))
	}
}

func TestRedeliveryAfterRestartIsDeduplicated(t *testing.T) {
	path := filepath.Join(t.TempDir(), "agentbot.db")
	in := newIntake(t, path)
	d := testDelivery{event: "issues", id: "restart-1", body: readTestdata(t, "issues.labeled.json")}
	if status, body := in.send(t, d); status != http.StatusAccepted {
		t.Fatalf("first delivery: %d %q", status, body)
	}
	in.close()

	in2 := newIntake(t, path)
	if status, body := in2.send(t, d); status != http.StatusOK {
		t.Errorf("redelivery after restart: %d %q, want 200", status, body)
	}
	if n := len(in2.tasks(t)); n != 1 {
		t.Errorf("%d tasks after restart and redelivery, want 1", n)
	}
}

func TestConcurrentIdenticalDeliveriesMakeOneTask(t *testing.T) {
	in := newIntake(t, "")
	d := testDelivery{event: "issues", id: "same-delivery", body: readTestdata(t, "issues.labeled.json")}
	const senders = 16
	statuses := make(chan int, senders)
	var wg sync.WaitGroup
	for range senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			status, _ := in.send(t, d)
			statuses <- status
		}()
	}
	wg.Wait()
	close(statuses)
	count := map[int]int{}
	for s := range statuses {
		count[s]++
	}
	if count[http.StatusAccepted] != 1 || count[http.StatusOK] != senders-1 {
		t.Errorf("statuses %v, want one 202 and %d 200s", count, senders-1)
	}
	if n := len(in.tasks(t)); n != 1 {
		t.Errorf("%d tasks, want 1", n)
	}
}

func TestCheckRunControlResolvesItsTask(t *testing.T) {
	in := newIntake(t, "")
	// A task on github/hello-world#7, as the one a check run was made for.
	labeled := payload(t, "issues.labeled.json",
		set("repository.name", "hello-world"), set("repository.full_name", "github/hello-world"),
		set("repository.owner.login", "github"), set("issue.number", 7.0))
	status, body := in.send(t, testDelivery{event: "issues", id: "target", body: labeled})
	if status != http.StatusAccepted {
		t.Fatalf("%d %q", status, body)
	}
	var target struct {
		TaskID string `json:"task_id"`
	}
	json.Unmarshal([]byte(body), &target)

	// Another repository's task must not be borrowed.
	status, body = in.send(t, testDelivery{event: "issues", id: "elsewhere", body: readTestdata(t, "issues.labeled.json")})
	if status != http.StatusAccepted {
		t.Fatalf("%d %q", status, body)
	}
	var other struct {
		TaskID string `json:"task_id"`
	}
	json.Unmarshal([]byte(body), &other)

	tests := []struct {
		name       string
		externalID string
		wantIssue  int
	}{
		{"external_id names a task of the repository", target.TaskID, 7},
		{"external_id names another repository's task", other.TaskID, 0},
		{"external_id names no task", "01JZZZZZZZZZZZZZZZZZZZZZZZ", 0},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rerun := payload(t, "check_run.rerequested.json", set("check_run.external_id", tt.externalID))
			status, body := in.send(t, testDelivery{event: "check_run", id: fmt.Sprintf("rerun-%d", i), body: rerun})
			if status != http.StatusAccepted {
				t.Fatalf("%d %q", status, body)
			}
			var resp struct {
				TaskID string `json:"task_id"`
			}
			json.Unmarshal([]byte(body), &resp)
			task, err := in.store.Get(context.Background(), resp.TaskID)
			if err != nil {
				t.Fatal(err)
			}
			if task.Trigger.Control != agentbot.ControlRetry || task.Trigger.ExternalID != tt.externalID || task.Ref().Number != tt.wantIssue {
				t.Errorf("control task %+v", task.Trigger)
			}
		})
	}
	onIssue, err := in.store.ListByIssue(context.Background(), agentbot.IssueRef{Repo: agentbot.Repo{Owner: "github", Name: "hello-world"}, Number: 7})
	if err != nil || len(onIssue) != 2 {
		t.Errorf("ListByIssue(github/hello-world#7) = %d tasks (%v), want the task and its control", len(onIssue), err)
	}
}

func TestStoreFailureIs500(t *testing.T) {
	in := newIntake(t, "")
	in.store.Close()
	status, _ := in.send(t, testDelivery{event: "issues", id: "closed", body: readTestdata(t, "issues.labeled.json")})
	if status != http.StatusInternalServerError {
		t.Errorf("status %d with a closed store, want 500", status)
	}
	if len(in.enqueued) != 0 {
		t.Error("Enqueued called for a task that was not stored")
	}
}

func TestLogsAndMetrics(t *testing.T) {
	in := newIntake(t, "")
	in.send(t, testDelivery{event: "issues", id: "m1", body: readTestdata(t, "issues.labeled.json")})
	in.send(t, testDelivery{event: "issues", id: "m1", body: readTestdata(t, "issues.labeled.json")})
	in.send(t, testDelivery{event: "issues", id: "m2", body: readTestdata(t, "issues.labeled.json"), signature: "-"})
	in.send(t, testDelivery{event: "push", id: "m3", body: []byte(`{}`)})

	var lines []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(in.logs.String()), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("log line %q is not JSON: %v", l, err)
		}
		if m["msg"] == "delivery" {
			lines = append(lines, m)
		}
	}
	if len(lines) != 4 {
		t.Fatalf("%d delivery log lines, want 4:\n%s", len(lines), in.logs.String())
	}
	want := []struct{ id, outcome string }{{"m1", "queued"}, {"m1", "duplicate"}, {"m2", "unauthorized"}, {"m3", "ignored"}}
	for i, w := range want {
		l := lines[i]
		if l["delivery_id"] != w.id || l["outcome"] != w.outcome {
			t.Errorf("line %d: %v, want delivery_id %s outcome %s", i, l, w.id, w.outcome)
		}
		for _, k := range []string{"event", "action", "repo", "duration", "status"} {
			if _, ok := l[k]; !ok {
				t.Errorf("line %d lacks %q: %v", i, k, l)
			}
		}
	}
	if lines[0]["repo"] != "Codertocat/Hello-World" || lines[0]["action"] != "labeled" || lines[0]["task_id"] == nil {
		t.Errorf("queued line %v", lines[0])
	}

	families, err := in.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	var observed uint64
	for _, f := range families {
		for _, m := range f.GetMetric() {
			switch f.GetName() {
			case "agentbot_webhook_deliveries_total":
				labels := map[string]string{}
				for _, lp := range m.GetLabel() {
					labels[lp.GetName()] = lp.GetValue()
				}
				got[labels["event"]+"/"+labels["outcome"]] = m.GetCounter().GetValue()
			case "agentbot_webhook_intake_duration_seconds":
				observed += m.GetHistogram().GetSampleCount()
			}
		}
	}
	wantCounts := map[string]float64{"issues/queued": 1, "issues/duplicate": 1, "issues/unauthorized": 1, "other/ignored": 1}
	if fmt.Sprint(got) != fmt.Sprint(wantCounts) {
		t.Errorf("deliveries_total = %v, want %v", got, wantCounts)
	}
	if observed != 4 {
		t.Errorf("intake histogram observed %d, want 4", observed)
	}
}

func TestNewRefusesEmptySecret(t *testing.T) {
	s, err := state.Open(filepath.Join(t.TempDir(), "a.db"), state.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	tests := []struct {
		name string
		cfg  Config
	}{
		{"empty secret", Config{Store: s}},
		{"no store", Config{Secret: secret}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := New(tt.cfg); err == nil {
				t.Error("New succeeded")
			}
		})
	}
	if ValidSignature(nil, Signature(nil, []byte("x")), []byte("x")) {
		t.Error("ValidSignature accepted an empty secret")
	}
}
