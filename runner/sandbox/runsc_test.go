package sandbox

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func requireRunsc(t testing.TB) Runsc {
	t.Helper()
	p, err := exec.LookPath("runsc")
	if err != nil {
		if os.Getenv("AGENTBOT_REQUIRE_RUNSC") != "" {
			t.Fatalf("AGENTBOT_REQUIRE_RUNSC is set but runsc is missing: %v", err)
		}
		t.Skip("runsc is not installed")
	}
	r := Runsc{Path: p, StateDir: filepath.Join(t.TempDir(), "runsc")}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := r.Probe(ctx); err != nil {
		if os.Getenv("AGENTBOT_REQUIRE_RUNSC") != "" {
			t.Fatalf("AGENTBOT_REQUIRE_RUNSC is set: %v", err)
		}
		t.Skip(err)
	}
	return r
}

// TestRunscSandboxView runs the same probe as the bubblewrap test in a
// gVisor container built from the same plan.
func TestRunscSandboxView(t *testing.T) {
	requireRoot(t)
	r := requireRunsc(t)
	home, data, other := hostSecrets(t)
	p, ws := newTestPlan(t, false)
	self := p.Mounts[len(p.Mounts)-2].Source
	bundle := filepath.Join(t.TempDir(), "bundle")
	env := append(p.Env(), helperEnv+"=view",
		"AGENTBOT_PROBE_READ="+strings.Join([]string{"/etc/shadow", "/root", home, data, other, "/etc/hosts", self}, ":"))
	got := runInRunsc(t, r, p, bundle, "view-1", []string{self}, env)
	want := map[string]string{
		"uid": strconv.Itoa(testHostUID), "user": "agent", "home": "/workspace/home",
		"CapEff": "0000000000000000", "hostname": "agentbot-sandbox",
		"read /etc/shadow": "no such file or directory", "read /root": "no such file or directory",
		"read " + home: "no such file or directory", "read " + data: "no such file or directory",
		"read " + other: "no such file or directory", "read /etc/hosts": "", "read " + self: "",
		"write /tmp/probe": "", "write /dev/shm/probe": "", "write /workspace/probe": "",
		"size /tmp": strconv.FormatInt(64*MiB, 10), "size /dev/shm": strconv.FormatInt(32*MiB, 10),
	}
	for k, w := range want {
		if got[k] != w {
			t.Errorf("%s: got %q, want %q", k, got[k], w)
		}
	}
	// gVisor checks permissions before the read-only mount: any refusal.
	for _, k := range []string{"write /proc/sys/kernel/core_pattern", "write /proc/sys/vm/drop_caches", "write /usr/agentbot-probe", "write /agentbot-probe", "write /etc/agentbot-probe"} {
		if got[k] == "" {
			t.Errorf("%s succeeded", k)
		}
	}
	fi, err := os.Stat(filepath.Join(ws, "probe"))
	if err != nil {
		t.Fatal(err)
	}
	if uid := fi.Sys().(*syscall.Stat_t).Uid; uid != testHostUID {
		t.Errorf("workspace file owned by host uid %d, want %d", uid, testHostUID)
	}
}

// BenchmarkSandboxStart measures starting a sandbox that runs /bin/true:
// go test -run '^$' -bench SandboxStart -benchtime 20x ./runner/sandbox
func BenchmarkSandboxStart(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("needs root")
	}
	bwrap, err := exec.LookPath("bwrap")
	if err != nil {
		b.Skip("bwrap is not installed")
	}
	ws := filepath.Join(b.TempDir(), "workspace")
	for p := filepath.Dir(ws); p != os.TempDir() && p != "/"; p = filepath.Dir(p) {
		_ = os.Chmod(p, 0o711)
	}
	p, err := NewPlan(PlanOptions{Workspace: ws, HostUID: testHostUID, HostGID: testHostUID, Limits: DefaultLimits(), ShareNet: true})
	if err != nil {
		b.Fatal(err)
	}
	if err := p.PrepareWorkspace(); err != nil {
		b.Fatal(err)
	}
	b.Run("bwrap", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			cmd, closeFiles, err := p.BwrapCommand(BwrapOptions{Bwrap: bwrap, Argv: []string{"/bin/true"}})
			if err != nil {
				b.Fatal(err)
			}
			err = cmd.Run()
			closeFiles()
			if err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("runsc", func(b *testing.B) {
		r := requireRunsc(b)
		for i := 0; i < b.N; i++ {
			bundle := filepath.Join(b.TempDir(), "bundle")
			if err := p.WriteOCIBundle(bundle, []string{"/bin/true"}, nil); err != nil {
				b.Fatal(err)
			}
			id, _ := ContainerID("bench-" + strconv.Itoa(i))
			if out, err := r.Command(bundle, id).CombinedOutput(); err != nil {
				b.Fatalf("%v: %s", err, out)
			}
			if err := r.Remove(context.Background(), id); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// runInRunsc writes p's OCI bundle for argv and env, runs it under runsc as
// container name (removed when t ends) and decodes the JSON it prints.
func runInRunsc(t *testing.T, r Runsc, p *Plan, bundle, name string, argv, env []string) map[string]string {
	t.Helper()
	if err := p.WriteOCIBundle(bundle, argv, env); err != nil {
		t.Fatal(err)
	}
	id, err := ContainerID(name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := r.Remove(ctx, id); err != nil {
			t.Error(err)
		}
	})
	return runJSON(t, r.Command(bundle, id), 60*time.Second)
}
