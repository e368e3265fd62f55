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
)

// helperEnv makes the test binary a probe instead of a test run: the
// sandbox tests start it inside bwrap or runsc and read what it reports.
const helperEnv = "AGENTBOT_SANDBOX_TEST_HELPER"

func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == AgentInitCommand {
		os.Exit(RunAgentInit(os.Args[2:], os.Stderr))
	}
	switch os.Getenv(helperEnv) {
	case "":
		os.Exit(m.Run())
	case "syscalls":
		os.Exit(probeSyscalls())
	case "view":
		os.Exit(probeView())
	case "runner":
		os.Exit(probeRunner())
	case "peek":
		os.Exit(probePeek())
	case "initrunner":
		os.Exit(probeInitRunner())
	case "initpeek":
		os.Exit(probeInitPeek())
	default:
		fmt.Fprintf(os.Stderr, "unknown helper %q\n", os.Getenv(helperEnv))
		os.Exit(2)
	}
}

// probeCall is one system call the seccomp probe makes; the list is per
// architecture (probe_amd64_test.go).
type probeCall struct {
	name string
	nr   uintptr
	args []uintptr
}

// probeSyscalls tries each call the seccomp tests name and prints
// name → errno ("" for success) as JSON. Every call is made so that it
// cannot succeed with an effect: the kernel itself would refuse it with a
// different errno (EINVAL, EBADF, EFAULT) when the filter lets it through.
func probeSyscalls() int {
	res := map[string]string{}
	try := func(name string, trap uintptr, a ...uintptr) {
		var args [6]uintptr
		copy(args[:], a)
		_, _, e := syscall.RawSyscall6(trap, args[0], args[1], args[2], args[3], args[4], args[5])
		if e != 0 {
			res[name] = e.Error()
		} else {
			res[name] = ""
		}
	}
	for _, c := range probeCalls {
		try(c.name, c.nr, c.args...)
	}
	// A process still starts: the agent runs shells, git and node.
	if err := exec.Command("/bin/sh", "-c", "exit 0").Run(); err != nil {
		res["exec"] = err.Error()
	} else {
		res["exec"] = ""
	}
	if err := json.NewEncoder(os.Stdout).Encode(res); err != nil {
		return 1
	}
	return 0
}

// probeView reports what the sandbox looks like from inside, as a hostile
// agent would find out: who it is, what it can read and write. Paths to try
// come in AGENTBOT_PROBE_READ (colon-separated).
func probeView() int {
	res := map[string]string{}
	errText := func(err error) string {
		if err == nil {
			return ""
		}
		if pe, ok := err.(*os.PathError); ok {
			return pe.Err.Error()
		}
		return err.Error()
	}
	res["uid"] = strconv.Itoa(os.Getuid())
	res["gid"] = strconv.Itoa(os.Getgid())
	res["home"] = os.Getenv("HOME")
	if b, err := os.ReadFile("/etc/passwd"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if f := strings.Split(l, ":"); len(f) > 2 && f[2] == res["uid"] {
				res["user"] = f[0]
			}
		}
	}
	for _, p := range filepath.SplitList(os.Getenv("AGENTBOT_PROBE_READ")) {
		_, err := os.ReadFile(p)
		if fi, serr := os.Stat(p); serr == nil && fi.IsDir() {
			_, err = os.ReadDir(p)
		}
		res["read "+p] = errText(err)
	}
	for _, p := range []string{"/proc/sys/kernel/core_pattern", "/proc/sys/vm/drop_caches", "/usr/agentbot-probe", "/etc/agentbot-probe", "/agentbot-probe", "/tmp/probe", "/dev/shm/probe", "/workspace/probe", "/workspace/home/probe"} {
		f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE, 0o600)
		if err == nil {
			f.Close()
		}
		res["write "+p] = errText(err)
	}
	for _, p := range []string{"/tmp", "/dev/shm"} {
		var st syscall.Statfs_t
		if err := syscall.Statfs(p, &st); err == nil {
			res["size "+p] = strconv.FormatInt(int64(st.Blocks)*st.Bsize, 10)
		}
	}
	if b, err := os.ReadFile("/proc/self/status"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && (k == "CapEff" || k == "NoNewPrivs" || k == "Seccomp") {
				res[k] = strings.TrimSpace(v)
			}
		}
	}
	ents, _ := os.ReadDir("/proc")
	n := 0
	for _, e := range ents {
		if _, err := strconv.Atoi(e.Name()); err == nil {
			n++
		}
	}
	res["procs"] = strconv.Itoa(n)
	if b, err := os.ReadFile("/proc/self/mountinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if f := strings.Fields(l); len(f) > 5 && f[4] == "/proc/sys" {
				res["/proc/sys mount"] = strings.Split(f[5], ",")[0]
			}
		}
	}
	if h, err := os.Hostname(); err == nil {
		res["hostname"] = h
	}
	if err := json.NewEncoder(os.Stdout).Encode(res); err != nil {
		return 1
	}
	return 0
}

