// Package testtool finds the outside programs some tests need (Claude Code,
// Chromium, bubblewrap). Where one is missing the test skips with the reason,
// unless its AGENTBOT_REQUIRE_* variable is 1 — as in CI, where a missing
// tool must fail the run instead of silently skipping what it tests.
package testtool

import (
	"bytes"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
)

// Claude finds Claude Code: $AGENTBOT_CLAUDE_BIN (what scripts/test.sh
// installs from npm), else claude on PATH.
func Claude(t testing.TB) string {
	t.Helper()
	bin := os.Getenv("AGENTBOT_CLAUDE_BIN")
	if bin == "" {
		bin, _ = exec.LookPath("claude")
	}
	if bin != "" {
		if _, err := os.Stat(bin); err == nil {
			return bin
		}
	}
	Missing(t, "AGENTBOT_REQUIRE_CLAUDE", "Claude Code is not installed: set AGENTBOT_CLAUDE_BIN (scripts/test.sh installs @anthropic-ai/claude-code@2.1.330 from npm) or put claude on PATH")
	return ""
}

// Chromium finds Debian's chromium.
func Chromium(t testing.TB) string {
	t.Helper()
	for _, p := range []string{"/usr/bin/chromium", "/usr/bin/chromium-browser"} {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	Missing(t, "AGENTBOT_REQUIRE_CHROMIUM", "chromium is not installed (apt-get install chromium)")
	return ""
}

// Missing skips t with reason, or fails it when $requireEnv is 1.
func Missing(t testing.TB, requireEnv, reason string) {
	t.Helper()
	if os.Getenv(requireEnv) == "1" {
		t.Fatalf("%s (%s=1)", reason, requireEnv)
	}
	t.Skip(reason)
}

// Buffer is a bytes.Buffer safe for concurrent writers and readers, for
// capturing the logs of code under test.
type Buffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// Git runs git with args in dir and returns its trimmed output; a failure
// fails t with git's output.
func Git(t testing.TB, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}
