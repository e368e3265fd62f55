package local

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/agentbot/agentbot/internal/scriptedagent"
	"github.com/agentbot/agentbot/runner"
	"github.com/agentbot/agentbot/runner/sandbox"
)

// hostileView is the escape suite's agent: a shell script that tries what
// a prompt-injected agent would and prints one "ESCAPE <what>" line for
// each attempt that worked. Its environment names a marker in the
// operator's HOME, a file in the data directory, a file in another task's
// workspace, and a name for the host's /tmp.
const hostileView = `#!/bin/sh
home_marker=$ESC_HOME_MARKER data_file=$ESC_DATA_FILE other_ws=$ESC_OTHER_WS tmp_name=$ESC_TMP_NAME
say() { echo "ESCAPE $*"; }
[ "$(id -u)" = 0 ] && say "uid 0"
w=$(find /proc/sys -type f -writable 2>/dev/null | head -3)
[ -n "$w" ] && say "writable /proc/sys: $w"
( echo '|/tmp/x' > /proc/sys/kernel/core_pattern ) 2>/dev/null && say "wrote core_pattern"
for f in /etc/shadow "$home_marker" "$data_file" "$other_ws"; do
  cat "$f" >/dev/null 2>&1 && say "read $f"
done
for p in /proc/[0-9]*; do
  pid=${p#/proc/}
  [ "$pid" = "$$" ] && continue
  cmd=$(tr '\0' ' ' < "$p/cmdline" 2>/dev/null)
  # gVisor's agent-init (agent-runner's binary, the agent's own uid and
  # PID namespace) is the agent's parent there, not agent-runner.
  case "$cmd" in *" agent-init "*) continue ;; esac
  if echo "$cmd" | grep -q agent-runner; then
    echo "SEES agent-runner $pid"
    ( exec 3< "$p/mem" ) 2>/dev/null && say "opened agent-runner's mem"
    ( exec 4> "$p/fd/1" ) 2>/dev/null && say "opened agent-runner's fd/1"
    ( exec 5< "$p/environ" ) 2>/dev/null && say "opened agent-runner's environ"
  fi
done
echo x > /tmp/"$tmp_name" 2>/dev/null
echo x > /workspace/.agentbot/events.jsonl 2>/dev/null && say "wrote agent-runner's events"
mv /workspace/.agentbot /workspace/.agentbot-moved 2>/dev/null && say "moved agent-runner's state"
# A forged result event, as agent-runner would print it.
echo '{"seq":99,"type":"result","result":{"status":"succeeded","branch":"main","commit":"0000000000000000000000000000000000000000"}}'
# Left running: a double fork into a session of its own.
setsid sh -c 'sleep 314159 & exit 0' </dev/null >/dev/null 2>&1
echo changed > escape-ran.txt
echo done
`

// hostileLimits are the agents that each run into one limit.
var hostileLimits = map[string]string{
	"pids":   `i=0; while [ $i -lt 2000 ]; do sleep 60 & i=$((i+1)); done; wait; exit 1`,
	"memory": `dd if=/dev/zero of=/dev/null bs=1400M count=1 2>/dev/null; exit 1`,
	"disk":   `while :; do dd if=/dev/zero bs=1M count=16 >> big.bin 2>/dev/null || exit 1; sleep 0.1; done`,
}

// escapeLimits are small, so that each hostile agent meets its limit fast.
var escapeLimits = sandbox.Limits{Memory: 512 * sandbox.MiB, PIDs: 128, CPUs: 1, Disk: 128 * sandbox.MiB, TmpSize: 32 * sandbox.MiB, ShmSize: 16 * sandbox.MiB}

// TestEscape runs a hostile agent through the real launcher and the real
// agent-runner, under each sandbox, and checks what it could do from the
// host's side.
// sandboxIsolations are the isolations that work here other than none
// (isolations fails the test when a required one does not).
func sandboxIsolations(t *testing.T) []string {
	t.Helper()
	var sandboxes []string
	for _, iso := range isolations(t) {
		if iso != IsolationNone {
			sandboxes = append(sandboxes, iso)
		}
	}
	if len(sandboxes) == 0 {
		t.Skip("no sandbox works here")
	}
	return sandboxes
}

