package agentrun

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/agentbot/agentbot"
	"github.com/agentbot/agentbot/internal/testtool"
	"github.com/agentbot/agentbot/mirror"
	"github.com/agentbot/agentbot/runner"
)

// mirrorOf makes agentbot's mirror of the fixture's repository.
func mirrorOf(t *testing.T, f *fixture) *mirror.Lease {
	t.Helper()
	m, err := mirror.New(mirror.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	l, err := m.Acquire(t.Context(), 1, agentbot.Repo{Owner: owner, Name: repoName}, f.srv.CloneURL(owner, repoName), testToken)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(l.Release)
	return l
}

// looseObject is the file of object sha in the bare repository gitDir.
func looseObject(gitDir, sha string) string {
	return filepath.Join(gitDir, "objects", sha[:2], sha[2:])
}

// TestRunCloneFromMirror: a clone borrowing a mirror's objects ends with
// the origin's branch whatever state the mirror is in; a broken mirror
// only costs a plain clone.
func TestRunCloneFromMirror(t *testing.T) {
	cases := []struct {
		name     string
		spoil    func(t *testing.T, f *fixture, l *mirror.Lease)
		fallback bool
	}{
		{name: "fresh mirror"},
		{name: "origin moved after the mirror's fetch", spoil: func(t *testing.T, f *fixture, l *mirror.Lease) {
			f.pushBranch(t, "main", map[string]string{"README.md": "# widgets, moved on\n"})
		}},
		{name: "a blob deleted", fallback: true, spoil: func(t *testing.T, f *fixture, l *mirror.Lease) {
			blob := testtool.Git(t, "", "--git-dir", l.Path, "rev-parse", "main:README.md")
			if err := os.Remove(looseObject(l.Path, blob)); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "a blob garbled", fallback: true, spoil: func(t *testing.T, f *fixture, l *mirror.Lease) {
			blob := testtool.Git(t, "", "--git-dir", l.Path, "rev-parse", "main:README.md")
			p := looseObject(l.Path, blob)
			_ = os.Chmod(p, 0o644)
			if err := os.WriteFile(p, []byte("not a zlib stream at all"), 0o644); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "the pack garbled", fallback: true, spoil: func(t *testing.T, f *fixture, l *mirror.Lease) {
			testtool.Git(t, "", "--git-dir", l.Path, "repack", "-q", "-a", "-d")
			packs, _ := filepath.Glob(filepath.Join(l.Path, "objects", "pack", "*.pack"))
			if len(packs) != 1 {
				t.Fatalf("packs = %v", packs)
			}
			b, err := os.ReadFile(packs[0])
			if err != nil {
				t.Fatal(err)
			}
			for i := 12; i < len(b)-20; i++ {
				b[i] ^= 0x5a
			}
			_ = os.Chmod(packs[0], 0o644)
			if err := os.WriteFile(packs[0], b, 0o644); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "the mirror is gone", fallback: true, spoil: func(t *testing.T, f *fixture, l *mirror.Lease) {
			if err := os.RemoveAll(l.Path); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := newFixture(t)
			l := mirrorOf(t, f)
			job := f.job("scripted: write hello.txt hello world; summary Added hello.txt")
			job.Mirror = &runner.JobMirror{Path: l.Path, Heads: map[string]string{"refs/heads/main": l.Head("main")}}
			if c.spoil != nil {
				c.spoil(t, f, l)
			}
			want := f.srv.RevParse(owner, repoName, "main")
			wantReadme, err := f.srv.Show(owner, repoName, "main", "README.md")
			if err != nil {
				t.Fatal(err)
			}
			o := runJob(t, t.Context(), job)
			if o.code != runner.ExitOK {
				t.Fatalf("exit %d, want 0; logs:\n%s", o.code, o.logs())
			}
			res := o.result(t)
			if res.BaseSHA != want {
				t.Errorf("base = %s, want the origin's main %s", res.BaseSHA, want)
			}
			got, err := os.ReadFile(filepath.Join(o.ws.RepoDir(), "README.md"))
			if err != nil || string(got) != wantReadme {
				t.Errorf("README.md = %q (%v), want %q", got, err, wantReadme)
			}
			testtool.Git(t, o.ws.RepoDir(), "fsck", "--no-dangling", "--no-progress")
			fellBack := strings.Contains(o.logs(), "mirror is not usable")
			if fellBack != c.fallback {
				t.Errorf("fell back to a plain clone: %v, want %v; logs:\n%s", fellBack, c.fallback, o.logs())
			}
			_, altErr := os.Stat(filepath.Join(o.ws.RepoDir(), ".git", "objects", "info", "alternates"))
			if borrowed := altErr == nil; borrowed == c.fallback {
				t.Errorf("the clone borrows the mirror's objects: %v, want %v", borrowed, !c.fallback)
			}
			bot := applyBundle(t, f, o.ws.BundleFile(), job.Branch)
			if got := testtool.Git(t, bot, "show", res.Commit+":hello.txt"); got != "hello world" {
				t.Errorf("hello.txt = %q", got)
			}
			if strings.Contains(string(o.stdout), testToken) {
				t.Error("the token is in agent-runner's output")
			}
		})
	}
}
