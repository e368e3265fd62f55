// Package e2e runs agentbot whole: the real `agentbot serve` binary against
// the fake GitHub (github/githubtest) over a real git http-backend server,
// running the real agent-runner with the scripted agent (and, where it is
// installed, the real Claude Code CLI against the fake Messages API).
// Deliveries are signed like GitHub's; results are read from the fake's
// records, the git server's branches and agentbot's own task pages.
package e2e

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/agentbot/agentbot"
	"github.com/agentbot/agentbot/github"
	"github.com/agentbot/agentbot/github/githubtest"
	"github.com/agentbot/agentbot/internal/gitserver"
	"github.com/agentbot/agentbot/internal/scriptedagent"
	"github.com/agentbot/agentbot/web"
	"github.com/agentbot/agentbot/webhook"
)

// Binaries built once for the package.
var bins struct {
	agentbot, agentRunner, scripted string
}

func TestMain(m *testing.M) { os.Exit(testMain(m)) }

func testMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "agentbot-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	goTool, err := exec.LookPath("go")
	if err != nil {
		goTool = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	// The service is built with the race detector when the tests are, so
	// the e2e runs exercise it too.
	args := []string{"build", "-o", filepath.Join(dir, "agentbot")}
	if raceEnabled {
		args = append(args, "-race")
	}
	cmd := exec.Command(goTool, append(args, "github.com/agentbot/agentbot/cmd/agentbot")...)
	if out, err := cmd.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build agentbot: %v\n%s", err, out)
		return 1
	}
	bins.agentbot = filepath.Join(dir, "agentbot")
	if bins.agentRunner, err = scriptedagent.BuildAgentRunnerTo(dir); err != nil {
		fmt.Fprintln(os.Stderr, "build agent-runner:", err)
		return 1
	}
	if bins.scripted, err = scriptedagent.BuildTo(dir); err != nil {
		fmt.Fprintln(os.Stderr, "build scripted agent:", err)
		return 1
	}
	code := m.Run()
	if err := nodeSuite.Stop(); err != nil {
		fmt.Fprintln(os.Stderr, "stop the real node:", err)
		if code == 0 {
			code = 1
		}
	}
	if benchTemplate.dir != "" {
		os.RemoveAll(benchTemplate.dir)
	}
	return code
}

const (
	secret       = "e2e-webhook-secret"
	installation = 31
)

var repo = agentbot.Repo{Owner: "octo", Name: "widgets"}

// world is one fake GitHub with one repository on a real git server, and
// the files agentbot's configuration points at.
type world struct {
	t       testing.TB
	gh      *githubtest.Server
	git     *gitserver.Server
	dataDir string
	env     []string
}

func newWorld(t testing.TB) *world { return newWorldWith(t, nil) }

// newWorldWith lets seed create the repository on the git server first.
func newWorldWith(t testing.TB, seed func(*gitserver.Server)) *world {
	t.Helper()
	return newWorldAt(t, seed, "127.0.0.1")
}

