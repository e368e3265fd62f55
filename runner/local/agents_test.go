package local

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/agentbot/agentbot/internal/scriptedagent"
	"github.com/agentbot/agentbot/runner"
)

// TestNoAgentChildSurvives runs the real agent-runner with the scripted
// agent, whose spawn-sleeper child lives in the agent's own process group
// (not agent-runner's), and ends the run three ways: a cancel (SIGTERM, which
// agent-runner answers by killing the agent's group), a hung agent-runner
// that only SIGKILL ends after the grace, and the launcher's Close (SIGKILL
// at once). In none may the sleeper survive. Without bwrap only: inside it
// the PID namespace dies with bwrap, and the pid the agent sees is not the
// host's.
func TestNoAgentChildSurvives(t *testing.T) {
	bin := t.TempDir()
	agentRunner, err := scriptedagent.BuildAgentRunnerTo(bin)
	if err != nil {
		t.Fatal(err)
	}
	agent, err := scriptedagent.BuildTo(bin)
	if err != nil {
		t.Fatal(err)
	}
	src := filepath.Join(t.TempDir(), "src")
	for _, args := range [][]string{
		{"init", "-q", "--initial-branch=main", src},
		{"-C", src, "-c", "user.name=dev", "-c", "user.email=dev@example.com", "commit", "-q", "--allow-empty", "-m", "init"},
	} {
		if out, err := exec.Command("git", args...).CombinedOutput(); err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
	}
	cases := []struct {
		name string
		end  func(t *testing.T, l *Launcher, r *Run) error
	}{
		{"cancel", func(t *testing.T, l *Launcher, r *Run) error { return r.Stop(context.Background()) }},
		{"hung agent-runner", func(t *testing.T, l *Launcher, r *Run) error {
			// A stopped process cannot act on SIGTERM; only the SIGKILL
			// after the grace ends it.
			if err := syscall.Kill(r.pid, syscall.SIGSTOP); err != nil {
				t.Fatal(err)
			}
			return r.Stop(context.Background())
		}},
		{"launcher closed", func(t *testing.T, l *Launcher, r *Run) error { return l.Close() }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("GORACE", "atexit_sleep_ms=0")
			l, err := New(Options{DataDir: t.TempDir(), AgentRunner: agentRunner, Isolation: IsolationNone, StopGrace: time.Second, PassEnv: []string{"GORACE"}})
			if err != nil {
				t.Fatal(err)
			}
			pidFile := filepath.Join(t.TempDir(), "sleeper.pid")
			rr, err := l.Start(context.Background(), runner.Job{
				Version: runner.ProtocolVersion, TaskID: "s1", CloneURL: src,
				BaseBranch: "main", Branch: "agentbot/issue-1-x",
				Prompt:    runner.JobPrompt{Title: "x", Body: "scripted: spawn-sleeper " + pidFile + " 300; sleep 300"},
				Agent:     runner.AgentSpec{Name: "command", Command: agent},
				TimeLimit: runner.Duration(time.Minute), AuthorName: "bot", AuthorEmail: "bot@example.com",
			})
			if err != nil {
				t.Fatal(err)
			}
			r := rr.(*Run)
			go func() {
				for range r.Events() {
				}
			}()
			sleeper := waitPid(t, pidFile)
			t.Cleanup(func() { _ = syscall.Kill(sleeper, syscall.SIGKILL) })
			if err := tc.end(t, l, r); err != nil {
				t.Fatal(err)
			}
			<-r.done
			if alive(sleeper) {
				t.Fatalf("the agent's child %d outlived the run", sleeper)
			}
		})
	}
}

func waitPid(t *testing.T, path string) int {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		b, err := os.ReadFile(path)
		if err != nil || !strings.HasSuffix(string(b), "\n") {
			continue
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil {
			t.Fatal(err)
		}
		return pid
	}
	t.Fatalf("%s never appeared", path)
	return 0
}

// alive reports whether pid runs (a zombie waiting to be reaped is dead).
func alive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	i := strings.LastIndexByte(string(b), ')')
	f := strings.Fields(string(b[i+1:]))
	return len(f) > 0 && f[0] != "Z" && f[0] != "X"
}

// TestAttachKillsWhatACrashLeft: after agentbot and agent-runner died
// (SIGKILL, PR_SET_PDEATHSIG), the agent's children live on in
// agent-runner's session; the next agentbot's Attach reports the run gone
// and kills them.
func TestAttachKillsWhatACrashLeft(t *testing.T) {
	l := newLauncher(t, IsolationNone)
	ws := l.Workspace("crashed")
	if err := os.MkdirAll(ws, 0o700); err != nil {
		t.Fatal(err)
	}
	pidFile := filepath.Join(t.TempDir(), "sleeper.pid")
	// A session leader (standing for agent-runner) with a child working in
	// the workspace; then the leader dies.
	leader := exec.Command("sh", "-c", `sleep 300 & echo $! > "$0"; wait`, pidFile)
	leader.Dir = ws
	leader.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := leader.Start(); err != nil {
		t.Fatal(err)
	}
	sleeper := waitPid(t, pidFile)
	t.Cleanup(func() { _ = syscall.Kill(sleeper, syscall.SIGKILL) })
	if err := writeMeta(l.taskDir("crashed"), runMeta{PID: leader.Process.Pid, StartedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	_ = leader.Process.Kill()
	_ = leader.Wait()
	if !alive(sleeper) {
		t.Fatal("the sleeper died with its leader; the test proves nothing")
	}
	if _, err := l.Attach(context.Background(), "crashed", 0); !errors.Is(err, runner.ErrGone) {
		t.Fatalf("Attach = %v, want ErrGone", err)
	}
	for deadline := time.Now().Add(5 * time.Second); alive(sleeper) && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	if alive(sleeper) {
		t.Fatalf("the agent's child %d outlived the crash and the restart", sleeper)
	}
}
