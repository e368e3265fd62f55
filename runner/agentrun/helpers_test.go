package agentrun

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/agentbot/agentbot/internal/gitserver"
	"github.com/agentbot/agentbot/internal/scriptedagent"
	"github.com/agentbot/agentbot/internal/testtool"
	"github.com/agentbot/agentbot/runner"
)

// scriptedAgent is the scripted agent, built once by TestMain.
var scriptedAgent string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "agentrun-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	scriptedAgent, err = scriptedagent.BuildTo(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

const (
	testToken = "ghs_readonlyTOKEN0123456789abcdef"
	owner     = "acme"
	repoName  = "widgets"
)

// fixture is a git server holding acme/widgets that requires testToken for
// reads and refuses every push.
type fixture struct {
	srv  *gitserver.Server
	base string // main's head
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	srv := gitserver.New(t, func(repo, user, pass string, write bool) bool {
		return repo == owner+"/"+repoName && user == "x-access-token" && pass == testToken && !write
	})
	base := srv.CreateRepo(owner, repoName, "main", map[string]string{
		"README.md":  "# widgets\n",
		"src/app.go": "package app\n",
		".gitignore": "*.log\n",
	})
	// Serve partial clones as GitHub does, so the blob filter is real and
	// any lazy fetch after the clone (which would have no token) shows.
	testtool.Git(t, "", "--git-dir", srv.BarePath(owner, repoName), "config", "uploadpack.allowFilter", "true")
	return &fixture{srv: srv, base: base}
}

func (f *fixture) job(body string) runner.Job {
	return runner.Job{
		Version:     runner.ProtocolVersion,
		TaskID:      "task-1",
		Repo:        owner + "/" + repoName,
		CloneURL:    f.srv.CloneURL(owner, repoName),
		Token:       testToken,
		BaseBranch:  "main",
		Branch:      "agentbot/issue-7-add-hello",
		Prompt:      runner.JobPrompt{Title: "Add hello", Body: body},
		Agent:       runner.AgentSpec{Name: "command", Command: scriptedAgent},
		TimeLimit:   runner.Duration(2 * time.Minute),
		AuthorName:  "agentbot[bot]",
		AuthorEmail: "agentbot@example.com",
		IssueNumber: 7,
	}
}

// pushBranch makes branch on the server: main plus one commit writing files.
func (f *fixture) pushBranch(t *testing.T, branch string, files map[string]string) string {
	t.Helper()
	work := t.TempDir()
	bare := f.srv.BarePath(owner, repoName)
	testtool.Git(t, "", "clone", "-q", bare, work)
	for p, c := range files {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(work, p)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(work, p), []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	testtool.Git(t, work, "add", "-A")
	testtool.Git(t, work, "-c", "user.name=dev", "-c", "user.email=dev@example.com", "commit", "-q", "-m", "work on "+branch)
	testtool.Git(t, work, "push", "-q", "origin", "HEAD:refs/heads/"+branch)
	return f.srv.RevParse(owner, repoName, branch)
}

// outcome is one finished run.
type outcome struct {
	ws     Workspace
	code   int
	stdout []byte
	events []runner.Event
}

func runJob(t *testing.T, ctx context.Context, job runner.Job) outcome {
	t.Helper()
	return runJobIn(t, ctx, Workspace{Dir: t.TempDir()}, job, nil)
}

func runJobIn(t *testing.T, ctx context.Context, ws Workspace, job runner.Job, environ []string) outcome {
	t.Helper()
	in, err := json.Marshal(job)
	if err != nil {
		t.Fatal(err)
	}
	var stdout bytes.Buffer
	code := Run(ctx, Options{Workspace: ws, Stdin: bytes.NewReader(in), Stdout: &stdout, Environ: environ})
	o := outcome{ws: ws, code: code, stdout: stdout.Bytes(), events: decodeEvents(t, stdout.Bytes())}
	file, err := os.ReadFile(ws.EventsFile())
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(file, o.stdout) {
		t.Errorf("events file and stdout differ:\nfile:\n%s\nstdout:\n%s", file, o.stdout)
	}
	got, _, err := ws.readExitCode()
	if err != nil || got != code {
		t.Errorf("exit-code file = %d (%v), Run returned %d", got, err, code)
	}
	if t.Failed() {
		t.Logf("events:\n%s", stdout.String())
	}
	return o
}

func decodeEvents(t *testing.T, b []byte) []runner.Event {
	t.Helper()
	var evs []runner.Event
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var ev runner.Event
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			t.Fatalf("event %q: %v", sc.Text(), err)
		}
		if ev.Seq != len(evs)+1 {
			t.Errorf("event %d has seq %d", len(evs)+1, ev.Seq)
		}
		evs = append(evs, ev)
	}
	return evs
}

func (o outcome) phases() []string {
	var ps []string
	for _, e := range o.events {
		if e.Type == runner.EventPhase {
			ps = append(ps, e.Phase)
		}
	}
	return ps
}

func (o outcome) last(typ string) *runner.Event {
	for i := len(o.events) - 1; i >= 0; i-- {
		if o.events[i].Type == typ {
			return &o.events[i]
		}
	}
	return nil
}

func (o outcome) result(t *testing.T) *runner.RunResult {
	t.Helper()
	ev := o.last(runner.EventResult)
	if ev == nil || ev.Result == nil {
		t.Fatalf("no result event (exit %d):\n%s", o.code, o.stdout)
	}
	return ev.Result
}

func (o outcome) errorEvent(t *testing.T) *runner.Event {
	t.Helper()
	ev := o.last(runner.EventError)
	if ev == nil {
		t.Fatalf("no error event (exit %d):\n%s", o.code, o.stdout)
	}
	return ev
}

func (o outcome) logs() string {
	var b strings.Builder
	for _, e := range o.events {
		if e.Type == runner.EventLog {
			b.WriteString(e.Message)
			b.WriteByte('\n')
		}
	}
	return b.String()
}

// waitGone waits until process pid no longer runs (a zombie counts as gone:
// it runs nothing).
func waitGone(t *testing.T, pid int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
		if err != nil {
			return
		}
		// The state follows the parenthesised command name.
		if i := bytes.LastIndexByte(b, ')'); i >= 0 && len(b) > i+2 && b[i+2] == 'Z' {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("process %d still runs: %s", pid, b)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func readPid(t *testing.T, path string) int {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("pid file: %v", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	return pid
}