// newWorldAt is newWorldWith with the git server listening on gitIP (a
// real node's pods clone from the host's bridge address).
func newWorldAt(t testing.TB, seed func(*gitserver.Server), gitIP string) *world {
	t.Helper()
	w := &world{t: t, dataDir: t.TempDir()}
	w.gh = githubtest.New(t)
	w.git = gitserver.NewAt(t, gitIP, w.gh.GitAuthorize())
	if seed != nil {
		seed(w.git)
	}
	w.gh.AddInstallation(installation, repo)
	w.gh.AddRepo(repo, w.git, "main")
	payloadRepo = w.gh.RepositoryPayload(repo)
	w.gh.SetFile(repo, "src/widget.txt", "a widget\n")
	w.gh.SetPermission(repo, "alice", "write")
	w.gh.SetPermission(repo, "mallory", "read")
	conf := t.TempDir()
	keyFile := filepath.Join(conf, "app.pem")
	secretFile := filepath.Join(conf, "webhook-secret")
	must(t, os.WriteFile(keyFile, w.gh.PrivateKeyPEM, 0o600))
	must(t, os.WriteFile(secretFile, []byte(secret+"\n"), 0o600))
	w.env = []string{
		"AGENTBOT_DATA_DIR=" + w.dataDir,
		"AGENTBOT_APP_ID=" + fmt.Sprint(w.gh.AppID),
		"AGENTBOT_PRIVATE_KEY_FILE=" + keyFile,
		"AGENTBOT_WEBHOOK_SECRET_FILE=" + secretFile,
		"AGENTBOT_GITHUB_URL=" + w.gh.URL,
		"AGENTBOT_AGENT_RUNNER=" + bins.agentRunner,
		"AGENTBOT_AGENT=command",
		"AGENTBOT_AGENT_COMMAND=" + bins.scripted,
		"AGENTBOT_LOCAL_ISOLATION=none",
		"AGENTBOT_PUBLIC_URL=https://agentbot.example",
		"AGENTBOT_LOG_LEVEL=debug",
		"AGENTBOT_SHUTDOWN_TIMEOUT=10s",
		"GORACE=atexit_sleep_ms=0 halt_on_error=1",
	}
	return w
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// bot is one running `agentbot serve` process.
type bot struct {
	t    testing.TB
	cmd  *exec.Cmd
	base string
	// token is the pages' token serve made in the data dir (the world
	// configures none, as an operator who sets nothing would).
	token string

	mu    sync.Mutex
	lines []string
	done  chan struct{}
}

// start runs agentbot serve with the world's environment plus extra.
func (w *world) start(extra ...string) *bot {
	w.t.Helper()
	b := &bot{t: w.t, done: make(chan struct{})}
	b.cmd = exec.Command(bins.agentbot, "serve", "--listen", "127.0.0.1:0")
	b.cmd.Env = append(append(cleanEnviron(), w.env...), extra...)
	stderr, err := b.cmd.StderrPipe()
	must(w.t, err)
	must(w.t, b.cmd.Start())
	addr := make(chan string, 1)
	go func() {
		defer close(b.done)
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 4<<20)
		for sc.Scan() {
			line := sc.Text()
			b.mu.Lock()
			b.lines = append(b.lines, line)
			b.mu.Unlock()
			var rec struct{ Msg, Addr string }
			if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == "listening" {
				addr <- rec.Addr
			}
		}
		_ = b.cmd.Wait()
		close(addr)
	}()
	w.t.Cleanup(func() {
		b.stop()
		if w.t.Failed() {
			w.t.Logf("agentbot log:\n%s", b.log())
		}
	})
	select {
	case a, ok := <-addr:
		if !ok {
			w.t.Fatalf("agentbot serve exited before listening:\n%s", b.log())
		}
		b.base = "http://" + a
	case <-time.After(60 * time.Second):
		w.t.Fatalf("agentbot serve did not listen:\n%s", b.log())
	}
	tok, err := os.ReadFile(filepath.Join(w.dataDir, "pages-token"))
	must(w.t, err)
	b.token = strings.TrimSpace(string(tok))
	return b
}

// cleanEnviron is the test's environment without agentbot's own settings,
// so a developer's shell cannot change what the tests run.
func cleanEnviron() []string {
	var out []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "AGENTBOT_") && !strings.HasPrefix(kv, "AGENTBOT_CLAUDE_BIN=") {
			continue
		}
		out = append(out, kv)
	}
	return out
}

// isolation is the local launcher's isolation, from its log.
func (b *bot) isolation() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, line := range b.lines {
		var rec struct{ Msg, Isolation string }
		if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == "local launcher ready" {
			return rec.Isolation
		}
	}
	return ""
}

func (b *bot) log() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return strings.Join(b.lines, "\n")
}

// stop ends the process with SIGTERM (a clean shutdown) unless it is gone.
func (b *bot) stop() {
	select {
	case <-b.done:
		return
	default:
	}
	_ = b.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-b.done:
	case <-time.After(30 * time.Second):
		_ = b.cmd.Process.Kill()
		<-b.done
	}
}

// kill ends the process with SIGKILL, as a crash would.
func (b *bot) kill() {
	_ = b.cmd.Process.Kill()
	<-b.done
}

var deliveryN atomic.Int64

// deliver sends a signed webhook delivery and expects it accepted.
// deliver sends a signed delivery and returns the status agentbot
// answered: 202 when it stored a task (durably, before answering), 204 when
// it ignored the event. Anything else fails the test.
func (b *bot) deliver(event string, payload any) int {
	b.t.Helper()
	body, err := json.Marshal(payload)
	must(b.t, err)
	req, err := http.NewRequest(http.MethodPost, b.base+"/webhook", bytes.NewReader(body))
	must(b.t, err)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-GitHub-Event", event)
	req.Header.Set("X-GitHub-Delivery", fmt.Sprintf("e2e-%d-%d", time.Now().UnixNano(), deliveryN.Add(1)))
	req.Header.Set("X-Hub-Signature-256", webhook.Signature([]byte(secret), body))
	resp, err := http.DefaultClient.Do(req)
	must(b.t, err)
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusAccepted && resp.StatusCode != http.StatusNoContent {
		b.t.Fatalf("delivery %s answered %d: %s", event, resp.StatusCode, out)
	}
	return resp.StatusCode
}

