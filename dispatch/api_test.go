package dispatch

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/agentbot/agentbot"
	"github.com/agentbot/agentbot/api"
	"github.com/agentbot/agentbot/runner"
)

const (
	apiToken   = "tok-demo-0123456789abcdef"
	otherToken = "tok-other-0123456789abcdef"
)

// apiServer serves the task API over the harness's store and dispatcher.
func (h *harness) apiServer() *httptest.Server {
	h.t.Helper()
	hd, err := api.New(api.Options{Store: h.store, PublicURL: "http://agentbot.test", Notify: h.d.Notify, Tokens: []api.Token{
		{Name: "ci", Value: apiToken, Repos: []string{"octo/demo"}},
		{Name: "elsewhere", Value: otherToken, Repos: []string{"octo/other"}},
	}})
	if err != nil {
		h.t.Fatal(err)
	}
	srv := httptest.NewServer(hd)
	h.t.Cleanup(srv.Close)
	return srv
}

func call(t *testing.T, srv *httptest.Server, method, path, token, key, body string) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(method, srv.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if key != "" {
		req.Header.Set("Idempotency-Key", key)
	}
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var out map[string]any
	if err := json.Unmarshal(raw, &out); err != nil {
		t.Fatalf("%s %s: %d %q is not JSON", method, path, resp.StatusCode, raw)
	}
	return resp.StatusCode, out
}

// A task made through the API without an issue runs like a labelled one:
// a branch named after the task, a pull request, a check run, its state
// and result through GET.
func TestTaskAPICreatesAndReports(t *testing.T) {
	h := newHarness(t)
	h.start()
	srv := h.apiServer()
	body := `{"repo":"octo/demo","prompt":"Add a greeting\nscripted: write greeting.txt hi; summary Greeted"}`
	start := time.Now()
	status, created := call(t, srv, "POST", "/api/v1/tasks", apiToken, "k-1", body)
	if status != http.StatusCreated || created["id"] == "" || created["state"] != "queued" {
		t.Fatalf("create: %d %v", status, created)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("create took %s", took)
	}
	id := created["id"].(string)
	if created["url"] != "http://agentbot.test/tasks/"+id {
		t.Errorf("url %v", created["url"])
	}
	// The same key makes nothing new.
	status, again := call(t, srv, "POST", "/api/v1/tasks", apiToken, "k-1", body)
	if status != http.StatusOK || again["id"] != id {
		t.Fatalf("repeat: %d %v", status, again)
	}
	done := h.waitState(id, agentbot.StateSucceeded)
	if !strings.HasPrefix(done.Result.Branch, "agentbot/task-") || done.Result.PRNumber == 0 || done.Trigger.InstallationID != testInstallation {
		t.Fatalf("result %+v", done.Result)
	}
	if prs := h.gh.PullRequests(testRepo); len(prs) != 1 || strings.Contains(prs[0].Body, "Fixes #") || prs[0].Title != "Add a greeting" {
		t.Errorf("pull requests %+v", prs)
	}
	h.checkRunOn(done.Result.Commit)
	status, got := call(t, srv, "GET", "/api/v1/tasks/"+id, apiToken, "", "")
	result, _ := got["result"].(map[string]any)
	if status != 200 || got["state"] != "succeeded" || result["pr_url"] != done.Result.PRURL || got["finished_at"] == nil {
		t.Errorf("get: %d %v", status, got)
	}
	status, list := call(t, srv, "GET", "/api/v1/tasks?repo=octo/demo&state=succeeded", apiToken, "", "")
	if tasks, _ := list["tasks"].([]any); status != 200 || len(tasks) != 1 {
		t.Errorf("list: %d %v", status, list)
	}
	if n := len(h.gh.CallsTo("GET", "/repos/octo/demo/installation")); n != 1 {
		t.Errorf("installation looked up %d times", n)
	}
}

// A token is confined to its repositories, and the API is never open.
func TestTaskAPIRefusals(t *testing.T) {
	h := newHarness(t)
	h.start()
	srv := h.apiServer()
	body := `{"repo":"octo/demo","prompt":"do it"}`
	tests := []struct {
		name, method, path, token, body string
		want                            int
	}{
		{"no token", "POST", "/api/v1/tasks", "", body, 401},
		{"a wrong token", "POST", "/api/v1/tasks", "not-a-token-at-all-really", body, 401},
		{"a token without the repository", "POST", "/api/v1/tasks", otherToken, body, 403},
		{"listing another repository", "GET", "/api/v1/tasks?repo=octo/demo", otherToken, "", 403},
		{"unknown field", "POST", "/api/v1/tasks", apiToken, `{"repo":"octo/demo","prompt":"x","branch":"main"}`, 400},
		{"no prompt", "POST", "/api/v1/tasks", apiToken, `{"repo":"octo/demo"}`, 422},
		{"an agent a settings file could not name", "POST", "/api/v1/tasks", apiToken, `{"repo":"octo/demo","prompt":"x","agent":"../sh"}`, 422},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if status, out := call(t, srv, tc.method, tc.path, tc.token, "", tc.body); status != tc.want || out["error"] == "" {
				t.Fatalf("%d %v, want %d", status, out, tc.want)
			}
		})
	}
	tasks, err := h.store.List(t.Context(), 100)
	if err != nil || len(tasks) != 0 {
		t.Fatalf("refused requests stored %d tasks (%v)", len(tasks), err)
	}
	if status, _ := call(t, srv, "GET", "/api/v1/openapi.json", "", "", ""); status != 200 {
		t.Errorf("openapi.json: %d", status)
	}
}

// Cancel through the API stops a running task; another repository's
// token cannot see it.
func TestTaskAPICancel(t *testing.T) {
	h := newHarness(t)
	h.start()
	srv := h.apiServer()
	h.gh.AddIssue(testRepo, 30, "Slow", "work slowly", "alice")
	status, created := call(t, srv, "POST", "/api/v1/tasks", apiToken, "", `{"repo":"octo/demo","issue":30,"prompt":"scripted: sleep 30; write slow.txt x"}`)
	if status != http.StatusCreated {
		t.Fatalf("create: %d %v", status, created)
	}
	id := created["id"].(string)
	h.wait(id, "in the agent phase", func(t *agentbot.Task) bool { return t.Phase == runner.PhaseAgent })
	if status, _ := call(t, srv, "POST", "/api/v1/tasks/"+id+"/cancel", otherToken, "", ""); status != http.StatusNotFound {
		t.Errorf("cancel with another repository's token: %d", status)
	}
	if status, _ := call(t, srv, "POST", "/api/v1/tasks/"+id+"/cancel", apiToken, "", ""); status != http.StatusAccepted {
		t.Fatalf("cancel: %d", status)
	}
	done := h.waitState(id, agentbot.StateCancelled)
	if !strings.Contains(done.Result.Error, "the task API (token `ci`)") {
		t.Errorf("result %+v", done.Result)
	}
	if body := h.comment(done).Body; !strings.Contains(body, "cancelled") {
		t.Errorf("issue comment:\n%s", body)
	}
}
