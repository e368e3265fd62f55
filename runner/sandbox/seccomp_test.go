package sandbox

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"os"
	"os/exec"
	"testing"
	"time"

	"golang.org/x/net/bpf"
)

// seccompData is struct seccomp_data laid out for x/net/bpf's VM, which
// loads words big-endian where the kernel loads them in host order: each
// 32-bit field is written big-endian at the kernel's offset.
func seccompData(arch, nr uint32, arg0 uint64) []byte {
	b := make([]byte, 64)
	binary.BigEndian.PutUint32(b[offNr:], nr)
	binary.BigEndian.PutUint32(b[offArch:], arch)
	binary.BigEndian.PutUint32(b[offArg0:], uint32(arg0))
	binary.BigEndian.PutUint32(b[offArg0+4:], uint32(arg0>>32))
	return b
}

func TestSeccompProgramDecisions(t *testing.T) {
	const (
		allow  = seccompRetAllow
		eperm  = seccompRetErrno | errnoEPERM
		enosys = seccompRetErrno | errnoENOSYS
		kill   = seccompRetKillProcess
	)
	cases := []struct {
		name     string
		opts     FilterOptions
		arch, nr uint32
		arg0     uint64
		want     uint32
	}{
		{"x86 read is allowed", FilterOptions{}, auditX86, 0, 0, allow},
		{"x86 ptrace is denied", FilterOptions{}, auditX86, 101, 0, eperm},
		{"x86 io_uring_setup is denied", FilterOptions{}, auditX86, 425, 0, eperm},
		{"x86 bpf is denied", FilterOptions{}, auditX86, 321, 0, eperm},
		{"x86 mount is denied", FilterOptions{}, auditX86, 165, 0, eperm},
		{"x86 fsopen is denied", FilterOptions{}, auditX86, 430, 0, eperm},
		{"x86 clone3 falls back", FilterOptions{}, auditX86, 435, 0, enosys},
		{"x86 clone for fork is allowed", FilterOptions{}, auditX86, 56, 0x01200011, allow},
		{"x86 clone with CLONE_NEWUSER is denied", FilterOptions{}, auditX86, 56, 0x10000000 | 17, eperm},
		{"x86 clone with CLONE_NEWTIME is denied", FilterOptions{}, auditX86, 56, 0x80 | 17, eperm},
		{"x86 unshare of files is allowed", FilterOptions{}, auditX86, 272, 0x400, allow},
		{"x86 unshare of the net is denied", FilterOptions{}, auditX86, 272, 0x40000000, eperm},
		{"x86 x32 ABI is killed", FilterOptions{}, auditX86, 0x40000000 | 39, 0, kill},
		{"i386 is killed", FilterOptions{}, 0x40000003, 20, 0, kill},
		{"arm64 ptrace is denied", FilterOptions{}, auditArm, 117, 0, eperm},
		{"arm64 clone with CLONE_NEWPID is denied", FilterOptions{}, auditArm, 220, 0x20000000, eperm},
		{"arm64 number 101 is nanosleep, allowed", FilterOptions{}, auditArm, 101, 0, allow},
		{"runner filter keeps mount", FilterOptions{AllowNamespaces: true}, auditX86, 165, 0, allow},
		{"runner filter keeps clone with namespaces", FilterOptions{AllowNamespaces: true}, auditX86, 56, 0x10000000, allow},
		{"runner filter keeps clone3", FilterOptions{AllowNamespaces: true}, auditX86, 435, 0, allow},
		{"runner filter still denies ptrace", FilterOptions{AllowNamespaces: true}, auditX86, 101, 0, eperm},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			prog, err := seccompProgram(tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			vm, err := bpf.NewVM(prog)
			if err != nil {
				t.Fatal(err)
			}
			got, err := vm.Run(seccompData(tc.arch, tc.nr, tc.arg0))
			if err != nil {
				t.Fatal(err)
			}
			if uint32(got) != tc.want {
				t.Fatalf("filter returned %#x, want %#x", uint32(got), tc.want)
			}
		})
	}
}

// TestSeccompUnderBwrap loads the filter the way the sandbox does (bwrap's
// --seccomp FD) and makes the real calls from inside.
func TestSeccompUnderBwrap(t *testing.T) {
	bwrap := requireBwrap(t)
	if len(probeCalls) == 0 {
		t.Skip("the probe's system call numbers are written for amd64 only")
	}
	filter, err := SeccompFilter(FilterOptions{})
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.CreateTemp(t.TempDir(), "seccomp")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(filter); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Seek(0, 0); err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bwrap, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc",
		"--unshare-pid", "--die-with-parent", "--seccomp", "3", "--", self)
	cmd.ExtraFiles = []*os.File{f}
	cmd.Env = append(os.Environ(), helperEnv+"=syscalls")
	got := runJSON(t, cmd, 30*time.Second)
	want := map[string]string{
		"getpid": "", "unshare_none": "", "exec": "",
		"clone_plain_bad": "invalid argument",
		"clone3":          "function not implemented",
	}
	for _, c := range probeCalls {
		if _, ok := want[c.name]; !ok {
			want[c.name] = "operation not permitted"
		}
	}
	for name, w := range want {
		if got[name] != w {
			t.Errorf("%s: got %q, want %q", name, got[name], w)
		}
	}
}

func runJSON(t *testing.T, cmd *exec.Cmd, timeout time.Duration) map[string]string {
	return runJSONAfter(t, cmd, func() {}, timeout)
}

// runJSONAfter runs cmd, calls started once it has started, and decodes
// the JSON object it prints.
func runJSONAfter(t *testing.T, cmd *exec.Cmd, started func(), timeout time.Duration) map[string]string {
	t.Helper()
	var got map[string]string
	out := runOutput(t, cmd, started, timeout)
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("helper output %q: %v", out, err)
	}
	return got
}

// runOutput runs cmd with a deadline and returns its standard output.
func runOutput(t *testing.T, cmd *exec.Cmd, started func(), timeout time.Duration) []byte {
	t.Helper()
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Start()
	started()
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("%s: %v\nstderr: %s", cmd.Args, err, stderr.String())
		}
	case <-time.After(timeout):
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("%s did not finish in %s; stderr: %s", cmd.Args, timeout, stderr.String())
	}
	return stdout.Bytes()
}

func requireBwrap(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("bwrap")
	if err != nil {
		if os.Getenv("AGENTBOT_REQUIRE_BWRAP") != "" {
			t.Fatalf("AGENTBOT_REQUIRE_BWRAP is set but bwrap is missing: %v", err)
		}
		t.Skip("bwrap is not installed")
	}
	return p
}
