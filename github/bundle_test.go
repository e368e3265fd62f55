package github

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/agentbot/agentbot/bundle"
)

// serverState is every branch and its head in the git server.
func (h *harness) serverState() map[string]string {
	state := map[string]string{}
	for _, b := range h.git.Branches("acme", "widgets") {
		state[b] = h.git.RevParse("acme", "widgets", b)
	}
	return state
}

func sameState(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

func (h *harness) writeTokens() int {
	n := 0
	for _, tok := range h.gh.Tokens() {
		if tok.Scoped && tok.Permissions["contents"] == "write" {
			n++
		}
	}
	return n
}

func TestPushBundleNewBranch(t *testing.T) {
	const branch = "agentbot/issue-1-add-feature"
	tests := []struct {
		name string
		make func(h *harness, w *work) (bf string, check bundle.Check)
	}{
		{"thin bundle", func(h *harness, w *work) (string, bundle.Check) {
			w.git("checkout", "-q", "-b", branch)
			w.commit("add feature", map[string]string{"src/feature.go": "package app\n"})
			w.commit("and its test", map[string]string{"src/feature_test.go": "package app\n"})
			return w.bundle(branch, "^"+h.base), bundle.Check{Branch: branch, BranchPrefix: "agentbot/", BaseSHA: h.base, ProtectedPaths: []string{".github/workflows/**"}}
		}},
		{"complete bf with HEAD", func(h *harness, w *work) (string, bundle.Check) {
			w.git("checkout", "-q", "-b", branch)
			w.commit("add feature", map[string]string{"src/feature.go": "package app\n"})
			return w.bundle("HEAD", branch), bundle.Check{Branch: branch, BranchPrefix: "agentbot/", BaseSHA: h.base}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			w := h.clone()
			bf, check := tc.make(h, w)
			want := w.git("rev-parse", branch)
			info, err := h.client.Repository(context.Background(), instID, h.repo)
			if err != nil {
				t.Fatal(err)
			}
			head, err := h.client.PushBundle(context.Background(), instID, h.repo, info.CloneURL, bf, check, "")
			if err != nil {
				t.Fatalf("PushBundle: %v", err)
			}
			if head != want || h.git.RevParse("acme", "widgets", branch) != want {
				t.Fatalf("head = %s, server has %s, want %s", head, h.git.RevParse("acme", "widgets", branch), want)
			}
			if h.git.RevParse("acme", "widgets", "main") != h.base {
				t.Fatal("main moved")
			}
			// One read and one write token, both scoped to the repository and
			// both revoked once the push is done.
			var perms []string
			for _, tok := range h.gh.Tokens() {
				if tok.Scoped {
					perms = append(perms, tok.Permissions["contents"])
					if !tok.Revoked {
						t.Errorf("token with contents:%s was not revoked", tok.Permissions["contents"])
					}
				}
			}
			if strings.Join(perms, ",") != "read,write" {
				t.Fatalf("scoped tokens = %v, want read then write", perms)
			}
			if metricValue(t, h, "agentbot_github_bundles_total", map[string]string{"outcome": "pushed"}) != 1 {
				t.Fatal("push not counted")
			}

			// A retry after the push (a crash before the task recorded it)
			// succeeds without pushing or minting a write token again.
			again, err := h.client.PushBundle(context.Background(), instID, h.repo, info.CloneURL, bf, check, "")
			if err != nil || again != want {
				t.Fatalf("second PushBundle = %s, %v", again, err)
			}
			if n := h.writeTokens(); n != 1 {
				t.Fatalf("%d write tokens after the retry, want 1", n)
			}
		})
	}
}

func TestPushBundleRefusals(t *testing.T) {
	const branch = "agentbot/issue-2-thing"
	type setup func(h *harness, w *work) (bf string, check bundle.Check)
	okCheck := func(h *harness) bundle.Check {
		return bundle.Check{Branch: branch, BranchPrefix: "agentbot/", BaseSHA: h.base, ProtectedPaths: []string{".github/workflows/**", "*.pem"}}
	}
	tests := []struct {
		name       string
		setup      setup
		wantReason string
	}{
		{"branch name differs", func(h *harness, w *work) (string, bundle.Check) {
			w.git("checkout", "-q", "-b", "agentbot/issue-2-other")
			w.commit("x", map[string]string{"a.txt": "a\n"})
			return w.bundle("agentbot/issue-2-other", "^"+h.base), okCheck(h)
		}, `branch is "agentbot/issue-2-other"`},
		{"branch outside the prefix", func(h *harness, w *work) (string, bundle.Check) {
			w.git("checkout", "-q", "-b", "main-fix")
			w.commit("x", map[string]string{"a.txt": "a\n"})
			c := okCheck(h)
			c.Branch = "main-fix"
			return w.bundle("main-fix", "^"+h.base), c
		}, `does not start with "agentbot/"`},
		{"two branches", func(h *harness, w *work) (string, bundle.Check) {
			w.git("checkout", "-q", "-b", branch)
			w.commit("x", map[string]string{"a.txt": "a\n"})
			w.git("branch", "agentbot/extra")
			return w.bundle(branch, "agentbot/extra", "^"+h.base), okCheck(h)
		}, "2 branches"},
		{"a tag besides the branch", func(h *harness, w *work) (string, bundle.Check) {
			w.git("checkout", "-q", "-b", branch)
			w.commit("x", map[string]string{"a.txt": "a\n"})
			w.git("tag", "v1")
			return w.bundle(branch, "v1", "^"+h.base), okCheck(h)
		}, "refs/tags/v1"},
		{"protected workflow file", func(h *harness, w *work) (string, bundle.Check) {
			w.git("checkout", "-q", "-b", branch)
			w.commit("ci", map[string]string{".github/workflows/ci.yml": "on: push\n", "a.txt": "a\n"})
			return w.bundle(branch, "^"+h.base), okCheck(h)
		}, ".github/workflows/ci.yml"},
		{"protected file added and removed again", func(h *harness, w *work) (string, bundle.Check) {
			w.git("checkout", "-q", "-b", branch)
			w.commit("add", map[string]string{".github/workflows/x.yml": "on: push\n"})
			w.commit("remove", map[string]string{".github/workflows/x.yml": "", "a.txt": "a\n"})
			return w.bundle(branch, "^"+h.base), okCheck(h)
		}, ".github/workflows/x.yml"},
		{"protected pattern without a slash", func(h *harness, w *work) (string, bundle.Check) {
			w.git("checkout", "-q", "-b", branch)
			w.commit("key", map[string]string{"deploy/keys/prod.pem": "KEY\n"})
			return w.bundle(branch, "^"+h.base), okCheck(h)
		}, "deploy/keys/prod.pem"},
		{"symlink where a protected directory would be", func(h *harness, w *work) (string, bundle.Check) {
			w.git("checkout", "-q", "-b", branch)
			w.commit("ci", map[string]string{"ci/workflows/evil.yml": "on: push\n"})
			if err := os.Symlink("ci", w.dir+"/.github"); err != nil {
				t.Fatal(err)
			}
			w.git("add", ".github")
			w.git("commit", "-q", "-m", "link")
			return w.bundle(branch, "^"+h.base), okCheck(h)
		}, "makes .github a symlink"},
		{"submodule where a protected directory would be", func(h *harness, w *work) (string, bundle.Check) {
			w.git("checkout", "-q", "-b", branch)
			w.git("update-index", "--add", "--cacheinfo", "160000,"+h.base+",.github")
			w.git("commit", "-q", "-m", "gitlink")
			return w.bundle(branch, "^"+h.base), okCheck(h)
		}, "makes .github a submodule"},
		{"protected path in another case", func(h *harness, w *work) (string, bundle.Check) {
			w.git("checkout", "-q", "-b", branch)
			w.commit("ci", map[string]string{".GitHub/Workflows/ci.yml": "on: push\n"})
			return w.bundle(branch, "^"+h.base), okCheck(h)
		}, ".GitHub/Workflows/ci.yml"},
		{"merge of an unrelated history carrying a workflow", func(h *harness, w *work) (string, bundle.Check) {
			w.git("checkout", "-q", "--orphan", "side")
			w.git("rm", "-rqf", ".")
			w.commit("side root", map[string]string{".github/workflows/evil.yml": "on: push\n"})
			w.git("checkout", "-q", "-b", branch, h.base)
			w.git("merge", "-q", "--allow-unrelated-histories", "-s", "ours", "-m", "merge", "side")
			return w.bundle(branch, "^"+h.base), okCheck(h)
		}, ".github/workflows/evil.yml"},
		{"protected file renamed away", func(h *harness, w *work) (string, bundle.Check) {
			w.git("checkout", "-q", "-b", branch)
			w.git("mv", "src/app.go", "src/main.go")
			w.git("commit", "-q", "-m", "rename")
			c := okCheck(h)
			c.ProtectedPaths = []string{"src/app.go"}
			return w.bundle(branch, "^"+h.base), c
		}, "src/app.go"},
		{"unrelated history", func(h *harness, w *work) (string, bundle.Check) {
			w.git("checkout", "-q", "--orphan", branch)
			w.git("rm", "-rqf", ".")
			w.commit("fresh start", map[string]string{"a.txt": "a\n"})
			return w.bundle(branch), okCheck(h)
		}, "does not descend"},
		{"thin bf on another base", func(h *harness, w *work) (string, bundle.Check) {
			w.git("checkout", "-q", "--orphan", "elsewhere")
			w.git("rm", "-rqf", ".")
			other := w.commit("other root", map[string]string{"b.txt": "b\n"})
			w.git("checkout", "-q", "-b", branch)
			w.commit("x", map[string]string{"a.txt": "a\n"})
			return w.bundle(branch, "^"+other), okCheck(h)
		}, "does not descend"},
		{"history rewritten below the base", func(h *harness, w *work) (string, bundle.Check) {
			w.git("checkout", "-q", "-b", branch)
			w.git("commit", "-q", "--amend", "-m", "rewritten seed")
			w.commit("x", map[string]string{"a.txt": "a\n"})
			return w.bundle(branch), okCheck(h)
		}, "does not descend"},
		{"over the size limit", func(h *harness, w *work) (string, bundle.Check) {
			w.git("checkout", "-q", "-b", branch)
			w.commit("x", map[string]string{"a.txt": strings.Repeat("data ", 2000)})
			c := okCheck(h)
			c.MaxBytes = 200
			return w.bundle(branch, "^"+h.base), c
		}, "over the limit of 200"},
		{"no new commits", func(h *harness, w *work) (string, bundle.Check) {
			w.git("checkout", "-q", "-b", branch)
			return w.bundle(branch), okCheck(h)
		}, "adds no commits"},
		{"not a bundle", func(h *harness, w *work) (string, bundle.Check) {
			p := t.TempDir() + "/junk.bundle"
			if err := os.WriteFile(p, []byte("# v2 git bf\nnonsense\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			return p, okCheck(h)
		}, "git bundle"},
		{"branch already exists on GitHub", func(h *harness, w *work) (string, bundle.Check) {
			h.gh.CommitFile(h.repo, branch, "other.txt", "someone else\n")
			w.git("checkout", "-q", "-b", branch)
			w.commit("x", map[string]string{"a.txt": "a\n"})
			return w.bundle(branch, "^"+h.base), okCheck(h)
		}, "already exists"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			w := h.clone()
			bf, check := tc.setup(h, w)
			before := h.serverState()
			cloneURL := h.git.CloneURL("acme", "widgets")
			_, err := h.client.PushBundle(context.Background(), instID, h.repo, cloneURL, bf, check, "")
			var rej *bundle.Rejected
			if !errors.As(err, &rej) {
				t.Fatalf("PushBundle = %v, want *bundle.Rejected", err)
			}
			h.logErr(err)
			if !strings.Contains(rej.Reason, tc.wantReason) {
				t.Fatalf("reason = %q, want it to mention %q", rej.Reason, tc.wantReason)
			}
			if after := h.serverState(); !sameState(before, after) {
				t.Fatalf("server changed: %v → %v", before, after)
			}
			if n := h.writeTokens(); n != 0 {
				t.Fatalf("%d write tokens minted for a rejected bundle", n)
			}
			for _, r := range h.git.Requests() {
				if strings.Contains(r, "receive-pack") {
					t.Fatalf("a push reached the git server: %s", r)
				}
			}
		})
	}
}

func TestPushBundleFollowUp(t *testing.T) {
	const branch = "agentbot/issue-3-fix"
	tests := []struct {
		name       string
		run        func(h *harness, w *work, old string) (bf string, check bundle.Check)
		wantReason string // "" = pushed
	}{
		{"descends from the old head", func(h *harness, w *work, old string) (string, bundle.Check) {
			w.commit("follow-up", map[string]string{"b.txt": "b\n"})
			return w.bundle(branch, "^"+old), bundle.Check{Branch: branch, BaseSHA: h.base, ExpectedOldSHA: old}
		}, ""},
		{"branch moved on GitHub meanwhile", func(h *harness, w *work, old string) (string, bundle.Check) {
			h.gh.CommitFile(h.repo, branch, "human.txt", "a human pushed\n")
			w.commit("follow-up", map[string]string{"b.txt": "b\n"})
			return w.bundle(branch, "^"+old), bundle.Check{Branch: branch, BaseSHA: h.base, ExpectedOldSHA: old}
		}, "moved on GitHub"},
		{"rewrites the branch", func(h *harness, w *work, old string) (string, bundle.Check) {
			w.git("reset", "-q", "--hard", h.base)
			w.commit("replacement", map[string]string{"c.txt": "c\n"})
			return w.bundle(branch, "^"+h.base), bundle.Check{Branch: branch, BaseSHA: h.base, ExpectedOldSHA: old}
		}, "does not descend"},
		{"touches a workflow after the old head", func(h *harness, w *work, old string) (string, bundle.Check) {
			w.commit("ci", map[string]string{".github/workflows/ci.yml": "on: push\n"})
			return w.bundle(branch, "^"+old), bundle.Check{Branch: branch, ExpectedOldSHA: old, ProtectedPaths: DefaultSettings().ProtectedPaths}
		}, "protected"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			// The PR branch as agentbot pushed it earlier.
			w := h.clone()
			w.git("checkout", "-q", "-b", branch)
			old := w.commit("first run", map[string]string{"a.txt": "a\n"})
			w.git("push", "-q", h.git.BarePath("acme", "widgets"), branch)
			bf, check := tc.run(h, w, old)
			before := h.serverState()
			head, err := h.client.PushBundle(context.Background(), instID, h.repo, h.git.CloneURL("acme", "widgets"), bf, check, "")
			if tc.wantReason == "" {
				if err != nil {
					t.Fatalf("PushBundle: %v", err)
				}
				if got := h.git.RevParse("acme", "widgets", branch); got != head || head != w.git("rev-parse", "HEAD") {
					t.Fatalf("branch at %s, head %s", got, head)
				}
				return
			}
			var rej *bundle.Rejected
			if !errors.As(err, &rej) || !strings.Contains(rej.Reason, tc.wantReason) {
				t.Fatalf("PushBundle = %v, want a rejection mentioning %q", err, tc.wantReason)
			}
			if after := h.serverState(); !sameState(before, after) {
				t.Fatalf("server changed: %v → %v", before, after)
			}
		})
	}
}

func TestPushBundleBaseFromTheSandbox(t *testing.T) {
	const branch = "agentbot/issue-8-y"
	tests := []struct {
		name       string
		setup      func(h *harness, w *work) (bf, baseSHA string)
		wantReason string
	}{
		{"base is main's head, and main moved on since", func(h *harness, w *work) (string, string) {
			w.git("checkout", "-q", "-b", branch)
			w.commit("y", map[string]string{"y.txt": "y\n"})
			h.gh.SetFile(h.repo, "later.txt", "main moved on\n")
			return w.bundle(branch, "^"+h.base), h.base
		}, ""},
		{"base is an older commit of main", func(h *harness, w *work) (string, string) {
			newer := h.gh.SetFile(h.repo, "b.txt", "b\n")
			w.git("fetch", "-q", "origin")
			w.git("checkout", "-q", "-b", branch, newer)
			w.commit("y", map[string]string{"y.txt": "y\n"})
			return w.bundle(branch, "^"+newer), newer
		}, ""},
		{"base from a branch outside main's history", func(h *harness, w *work) (string, string) {
			evil := h.gh.CommitFile(h.repo, "evil", ".github/workflows/pwn.yml", "on: push\n")
			w.git("fetch", "-q", "origin")
			w.git("checkout", "-q", "-b", branch, evil)
			w.commit("innocent", map[string]string{"y.txt": "y\n"})
			return w.bundle(branch, "^"+evil), evil
		}, "not in main's history"},
		{"outside main's history, no base branch named", func(h *harness, w *work) (string, string) {
			evil := h.gh.CommitFile(h.repo, "evil", "deploy/secret.txt", "x\n")
			w.git("fetch", "-q", "origin")
			w.git("checkout", "-q", "-b", branch, evil)
			w.commit("innocent", map[string]string{"y.txt": "y\n"})
			return w.bundle(branch, "^"+evil), evil + " (no base branch)"
		}, "not in main's history"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			w := h.clone()
			bf, base := tc.setup(h, w)
			before := h.serverState()
			check := bundle.Check{Branch: branch, BranchPrefix: "agentbot/", BaseSHA: base, BaseBranch: "main", ProtectedPaths: DefaultSettings().ProtectedPaths}
			if sha, ok := strings.CutSuffix(base, " (no base branch)"); ok {
				check.BaseSHA, check.BaseBranch = sha, ""
			}
			head, err := h.client.PushBundle(context.Background(), instID, h.repo, h.git.CloneURL("acme", "widgets"), bf, check, "")
			if tc.wantReason == "" {
				if err != nil || h.git.RevParse("acme", "widgets", branch) != head {
					t.Fatalf("PushBundle = %s, %v", head, err)
				}
				return
			}
			var rej *bundle.Rejected
			if !errors.As(err, &rej) || !strings.Contains(rej.Reason, tc.wantReason) {
				t.Fatalf("PushBundle = %v, want a rejection mentioning %q", err, tc.wantReason)
			}
			if after := h.serverState(); !sameState(before, after) {
				t.Fatalf("server changed: %v → %v", before, after)
			}
		})
	}
}

