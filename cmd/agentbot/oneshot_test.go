package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/agentbot/agentbot/internal/gitserver"
	"github.com/agentbot/agentbot/internal/scriptedagent"
	"github.com/agentbot/agentbot/runner"
	"github.com/agentbot/agentbot/runner/local"
)

func gitT(t *testing.T, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@example.com", "GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@example.com")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("git %v: %v\n%s", args, err, out)
	}
	return strings.TrimSpace(string(out))
}

func sampleRepo(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	gitT(t, dir, "init", "-q", "--initial-branch=main")
	os.WriteFile(filepath.Join(dir, "README.md"), []byte("# sample\n"), 0o644)
	gitT(t, dir, "add", "-A")
	gitT(t, dir, "commit", "-q", "-m", "seed")
	return dir
}

func TestRunOne(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs agent-runner")
	}
	agentRunnerBin, scriptedAgentBin := scriptedagent.BuildAgentRunner(t), scriptedagent.Build(t)
	l, err := local.New(local.Options{DataDir: t.TempDir(), AgentRunner: agentRunnerBin, Isolation: local.IsolationNone})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	agent := runner.AgentSpec{Name: "command", Command: scriptedAgentBin}
	cases := []struct {
		name       string
		prompt     string
		wantBranch string
		wantFile   string
		wantErr    string
		noChanges  bool
	}{
		{"edits land as a branch", "Say hello\nscripted: write hello.txt hi there; summary Added hello.txt", "agentbot/run-say-hello", "hi there\n", "", false},
		{"second run gets a fresh branch", "Say hello\nscripted: write hello.txt again", "agentbot/run-say-hello-2", "again\n", "", false},
		{"no changes", "Nothing\nscripted: stdout looked around", "", "", "", true},
		{"agent failure says why", "Break\nscripted: stderr about to fail; fail 3 the agent gave up", "", "", "the agent gave up", false},
		{"workflow edits refused", "Sneak\nscripted: write .github/workflows/x.yml on: push", "", "", ".github/workflows", false},
	}
	repo := sampleRepo(t)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			res, err := runOne(context.Background(), l, oneShot{Repo: repo, Prompt: tc.prompt, Agent: agent, TimeLimit: time.Minute, Progress: &out})
			if tc.wantErr != "" {
				var oe *oneShotError
				if !errors.As(err, &oe) || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want a oneShotError mentioning %q\n%s", err, tc.wantErr, out.String())
				}
				return
			}
			if err != nil {
				t.Fatalf("runOne: %v\n%s", err, out.String())
			}
			if res.NoChanges != tc.noChanges {
				t.Fatalf("NoChanges = %v", res.NoChanges)
			}
			if tc.noChanges {
				return
			}
			if res.Branch != tc.wantBranch || res.LocalRepo != repo {
				t.Fatalf("result %+v", res)
			}
			if got := gitT(t, repo, "show", tc.wantBranch+":hello.txt"); got+"\n" != tc.wantFile {
				t.Errorf("hello.txt on %s = %q, want %q", tc.wantBranch, got, tc.wantFile)
			}
			if got := gitT(t, repo, "rev-parse", tc.wantBranch); got != res.Commit {
				t.Errorf("branch at %s, result says %s", got, res.Commit)
			}
			if !strings.Contains(out.String(), "▸") || !strings.Contains(out.String(), "agent") {
				t.Errorf("no phase lines in progress output:\n%s", out.String())
			}
		})
	}
	// The work tree was left alone.
	if st := gitT(t, repo, "status", "--porcelain"); st != "" {
		t.Errorf("work tree changed: %s", st)
	}
}

// TestRunOneURL runs against a git URL: the result is a bundle on disk
// holding the new branch; a URL with credentials is refused before anything
// runs, and the secret never reaches the output or the error.
func TestRunOneURL(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs agent-runner")
	}
	agentRunnerBin, scriptedAgentBin := scriptedagent.BuildAgentRunner(t), scriptedagent.Build(t)
	l, err := local.New(local.Options{DataDir: t.TempDir(), AgentRunner: agentRunnerBin, Isolation: local.IsolationNone})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	srv := gitserver.New(t, func(repo, user, pass string, write bool) bool { return !write })
	srv.CreateRepo("acme", "widgets", "main", map[string]string{"README.md": "# widgets\n"})
	agent := runner.AgentSpec{Name: "command", Command: scriptedAgentBin}
	cases := []struct {
		name    string
		url     string
		wantErr string
	}{
		{"public URL", srv.CloneURL("acme", "widgets"), ""},
		{"credentials in the URL", strings.Replace(srv.CloneURL("acme", "widgets"), "://", "://x-access-token:ghs_sEcReT123@", 1), "credentials"},
		{"SSH URL", "git@github.com:acme/widgets.git", "SSH"},
		{"ssh:// URL", "ssh://git@github.com/acme/widgets.git", "SSH"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			res, err := runOne(context.Background(), l, oneShot{
				Repo: tc.url, Prompt: "Say hello\nscripted: write hello.txt hi", Agent: agent,
				TimeLimit: time.Minute, Progress: &out, BundleDir: t.TempDir(),
			})
			if strings.Contains(out.String(), "sEcReT") || (err != nil && strings.Contains(err.Error(), "sEcReT")) {
				t.Errorf("the URL's secret was shown: %v\n%s", err, out.String())
			}
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want one mentioning %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("runOne: %v\n%s", err, out.String())
			}
			if res.BundlePath == "" || res.LocalRepo != "" || res.Branch != "agentbot/run-say-hello" {
				t.Fatalf("result %+v", res)
			}
			clone := t.TempDir()
			gitT(t, clone, "clone", "-q", tc.url, ".")
			gitT(t, clone, "fetch", "-q", res.BundlePath, res.Branch+":"+res.Branch)
			if got := gitT(t, clone, "show", res.Branch+":hello.txt"); got != "hi" {
				t.Errorf("hello.txt = %q", got)
			}
		})
	}
}
