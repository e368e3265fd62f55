package main

import (
	"bytes"
	"debug/elf"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/agentbot/agentbot/internal/scriptedagent"
	"github.com/agentbot/agentbot/internal/testtool"
	"github.com/agentbot/agentbot/runner"
)

// Built once by TestMain: agent-runner exactly as it ships (CGO_ENABLED=0)
// and the scripted agent.
var agentRunner, scriptedAgent string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "agent-runner-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	agentRunner, err = scriptedagent.BuildAgentRunnerTo(dir)
	if err == nil {
		scriptedAgent, err = scriptedagent.BuildTo(dir)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func TestAgentRunnerIsStatic(t *testing.T) {
	f, err := elf.Open(agentRunner)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Fatal("agent-runner has a dynamic loader (PT_INTERP): it must build with CGO_ENABLED=0")
		}
	}
}

// localRepo makes a repository on disk with branch main and returns its path
// and head: local clone URLs serve `agentbot run` on a local checkout.
func localRepo(t *testing.T) (string, string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "src")
	testtool.Git(t, "", "init", "-q", "--initial-branch=main", dir)
	if err := os.WriteFile(filepath.Join(dir, "README.md"), []byte("hi\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	testtool.Git(t, dir, "add", "-A")
	testtool.Git(t, dir, "-c", "user.name=dev", "-c", "user.email=dev@example.com", "commit", "-q", "-m", "init")
	return dir, testtool.Git(t, dir, "rev-parse", "HEAD")
}

func jobJSON(t *testing.T, cloneURL, body string) []byte {
	t.Helper()
	b, err := json.Marshal(runner.Job{
		Version:     runner.ProtocolVersion,
		TaskID:      "t-1",
		CloneURL:    cloneURL,
		BaseBranch:  "main",
		Branch:      "agentbot/issue-1-x",
		Prompt:      runner.JobPrompt{Title: "x", Body: body},
		Agent:       runner.AgentSpec{Name: "command", Command: scriptedAgent},
		TimeLimit:   runner.Duration(time.Minute),
		AuthorName:  "bot",
		AuthorEmail: "bot@example.com",
	})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// agentRunnerCmd runs agent-runner args with the workspace given through
// $AGENTBOT_WORKSPACE, as launchers may.
func agentRunnerCmd(ws string, stdin []byte, args ...string) *exec.Cmd {
	cmd := exec.Command(agentRunner, args...)
	cmd.Env = append(os.Environ(), "AGENTBOT_WORKSPACE="+ws)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	return cmd
}

func exitCode(err error) int {
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	if err != nil {
		return -1
	}
	return 0
}

func TestRunAttachBundle(t *testing.T) {
	for _, scheme := range []string{"", "file://"} {
		t.Run("clone url "+scheme+"path", func(t *testing.T) {
			src, head := localRepo(t)
			ws := t.TempDir()
			var stdout, stderr bytes.Buffer
			cmd := agentRunnerCmd(ws, jobJSON(t, scheme+src, "scripted: write hello.txt hi"))
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			if err := cmd.Run(); err != nil {
				t.Fatalf("run: %v\n%s\n%s", err, stdout.String(), stderr.String())
			}
			file, err := os.ReadFile(filepath.Join(ws, ".agentbot", "events.jsonl"))
			if err != nil || !bytes.Equal(file, stdout.Bytes()) {
				t.Fatalf("events file (%v) differs from stdout:\n%s\n---\n%s", err, file, stdout.String())
			}
			if b, _ := os.ReadFile(filepath.Join(ws, ".agentbot", "exit-code")); string(b) != "0\n" {
				t.Errorf("exit-code file = %q", b)
			}
			lines := strings.SplitAfter(stdout.String(), "\n")
			lines = lines[:len(lines)-1] // after the final newline
			var last runner.Event
			if err := json.Unmarshal([]byte(lines[len(lines)-1]), &last); err != nil || last.Result == nil || last.Result.BaseSHA != head {
				t.Fatalf("last event = %s (%v)", lines[len(lines)-1], err)
			}

			// attach --from 2 replays the rest and exits with the run's code.
			out, err := agentRunnerCmd(ws, nil, "attach", "--from", "2").Output()
			if err != nil || string(out) != strings.Join(lines[2:], "") {
				t.Errorf("attach: %v\n%s", err, out)
			}

			// bundle writes the bundle; git fetches the branch from it.
			bundle, err := agentRunnerCmd(ws, nil, "bundle").Output()
			if err != nil {
				t.Fatalf("bundle: %v", err)
			}
			bf := filepath.Join(t.TempDir(), "b.bundle")
			if err := os.WriteFile(bf, bundle, 0o644); err != nil {
				t.Fatal(err)
			}
			testtool.Git(t, src, "fetch", "-q", bf, "refs/heads/agentbot/issue-1-x:refs/heads/result")
			if got := testtool.Git(t, src, "rev-parse", "result"); got != last.Result.Commit {
				t.Errorf("bundle head %s, result commit %s", got, last.Result.Commit)
			}
		})
	}
}

func TestSubcommandErrors(t *testing.T) {
	ws := t.TempDir()
	tests := []struct {
		name   string
		args   []string
		want   int
		stderr string
	}{
		{"bundle without a result", []string{"bundle"}, 1, "no result bundle"},
		{"attach to nothing", []string{"attach", "--from", "0"}, runner.ExitInternal, "runner is gone"},
		{"unknown command", []string{"frobnicate"}, runner.ExitBadJob, "unknown command"},
		{"bad flag", []string{"run", "--nope"}, runner.ExitBadJob, "flag provided but not defined"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var stderr bytes.Buffer
			cmd := agentRunnerCmd(ws, nil, tc.args...)
			cmd.Stderr = &stderr
			err := cmd.Run()
			if got := exitCode(err); got != tc.want || !strings.Contains(stderr.String(), tc.stderr) {
				t.Errorf("exit %d (%v), stderr %q; want %d and %q", got, err, stderr.String(), tc.want, tc.stderr)
			}
		})
	}
}

func waitFile(t *testing.T, path string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if b, err := os.ReadFile(path); err == nil && len(b) > 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never appeared", path)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func pidGone(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return true
	}
	i := bytes.LastIndexByte(b, ')')
	return i >= 0 && len(b) > i+2 && b[i+2] == 'Z'
}

