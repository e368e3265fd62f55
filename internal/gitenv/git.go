package gitenv

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"unicode/utf8"

	"github.com/agentbot/agentbot/internal/secret"
)

// maxMessage bounds the part of git's standard error an error carries.
const maxMessage = 300

// Git runs git for agentbot itself (verifying a bundle, pushing it), away
// from the machine's git set-up: Clean's environment, no system or global
// configuration (a ~/.gitconfig could name a credential helper or rewrite
// URLs), and LC_ALL=C so that messages are git's own.
type Git struct {
	// Path is the git executable; "" means "git" on PATH.
	Path string
}

// Run runs git with args and extraEnv (Auth's, for commands that talk to
// the remote) and returns its standard output. A failure carries the first
// line of git's standard error with extraEnv's credentials redacted.
func (g Git) Run(ctx context.Context, extraEnv []string, args ...string) (string, error) {
	path := g.Path
	if path == "" {
		path = "git"
	}
	cmd := exec.CommandContext(ctx, path, args...)
	env := Clean(os.Environ())
	env = append(env,
		"GIT_CONFIG_NOSYSTEM=1",
		"GIT_CONFIG_GLOBAL="+os.DevNull,
		"LC_ALL=C",
	)
	cmd.Env = append(env, extraEnv...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			return "", fmt.Errorf("git %s: %w", Verb(args), ctx.Err())
		}
		// Redact before cutting to one line: a cut through the header
		// would leave a piece of it that no longer matches the secret.
		msg := secret.New(Credentials(extraEnv)...).String(stderr.String())
		return stdout.String(), fmt.Errorf("git %s: %w: %s", Verb(args), err, firstLine(msg))
	}
	return stdout.String(), nil
}

// Verb names the subcommand of a git invocation for error messages.
func Verb(args []string) string {
	for i := 0; i < len(args); i++ {
		switch args[i] {
		case "--git-dir", "-c", "-C":
			i++
			continue
		}
		if !strings.HasPrefix(args[i], "-") {
			return args[i]
		}
	}
	return "?"
}

// firstLine is s's first non-empty line, cut to maxMessage bytes on a
// character boundary.
func firstLine(s string) string {
	s, _, _ = strings.Cut(strings.TrimSpace(s), "\n")
	if len(s) <= maxMessage {
		return s
	}
	n := maxMessage
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}