// payloadRepo is the repository object deliveries carry, the current
// world's (e2e tests do not run in parallel).
var payloadRepo map[string]any

// Payload builders: the fields GitHub sends that agentbot reads.
func base(sender string) map[string]any {
	typ := "User"
	if strings.HasSuffix(sender, "[bot]") {
		typ = "Bot"
	}
	return map[string]any{
		"repository":   payloadRepo,
		"installation": map[string]any{"id": installation},
		"sender":       map[string]any{"login": sender, "id": 1000 + len(sender), "type": typ},
	}
}

func labeled(number int, title, body, sender string) map[string]any {
	p := base(sender)
	p["action"] = "labeled"
	p["issue"] = map[string]any{"number": number, "title": title, "body": body, "user": map[string]any{"login": sender}}
	p["label"] = map[string]any{"name": "agent-task"}
	return p
}

var commentN atomic.Int64

func comment(number int, isPR bool, text, sender string) map[string]any {
	p := base(sender)
	p["action"] = "created"
	issue := map[string]any{"number": number, "title": "t", "body": "", "user": map[string]any{"login": sender}}
	if isPR {
		issue["pull_request"] = map[string]any{"url": fmt.Sprintf("https://api.github.test/repos/%s/pulls/%d", repo, number)}
	}
	p["issue"] = issue
	p["comment"] = map[string]any{"id": 900000 + commentN.Add(1), "body": text, "author_association": "MEMBER", "user": map[string]any{"login": sender}}
	return p
}

// (w *world) issue adds an issue to the fake and returns its payload.
func (w *world) issue(number int, title, body string) map[string]any {
	w.gh.AddIssue(repo, number, title, body, "alice")
	return labeled(number, title, body, "alice")
}

// tasks reads agentbot's task list through its JSON page.
func (b *bot) tasks() []web.TaskSummary {
	b.t.Helper()
	var out struct{ Tasks []web.TaskSummary }
	b.getJSON("/tasks?limit=1000", &out)
	return out.Tasks
}

func (b *bot) task(id string) web.TaskPage {
	b.t.Helper()
	var out web.TaskPage
	b.getJSON("/tasks/"+id, &out)
	return out
}

// browserURL is path on agentbot with the pages' basic-auth credentials
// in it, as a browser takes them.
func (b *bot) browserURL(path string) string {
	return strings.Replace(b.base, "http://", "http://agentbot:"+b.token+"@", 1) + path
}

func (b *bot) getJSON(path string, v any) {
	b.t.Helper()
	req, _ := http.NewRequest(http.MethodGet, b.base+path, nil)
	req.Header.Set("Accept", "application/json")
	req.Header.Set("Authorization", "Bearer "+b.token)
	resp, err := http.DefaultClient.Do(req)
	must(b.t, err)
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		b.t.Fatalf("GET %s: %d %s", path, resp.StatusCode, body)
	}
	must(b.t, json.Unmarshal(body, v))
}

// eventually polls cond until it holds (the system under test runs in other
// processes: there is nothing to synchronise on but what they publish).
func eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// taskFor waits for the task of an issue (the newest non-control one, or
// the one matching kind) and returns its summary.
func (b *bot) taskFor(number int, kind agentbot.TaskKind, skip ...string) web.TaskSummary {
	b.t.Helper()
	var found web.TaskSummary
	eventually(b.t, 30*time.Second, fmt.Sprintf("a %s task on #%d", kind, number), func() bool {
		for _, s := range b.tasks() {
			if s.Issue == number && s.Kind == kind && !contains(skip, s.ID) {
				found = s
				return true
			}
		}
		return false
	})
	return found
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// waitDone waits for a task to reach a terminal state and returns it.
func (b *bot) waitDone(id string, timeout time.Duration) web.TaskPage {
	b.t.Helper()
	var page web.TaskPage
	eventually(b.t, timeout, "task "+id+" to end and say so on GitHub", func() bool {
		page = b.task(id)
		return page.Task.State.Terminal() && page.Reported
	})
	return page
}

func (w *world) commentByID(ref agentbot.IssueRef, id int64) (githubtest.Comment, bool) {
	for _, c := range w.gh.Comments(ref) {
		if c.ID == id {
			return c, true
		}
	}
	return githubtest.Comment{}, false
}

func ref(n int) agentbot.IssueRef { return agentbot.IssueRef{Repo: repo, Number: n} }

// settings writes the repository's .github/agentbot.yml.
func (w *world) settings(yml string) { w.gh.SetFile(repo, github.SettingsPath, yml) }