func waitGone(t *testing.T, pid int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !pidGone(pid) {
		if time.Now().After(deadline) {
			t.Fatalf("process %d still runs", pid)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func readPid(t *testing.T, path string) int {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	return pid
}

func TestSIGTERMCancelsTheAgentGroup(t *testing.T) {
	src, _ := localRepo(t)
	ws := t.TempDir()
	pidFile := filepath.Join(t.TempDir(), "child.pid")
	var stdout bytes.Buffer
	cmd := agentRunnerCmd(ws, jobJSON(t, src, "scripted: spawn-sleeper "+pidFile+" 300; sleep 300"))
	cmd.Stdout = &stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waitFile(t, pidFile)
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	err := cmd.Wait()
	if got := exitCode(err); got != runner.ExitCancelled {
		t.Fatalf("exit %d (%v), want %d\n%s", got, err, runner.ExitCancelled, stdout.String())
	}
	waitGone(t, readPid(t, pidFile))
	if b, _ := os.ReadFile(filepath.Join(ws, ".agentbot", "exit-code")); string(b) != "10\n" {
		t.Errorf("exit-code file = %q", b)
	}
	if !strings.Contains(stdout.String(), `"type":"error","phase":"agent","message":"cancelled during agent"`) {
		t.Errorf("no cancel error event:\n%s", stdout.String())
	}
}

func TestRunOutlivesABrokenStdout(t *testing.T) {
	src, _ := localRepo(t)
	ws := t.TempDir()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	r.Close() // the launcher's connection is gone before the first event
	cmd := agentRunnerCmd(ws, jobJSON(t, src, "scripted: stdout-lines 100; write a.txt x"))
	cmd.Stdout = w
	err = cmd.Run()
	w.Close()
	if err != nil {
		t.Fatalf("run with a broken stdout: %v", err)
	}
	out, err := agentRunnerCmd(ws, nil, "attach", "--from", "0").Output()
	if err != nil || !strings.Contains(string(out), `"status":"succeeded"`) {
		t.Errorf("attach after a broken stdout: %v\n%s", err, out)
	}
}

func TestAttachToAKilledRunner(t *testing.T) {
	src, _ := localRepo(t)
	ws := t.TempDir()
	pidFile := filepath.Join(t.TempDir(), "child.pid")
	cmd := agentRunnerCmd(ws, jobJSON(t, src, "scripted: spawn-sleeper "+pidFile+" 300; sleep 300"))
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waitFile(t, pidFile)
	// The sleeper outlives a SIGKILLed runner (its group is the agent's):
	// clean it up here. Pdeathsig takes the agent itself.
	t.Cleanup(func() { _ = syscall.Kill(readPid(t, pidFile), syscall.SIGKILL) })

	// While the runner lives, attach follows it; kill the runner under it.
	attach := agentRunnerCmd(ws, nil, "attach", "--from", "1")
	var out, stderr bytes.Buffer
	attach.Stdout, attach.Stderr = &out, &stderr
	if err := attach.Start(); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	err := attach.Wait()
	if got := exitCode(err); got != runner.ExitInternal || !strings.Contains(stderr.String(), "runner is gone") {
		t.Fatalf("attach: exit %d, stderr %q", got, stderr.String())
	}
	if !strings.Contains(out.String(), `"phase":"agent"`) || strings.Contains(out.String(), `"seq":1,`) {
		t.Errorf("attach output:\n%s", out.String())
	}
}

// An exec stream may not be able to close standard input: the job is one
// JSON document, and the run starts once it has arrived.
func TestRunNeedsNoEOFAfterTheJob(t *testing.T) {
	src, _ := localRepo(t)
	ws := t.TempDir()
	cmd := agentRunnerCmd(ws, nil)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	defer stdin.Close()
	var stdout bytes.Buffer
	cmd.Stdout = &stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	if _, err := stdin.Write(jobJSON(t, src, "scripted: write a.txt x")); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil || !strings.Contains(stdout.String(), `"status":"succeeded"`) {
		t.Fatalf("run: %v\n%s", err, stdout.String())
	}
}
