package dispatch

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/agentbot/agentbot"
	"github.com/agentbot/agentbot/runner"
	"github.com/agentbot/agentbot/web"
)

// leakyLauncher stands for an agent that rewrote its events (a re-attach
// replays the events file) or a launcher whose stderr carries secrets: every
// event it passes on, and its stderr tail, carries the job's token, its Basic
// form and the agent's environment value.
type leakyLauncher struct {
	runner.Launcher
	secret string

	mu     sync.Mutex
	leak   string // what is added to every string
	leaked chan struct{}
}

func (l *leakyLauncher) Start(ctx context.Context, job runner.Job) (runner.Run, error) {
	run, err := l.Launcher.Start(ctx, job)
	if err != nil {
		return nil, err
	}
	leak := " token=" + job.Token + " basic=" + base64.StdEncoding.EncodeToString([]byte("x-access-token:"+job.Token)) + " env=" + l.secret
	l.mu.Lock()
	l.leak = leak
	l.mu.Unlock()
	out := make(chan runner.Event)
	go func() {
		defer close(out)
		out <- runner.Event{Type: runner.EventProgress, Message: "progress" + leak}
		out <- runner.Event{Type: runner.EventLog, Stream: "stdout", Message: "log" + leak}
		for ev := range run.Events() {
			switch ev.Type {
			case runner.EventResult:
				res := *ev.Result
				res.Summary += leak
				ev.Result = &res
			case runner.EventError:
				ev.Message += leak
				ev.StderrTail = append(ev.StderrTail, "stderr"+leak)
			}
			out <- ev
		}
	}()
	return leakyRun{Run: run, events: out, leak: leak}, nil
}

func (l *leakyLauncher) token() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	_, after, _ := strings.Cut(l.leak, " token=")
	tok, _, _ := strings.Cut(after, " ")
	return tok
}

type leakyRun struct {
	runner.Run
	events chan runner.Event
	leak   string
}

func (r leakyRun) Events() <-chan runner.Event { return r.events }

func (r leakyRun) Wait(ctx context.Context) (runner.Exit, error) {
	exit, err := r.Run.Wait(ctx)
	exit.StderrTail = append(exit.StderrTail, "launcher stderr"+r.leak)
	return exit, err
}

// TestSecretsAreRedactedByTheDispatcher: whatever agent-runner or the
// launcher hands the dispatcher, the job's token, its Basic form and the
// agent's environment reach no comment, check run, pull request, task log,
// stored task or task page.
func TestSecretsAreRedactedByTheDispatcher(t *testing.T) {
	const secret = "sk-ant-model-key-4242424242"
	cases := []struct {
		name  string
		body  string
		state agentbot.TaskState
	}{
		{"succeeds", "scripted: stdout-env MODEL_KEY; write leak.txt x; summary Did it", agentbot.StateSucceeded},
		{"fails", "scripted: stdout-env MODEL_KEY; fail 2 gave up", agentbot.StateFailed},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			h.store.Close()
			leaky := &leakyLauncher{secret: secret}
			h.wrap = func(l runner.Launcher) runner.Launcher { leaky.Launcher = l; return leaky }
			h.agentEnv = map[string]string{"MODEL_KEY": secret}
			h.open()
			h.start()
			n := 70 + i
			task := h.enqueue(h.issue(n, "Leak "+tc.name, tc.body))
			done := h.waitState(task.ID, tc.state)
			tok := leaky.token()
			if tok == "" {
				t.Fatal("the launcher never saw the job's token")
			}
			secrets := map[string]string{
				"token":      tok,
				"basic form": base64.StdEncoding.EncodeToString([]byte("x-access-token:" + tok)),
				"env value":  secret,
			}
			places := map[string]string{}
			for _, c := range h.commentsOn(n) {
				places["comment"] += c.Body + "\n" + strings.Join(c.Edits, "\n")
			}
			for _, cr := range h.gh.CheckRuns(testRepo) {
				places["check run"] += cr.Title + cr.Summary + cr.Text
			}
			for _, pr := range h.gh.PullRequests(testRepo) {
				places["pull request"] += pr.Title + pr.Body
			}
			logFile, err := os.ReadFile(filepath.Join(h.dir, "logs", task.ID+".jsonl"))
			if err != nil {
				t.Fatal(err)
			}
			places["task log"] = string(logFile)
			stored, _ := json.Marshal(done)
			places["stored task"] = string(stored)
			const pagesToken = "pages-token-for-the-redaction-test"
			pages, err := web.New(web.Options{Store: h.store, Logs: h.logs, Auth: web.Auth{BearerToken: pagesToken}})
			if err != nil {
				t.Fatal(err)
			}
			for _, path := range []string{"/tasks/" + task.ID, "/tasks/" + task.ID + "/log", "/tasks"} {
				req := httptest.NewRequest(http.MethodGet, path, nil)
				req.Header.Set("Accept", "application/json")
				req.Header.Set("Authorization", "Bearer "+pagesToken)
				rec := httptest.NewRecorder()
				pages.ServeHTTP(rec, req)
				b, _ := io.ReadAll(rec.Result().Body)
				if rec.Code != http.StatusOK {
					t.Fatalf("GET %s: %d %s", path, rec.Code, b)
				}
				places["page "+path] = string(b)
			}
			if !strings.Contains(places["task log"], "[REDACTED]") {
				t.Errorf("the task log shows no redaction; was anything leaked into it?\n%s", places["task log"])
			}
			for where, text := range places {
				for what, s := range secrets {
					if strings.Contains(text, s) {
						t.Errorf("the %s appears in the %s:\n%s", what, where, text)
					}
				}
			}
		})
	}
}
