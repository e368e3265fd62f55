package bundle

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// repo is a bare repository with one commit on main, and a working clone
// of it for making commits and bundles.
type repo struct {
	t    *testing.T
	bare string
	dir  string
	base string
}

func newRepo(t *testing.T) *repo {
	t.Helper()
	root := t.TempDir()
	r := &repo{t: t, bare: filepath.Join(root, "origin.git"), dir: filepath.Join(root, "work")}
	r.git(root, "init", "-q", "-b", "main", r.dir)
	r.commit("base", map[string]string{"README.md": "widgets\n", ".github/workflows/ci.yml": "on: push\n"})
	r.git(root, "clone", "-q", "--bare", r.dir, r.bare)
	r.base = r.git(r.dir, "rev-parse", "HEAD")
	return r
}

func (r *repo) git(dir string, args ...string) string {
	r.t.Helper()
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GIT_AUTHOR_NAME=agent", "GIT_AUTHOR_EMAIL=agent@example.com",
		"GIT_COMMITTER_NAME=agent", "GIT_COMMITTER_EMAIL=agent@example.com", "GIT_CONFIG_GLOBAL=/dev/null")
	out, err := cmd.CombinedOutput()
	if err != nil {
		r.t.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

// commit writes files (a value starting with "->" makes a symlink to the
// rest) and commits them.
func (r *repo) commit(msg string, files map[string]string) string {
	r.t.Helper()
	for p, content := range files {
		full := filepath.Join(r.dir, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			r.t.Fatal(err)
		}
		var err error
		if target, ok := strings.CutPrefix(content, "->"); ok {
			err = os.Symlink(target, full)
		} else {
			err = os.WriteFile(full, []byte(content), 0o644)
		}
		if err != nil {
			r.t.Fatal(err)
		}
		r.git(r.dir, "add", p)
	}
	r.git(r.dir, "commit", "-q", "-m", msg)
	return r.git(r.dir, "rev-parse", "HEAD")
}

func (r *repo) bundle(revs ...string) string {
	r.t.Helper()
	path := filepath.Join(r.t.TempDir(), "result.bundle")
	r.git(r.dir, append([]string{"bundle", "create", "-q", path}, revs...)...)
	return path
}

func TestVerifyStandalone(t *testing.T) {
	r := newRepo(t)
	r.git(r.dir, "checkout", "-q", "-b", "agentbot/issue-9")
	want := r.commit("x", map[string]string{"a.txt": "a\n"})
	thin := r.bundle("agentbot/issue-9", "^"+r.base)
	check := Check{Branch: "agentbot/issue-9", BaseSHA: r.base}

	var rej *Rejected
	if _, err := Verify(context.Background(), "", thin, check); !errors.As(err, &rej) {
		t.Fatalf("thin bundle without base objects: %v, want rejection", err)
	}
	check.ObjectsFrom = r.bare
	head, err := Verify(context.Background(), "", thin, check)
	if err != nil || head != want {
		t.Fatalf("Verify = %s, %v; want %s", head, err, want)
	}
	if _, err := Verify(context.Background(), "", thin, Check{Branch: "x"}); err == nil || errors.As(err, &rej) {
		t.Fatalf("a check without base is a caller error, not a rejection: %v", err)
	}
}

func TestVerifyRefuses(t *testing.T) {
	const branch = "agentbot/issue-1"
	tests := []struct {
		name string
		make func(r *repo, c *Check) string
		want string
	}{
		{"a second branch", func(r *repo, c *Check) string {
			r.commit("x", map[string]string{"a.txt": "a\n"})
			r.git(r.dir, "branch", "agentbot/extra")
			return r.bundle(branch, "agentbot/extra", "^"+r.base)
		}, "2 branches"},
		{"a tag", func(r *repo, c *Check) string {
			r.commit("x", map[string]string{"a.txt": "a\n"})
			r.git(r.dir, "tag", "v1")
			return r.bundle(branch, "v1", "^"+r.base)
		}, "only one branch is allowed"},
		{"another branch name", func(r *repo, c *Check) string {
			r.commit("x", map[string]string{"a.txt": "a\n"})
			c.Branch = "agentbot/issue-2"
			return r.bundle(branch, "^"+r.base)
		}, "not \"agentbot/issue-2\""},
		{"outside the prefix", func(r *repo, c *Check) string {
			r.commit("x", map[string]string{"a.txt": "a\n"})
			c.BranchPrefix = "bot/"
			return r.bundle(branch, "^"+r.base)
		}, "does not start with"},
		{"no new commit", func(r *repo, c *Check) string {
			return r.bundle(branch)
		}, "adds no commits"},
		{"a protected file", func(r *repo, c *Check) string {
			r.commit("x", map[string]string{".github/workflows/ci.yml": "on: pull_request_target\n"})
			return r.bundle(branch, "^"+r.base)
		}, "protected"},
		{"a protected file in other case", func(r *repo, c *Check) string {
			r.commit("x", map[string]string{".GitHub/Workflows/evil.yml": "on: push\n"})
			return r.bundle(branch, "^"+r.base)
		}, "protected"},
		{"a symlink where a protected directory would be", func(r *repo, c *Check) string {
			r.git(r.dir, "rm", "-q", "-r", ".github")
			r.commit("x", map[string]string{".github": "->elsewhere"})
			return r.bundle(branch, "^"+r.base)
		}, "symlink"},
		{"over the size limit", func(r *repo, c *Check) string {
			r.commit("x", map[string]string{"big.txt": strings.Repeat("x", 4096)})
			c.MaxBytes = 100
			return r.bundle(branch, "^"+r.base)
		}, "over the limit"},
		{"not a bundle", func(r *repo, c *Check) string {
			p := filepath.Join(r.t.TempDir(), "junk")
			if err := os.WriteFile(p, []byte("not a bundle\n"), 0o600); err != nil {
				r.t.Fatal(err)
			}
			return p
		}, "not a readable git bundle"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRepo(t)
			r.git(r.dir, "checkout", "-q", "-b", branch)
			check := Check{Branch: branch, BaseSHA: r.base, ObjectsFrom: r.bare, ProtectedPaths: []string{".github/workflows/**"}}
			path := tt.make(r, &check)
			_, err := Verify(context.Background(), "", path, check)
			var rej *Rejected
			if !errors.As(err, &rej) || !strings.Contains(rej.Reason, tt.want) {
				t.Fatalf("Verify = %v, want a rejection saying %q", err, tt.want)
			}
		})
	}
}