func TestPushBundleRefusesCredentialsInTheURL(t *testing.T) {
	h := newHarness(t)
	w := h.clone()
	w.git("checkout", "-q", "-b", "agentbot/x")
	w.commit("x", map[string]string{"a.txt": "a\n"})
	bf := w.bundle("agentbot/x", "^"+h.base)
	for _, u := range []string{"http://user:pass@" + strings.TrimPrefix(h.git.URL, "http://") + "/acme/widgets.git", "file:///tmp/x", "ssh://git@x/y"} {
		_, err := h.client.PushBundle(context.Background(), instID, h.repo, u, bf, bundle.Check{Branch: "agentbot/x", BaseSHA: h.base}, "")
		if err == nil || !strings.Contains(err.Error(), "without credentials") {
			t.Fatalf("PushBundle(%q) = %v", u, err)
		}
	}
	if len(h.gh.Tokens()) != 0 {
		t.Fatal("tokens minted for a bad URL")
	}
}

// TestFailedGitNeverEchoesTheToken covers git printing the Authorization
// header (or the token) on a failed fetch or push, at any position in its
// message: the error must carry no piece of it, even where the message is
// cut short.
func TestFailedGitNeverEchoesTheToken(t *testing.T) {
	real, err := exec.LookPath("git")
	if err != nil {
		t.Fatal(err)
	}
	for _, pad := range []int{0, 240, 255, 262, 270, 290} {
		t.Run(fmt.Sprintf("header after %d bytes", pad), func(t *testing.T) {
			fake := filepath.Join(t.TempDir(), "git")
			script := fmt.Sprintf("#!/bin/sh\ncase \" $* \" in *\" push \"*)\n"+
				"  printf '%%0%dd %%s\\n' 0 \"$GIT_CONFIG_VALUE_0\" >&2\n  exit 1;;\nesac\nexec %s \"$@\"\n", pad, real)
			if err := os.WriteFile(fake, []byte(script), 0o755); err != nil {
				t.Fatal(err)
			}
			h := newHarness(t, func(c *Config) { c.GitPath = fake })
			w := h.clone()
			w.git("checkout", "-q", "-b", "agentbot/x")
			w.commit("x", map[string]string{"a.txt": "a\n"})
			bf := w.bundle("agentbot/x", "^"+h.base)
			info, err := h.client.Repository(context.Background(), instID, h.repo)
			if err != nil {
				t.Fatal(err)
			}
			_, err = h.client.PushBundle(context.Background(), instID, h.repo, info.CloneURL, bf, bundle.Check{Branch: "agentbot/x", BranchPrefix: "agentbot/", BaseSHA: h.base}, "")
			if err == nil {
				t.Fatal("the push did not fail")
			}
			h.logErr(err)
			msg := err.Error()
			for _, tok := range h.gh.Tokens() {
				// The constant "x-access-token:" encodes to 20 characters;
				// anything past them is the secret.
				basic := base64.StdEncoding.EncodeToString([]byte("x-access-token:" + tok.Value))
				if strings.Contains(msg, basic[:24]) || strings.Contains(msg, tok.Value[:8]) {
					t.Fatalf("the error carries part of a token: %s", msg)
				}
			}
		})
	}
}