// probeRunner plays agent-runner: it makes itself non-dumpable, then runs
// the agent (this binary again) plainly and nested, each reporting what it
// can reach of its parent. Output: {"plain": {...}, "nested": {...}}.
func probeRunner() int {
	if err := SetNonDumpable(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	self, _ := os.Executable()
	filter, err := SeccompFilter(FilterOptions{})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	out := map[string]json.RawMessage{}
	env := append(os.Environ(), helperEnv+"=peek", "AGENTBOT_PROBE_PARENT="+strconv.Itoa(os.Getpid()))
	plain := exec.Command(self)
	plain.Env = env
	plain.Stderr = os.Stderr
	if out["plain"], err = plain.Output(); err != nil {
		fmt.Fprintln(os.Stderr, "plain:", err)
		return 1
	}
	ac, err := NewAgentCommand(os.Getenv("AGENTBOT_PROBE_BWRAP"), filter, []string{self})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	nested := exec.Command(ac.Path, ac.Args...)
	nested.Env = env
	nested.ExtraFiles = []*os.File{ac.Seccomp}
	nested.Stderr = os.Stderr
	out["nested"], err = nested.Output()
	ac.Seccomp.Close()
	if err != nil {
		fmt.Fprintln(os.Stderr, "nested:", err)
		return 1
	}
	if err := json.NewEncoder(os.Stdout).Encode(out); err != nil {
		return 1
	}
	return 0
}

// probePeek is the hostile agent: it tries its parent's memory and
// standard output, and counts the processes it sees.
func probePeek() int {
	if err := json.NewEncoder(os.Stdout).Encode(peek()); err != nil {
		return 1
	}
	return 0
}

func peek() map[string]string {
	res := map[string]string{}
	parent := os.Getenv("AGENTBOT_PROBE_PARENT")
	for _, p := range []string{"mem", "environ"} {
		f, err := os.Open("/proc/" + parent + "/" + p)
		res[p] = errString(err)
		if err == nil {
			f.Close()
		}
	}
	f, err := os.OpenFile("/proc/"+parent+"/fd/1", os.O_WRONLY, 0)
	res["fd/1"] = errString(err)
	if err == nil {
		f.Close()
	}
	ents, _ := os.ReadDir("/proc")
	n := 0
	for _, e := range ents {
		if _, err := strconv.Atoi(e.Name()); err == nil {
			n++
		}
	}
	res["procs"] = strconv.Itoa(n)
	_, _, e := syscall.RawSyscall(syscall.SYS_PTRACE, 0x4206, 1, 0)
	res["ptrace"] = errString(e)
	if b, err := os.ReadFile("/proc/self/mountinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if f := strings.Fields(l); len(f) > 5 && f[4] == "/proc/sys" {
				res["/proc/sys mount"] = strings.Split(f[5], ",")[0]
			}
		}
	}
	return res
}

func errString(err error) string {
	if pe, ok := err.(*os.PathError); ok {
		return pe.Err.Error()
	}
	if e, ok := err.(syscall.Errno); ok && e == 0 {
		return ""
	}
	if err == nil {
		return ""
	}
	return err.Error()
}
