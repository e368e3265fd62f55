package gateway

import (
	"context"
	"encoding/base64"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/agentbot/agentbot/internal/gitserver"
	"github.com/agentbot/agentbot/runner"
)

// TestGitRelay clones and fetches the task's repository with real git
// through the proxy and the relay, which adds the read token the git
// server demands; another repository and a push are refused, and the token
// never reaches the client.
func TestGitRelay(t *testing.T) {
	const token = "ghs_relayReadTokenNeverInTheSandbox0001"
	srv := gitserver.New(t, func(repo, user, pass string, write bool) bool {
		return !write && pass == token
	})
	srv.CreateRepo("octo", "app", "main", map[string]string{"README.md": "hello\n"})
	srv.CreateRepo("octo", "secret", "main", map[string]string{"KEYS": "private\n"})
	gitURL, err := url.Parse(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	g := newGateway(t, Options{GitURL: gitURL})
	var rec recorder
	task, proxy := openTask(t, g, TaskSpec{Repo: "octo/app", Record: rec.record,
		GitToken: func(context.Context) (string, error) { return token, nil }})

	env := os.Environ()
	for k, v := range task.Env(proxy) {
		env = append(env, k+"="+v)
	}
	env = append(env, "HOME="+t.TempDir(), "GIT_CONFIG_NOSYSTEM=1", "GIT_TERMINAL_PROMPT=0", "GIT_TRACE_CURL=1",
		"GIT_TRACE_CURL_NO_DATA=1", "GIT_AUTHOR_NAME=a", "GIT_AUTHOR_EMAIL=a@example.com", "GIT_COMMITTER_NAME=a", "GIT_COMMITTER_EMAIL=a@example.com")
	var trace strings.Builder
	git := func(dir string, args ...string) error {
		cmd := exec.CommandContext(t.Context(), "git", args...)
		cmd.Dir, cmd.Env = dir, env
		out, err := cmd.CombinedOutput()
		trace.Write(out)
		if err != nil {
			t.Logf("git %s: %v\n%s", strings.Join(args, " "), err, lastLines(string(out), 8))
		}
		return err
	}
	work := t.TempDir()
	clone := filepath.Join(work, "app")
	if err := git(work, "clone", task.CloneURL(), clone); err != nil {
		t.Fatalf("clone of the task's repository through the relay failed")
	}
	if b, err := os.ReadFile(filepath.Join(clone, "README.md")); err != nil || string(b) != "hello\n" {
		t.Fatalf("README.md = %q, %v", b, err)
	}

	upstream := commitUpstream(t, srv.BarePath("octo", "app"))
	if err := git(clone, "fetch", "origin"); err != nil {
		t.Fatalf("fetch through the relay failed")
	}
	if out, err := exec.Command("git", "-C", clone, "rev-parse", "origin/main").Output(); err != nil || strings.TrimSpace(string(out)) != upstream {
		t.Errorf("origin/main after fetch = %q (%v), want %s", out, err, upstream)
	}

	n := len(rec.all())
	if err := git(work, "clone", "http://"+GitHost+"/octo/secret.git", filepath.Join(work, "secret")); err == nil {
		t.Errorf("a clone of another repository went through")
	}
	if err := os.WriteFile(filepath.Join(clone, "x"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if git(clone, "add", "x") != nil || git(clone, "commit", "-qm", "x") != nil {
		t.Fatal("commit in the clone failed")
	}
	if err := git(clone, "push", "origin", "HEAD:main"); err == nil {
		t.Errorf("a push through the relay went through")
	}
	if got := srv.RevParse("octo", "app", "main"); got != upstream {
		t.Errorf("main moved to %s after the refused push", got)
	}

	basic := base64.StdEncoding.EncodeToString([]byte("x-access-token:" + token))
	if s := trace.String(); strings.Contains(s, token) || strings.Contains(s, basic) {
		t.Errorf("the token reached the client's side (git's curl trace shows it)")
	}
	blocked := map[string]bool{}
	for _, e := range rec.all()[n:] {
		if e.Kind != runner.EgressGit {
			t.Errorf("event kind %q", e.Kind)
		}
		if !e.Allowed {
			blocked[e.Reason] = true
		}
	}
	if !hasReason(blocked, "only octo/app is served") || !hasReason(blocked, "pushing is not allowed") {
		t.Errorf("blocked reasons = %v, want the other repository and the push", blocked)
	}
	for _, e := range rec.all()[:n] {
		if !e.Allowed || e.BytesIn == 0 {
			t.Errorf("clone/fetch event %+v: want allowed with bytes", e)
		}
	}
}

func hasReason(reasons map[string]bool, part string) bool {
	for r := range reasons {
		if strings.Contains(r, part) {
			return true
		}
	}
	return false
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// commitUpstream adds a commit to main of the bare repository, as another
// person's push would, and returns it.
func commitUpstream(t *testing.T, bare string) string {
	t.Helper()
	work := t.TempDir()
	for _, args := range [][]string{
		{"clone", "-q", bare, work},
		{"-C", work, "-c", "user.name=b", "-c", "user.email=b@example.com", "commit", "-q", "--allow-empty", "-m", "upstream"},
		{"-C", work, "push", "-q", "origin", "HEAD:main"},
	} {
		if out, err := exec.Command("git", args...).CombinedOutput(); err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
	}
	out, err := exec.Command("git", "-C", work, "rev-parse", "HEAD").Output()
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(out))
}
