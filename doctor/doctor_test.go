package doctor

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/agentbot/agentbot"
	"github.com/agentbot/agentbot/github"
	"github.com/agentbot/agentbot/github/githubtest"
)

// failures returns the names of the checks that found a problem, and
// checks that each has a fix.
func failures(t *testing.T, res []Result) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, r := range res {
		if r.OK {
			continue
		}
		out[r.Name] = r.Detail
		if r.Fix == "" {
			t.Errorf("check %s: problem %q comes with no fix", r.Name, r.Detail)
		}
	}
	return out
}

func client(t *testing.T, gh *githubtest.Server, key []byte) *github.Client {
	t.Helper()
	c, err := github.New(github.Config{BaseURL: gh.URL, AppID: gh.AppID, PrivateKey: key, MaxAttempts: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

func TestGitHubChecks(t *testing.T) {
	ctx := context.Background()
	repo := agentbot.Repo{Owner: "acme", Name: "widgets"}
	t.Run("healthy", func(t *testing.T) {
		gh := githubtest.New(t)
		gh.AddInstallation(1, repo)
		gh.AddDelivery(githubtest.Delivery{Event: "issues", Action: "labeled", StatusCode: 202})
		res := Run(ctx, GitHubChecks(client(t, gh, gh.PrivateKeyPEM), gh.AppID), 10*time.Second)
		if f := failures(t, res); len(f) > 0 {
			t.Errorf("problems on a healthy setup: %v", f)
		}
	})
	t.Run("broken", func(t *testing.T) {
		gh := githubtest.New(t)
		gh.AddInstallation(1, repo)
		perms := githubtest.DefaultInstallationPermissions()
		delete(perms, "checks")
		gh.SetInstallationPermissions(1, perms)
		gh.SetInstallationEvents(1, "issues", "issue_comment")
		gh.AddDelivery(githubtest.Delivery{Event: "issues", Action: "labeled", StatusCode: 0})
		gh.AddDelivery(githubtest.Delivery{Event: "issues", Action: "labeled", StatusCode: 401})
		f := failures(t, Run(ctx, GitHubChecks(client(t, gh, gh.PrivateKeyPEM), gh.AppID), 10*time.Second))
		if d := f["github installations"]; !strings.Contains(d, "checks:write") || !strings.Contains(d, "event check_run") {
			t.Errorf("installations check = %q, want checks:write and check_run named", d)
		}
		if d := f["github recent deliveries"]; !strings.Contains(d, "2 of 2") || !strings.Contains(d, "401") {
			t.Errorf("deliveries check = %q", d)
		}
		if _, ok := f["github app"]; ok {
			t.Errorf("the App check failed with the right key: %v", f)
		}

		// Another App's key: the JWT is refused.
		otherKey, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			t.Fatal(err)
		}
		otherPEM := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(otherKey)})
		f = failures(t, Run(ctx, GitHubChecks(client(t, gh, otherPEM), gh.AppID)[:1], 10*time.Second))
		if d := f["github app"]; !strings.Contains(d, "did not accept") {
			t.Errorf("app check with a wrong key = %q", d)
		}
	})
}

func TestLocalChecks(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	exe := func(name string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte("#!/bin/sh\nexit 0\n"), 0o755); err != nil {
			t.Fatal(err)
		}
		return p
	}
	cgroup := func(controllers string) string {
		d := t.TempDir()
		if err := os.WriteFile(filepath.Join(d, "cgroup.controllers"), []byte(controllers+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		return d
	}
	// A v1 hierarchy: one mounted controller directory each, with its
	// tasks file.
	cgroupV1 := func(controllers ...string) string {
		d := t.TempDir()
		for _, c := range controllers {
			if err := os.MkdirAll(filepath.Join(d, c), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(d, c, "tasks"), nil, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		return d
	}
	healthy := Local{Isolation: "bwrap", AgentCLI: exe("claude"), AgentRunner: exe("agent-runner"), CgroupRoot: cgroup("cpuset cpu io memory pids")}
	if bwrapWorks(ctx) != nil {
		if os.Getenv("AGENTBOT_REQUIRE_BWRAP") == "1" {
			t.Fatalf("bubblewrap does not work here: %v", bwrapWorks(ctx))
		}
		healthy.Isolation = "none"
	}
	gvisor := healthy
	gvisor.Isolation = "gvisor"
	if err := runscWorks(ctx); err != nil {
		if os.Getenv("AGENTBOT_REQUIRE_RUNSC") == "1" {
			t.Fatalf("runsc does not work here: %v", err)
		}
		gvisor = healthy // nothing to check the gVisor path with here
	}
	tests := []struct {
		name  string
		local Local
		want  []string // failing checks
	}{
		{"healthy", healthy, nil},
		{"healthy with gVisor", gvisor, nil},
		{"broken", Local{Isolation: healthy.Isolation, AgentCLI: filepath.Join(dir, "no-such-agent"), AgentRunner: "",
			CgroupRoot: cgroup("cpu io")}, []string{"agent CLI", "agent-runner", "cgroup limits"}},
		{"healthy on cgroup v1", Local{Isolation: healthy.Isolation, AgentCLI: healthy.AgentCLI, AgentRunner: healthy.AgentRunner,
			CgroupRoot: cgroupV1("memory", "pids", "cpu")}, nil},
		{"cgroup v1 without pids", Local{Isolation: healthy.Isolation, AgentCLI: healthy.AgentCLI, AgentRunner: healthy.AgentRunner,
			CgroupRoot: cgroupV1("memory", "cpu")}, []string{"cgroup limits"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := failures(t, Run(ctx, LocalChecks(tt.local), 10*time.Second))
			if len(f) != len(tt.want) {
				t.Errorf("problems %v, want exactly %v", f, tt.want)
			}
			for _, name := range tt.want {
				if _, ok := f[name]; !ok {
					t.Errorf("check %s found no problem; problems: %v", name, f)
				}
			}
			if d := f["cgroup limits"]; tt.name == "broken" && !strings.Contains(d, "memory, pids") {
				t.Errorf("cgroup problem %q does not name memory and pids", d)
			}
		})
	}
}

func TestPrintAndFiles(t *testing.T) {
	dir := t.TempDir()
	full := filepath.Join(dir, "secret")
	empty := filepath.Join(dir, "empty")
	os.WriteFile(full, []byte("s3cret-value\n"), 0o600)
	os.WriteFile(empty, []byte("\n"), 0o600)
	res := Run(context.Background(), []Check{File("A", full), File("B", empty), File("C", filepath.Join(dir, "missing")), File("D", "")}, time.Second)
	var out strings.Builder
	if bad := Print(&out, res); bad != 3 {
		t.Errorf("Print counted %d problems, want 3:\n%s", bad, out.String())
	}
	if strings.Contains(out.String(), "s3cret-value") {
		t.Error("a secret file's content was printed")
	}
	if !strings.Contains(out.String(), "ok       file A") || !strings.Contains(out.String(), "problem  file B") {
		t.Errorf("output:\n%s", out.String())
	}
}
