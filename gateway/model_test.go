package gateway

import (
	"bytes"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/agentbot/agentbot/internal/fakeanthropic"
	"github.com/agentbot/agentbot/internal/testtool"
	"github.com/agentbot/agentbot/runner"
)

const operatorKey = "sk-ant-operator-real-key-0000000000000000"

// testPrices make the expected cost easy to state: every fake answer is
// InputTokens in and OutputTokens out.
var testPrices = Prices{"*": {Input: 2, Output: 10}}

var answerCost = (fakeanthropic.InputTokens*2 + fakeanthropic.OutputTokens*10) / 1e6

func modelGateway(t *testing.T, api *fakeanthropic.Server, maxCost float64) *Gateway {
	t.Helper()
	u, err := url.Parse(api.URL)
	if err != nil {
		t.Fatal(err)
	}
	return newGateway(t, Options{Model: ModelOptions{AnthropicURL: u, AnthropicKey: operatorKey, Prices: testPrices, MaxCostUSD: maxCost}})
}

// runClaude runs the real Claude Code CLI in dir with the task's sandbox
// environment and nothing of the host's but PATH.
func runClaude(t *testing.T, task *Task, proxy, dir, prompt string) (string, error) {
	t.Helper()
	bin := testtool.Claude(t)
	cmd := exec.CommandContext(t.Context(), bin, "-p", prompt, "--output-format", "stream-json", "--verbose",
		"--permission-mode", "acceptEdits", "--model", "claude-sonnet-4-5", "--max-turns", "8")
	cmd.Dir = dir
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir(),
		"CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1", "DISABLE_AUTOUPDATER=1"}
	for k, v := range task.Env(proxy) {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.WaitDelay = 5 * time.Second
	err := cmd.Run()
	return out.String(), err
}

// TestClaudeThroughTheModelRelay: the real CLI, holding only the task's
// placeholder, works against the fake API through the relay, which sends
// the operator's key, streams the answers and prices what the fake
// reported.
func TestClaudeThroughTheModelRelay(t *testing.T) {
	dir := t.TempDir()
	api := fakeanthropic.New(t,
		fakeanthropic.Turn{Text: "Writing it.", ToolUses: []fakeanthropic.ToolUse{{Name: "Write",
			Input: map[string]string{"file_path": filepath.Join(dir, "hello.txt"), "content": "hi\n"}}}},
		fakeanthropic.Turn{Text: "Wrote hello.txt."},
	)
	g := modelGateway(t, api, 0)
	var rec recorder
	task, proxy := openTask(t, g, TaskSpec{Record: rec.record})
	out, err := runClaude(t, task, proxy, dir, "Add hello.txt")
	if err != nil {
		t.Fatalf("claude: %v\n%s", err, lastLines(out, 20))
	}
	if b, err := os.ReadFile(filepath.Join(dir, "hello.txt")); err != nil || string(b) != "hi\n" {
		t.Errorf("hello.txt = %q, %v: the streamed tool use did not arrive whole\n%s", b, err, lastLines(out, 20))
	}
	answers, streamed := 0, 0
	for _, r := range api.Requests() {
		if r.APIKey != operatorKey {
			t.Errorf("the fake API got key %q on %s %s, want the operator's", r.APIKey, r.Method, r.Path)
		}
		if r.Path == "/v1/messages" {
			answers++
			if r.Stream {
				streamed++
			}
		}
	}
	if answers < 2 || streamed == 0 {
		t.Errorf("%d answers, %d streamed; want the script's two turns, streamed", answers, streamed)
	}
	want := float64(answers) * answerCost
	spent, usage := task.Spent()
	if math.Abs(spent-want) > 1e-12 || usage.InputTokens != answers*fakeanthropic.InputTokens || usage.OutputTokens != answers*fakeanthropic.OutputTokens {
		t.Errorf("spent $%v on %+v, want $%v for %d answers", spent, usage, want, answers)
	}
	var recorded float64
	for _, e := range rec.all() {
		if e.Kind != runner.EgressModel || !e.Allowed {
			t.Errorf("event %+v", e)
		}
		recorded += e.CostUSD
	}
	if math.Abs(recorded-want) > 1e-12 {
		t.Errorf("events record $%v, want $%v", recorded, want)
	}
}

