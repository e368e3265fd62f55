package agentrun

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/agentbot/agentbot/internal/testtool"
	"github.com/agentbot/agentbot/runner"
)

func TestAttachReplaysAFinishedRun(t *testing.T) {
	f := newFixture(t)
	o := runJob(t, t.Context(), f.job("scripted: write a.txt x"))
	if o.code != 0 {
		t.Fatalf("exit %d", o.code)
	}
	lines := strings.SplitAfter(string(o.stdout), "\n")
	lines = lines[:len(lines)-1]
	for _, from := range []int{0, 3, len(lines)} {
		var out bytes.Buffer
		code, err := Attach(t.Context(), o.ws, from, &out)
		if err != nil || code != 0 {
			t.Fatalf("from %d: Attach = %d, %v", from, code, err)
		}
		if want := strings.Join(lines[from:], ""); out.String() != want {
			t.Errorf("from %d: got\n%s\nwant\n%s", from, out.String(), want)
		}
	}
}

// TestAttachFollowsALiveRun: an attach made while the run is live delivers
// the events written so far while the run still runs, then follows it to the
// end and reports its exit code. The agent blocks on a gate the test opens
// only once the attach has delivered the events before it, so the attach
// cannot have been a replay of a finished run.
func TestAttachFollowsALiveRun(t *testing.T) {
	f := newFixture(t)
	ws := Workspace{Dir: t.TempDir()}
	dir := t.TempDir()
	gate := filepath.Join(dir, "gate")
	agent := filepath.Join(dir, "agent.sh")
	script := "#!/bin/sh\nset -e\necho before the gate\n" +
		"while [ ! -e " + gate + " ]; do sleep 0.02; done\n" +
		"echo after the gate\necho x > a.txt\necho late failure >&2\nexit 4\n"
	if err := os.WriteFile(agent, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	job := f.job("")
	job.Agent.Command = "/bin/sh " + agent
	in, err := json.Marshal(job)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	runDone := make(chan int, 1)
	go func() {
		runDone <- Run(ctx, Options{Workspace: ws, Stdin: bytes.NewReader(in), Stdout: nil})
	}()
	// Attach once the runner has made its events file (and so holds the lock).
	waitUntil(t, ctx, "the events file", func() bool {
		_, err := os.Stat(ws.EventsFile())
		return err == nil
	})
	var out testtool.Buffer
	type result struct {
		code int
		err  error
	}
	attached := make(chan result, 1)
	go func() {
		code, err := Attach(ctx, ws, 0, &out)
		attached <- result{code, err}
	}()
	waitUntil(t, ctx, "the attach to deliver the agent's first line", func() bool {
		return strings.Contains(out.String(), "before the gate")
	})
	select {
	case r := <-attached:
		t.Fatalf("Attach returned (%d, %v) while the agent was blocked", r.code, r.err)
	case code := <-runDone:
		t.Fatalf("Run returned %d while the agent was blocked", code)
	default:
	}
	if err := os.WriteFile(gate, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	var res result
	select {
	case res = <-attached:
	case <-ctx.Done():
		t.Fatal("Attach did not return once the run ended")
	}
	runCode := <-runDone
	if res.err != nil || res.code != runCode || res.code != runner.ExitAgent {
		t.Fatalf("Attach = %d, %v; Run = %d; want both %d", res.code, res.err, runCode, runner.ExitAgent)
	}
	file, err := os.ReadFile(ws.EventsFile())
	if err != nil {
		t.Fatal(err)
	}
	if out.String() != string(file) {
		t.Errorf("attach wrote %d bytes, the file holds %d", len(out.String()), len(file))
	}
	if !strings.Contains(out.String(), "after the gate") || !strings.Contains(out.String(), "late failure") {
		t.Error("attach missed the events after the gate")
	}
}

// waitUntil polls cond until it holds, failing when ctx ends first.
func waitUntil(t *testing.T, ctx context.Context, what string, cond func() bool) {
	t.Helper()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("waiting for %s: %v", what, ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
}

func TestAttachWaitsForWholeLines(t *testing.T) {
	ws := Workspace{Dir: t.TempDir()}
	lock, err := ws.lock() // this test plays the running agent-runner
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	ev1 := `{"seq":1,"time":"2026-01-01T00:00:00Z","type":"phase","phase":"cloning"}` + "\n"
	ev2 := `{"seq":2,"time":"2026-01-01T00:00:01Z","type":"log","message":"half and half"}` + "\n"
	ev3 := `{"seq":3,"time":"2026-01-01T00:00:02Z","type":"phase","phase":"agent"}` + "\n"
	file, err := os.OpenFile(ws.EventsFile(), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer file.Close()
	write := func(s string) {
		if _, err := file.WriteString(s); err != nil {
			t.Fatal(err)
		}
	}
	write(ev1 + ev2[:20])

	var out testtool.Buffer
	type result struct {
		code int
		err  error
	}
	done := make(chan result, 1)
	go func() {
		code, err := Attach(t.Context(), ws, 0, &out)
		done <- result{code, err}
	}()
	waitFor := func(want string) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for out.String() != want {
			if time.Now().After(deadline) {
				t.Fatalf("attach wrote %q, want %q", out.String(), want)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	waitFor(ev1)
	write(ev2[20:])
	waitFor(ev1 + ev2)
	write(ev3)
	if err := ws.writeExitCode(5); err != nil {
		t.Fatal(err)
	}
	r := <-done
	if r.code != 5 || r.err != nil {
		t.Fatalf("Attach = %d, %v; want 5", r.code, r.err)
	}
	if out.String() != ev1+ev2+ev3 {
		t.Errorf("attach wrote %q", out.String())
	}
}

func TestAttachReportsAGoneRunner(t *testing.T) {
	tests := []struct {
		name   string
		events string
	}{
		{"died mid-run", `{"seq":1,"type":"phase","phase":"cloning"}` + "\n" + `{"seq":2,"type":"phase","phase":"agent"}` + "\n"},
		{"never started", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ws := Workspace{Dir: t.TempDir()}
			if tc.events != "" {
				// A runner took the lock, wrote events and died.
				lock, err := ws.lock()
				if err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(ws.EventsFile(), []byte(tc.events), 0o644); err != nil {
					t.Fatal(err)
				}
				lock.Close()
			}
			var out bytes.Buffer
			code, err := Attach(t.Context(), ws, 1, &out)
			if code != runner.ExitInternal || !errors.Is(err, ErrRunnerGone) {
				t.Fatalf("Attach = %d, %v; want %d, ErrRunnerGone", code, err, runner.ExitInternal)
			}
			if tc.events != "" && out.String() != `{"seq":2,"type":"phase","phase":"agent"}`+"\n" {
				t.Errorf("attach wrote %q", out.String())
			}
		})
	}
}

// TestHostSideReadsRefuseLinks: attach and bundle run outside the sandbox
// on a workspace the agent could write, so a symlink (at the file or at
// .agentbot) must not lead them to the host's files, and a FIFO must not
// hang them.
func TestHostSideReadsRefuseLinks(t *testing.T) {
	const secret = "HOST-SECRET-7f3a"
	outside := t.TempDir()
	secretEvent := `{"seq":1,"type":"log","message":"` + secret + `"}` + "\n"
	for name, content := range map[string]string{"result.bundle": secret, "events.jsonl": secretEvent, "exit-code": "0\n"} {
		if err := os.WriteFile(outside+"/"+name, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name  string
		setup func(t *testing.T, ws Workspace)
	}{
		{"files are symlinks", func(t *testing.T, ws Workspace) {
			for _, name := range []string{"result.bundle", "events.jsonl", "exit-code"} {
				if err := os.Symlink(outside+"/"+name, ws.StateDir()+"/"+name); err != nil {
					t.Fatal(err)
				}
			}
		}},
		{"state directory is a symlink", func(t *testing.T, ws Workspace) {
			if err := os.Remove(ws.StateDir()); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(outside, ws.StateDir()); err != nil {
				t.Fatal(err)
			}
		}},
		{"files are FIFOs", func(t *testing.T, ws Workspace) {
			for _, name := range []string{"result.bundle", "events.jsonl", "exit-code"} {
				if err := syscall.Mkfifo(ws.StateDir()+"/"+name, 0o644); err != nil {
					t.Fatal(err)
				}
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ws := Workspace{Dir: t.TempDir()}
			if err := os.MkdirAll(ws.StateDir(), 0o755); err != nil {
				t.Fatal(err)
			}
			tc.setup(t, ws)
			var out bytes.Buffer
			if err := WriteBundle(ws, &out); err == nil {
				t.Errorf("WriteBundle succeeded, want a refusal")
			}
			if strings.Contains(out.String(), secret) {
				t.Errorf("WriteBundle copied the linked file: %q", out.String())
			}
			out.Reset()
			code, err := Attach(t.Context(), ws, 0, &out)
			if err == nil || code != runner.ExitInternal {
				t.Errorf("Attach = %d, %v; want ExitInternal and an error", code, err)
			}
			if strings.Contains(out.String(), secret) {
				t.Errorf("Attach followed the link: %q", out.String())
			}
		})
	}
}
