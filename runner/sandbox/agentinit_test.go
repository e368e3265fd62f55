package sandbox

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

func TestParseAgentUser(t *testing.T) {
	if uid, gid, err := ParseAgentUser("2000000000:2000000001"); err != nil || uid != 2000000000 || gid != 2000000001 {
		t.Errorf("got %d:%d, %v", uid, gid, err)
	}
	for _, bad := range []string{"", "0:5", "5:0", "5", "a:b", "-1:-1", "5:6:7"} {
		if _, _, err := ParseAgentUser(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestInitCommandArgs(t *testing.T) {
	in := AgentInit{UID: 7, GID: 8, Pinned: []string{"/w/.agentbot"}}
	ac, err := NewInitCommand("/bin/agent-runner", in, []byte{0, 0, 0, 0, 0, 0, 0, 0}, []string{"sh", "-c", "--pin"})
	if err != nil {
		t.Fatal(err)
	}
	defer ac.Seccomp.Close()
	if ac.Path != "/bin/agent-runner" || ac.Args[0] != AgentInitCommand || ac.Cloneflags&syscall.CLONE_NEWPID == 0 || ac.Cloneflags&syscall.CLONE_NEWNS == 0 {
		t.Fatalf("command %+v", ac)
	}
	got, argv, err := parseInitArgs(ac.Args[1:])
	if err != nil || got.UID != 7 || got.GID != 8 || len(got.Pinned) != 1 || got.Pinned[0] != "/w/.agentbot" || strings.Join(argv, " ") != "sh -c --pin" {
		t.Errorf("parsed %+v %q %v", got, argv, err)
	}
	if _, err := NewInitCommand("/bin/agent-runner", AgentInit{UID: 0, GID: 8}, nil, []string{"sh"}); err == nil {
		t.Error("an init for uid 0 was made")
	}
	for _, args := range [][]string{{"--uid", "7"}, {"--uid", "x", "--", "sh"}, {"--what", "1", "--", "sh"}, {"--uid", "7", "--"}} {
		if _, _, err := parseInitArgs(args); err == nil {
			t.Errorf("%q accepted", args)
		}
	}
}

// TestRunscAgentInit runs the test binary as agent-runner would under
// gVisor (the guest's root with RunnerCapabilities), which starts the
// agent (the binary again) through agent-init, and checks what the agent
// is and reaches.
func TestRunscAgentInit(t *testing.T) {
	requireRoot(t)
	r := requireRunsc(t)
	p, ws := newTestPlan(t, false)
	p.RunnerRoot = true
	self := p.Mounts[len(p.Mounts)-2].Source
	bundle := filepath.Join(t.TempDir(), "bundle")
	env := append(p.Env(), helperEnv+"=initrunner", "AGENTBOT_PROBE_SELF="+self)
	got := runInRunsc(t, r, p, bundle, "init-1", []string{self}, env)
	want := map[string]string{
		// CHOWN, DAC_OVERRIDE, FOWNER, KILL, SETGID, SETUID, SYS_ADMIN.
		"runner uid": "0", "runner CapEff": "00000000002000eb", "uid": strconv.Itoa(testHostUID), "gid": strconv.Itoa(testHostUID),
		"CapEff": "0000000000000000", "NoNewPrivs": "1", "Seccomp": "2",
		"procs": "2", "ptrace": "operation not permitted", "unshare": "operation not permitted",
		"write events": "permission denied", "rename state": "device or resource busy",
		"write summary": "", "write workspace": "", "write /proc/self/comm": "read-only file system",
		"exit": "0",
	}
	for k, w := range want {
		if got[k] != w {
			t.Errorf("%s: got %q, want %q", k, got[k], w)
		}
	}
	fi, err := os.Stat(filepath.Join(ws, "agent-file"))
	if err != nil {
		t.Fatal(err)
	}
	if uid := fi.Sys().(*syscall.Stat_t).Uid; uid != testHostUID {
		t.Errorf("the agent's file is owned by host uid %d, want %d", uid, testHostUID)
	}
}

// probeInitRunner plays agent-runner under gVisor: root's state directory
// with an events file and a summary given to the agent, then the agent
// through agent-init. It prints the agent's report with its own uid and
// the agent's exit status added.
func probeInitRunner() int {
	fail := func(err error) int {
		fmt.Fprintln(os.Stderr, "initrunner:", err)
		return 1
	}
	if err := SetNonDumpable(); err != nil {
		return fail(err)
	}
	state := filepath.Join(WorkspaceTarget, ".agentbot")
	if err := os.Mkdir(state, 0o755); err != nil {
		return fail(err)
	}
	if err := os.WriteFile(filepath.Join(state, "events.jsonl"), nil, 0o644); err != nil {
		return fail(err)
	}
	summary := filepath.Join(state, "summary.md")
	if err := os.WriteFile(summary, nil, 0o644); err != nil {
		return fail(err)
	}
	if err := os.Chown(summary, testHostUID, testHostUID); err != nil {
		return fail(err)
	}
	// Before the agent: this gVisor (runsc 20221219) takes CLONE_NEWNS but
	// shares the mounts, so the agent's /proc covers this one's too.
	b, err := os.ReadFile("/proc/self/status")
	capEff := errString(err)
	for _, l := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok && k == "CapEff" {
			capEff = strings.TrimSpace(v)
		}
	}
	filter, err := SeccompFilter(FilterOptions{})
	if err != nil {
		return fail(err)
	}
	self := os.Getenv("AGENTBOT_PROBE_SELF")
	ac, err := NewInitCommand(self, AgentInit{UID: testHostUID, GID: testHostUID, Pinned: []string{state}}, filter, []string{self})
	if err != nil {
		return fail(err)
	}
	cmd := exec.Command(ac.Path, ac.Args...)
	cmd.Dir = WorkspaceTarget
	cmd.Env = append(os.Environ(), helperEnv+"=initpeek", "AGENTBOT_PROBE_STATE="+state)
	cmd.ExtraFiles = []*os.File{ac.Seccomp}
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: ac.Cloneflags}
	out, err := cmd.Output()
	ac.Seccomp.Close()
	res := map[string]string{}
	if jerr := json.Unmarshal(out, &res); jerr != nil {
		return fail(fmt.Errorf("agent output %q: %v, %v", out, jerr, err))
	}
	res["runner uid"] = strconv.Itoa(os.Getuid())
	res["runner CapEff"] = capEff
	res["exit"] = strconv.Itoa(cmd.ProcessState.ExitCode())
	if err := json.NewEncoder(os.Stdout).Encode(res); err != nil {
		return 1
	}
	return 0
}

// probeInitPeek is the agent under agent-init.
func probeInitPeek() int {
	res := peek()
	res["uid"], res["gid"] = strconv.Itoa(os.Getuid()), strconv.Itoa(os.Getgid())
	if b, err := os.ReadFile("/proc/self/status"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && (k == "CapEff" || k == "Seccomp") {
				res[k] = strings.TrimSpace(v)
			}
		}
	}
	nnp, _ := unix.PrctlRetInt(unix.PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0)
	res["NoNewPrivs"] = strconv.Itoa(nnp)
	state := os.Getenv("AGENTBOT_PROBE_STATE")
	write := func(path string) string {
		return errString(os.WriteFile(path, []byte("x"), 0o644))
	}
	res["write events"] = write(filepath.Join(state, "events.jsonl"))
	res["write summary"] = write(filepath.Join(state, "summary.md"))
	res["write workspace"] = write(filepath.Join(WorkspaceTarget, "agent-file"))
	res["write /proc/self/comm"] = write("/proc/self/comm")
	res["rename state"] = "renamed"
	if err := os.Rename(state, state+"-moved"); err != nil {
		res["rename state"] = err.(*os.LinkError).Err.Error()
	}
	res["unshare"] = errString(syscall.Unshare(syscall.CLONE_NEWUSER))
	if err := json.NewEncoder(os.Stdout).Encode(res); err != nil {
		return 1
	}
	return 0
}