// TestClaudeStopsAtTheBudget: a budget smaller than the conversation cuts
// the agent off with the budget message, and the rest of the script is
// never asked for.
func TestClaudeStopsAtTheBudget(t *testing.T) {
	dir := t.TempDir()
	var turns []fakeanthropic.Turn
	for i := range 6 {
		turns = append(turns, fakeanthropic.Turn{Text: "step", ToolUses: []fakeanthropic.ToolUse{{Name: "Write",
			Input: map[string]string{"file_path": filepath.Join(dir, fmt.Sprintf("f%d.txt", i)), "content": "x\n"}}}})
	}
	api := fakeanthropic.New(t, turns...)
	g := modelGateway(t, api, 1.0)
	var rec recorder
	task, proxy := openTask(t, g, TaskSpec{Record: rec.record, MaxCostUSD: 1.5 * answerCost})
	out, _ := runClaude(t, task, proxy, dir, "Write six files")
	if !strings.Contains(out, fmt.Sprintf("model budget of $%.6g is spent", 1.5*answerCost)) {
		t.Errorf("claude's output does not carry the budget message:\n%s", lastLines(out, 20))
	}
	select {
	case <-task.Exhausted():
	default:
		t.Errorf("Exhausted is not closed")
	}
	t.Logf("claude's last lines:\n%s", lastLines(out, 3))
	for _, r := range api.Requests() {
		if r.Answer == "turn 5" || r.Answer == "final" {
			t.Errorf("the fake answered %s past the budget", r.Answer)
		}
	}
	blocked := 0
	for _, e := range rec.all() {
		if !e.Allowed && strings.Contains(e.Reason, "budget") {
			blocked++
		}
	}
	if blocked == 0 {
		t.Errorf("no blocked event for the budget: %+v", rec.all())
	}
}

// TestModelRelayRefuses: the relay carries only the task's own key, only
// the calls it meters, and nothing after the task ends.
func TestModelRelayRefuses(t *testing.T) {
	api := fakeanthropic.New(t)
	g := modelGateway(t, api, 0)
	task, proxy := openTask(t, g, TaskSpec{TaskID: "mine"})
	other, _ := openTask(t, g, TaskSpec{TaskID: "other"})
	tests := []struct {
		name, method, path, key string
		want                    int
	}{
		{"the task's key", "POST", "/anthropic/v1/messages", task.Key(), http.StatusOK},
		{"another task's key", "POST", "/anthropic/v1/messages", other.Key(), http.StatusForbidden},
		{"the operator's key itself", "POST", "/anthropic/v1/messages", operatorKey, http.StatusForbidden},
		{"no key", "POST", "/anthropic/v1/messages", "", http.StatusForbidden},
		{"a call the meter cannot see", "POST", "/anthropic/v1/messages/batches", task.Key(), http.StatusForbidden},
		{"a path that climbs out", "POST", "/anthropic/v1/messages/../../v1/files", task.Key(), http.StatusForbidden},
		{"openai without its key", "POST", "/openai/v1/chat/completions", task.Key(), http.StatusBadGateway},
		{"no such relay", "GET", "/admin", task.Key(), http.StatusForbidden},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := len(api.Requests())
			req, _ := http.NewRequestWithContext(t.Context(), tc.method, proxy+tc.path, strings.NewReader(`{"model":"m","max_tokens":1,"messages":[{"role":"user","content":"hi"}]}`))
			req.Header.Set("X-Api-Key", tc.key)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.want {
				t.Fatalf("%s %s = %d %s, want %d", tc.method, tc.path, resp.StatusCode, body, tc.want)
			}
			if tc.want != http.StatusOK && len(api.Requests()) != before {
				t.Errorf("the refused call reached the API")
			}
		})
	}
	key := task.Key()
	if err := task.Close(); err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequestWithContext(t.Context(), "POST", proxy+"/anthropic/v1/messages", strings.NewReader("{}"))
	req.Header.Set("X-Api-Key", key)
	if resp, err := http.DefaultClient.Do(req); err == nil {
		resp.Body.Close()
		t.Errorf("the ended task's key still answers: %s", resp.Status)
	}
}

// TestModelRelayAnswersWhole: an answer that starts before the request
// body has been read to its end (an SSE stream's first event) arrives
// whole. Without full duplex on the relay's listener one in a few dozen
// such answers was cut off mid-stream.
func TestModelRelayAnswersWhole(t *testing.T) {
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprint(w, "event: message_start\ndata: {\"type\":\"message_start\"}\n\n")
		w.(http.Flusher).Flush()
		time.Sleep(time.Millisecond)
		fmt.Fprint(w, "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n")
	}))
	defer api.Close()
	u, _ := url.Parse(api.URL)
	g := newGateway(t, Options{Model: ModelOptions{AnthropicURL: u, AnthropicKey: "k"}})
	task, proxy := openTask(t, g, TaskSpec{})
	for i := range 200 {
		req, _ := http.NewRequestWithContext(t.Context(), "POST", proxy+"/anthropic/v1/messages", strings.NewReader("{}"))
		req.Header.Set("X-Api-Key", task.Key())
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || !strings.Contains(string(body), "message_stop") {
			t.Fatalf("answer %d cut off: %q, %v", i, body, err)
		}
	}
}