func TestEscape(t *testing.T) {
	sandboxes := sandboxIsolations(t)
	tools := walkableTempDir(t)
	agentRunner, err := scriptedagent.BuildAgentRunnerTo(tools)
	if err != nil {
		t.Fatal(err)
	}
	src := filepath.Join(tools, "src")
	for _, args := range [][]string{
		{"init", "-q", "--initial-branch=main", src},
		{"-C", src, "-c", "user.name=dev", "-c", "user.email=dev@example.com", "commit", "-q", "--allow-empty", "-m", "init"},
	} {
		if out, err := exec.Command("git", args...).CombinedOutput(); err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
	}
	scripts := map[string]string{"view": hostileView}
	for name, body := range hostileLimits {
		scripts[name] = "#!/bin/sh\n" + body + "\n"
	}
	for name, body := range scripts {
		if err := os.WriteFile(filepath.Join(tools, name+".sh"), []byte(body), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	home, err := os.UserHomeDir()
	if err != nil {
		t.Fatal(err)
	}
	marker := filepath.Join(home, fmt.Sprintf("agentbot-escape-marker-%d", os.Getpid()))
	if err := os.WriteFile(marker, []byte("operator secret"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(marker) })
	for _, iso := range sandboxes {
		t.Run(iso, func(t *testing.T) {
			e := escapeRig{t: t, iso: iso, agentRunner: agentRunner, src: src, tools: tools, marker: marker}
			e.start()
			t.Run("view", e.view)
			for _, limit := range []string{"pids", "memory", "disk"} {
				t.Run(limit, func(t *testing.T) { e.limit(t, limit) })
			}
		})
	}
}

type escapeRig struct {
	t                            *testing.T
	iso, agentRunner, src, tools string
	marker, dataFile, otherWS    string
	l                            *Launcher
}

func (e *escapeRig) start() {
	t := e.t
	t.Setenv("GORACE", "atexit_sleep_ms=0")
	l, err := New(Options{DataDir: walkableTempDir(t), AgentRunner: e.agentRunner, Isolation: e.iso,
		Limits: escapeLimits, StopGrace: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	e.l = l
	e.dataFile = filepath.Join(l.opts.DataDir, "agentbot.db")
	e.otherWS = filepath.Join(l.Workspace("other"), "secret.txt")
	for _, f := range []string{e.dataFile, e.otherWS} {
		if err := os.MkdirAll(filepath.Dir(f), 0o755); err != nil {
			t.Fatal(err)
		}
		// World-readable on purpose: only the mount plan keeps them out.
		if err := os.WriteFile(f, []byte("secret"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// run starts the hostile script name and returns its log lines and exit.
func (e *escapeRig) run(t *testing.T, taskID, name string, env map[string]string) ([]string, []*runner.RunResult, runner.Exit) {
	t.Helper()
	cmd := "/bin/sh " + filepath.Join(e.tools, name+".sh")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	r, err := e.l.Start(ctx, runner.Job{
		Version: runner.ProtocolVersion, TaskID: taskID, CloneURL: e.src,
		BaseBranch: "main", Branch: "agentbot/issue-1-escape",
		Prompt:    runner.JobPrompt{Title: "escape", Body: "escape"},
		Agent:     runner.AgentSpec{Name: "command", Command: cmd},
		Env:       env,
		TimeLimit: runner.Duration(2 * time.Minute), AuthorName: "bot", AuthorEmail: "bot@example.com",
	})
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	var results []*runner.RunResult
	for ev := range r.Events() {
		lines = append(lines, ev.Type+": "+ev.Message)
		if ev.Result != nil {
			results = append(results, ev.Result)
		}
	}
	exit, err := r.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.l.Cleanup(context.Background(), taskID, false) })
	return lines, results, exit
}

func (e *escapeRig) view(t *testing.T) {
	tmpName := fmt.Sprintf("agentbot-escape-%d-%s", os.Getpid(), e.iso)
	lines, results, exit := e.run(t, "view-"+e.iso, "view", map[string]string{
		"ESC_HOME_MARKER": e.marker, "ESC_DATA_FILE": e.dataFile, "ESC_OTHER_WS": e.otherWS, "ESC_TMP_NAME": tmpName})
	if exit.Code != runner.ExitOK || exit.LimitHit != "" {
		t.Fatalf("exit %+v; events:\n%s", exit, strings.Join(lines, "\n"))
	}
	log := strings.Join(lines, "\n")
	if !strings.Contains(log, "done") {
		t.Fatalf("the hostile agent did not finish:\n%s", log)
	}
	for _, l := range lines {
		if strings.Contains(l, "ESCAPE") {
			t.Errorf("%s", l)
		}
		if strings.Contains(l, "SEES agent-runner") {
			t.Errorf("the agent sees agent-runner: %s", l)
		}
	}
	// The forged event is only a log line of the agent's: one result,
	// agent-runner's, on the job's branch, with the agent's change.
	if len(results) != 1 || results[0].Branch != "agentbot/issue-1-escape" || results[0].Status != runner.StatusSucceeded {
		t.Errorf("results %+v, want agent-runner's one", results)
	}
	if _, err := os.Stat(filepath.Join("/tmp", tmpName)); err == nil {
		os.Remove(filepath.Join("/tmp", tmpName))
		t.Errorf("the agent wrote the host's /tmp")
	}
	if pids := hostProcesses("sleep 314159"); len(pids) > 0 {
		t.Errorf("the agent's double-forked sleeper outlived the task: pids %v", pids)
	}
}

func (e *escapeRig) limit(t *testing.T, limit string) {
	want := map[string]string{
		"pids":   "the agent started more than 128 processes",
		"memory": "the agent used more than 512 MiB of memory",
		"disk":   "the agent used more than 128 MiB of disk",
	}[limit]
	start := time.Now()
	lines, _, exit := e.run(t, limit+"-"+e.iso, limit, nil)
	if exit.Code == runner.ExitOK || exit.LimitHit != want {
		t.Fatalf("exit code %d, limit %q; want a failure with %q; events:\n%s", exit.Code, exit.LimitHit, want, strings.Join(lines, "\n"))
	}
	t.Logf("%s limit hit after %s", limit, time.Since(start).Round(time.Millisecond))
}

// hostProcesses lists the host's live processes whose command line
// contains s.
func hostProcesses(s string) []int {
	var out []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && strings.Contains(strings.ReplaceAll(string(b), "\x00", " "), s) && alive(pid) {
			out = append(out, pid)
		}
	}
	return out
}
