package github

import (
	"context"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/agentbot/agentbot/bundle"
)

// uploadPacks counts the fetch-side POSTs the git server has seen
// (protocol v2: ls-remote is one, each fetch one or more).
func uploadPacks(h *harness) int {
	n := 0
	for _, r := range h.git.Requests() {
		if strings.HasPrefix(r, "POST ") && strings.HasSuffix(r, "/git-upload-pack") {
			n++
		}
	}
	return n
}

// TestPushBundleVerifiesAgainstTheMirror: with agentbot's mirror holding
// the base, the push reads GitHub once (ls-remote) and fetches nothing; a
// mirror without the base costs the fetch, not the push.
func TestPushBundleVerifiesAgainstTheMirror(t *testing.T) {
	const branch = "agentbot/issue-1-add-feature"
	for _, tc := range []struct {
		name      string
		hasBase   bool
		wantReads int
	}{
		{"mirror holds the base", true, 1},
		{"mirror without the base", false, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			mirror := filepath.Join(t.TempDir(), "mirror.git")
			args := []string{"init", "-q", "--bare", mirror}
			if tc.hasBase {
				args = []string{"clone", "-q", "--mirror", h.git.BarePath("acme", "widgets"), mirror}
			}
			if out, err := exec.Command("git", args...).CombinedOutput(); err != nil {
				t.Fatalf("make the mirror: %v\n%s", err, out)
			}
			w := h.clone()
			w.git("checkout", "-q", "-b", branch)
			w.commit("add feature", map[string]string{"src/feature.go": "package app\n"})
			bf := w.bundle(branch, "^"+h.base)
			want := w.git("rev-parse", branch)
			info, err := h.client.Repository(context.Background(), instID, h.repo)
			if err != nil {
				t.Fatal(err)
			}
			before := uploadPacks(h)
			check := bundle.Check{Branch: branch, BranchPrefix: "agentbot/", BaseSHA: h.base, ObjectsFrom: mirror,
				ProtectedPaths: []string{".github/workflows/**"}}
			head, err := h.client.PushBundle(context.Background(), instID, h.repo, info.CloneURL, bf, check, "")
			if err != nil {
				t.Fatalf("PushBundle: %v", err)
			}
			if head != want || h.git.RevParse("acme", "widgets", branch) != want {
				t.Fatalf("head = %s, server has %s, want %s", head, h.git.RevParse("acme", "widgets", branch), want)
			}
			if got := uploadPacks(h) - before; got != tc.wantReads {
				t.Errorf("the push read from the server %d times, want %d", got, tc.wantReads)
			}
		})
	}
}
