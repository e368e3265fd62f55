package mirror

import (
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/agentbot/agentbot"
	"github.com/agentbot/agentbot/internal/gitserver"
	"github.com/agentbot/agentbot/internal/testtool"
)

const token = "ghs_mirrorREADtoken0123456789abcdef"

// origin is a git server whose repositories need token to be read.
func origin(t *testing.T, names ...string) *gitserver.Server {
	t.Helper()
	srv := gitserver.New(t, func(repo, user, pass string, write bool) bool {
		return user == "x-access-token" && pass == token && !write
	})
	for _, n := range names {
		srv.CreateRepo("acme", n, "main", map[string]string{"README.md": "# " + n + "\n", "big.txt": strings.Repeat(n+" data\n", 4000)})
	}
	return srv
}

// commit pushes a commit writing file to acme/name's main.
func commit(t *testing.T, srv *gitserver.Server, name, file, content string) string {
	t.Helper()
	work := t.TempDir()
	testtool.Git(t, "", "clone", "-q", srv.BarePath("acme", name), work)
	if err := os.WriteFile(filepath.Join(work, file), []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	testtool.Git(t, work, "add", "-A")
	testtool.Git(t, work, "-c", "user.name=dev", "-c", "user.email=dev@example.com", "commit", "-q", "-m", "change "+file)
	testtool.Git(t, work, "push", "-q", "origin", "HEAD:main")
	return srv.RevParse("acme", name, "main")
}

func newManager(t *testing.T, max int64) *Manager {
	t.Helper()
	m, err := New(Options{Dir: t.TempDir(), MaxBytes: max})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func acquire(t *testing.T, m *Manager, srv *gitserver.Server, name string) *Lease {
	t.Helper()
	l, err := m.Acquire(t.Context(), 7, agentbot.Repo{Owner: "acme", Name: name}, srv.CloneURL("acme", name), token)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func TestKeyRefusesNamesOutsideTheDirectory(t *testing.T) {
	cases := []struct {
		name string
		inst int64
		repo agentbot.Repo
		ok   bool
	}{
		{"plain", 7, agentbot.Repo{Owner: "acme", Name: "widgets"}, true},
		{"dots and underscores", 7, agentbot.Repo{Owner: "acme-co", Name: "my_repo.js"}, true},
		{"parent in name", 7, agentbot.Repo{Owner: "acme", Name: ".."}, false},
		{"traversal in name", 7, agentbot.Repo{Owner: "acme", Name: "../../etc"}, false},
		{"traversal in owner", 7, agentbot.Repo{Owner: "..", Name: "widgets"}, false},
		{"slash in owner", 7, agentbot.Repo{Owner: "a/b", Name: "widgets"}, false},
		{"dot name", 7, agentbot.Repo{Owner: "acme", Name: "."}, false},
		{"hidden name", 7, agentbot.Repo{Owner: "acme", Name: ".evicted-1"}, false},
		{"name ending .git", 7, agentbot.Repo{Owner: "acme", Name: "x.git"}, false},
		{"empty", 7, agentbot.Repo{}, false},
		{"no installation", 0, agentbot.Repo{Owner: "acme", Name: "widgets"}, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			key, err := Key(c.inst, c.repo)
			if (err == nil) != c.ok {
				t.Fatalf("Key(%d, %q) = %q, %v; want ok=%v", c.inst, c.repo.FullName(), key, err, c.ok)
			}
		})
	}
	m := newManager(t, 0)
	if _, err := m.Acquire(t.Context(), 7, agentbot.Repo{Owner: "acme", Name: "../../x"}, "https://example.invalid/x.git", token); err == nil {
		t.Fatal("Acquire took a name with ../")
	}
	if entries, _ := os.ReadDir(m.Dir()); len(entries) != 0 {
		t.Errorf("a refused name left %d entries in the mirror directory", len(entries))
	}
}

// TestFetchRunsNoHooks: a hook in the mirror (a fetch runs
// reference-transaction hooks) never runs, and the mirror follows the
// origin.
func TestFetchRunsNoHooks(t *testing.T) {
	srv := origin(t, "widgets")
	m := newManager(t, 0)
	l := acquire(t, m, srv, "widgets")
	l.Release()
	marker := filepath.Join(t.TempDir(), "hook-ran")
	hook := filepath.Join(l.Path, "hooks", "reference-transaction")
	if err := os.WriteFile(hook, []byte("#!/bin/sh\ntouch "+marker+"\n"), 0o750); err != nil {
		t.Fatal(err)
	}
	// The hook is live: git itself runs it on a ref update.
	testtool.Git(t, "", "--git-dir", l.Path, "update-ref", "refs/heads/probe", l.Head("main"))
	if _, err := os.Stat(marker); err != nil {
		t.Fatalf("the test's hook does not run at all: %v", err)
	}
	os.Remove(marker)
	want := commit(t, srv, "widgets", "new.txt", "new\n")
	l2 := acquire(t, m, srv, "widgets")
	defer l2.Release()
	if _, err := os.Stat(marker); err == nil {
		t.Error("the mirror's fetch ran a hook")
	}
	if l2.Head("main") != want {
		t.Errorf("mirror main = %s, want %s", l2.Head("main"), want)
	}
	if _, ok := l2.Heads["refs/heads/probe"]; ok {
		t.Error("a branch the origin does not have stayed in the mirror")
	}
	_ = filepath.WalkDir(l2.Path, func(p string, d os.DirEntry, err error) error {
		if fi, err := os.Lstat(p); err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o004 != 0 {
			t.Errorf("%s is readable by every local user (%v)", p, fi.Mode().Perm())
		}
		return nil
	})
	cfg, _ := os.ReadFile(filepath.Join(l2.Path, "config"))
	if strings.Contains(string(cfg), token) {
		t.Error("the token was written into the mirror's config")
	}
}

// TestConcurrentTasksOnOneRepository: tasks acquiring one mirror at once
// (while the origin moves) all get a mirror holding the head they saw.
func TestConcurrentTasksOnOneRepository(t *testing.T) {
	srv := origin(t, "widgets")
	m := newManager(t, 0)
	var wg sync.WaitGroup
	leases := make([]*Lease, 4)
	errs := make([]error, 4)
	for i := range leases {
		wg.Add(1)
		go func() {
			defer wg.Done()
			leases[i], errs[i] = m.Acquire(t.Context(), 7, agentbot.Repo{Owner: "acme", Name: "widgets"}, srv.CloneURL("acme", "widgets"), token)
		}()
	}
	commit(t, srv, "widgets", "racing.txt", "x\n")
	wg.Wait()
	for i, l := range leases {
		if errs[i] != nil {
			t.Fatalf("acquire %d: %v", i, errs[i])
		}
		defer l.Release()
		testtool.Git(t, "", "--git-dir", l.Path, "cat-file", "-e", l.Head("main")+"^{commit}")
	}
	testtool.Git(t, "", "--git-dir", leases[0].Path, "fsck", "--no-dangling", "--no-progress")
}

// TestEvictionSkipsMirrorsInUse: past the size bound the least recently
// used idle mirror goes, a leased one stays, and a clone borrowing its
// objects keeps working.
func TestEvictionSkipsMirrorsInUse(t *testing.T) {
	srv := origin(t, "one", "two", "three")
	m := newManager(t, 1) // every mirror is over the bound
	held := acquire(t, m, srv, "one")
	clone := filepath.Join(t.TempDir(), "clone")
	testtool.Git(t, "", "clone", "-q", "--reference", held.Path, "--", held.Path, clone)

	two := acquire(t, m, srv, "two")
	two.Release() // idle: evicted at once
	if _, err := os.Stat(two.Path); !os.IsNotExist(err) {
		t.Errorf("idle mirror two is still there (%v)", err)
	}
	three := acquire(t, m, srv, "three")
	defer three.Release()
	if _, err := os.Stat(held.Path); err != nil {
		t.Fatalf("the leased mirror was evicted: %v", err)
	}
	testtool.Git(t, clone, "fsck", "--no-dangling", "--no-progress")
	if got := testtool.Git(t, clone, "show", "origin/main:README.md"); got != "# one" {
		t.Errorf("README.md = %q", got)
	}
	held.Release()
	held.Release() // twice is harmless
	if _, err := os.Stat(held.Path); !os.IsNotExist(err) {
		t.Errorf("mirror one outlived its last lease over the bound (%v)", err)
	}
	if _, err := os.Stat(three.Path); err != nil {
		t.Errorf("held mirror three is gone: %v", err)
	}
}

// TestRestartKnowsTheMirrors: a new Manager over the same directory counts
// the mirrors a previous one left, and evicts them by last use.
func TestRestartKnowsTheMirrors(t *testing.T) {
	srv := origin(t, "one")
	dir := t.TempDir()
	m, err := New(Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	l := acquire(t, m, srv, "one")
	l.Release()
	if err := os.MkdirAll(filepath.Join(dir, "7", "acme", "two.git.new"), 0o755); err != nil {
		t.Fatal(err)
	}
	m2, err := New(Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if m2.Size() == 0 || m2.Size() != m.Size() {
		t.Errorf("restarted size = %d, want %d", m2.Size(), m.Size())
	}
	if _, err := os.Stat(filepath.Join(dir, "7", "acme", "two.git.new")); !os.IsNotExist(err) {
		t.Error("a half-made mirror survived the restart")
	}
	if _, err := New(Options{Dir: dir, MaxBytes: 1}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(l.Path); !os.IsNotExist(err) {
		t.Error("a restart with a smaller bound kept an idle mirror over it")
	}
}
