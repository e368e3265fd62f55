package local

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/agentbot/agentbot/internal/testtool"
	"github.com/agentbot/agentbot/runner"
	"github.com/agentbot/agentbot/runner/sandbox"
)

// The test binary doubles as a stand-in agent-runner (the real one lives in
// cmd/agent-runner and has its own tests): with fakeRunnerEnv set it speaks
// the CLI contract well enough to drive the launcher.
const fakeRunnerEnv = "LOCAL_TEST_FAKE_AGENT_RUNNER"

func TestMain(m *testing.M) {
	if os.Getenv(fakeRunnerEnv) == "1" {
		os.Exit(fakeRunner(os.Args[1:]))
	}
	os.Exit(m.Run())
}

func fakeRunner(args []string) int {
	if len(args) == 0 {
		fmt.Fprintln(os.Stderr, "no subcommand")
		return runner.ExitInternal
	}
	var ws string
	from := 0
	for i := 1; i+1 < len(args); i++ {
		switch args[i] {
		case "--workspace":
			ws = args[i+1]
		case "--from":
			from, _ = strconv.Atoi(args[i+1])
		}
	}
	meta := filepath.Join(ws, ".agentbot")
	switch args[0] {
	case "bundle":
		b, err := os.ReadFile(filepath.Join(meta, "result.bundle"))
		if err != nil {
			fmt.Fprintln(os.Stderr, "no bundle")
			return 1
		}
		os.Stdout.Write(b)
		return 0
	case "attach":
		f, err := os.Open(filepath.Join(meta, "events.jsonl"))
		if err != nil {
			return runner.ExitInternal
		}
		defer f.Close()
		r := bufio.NewReader(f)
		for {
			line, err := r.ReadString('\n')
			if line != "" {
				var ev runner.Event
				if json.Unmarshal([]byte(line), &ev) == nil && ev.Seq > from {
					os.Stdout.WriteString(line)
				}
				continue
			}
			if err != nil {
				if code, err := os.ReadFile(filepath.Join(meta, "exit-code")); err == nil {
					n, _ := strconv.Atoi(strings.TrimSpace(string(code)))
					return n
				}
				time.Sleep(20 * time.Millisecond)
			}
		}
	case "run":
	default:
		return runner.ExitInternal
	}
	var job runner.Job
	if err := json.NewDecoder(os.Stdin).Decode(&job); err != nil {
		fmt.Fprintln(os.Stderr, "bad job:", err)
		return runner.ExitBadJob
	}
	if err := os.MkdirAll(meta, 0o755); err != nil {
		return runner.ExitInternal
	}
	events, _ := os.OpenFile(filepath.Join(meta, "events.jsonl"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	seq := 0
	emit := func(ev runner.Event) {
		seq++
		ev.Seq = seq
		ev.Time = time.Now()
		b, _ := json.Marshal(ev)
		b = append(b, '\n')
		os.Stdout.Write(b)
		events.Write(b)
	}
	finish := func(code int) int {
		os.WriteFile(filepath.Join(meta, "exit-code"), []byte(strconv.Itoa(code)), 0o644)
		return code
	}
	emit(runner.Event{Type: runner.EventPhase, Phase: runner.PhaseCloning})
	switch job.Prompt.Instructions {
	case "ok":
		emit(runner.Event{Type: runner.EventPhase, Phase: runner.PhaseAgent})
		emit(runner.Event{Type: runner.EventLog, Message: "home=" + os.Getenv("HOME") + " secret=" + os.Getenv("LOCAL_TEST_SECRET"), Stream: "stdout"})
		os.WriteFile(filepath.Join(meta, "result.bundle"), []byte("BUNDLE:"+job.TaskID), 0o644)
		emit(runner.Event{Type: runner.EventResult, Result: &runner.RunResult{Status: runner.StatusSucceeded, Branch: job.Branch}})
		return finish(runner.ExitOK)
	case "fail":
		fmt.Fprintln(os.Stderr, "agent exploded")
		emit(runner.Event{Type: runner.EventError, Phase: runner.PhaseAgent, Message: "agent failed", ExitCode: 1})
		return finish(runner.ExitAgent)
	case "sleep":
		emit(runner.Event{Type: runner.EventPhase, Phase: runner.PhaseAgent})
		// A grandchild in the same process group, as an agent would be.
		exec.Command("sleep", "300").Start()
		time.Sleep(5 * time.Minute)
		return finish(runner.ExitOK)
	case "gate":
		// Body names a file the test creates to let the run finish.
		emit(runner.Event{Type: runner.EventPhase, Phase: runner.PhaseAgent})
		for deadline := time.Now().Add(time.Minute); ; time.Sleep(10 * time.Millisecond) {
			if _, err := os.Stat(job.Prompt.Body); err == nil {
				break
			}
			if time.Now().After(deadline) {
				fmt.Fprintln(os.Stderr, "the gate never opened")
				return finish(runner.ExitInternal)
			}
		}
		fmt.Fprintln(os.Stderr, "gate passed")
		emit(runner.Event{Type: runner.EventPhase, Phase: runner.PhaseCommitting})
		return finish(runner.ExitOK)
	case "slow":
		emit(runner.Event{Type: runner.EventPhase, Phase: runner.PhaseAgent})
		time.Sleep(300 * time.Millisecond)
		emit(runner.Event{Type: runner.EventPhase, Phase: runner.PhaseCommitting})
		return finish(runner.ExitOK)
	case "caps":
		status, err := os.ReadFile("/proc/self/status")
		for _, line := range strings.Split(string(status), "\n") {
			if strings.HasPrefix(line, "CapEff:") || strings.HasPrefix(line, "CapPrm:") {
				emit(runner.Event{Type: runner.EventLog, Message: line})
			}
		}
		if err != nil {
			emit(runner.Event{Type: runner.EventLog, Message: err.Error()})
		}
		return finish(runner.ExitOK)
	case "list":
		// Body names directories; report what each holds.
		for _, p := range strings.Fields(job.Prompt.Body) {
			ents, err := os.ReadDir(p)
			var names []string
			for _, e := range ents {
				names = append(names, e.Name())
			}
			emit(runner.Event{Type: runner.EventLog, Message: fmt.Sprintf("%s: %s %v", p, strings.Join(names, " "), err)})
		}
		return finish(runner.ExitOK)
	case "escape":
		// Body names paths to try writing; report each outcome.
		for _, p := range strings.Fields(job.Prompt.Body) {
			err := os.WriteFile(p, []byte("x"), 0o644)
			emit(runner.Event{Type: runner.EventLog, Message: fmt.Sprintf("write %s: %v", p, err)})
		}
		return finish(runner.ExitOK)
	}
	return finish(runner.ExitInternal)
}

func newLauncher(t *testing.T, isolation string) *Launcher {
	t.Helper()
	t.Setenv(fakeRunnerEnv, "1")
	t.Setenv("LOCAL_TEST_SECRET", "s3cret")
	// A race-enabled child otherwise sleeps a second before exiting.
	t.Setenv("GORACE", "atexit_sleep_ms=0")
	l, err := New(Options{
		DataDir:     walkableTempDir(t),
		AgentRunner: os.Args[0],
		Isolation:   isolation,
		PassEnv:     []string{fakeRunnerEnv, "GORACE"},
		StopGrace:   time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := l.Close(); err != nil {
			t.Errorf("close launcher: %v", err)
		}
	})
	return l
}

// isolations are the modes to run a test under: none, and the sandboxes
// that work here (AGENTBOT_REQUIRE_BWRAP and AGENTBOT_REQUIRE_RUNSC make a
// missing one fail the test instead).
func isolations(t *testing.T) []string {
	t.Helper()
	modes := []string{IsolationNone}
	missing := func(env, why string) {
		if os.Getenv(env) == "1" {
			t.Fatalf("%s (%s=1)", why, env)
		}
		t.Log(why)
	}
	if os.Geteuid() != 0 {
		missing("AGENTBOT_REQUIRE_BWRAP", "sandbox cases skipped: sandboxes need root (they run as a uid of their own)")
		return modes
	}
	if p, why := probeBwrap(DefaultSandboxUID, DefaultSandboxUID); p != "" {
		modes = append(modes, IsolationBwrap)
	} else {
		missing("AGENTBOT_REQUIRE_BWRAP", "bubblewrap cases skipped: "+why)
	}
	if err := probeRunsc(t); err == nil {
		modes = append(modes, IsolationGVisor)
	} else {
		missing("AGENTBOT_REQUIRE_RUNSC", "gVisor cases skipped: "+err.Error())
	}
	return modes
}

func probeRunsc(t *testing.T) error {
	p, err := exec.LookPath("runsc")
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	return sandbox.Runsc{Path: p, StateDir: t.TempDir()}.Probe(ctx)
}

// walkableTempDir is a temporary directory the sandbox's uid may pass
// through (not list): bubblewrap opens the workspace as that uid.
func walkableTempDir(t *testing.T) string {
	dir := t.TempDir()
	for d := dir; d != os.TempDir() && d != "/"; d = filepath.Dir(d) {
		if err := os.Chmod(d, 0o711); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func collect(t *testing.T, r runner.Run) []runner.Event {
	t.Helper()
	var evs []runner.Event
	for ev := range r.Events() {
		evs = append(evs, ev)
	}
	return evs
}

func TestRunOutcomes(t *testing.T) {
	for _, iso := range isolations(t) {
		cases := []struct {
			name       string
			mode       string
			wantCode   int
			wantTypes  []string
			wantBundle bool
			wantStderr string // last line of Exit.StderrTail, "" for none
		}{
			{"success", "ok", runner.ExitOK, []string{"phase", "phase", "log", "result"}, true, ""},
			{"agent failure", "fail", runner.ExitAgent, []string{"phase", "error"}, false, "agent exploded"},
		}
		for _, tc := range cases {
			t.Run(iso+"/"+tc.name, func(t *testing.T) {
				l := newLauncher(t, iso)
				ctx := context.Background()
				r, err := l.Start(ctx, runner.Job{Version: 1, TaskID: "t1", Branch: "b", Prompt: runner.JobPrompt{Instructions: tc.mode}})
				if err != nil {
					t.Fatal(err)
				}
				evs := collect(t, r)
				exit, err := r.Wait(ctx)
				if err != nil || exit.Code != tc.wantCode {
					t.Fatalf("Wait = %d, %v; want %d (stderr %q)", exit.Code, err, tc.wantCode, exit.StderrTail)
				}
				var types []string
				for i, ev := range evs {
					types = append(types, ev.Type)
					if ev.Seq != i+1 {
						t.Errorf("event %d has seq %d", i, ev.Seq)
					}
				}
				if strings.Join(types, ",") != strings.Join(tc.wantTypes, ",") {
					t.Errorf("event types %v, want %v", types, tc.wantTypes)
				}
				for _, ev := range evs {
					if strings.Contains(ev.Message, "s3cret") {
						t.Errorf("agentbot's environment leaked into the child: %q", ev.Message)
					}
					home := l.Workspace("t1")
					if iso != IsolationNone {
						home = sandbox.WorkspaceTarget
					}
					if ev.Type == runner.EventLog && !strings.Contains(ev.Message, "home="+home+"/home") {
						t.Errorf("HOME is not in the workspace: %q", ev.Message)
					}
				}
				var buf bytes.Buffer
				err = r.Bundle(ctx, &buf)
				if tc.wantBundle && (err != nil || buf.String() != "BUNDLE:t1") {
					t.Errorf("Bundle = %q, %v", buf.String(), err)
				}
				if !tc.wantBundle && err == nil {
					t.Errorf("Bundle succeeded without a bundle")
				}
				if tail := exit.StderrTail; tc.wantStderr != "" && (len(tail) == 0 || tail[len(tail)-1] != tc.wantStderr) ||
					tc.wantStderr == "" && len(tail) != 0 {
					t.Errorf("Exit.StderrTail = %q; want it to end with %q", tail, tc.wantStderr)
				}
			})
		}
	}
}

func TestStopKillsProcessGroup(t *testing.T) {
	for _, iso := range isolations(t) {
		t.Run(iso, func(t *testing.T) {
			l := newLauncher(t, iso)
			ctx := context.Background()
			r, err := l.Start(ctx, runner.Job{Version: 1, TaskID: "long", Prompt: runner.JobPrompt{Instructions: "sleep"}})
			if err != nil {
				t.Fatal(err)
			}
			// Wait until the agent phase is reported, then cancel.
			for ev := range r.Events() {
				if ev.Phase == runner.PhaseAgent {
					break
				}
			}
			pid := r.(*Run).pid
			stopErr := make(chan error, 1)
			go func() { stopErr <- r.Stop(ctx) }()
			for range r.Events() {
			}
			if err := <-stopErr; err != nil {
				t.Fatal(err)
			}
			exit, err := r.Wait(ctx)
			if err != nil || exit.Code != runner.ExitCancelled {
				t.Fatalf("Wait = %d, %v; want %d", exit.Code, err, runner.ExitCancelled)
			}
			// Nothing of the process group is left.
			// (zombies wait for init to reap them and count as gone).
			out, _ := exec.Command("ps", "-o", "stat=,pid=,args=", "-g", strconv.Itoa(pid)).Output()
			for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
				if line != "" && !strings.HasPrefix(line, "Z") {
					t.Errorf("process left in group %d: %s", pid, line)
				}
			}
		})
	}
}

func TestAttach(t *testing.T) {
	l := newLauncher(t, IsolationNone)
	ctx := context.Background()
	if _, err := l.Attach(ctx, "never-started", 0); !errors.Is(err, runner.ErrGone) {
		t.Fatalf("Attach of an unknown task = %v, want ErrGone", err)
	}
	r, err := l.Start(ctx, runner.Job{Version: 1, TaskID: "a1", Prompt: runner.JobPrompt{Instructions: "slow"}})
	if err != nil {
		t.Fatal(err)
	}
	first := <-r.Events()
	a, err := l.Attach(ctx, "a1", first.Seq)
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for range r.Events() {
		}
	}()
	var seqs []int
	for ev := range a.Events() {
		seqs = append(seqs, ev.Seq)
	}
	if exit, err := a.Wait(ctx); err != nil || exit.Code != 0 {
		t.Fatalf("attach Wait = %d, %v", exit.Code, err)
	}
	if fmt.Sprint(seqs) != "[2 3]" {
		t.Errorf("attached events %v, want [2 3]", seqs)
	}
	// Once the run is over, a fresh launcher on the same data dir (a
	// restarted agentbot) finds it gone.
	l2, err := New(Options{DataDir: l.opts.DataDir, AgentRunner: os.Args[0], Isolation: IsolationNone})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l2.Attach(ctx, "a1", 0); !errors.Is(err, runner.ErrGone) {
		t.Fatalf("Attach after restart = %v, want ErrGone", err)
	}
}

func TestCleanupKeepsFailedWorkspaces(t *testing.T) {
	l := newLauncher(t, IsolationNone)
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	l.now = func() time.Time { return now }
	ctx := context.Background()
	for _, id := range []string{"kept", "removed"} {
		r, err := l.Start(ctx, runner.Job{Version: 1, TaskID: id, Prompt: runner.JobPrompt{Instructions: "ok"}})
		if err != nil {
			t.Fatal(err)
		}
		collect(t, r)
		r.Wait(ctx)
	}
	if err := l.Cleanup(ctx, "kept", true); err != nil {
		t.Fatal(err)
	}
	if err := l.Cleanup(ctx, "removed", false); err != nil {
		t.Fatal(err)
	}
	exists := func(id string) bool { _, err := os.Stat(l.taskDir(id)); return err == nil }
	if !exists("kept") || exists("removed") {
		t.Fatalf("after cleanup: kept=%v removed=%v", exists("kept"), exists("removed"))
	}
	now = now.Add(25 * time.Hour)
	l.sweep()
	if exists("kept") {
		t.Fatal("kept workspace outlived its retention")
	}
}

func TestBwrapConfinesWrites(t *testing.T) {
	if p, why := probeBwrap(DefaultSandboxUID, DefaultSandboxUID); p == "" {
		testtool.Missing(t, "AGENTBOT_REQUIRE_BWRAP", "bubblewrap unavailable: "+why)
	}
	l := newLauncher(t, IsolationBwrap)
	outside := t.TempDir() // under /tmp, which the sandbox replaces
	home, _ := os.UserHomeDir()
	ws := l.Workspace("esc")
	targets := []string{
		sandbox.WorkspaceTarget + "/inside.txt",
		filepath.Join(outside, "outside.txt"),
		filepath.Join(home, "agentbot-escape.txt"),
		filepath.Join(l.opts.DataDir, "store.txt"),
		"/etc/agentbot-escape",
	}
	ctx := context.Background()
	r, err := l.Start(ctx, runner.Job{Version: 1, TaskID: "esc", Prompt: runner.JobPrompt{Instructions: "escape", Body: strings.Join(targets, " ")}})
	if err != nil {
		t.Fatal(err)
	}
	evs := collect(t, r)
	if exit, err := r.Wait(ctx); exit.Code != 0 || err != nil {
		t.Fatalf("Wait = %d, %v", exit.Code, err)
	}
	if len(evs) != 1+len(targets) {
		t.Fatalf("events: %+v", evs)
	}
	for i, p := range targets {
		msg := evs[1+i].Message
		if i == 0 {
			if _, err := os.Stat(filepath.Join(ws, "inside.txt")); err != nil {
				t.Errorf("could not write inside the workspace: %s", msg)
			}
		}
		// A write may land in the sandbox's own tmpfs; none may reach
		// the host.
		if i > 0 {
			if _, err := os.Stat(p); err == nil {
				t.Errorf("%s exists on the host", p)
				os.Remove(p)
			}
		}
	}
}

// TestBwrapHidesHostSockets: the host's /run (systemd user bus, docker.sock,
// agents' sockets) must not be reachable from the sandbox; a read-only bind
// would not stop connect().
func TestBwrapHidesHostSockets(t *testing.T) {
	if p, why := probeBwrap(DefaultSandboxUID, DefaultSandboxUID); p == "" {
		testtool.Missing(t, "AGENTBOT_REQUIRE_BWRAP", "bubblewrap unavailable: "+why)
	}
	host, err := os.ReadDir("/run")
	if err != nil || len(host) == 0 {
		t.Skipf("the host's /run is empty or unreadable (%v): nothing to hide", err)
	}
	keep := map[string]bool{}
	if target, err := filepath.EvalSymlinks("/etc/resolv.conf"); err == nil && strings.HasPrefix(target, "/run/") {
		keep[strings.SplitN(strings.TrimPrefix(target, "/run/"), "/", 2)[0]] = true
	}
	l := newLauncher(t, IsolationBwrap)
	ctx := context.Background()
	r, err := l.Start(ctx, runner.Job{Version: 1, TaskID: "run", Prompt: runner.JobPrompt{Instructions: "list", Body: "/run"}})
	if err != nil {
		t.Fatal(err)
	}
	evs := collect(t, r)
	if exit, err := r.Wait(ctx); exit.Code != 0 || err != nil {
		t.Fatalf("Wait = %d, %v", exit.Code, err)
	}
	if len(evs) != 2 {
		t.Fatalf("events: %+v", evs)
	}
	listed := strings.TrimPrefix(evs[1].Message, "/run: ")
	for _, e := range host {
		if keep[e.Name()] {
			continue
		}
		for _, name := range strings.Fields(listed) {
			if name == e.Name() {
				t.Errorf("the sandbox sees the host's /run/%s (%s)", name, evs[1].Message)
			}
		}
	}
}

// TestBwrapDropsCapabilities: agentbot run as root must not hand the agent
// root's capabilities (CAP_SYS_ADMIN would unmount what hides the data
// directory and the App key).
func TestBwrapDropsCapabilities(t *testing.T) {
	if p, why := probeBwrap(DefaultSandboxUID, DefaultSandboxUID); p == "" {
		testtool.Missing(t, "AGENTBOT_REQUIRE_BWRAP", "bubblewrap unavailable: "+why)
	}
	l := newLauncher(t, IsolationBwrap)
	ctx := context.Background()
	r, err := l.Start(ctx, runner.Job{Version: 1, TaskID: "caps", Prompt: runner.JobPrompt{Instructions: "caps"}})
	if err != nil {
		t.Fatal(err)
	}
	evs := collect(t, r)
	if exit, err := r.Wait(ctx); exit.Code != 0 || err != nil {
		t.Fatalf("Wait = %d, %v", exit.Code, err)
	}
	if len(evs) != 3 {
		t.Fatalf("events: %+v", evs)
	}
	for _, ev := range evs[1:] {
		if _, v, _ := strings.Cut(ev.Message, ":"); strings.Trim(strings.TrimSpace(v), "0") != "" {
			t.Errorf("the sandbox holds capabilities: %s", ev.Message)
		}
	}
}
