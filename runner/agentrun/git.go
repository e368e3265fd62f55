package agentrun

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// gitRunner runs git for agent-runner's own steps.
type gitRunner struct {
	// baseEnv is agent-runner's environment through gitenv.Clean, without
	// git variables that could redirect it or trace what it sends.
	baseEnv []string
	// authEnv is gitenv.Auth's, with the read-only token, for the commands
	// that talk to the remote before the agent runs. It never reaches the
	// agent.
	authEnv []string
	// user is who git runs as (nil: agent-runner's own uid).
	user *syscall.Credential
}

// afterAgentOpts are the -c options of every git command after the agent
// ran: the agent could have written hooks or an fsmonitor command into .git
// or into a nested repository, and agent-runner's own commit must not run
// them (git passes -c options on to the gits it starts; submodules are not
// recursed into at all). The repository's configuration itself is put back
// first (reclaimGitDir).
var afterAgentOpts = []string{"-c", "core.hooksPath=/dev/null", "-c", "core.fsmonitor=false", "-c", "diff.ignoreSubmodules=all"}

// run runs git in dir and returns its standard output. Its standard error
// is not logged line by line (git chatters about progress); a failure
// carries its last lines. withAuth adds the
// token; it is only ever set before the agent starts.
func (g gitRunner) run(ctx context.Context, dir string, withAuth bool, args ...string) (string, error) {
	return g.runTo(ctx, dir, withAuth, nil, args...)
}

// runTo is run with standard output going to f, when f is set.
func (g gitRunner) runTo(ctx context.Context, dir string, withAuth bool, f *os.File, args ...string) (string, error) {
	env := g.baseEnv
	if withAuth {
		env = append(append([]string(nil), g.baseEnv...), g.authEnv...)
	}
	var out strings.Builder
	res, err := proc{
		Dir:    dir,
		Path:   "git",
		Args:   args,
		Env:    env,
		User:   g.user,
		Output: f,
		Stdout: func(line string) {
			out.WriteString(line)
			out.WriteByte('\n')
		},
	}.run(ctx)
	if err != nil {
		return out.String(), fmt.Errorf("git %s: %w", args[0], err)
	}
	if res.ExitCode != 0 {
		return out.String(), &gitError{args: args, code: res.ExitCode, tail: res.StderrTail}
	}
	return out.String(), nil
}

// gitError is a git command that exited non-zero.
type gitError struct {
	args []string
	code int
	tail []string
}

func (e *gitError) Error() string {
	msg := "git " + e.args[0] + " exited with status " + strconv.Itoa(e.code)
	if n := len(e.tail); n > 0 {
		msg += ": " + e.tail[n-1]
	}
	return msg
}
