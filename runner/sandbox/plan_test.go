package sandbox

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// testHostUID is the host identity of sandboxes in these tests: a uid no
// account on a test machine has.
const testHostUID = 61000

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("giving the sandbox its own host uid needs root")
	}
}

// hostSecrets makes files a hostile agent must not read: a marker in a
// stand-in for the operator's home, the data directory, another task's
// workspace. It returns their paths.
func hostSecrets(t *testing.T) (home, data, other string) {
	t.Helper()
	root := t.TempDir()
	home = filepath.Join(root, "home", ".npmrc")
	data = filepath.Join(root, "data", "agentbot.db")
	other = filepath.Join(root, "data", "workspaces", "other", "workspace", "secret")
	for _, p := range []string{home, data, other} {
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("secret"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return home, data, other
}

// traversableDir is a temporary directory the sandbox's host uid may
// enter, as a workspace root must be.
func traversableDir(t *testing.T) string {
	t.Helper()
	d := t.TempDir()
	for p := d; p != os.TempDir() && p != "/"; p = filepath.Dir(p) {
		if err := os.Chmod(p, 0o711); err != nil {
			t.Fatal(err)
		}
	}
	return d
}

// probeBinary copies the test binary where the sandbox's host uid can
// reach it (go test builds it in a 0700 directory).
func probeBinary(t *testing.T) string {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(traversableDir(t), "probe")
	if err := os.WriteFile(p, b, 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func newTestPlan(t *testing.T, nested bool) (*Plan, string) {
	t.Helper()
	ws := filepath.Join(traversableDir(t), "workspace")
	self := probeBinary(t)
	limits := DefaultLimits()
	limits.TmpSize, limits.ShmSize = 64*MiB, 32*MiB
	p, err := NewPlan(PlanOptions{
		Workspace: ws, ReadOnly: []string{self},
		HostUID: testHostUID, HostGID: testHostUID,
		Limits: limits, ShareNet: true, NestedAgent: nested,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.PrepareWorkspace(); err != nil {
		t.Fatal(err)
	}
	return p, ws
}

func TestNewPlanRefusesHostRoot(t *testing.T) {
	cases := []struct {
		name     string
		uid, gid int
	}{
		{"uid 0", 0, 1000},
		{"gid 0", 1000, 0},
		{"unset", -1, -1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewPlan(PlanOptions{Workspace: "/w", HostUID: tc.uid, HostGID: tc.gid})
			if err == nil {
				t.Fatal("plan accepted")
			}
		})
	}
}

func TestNewPlanShowsOnlyCuratedHostPaths(t *testing.T) {
	p, _ := newTestPlan(t, false)
	for _, m := range p.Mounts {
		if m.Kind != ROBind && m.Kind != Bind {
			continue
		}
		for _, bad := range []string{"/root", "/home", "/run", "/var", "/etc/shadow", "/etc/gitconfig", "/"} {
			if m.Source == bad || (bad != "/" && strings.HasPrefix(m.Source, bad+"/") && !strings.HasPrefix(m.Source, os.TempDir())) {
				t.Errorf("plan binds %s on %s", m.Source, m.Target)
			}
		}
	}
}

// TestBwrapSandboxView runs a probe in the sandbox and checks what a hostile
// agent would: it is not root on either side, sees none of the host's
// secrets, cannot write sysctls or system directories, and gets the sized
// tmpfs it was promised.
func TestBwrapSandboxView(t *testing.T) {
	bwrap := requireBwrap(t)
	requireRoot(t)
	home, data, other := hostSecrets(t)
	for _, nested := range []bool{false, true} {
		t.Run("nested="+strconv.FormatBool(nested), func(t *testing.T) {
			p, ws := newTestPlan(t, nested)
			self := p.Mounts[len(p.Mounts)-2].Source
			env := append(p.Env(), helperEnv+"=view",
				"AGENTBOT_PROBE_READ="+strings.Join([]string{"/etc/shadow", "/root", home, data, other, "/etc/hosts", "/usr/bin/env", self}, ":"))
			cmd, closeFiles, err := p.BwrapCommand(BwrapOptions{Bwrap: bwrap, Argv: []string{self}, Env: env})
			if err != nil {
				t.Fatal(err)
			}
			got := runJSONAfter(t, cmd, closeFiles, 30*time.Second)
			want := map[string]string{
				"uid": "1000", "gid": "1000", "user": "agent", "home": "/workspace/home",
				"CapEff": "0000000000000000", "hostname": "agentbot-sandbox",
				"read /etc/shadow": "no such file or directory", "read /root": "no such file or directory",
				"read " + home: "no such file or directory", "read " + data: "no such file or directory",
				"read " + other:   "no such file or directory",
				"read /etc/hosts": "", "read /usr/bin/env": "", "read " + self: "",
				"write /proc/sys/kernel/core_pattern": "permission denied",
				"write /proc/sys/vm/drop_caches":      "permission denied",
				"write /usr/agentbot-probe":           "read-only file system",
				"write /etc/agentbot-probe":           "read-only file system",
				"write /agentbot-probe":               "read-only file system",
				"write /tmp/probe":                    "", "write /dev/shm/probe": "",
				"write /workspace/probe": "", "write /workspace/home/probe": "",
				"size /tmp": strconv.FormatInt(64*MiB, 10), "size /dev/shm": strconv.FormatInt(32*MiB, 10),
			}
			// Without the nested agent, /proc/sys is also bound read-only,
			// which stops even a uid the kernel would let through.
			want["/proc/sys mount"] = map[bool]string{false: "ro", true: ""}[nested]
			for k, w := range want {
				if got[k] != w {
					t.Errorf("%s: got %q, want %q", k, got[k], w)
				}
			}
			// Files the agent writes belong to the sandbox's host uid.
			fi, err := os.Stat(filepath.Join(ws, "probe"))
			if err != nil {
				t.Fatal(err)
			}
			if uid := fi.Sys().(*syscall.Stat_t).Uid; uid != testHostUID {
				t.Errorf("workspace file owned by host uid %d, want %d", uid, testHostUID)
			}
		})
	}
}
