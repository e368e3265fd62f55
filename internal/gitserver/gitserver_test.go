package gitserver

import (
	"net/url"
	"os/exec"
	"strings"
	"testing"
)

func TestCloneAndPushNeedCredentials(t *testing.T) {
	s := New(t, func(repo, user, pass string, write bool) bool {
		if repo != "acme/widgets" {
			return false
		}
		if write {
			return pass == "write-secret"
		}
		return pass == "read-secret" || pass == "write-secret"
	})
	head := s.CreateRepo("acme", "widgets", "main", map[string]string{"README.md": "hello\n"})

	withAuth := func(pass string) string {
		u, _ := url.Parse(s.CloneURL("acme", "widgets"))
		u.User = url.UserPassword("x-access-token", pass)
		return u.String()
	}
	dir := t.TempDir()
	if out, err := exec.Command("git", "clone", "-q", withAuth("wrong"), dir+"/a").CombinedOutput(); err == nil {
		t.Fatalf("clone with a wrong token succeeded: %s", out)
	}
	if out, err := exec.Command("git", "clone", "-q", withAuth("read-secret"), dir+"/b").CombinedOutput(); err != nil {
		t.Fatalf("clone: %v\n%s", err, out)
	}
	run := func(args ...string) (string, error) {
		cmd := exec.Command("git", args...)
		cmd.Dir = dir + "/b"
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	if _, err := run("-c", "user.name=t", "-c", "user.email=t@e", "commit", "-q", "--allow-empty", "-m", "x"); err != nil {
		t.Fatal(err)
	}
	if out, err := run("push", "-q", withAuth("read-secret"), "HEAD:refs/heads/topic"); err == nil {
		t.Fatalf("push with a read token succeeded: %s", out)
	}
	if out, err := run("push", "-q", withAuth("write-secret"), "HEAD:refs/heads/topic"); err != nil {
		t.Fatalf("push: %v\n%s", err, out)
	}
	if got := strings.Join(s.Branches("acme", "widgets"), ","); got != "main,topic" {
		t.Fatalf("branches = %q, want main,topic", got)
	}
	if s.RevParse("acme", "widgets", "main") != head {
		t.Fatal("main moved")
	}
}
