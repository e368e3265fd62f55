package sandbox

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func newTestCgroup(t *testing.T, l Limits) *Cgroup {
	t.Helper()
	requireRoot(t)
	name := fmt.Sprintf("test-%d-%s", os.Getpid(), strings.ReplaceAll(t.Name(), "/", "-"))
	c, err := NewCgroup(name, l)
	if errors.Is(err, ErrNoCgroups) && os.Getenv("AGENTBOT_REQUIRE_CGROUPS") == "" {
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := c.Remove(ctx); err != nil {
			t.Error(err)
		}
		for _, d := range c.dirs {
			if _, err := os.Stat(d); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("cgroup %s is still there: %v", d, err)
			}
			// The shared agentbot parent goes too once no test uses it.
			_ = os.Remove(filepath.Dir(d))
		}
	})
	return c
}

// waitCmd waits for cmd with a deadline.
func waitCmd(t *testing.T, cmd *exec.Cmd, timeout time.Duration) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return err
	case <-time.After(timeout):
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("%v did not end within %s", cmd.Args, timeout)
		return nil
	}
}

func TestCgroupLimitsNamed(t *testing.T) {
	cases := []struct {
		name   string
		limits Limits
		// script runs in the cgroup; ulimit -v keeps a broken memory
		// limit from hurting the machine.
		script string
		want   LimitHit
		say    string
	}{
		{
			name:   "memory hog",
			limits: Limits{Memory: 64 * MiB, PIDs: 64, CPUs: 1},
			script: "ulimit -v 1048576; tail /dev/zero",
			want:   LimitHit{Memory: true},
			say:    "the agent used more than 64 MiB of memory",
		},
		{
			name:   "fork bomb",
			limits: Limits{Memory: 256 * MiB, PIDs: 16, CPUs: 1},
			script: "for i in $(seq 40); do sleep 60 & done; exit 0",
			want:   LimitHit{PIDs: true},
			say:    "the agent started more than 16 processes",
		},
		{
			name:   "within limits",
			limits: Limits{Memory: 256 * MiB, PIDs: 64, CPUs: 1},
			script: "sleep 0.1 & wait",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := newTestCgroup(t, tc.limits)
			cmd := exec.Command("/bin/sh", "-c", tc.script)
			if err := c.Start(cmd); err != nil {
				t.Fatal(err)
			}
			_ = waitCmd(t, cmd, 60*time.Second) // the hog is killed; that is the point
			got, err := c.Hit()
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Fatalf("hit %+v, want %+v", got, tc.want)
			}
			if s := got.Describe(tc.limits); s != tc.say {
				t.Fatalf("described as %q, want %q", s, tc.say)
			}
		})
	}
}

// TestCgroupStartPlacesChildAndRemoveKillsStragglers checks that a child
// is in the cgroup from its first instruction (its own children too), that
// agentbot's thread went back, and that Remove kills what was left behind.
func TestCgroupStartPlacesChildAndRemoveKillsStragglers(t *testing.T) {
	c := newTestCgroup(t, Limits{Memory: 256 * MiB, PIDs: 64, CPUs: 0.5})
	cmd := exec.Command("/bin/sh", "-c", "setsid sleep 600 & cat /proc/self/cgroup")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(cmd); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 4096)
	n, _ := out.Read(b)
	_ = waitCmd(t, cmd, 30*time.Second)
	for ctl, d := range c.dirs {
		rel := d[strings.Index(d, "/agentbot/"):]
		if !strings.Contains(string(b[:n]), ctl+":") || !strings.Contains(string(b[:n]), rel) {
			t.Errorf("child's cgroups %q lack %s %s", b[:n], ctl, rel)
		}
	}
	self, _ := os.ReadFile("/proc/self/cgroup")
	if strings.Contains(string(self), "/agentbot/") {
		t.Errorf("agentbot stayed in the task's cgroup: %s", self)
	}
	procs, _ := os.ReadFile(filepath.Join(c.dirs["pids"], "cgroup.procs"))
	if len(strings.Fields(string(procs))) == 0 {
		t.Fatal("the setsid sleep is not in the cgroup")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := c.Remove(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestLimitsFromEnvAndSizes(t *testing.T) {
	cases := []struct {
		name    string
		env     map[string]string
		want    Limits
		wantErr string
	}{
		{"defaults", nil, DefaultLimits(), ""},
		{"all set", map[string]string{EnvMemory: "8GiB", EnvPIDs: "2048", EnvCPUs: "1.5", EnvDisk: "20G"},
			Limits{Memory: 8 * GiB, PIDs: 2048, CPUs: 1.5, Disk: 20 * GiB, TmpSize: 1 * GiB, ShmSize: 256 * MiB}, ""},
		{"small memory shrinks tmpfs", map[string]string{EnvMemory: "512MiB"},
			Limits{Memory: 512 * MiB, PIDs: 1024, CPUs: 2, Disk: 10 * GiB, TmpSize: 256 * MiB, ShmSize: 128 * MiB}, ""},
		{"decimal units", map[string]string{EnvDisk: "10GB"},
			Limits{Memory: 4 * GiB, PIDs: 1024, CPUs: 2, Disk: 10_000_000_000, TmpSize: 1 * GiB, ShmSize: 256 * MiB}, ""},
		{"bad values each reported", map[string]string{EnvMemory: "lots", EnvPIDs: "3", EnvCPUs: "NaN"}, Limits{},
			"AGENTBOT_SANDBOX_MEMORY=\"lots\""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := LimitsFromEnv(func(k string) string { return tc.env[k] })
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) || strings.Count(err.Error(), "\n") != 2 {
					t.Fatalf("err = %v, want three problems including %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("got %+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
	sizes := []struct {
		in   string
		want int64
		ok   bool
	}{
		{"4GiB", 4 * GiB, true}, {"4gib", 4 * GiB, true}, {"512M", 512 * MiB, true}, {"1.5G", 3 * GiB / 2, true},
		{"1048576", 1 << 20, true}, {" 2 TiB ", 2 * TiB, true}, {"", 0, false}, {"-1G", 0, false},
		{"4 gigs", 0, false}, {"1e9", 0, false}, {"0", 0, false}, {"99999999999TiB", 0, false},
	}
	for _, s := range sizes {
		got, err := ParseSize(s.in)
		if (err == nil) != s.ok || got != s.want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d, ok=%v", s.in, got, err, s.want, s.ok)
		}
	}
	for n, want := range map[int64]string{4 * GiB: "4 GiB", 512 * MiB: "512 MiB", 3 * GiB / 2: "1.5 GiB", 100: "100 B"} {
		if got := FormatSize(n); got != want {
			t.Errorf("FormatSize(%d) = %q, want %q", n, got, want)
		}
	}
}
