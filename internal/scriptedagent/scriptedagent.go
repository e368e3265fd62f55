// Package scriptedagent builds, for tests, the scripted coding agent
// (./cmd/scriptedagent) and agent-runner itself, so any package's tests can
// run a whole task with real processes and deterministic edits.
//
// The scripted agent runs in the cloned repository. It carries out actions
// taken, in this order, from its command-line arguments, from $SCRIPTED_AGENT
// and from every line of the prompt that starts with "scripted:" (the prompt
// is read from $AGENTBOT_PROMPT_FILE, else standard input). Actions are
// separated by ";" or newlines; a TEXT argument is the rest of the action,
// with `\n` standing for a newline and a final newline added.
//
//	write PATH TEXT            create or overwrite PATH (directories made)
//	append PATH TEXT           append to PATH
//	delete PATH                remove PATH
//	delete-tree PATH           remove PATH and everything under it
//	stdout TEXT / stderr TEXT  print TEXT
//	stdout-lines N             print "line 1" … "line N"
//	stdout-env NAME            print NAME=value of an environment variable
//	summary TEXT               write TEXT to $AGENTBOT_SUMMARY_FILE
//	sleep SECONDS              sleep
//	wait-for PATH              block until PATH exists (at most 2 minutes)
//	spawn-sleeper PIDFILE SECS start a child in the same process group that
//	                           sleeps SECS; write its pid to PIDFILE
//	fail CODE TEXT             print TEXT on stderr and exit with CODE
//	commit MESSAGE             git add -A && git commit -m MESSAGE
//	git ARGS...                run git ARGS
//	dump-env PATH              write the environment, sorted, to PATH
//	copy-prompt PATH           write the prompt to PATH
//
// No action at all makes no change. An unknown action exits 70.
//
// Example job agent: {"name":"command","command":"/tmp/x/scripted-agent"}
// with an issue body holding "scripted: write hello.txt hi; summary Added hello.txt".
package scriptedagent

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
)

const (
	agentPackage  = "github.com/agentbot/agentbot/internal/scriptedagent/cmd/scriptedagent"
	runnerPackage = "github.com/agentbot/agentbot/cmd/agent-runner"
)

// BuildTo builds the scripted agent into dir and returns its path. It suits
// a TestMain that builds once for a whole package.
func BuildTo(dir string) (string, error) {
	return goBuild(dir, "scripted-agent", agentPackage, false)
}

// Build builds the scripted agent into a test's temporary directory.
func Build(t testing.TB) string {
	t.Helper()
	p, err := BuildTo(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// BuildAgentRunnerTo builds agent-runner (statically, CGO_ENABLED=0, as it
// ships) into dir and returns its path.
func BuildAgentRunnerTo(dir string) (string, error) {
	return goBuild(dir, "agent-runner", runnerPackage, true)
}

// BuildAgentRunner builds agent-runner into a test's temporary directory.
func BuildAgentRunner(t testing.TB) string {
	t.Helper()
	p, err := BuildAgentRunnerTo(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func goBuild(dir, name, pkg string, static bool) (string, error) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	out := filepath.Join(dir, name)
	cmd := exec.Command(goBin, "build", "-o", out, pkg)
	cmd.Env = os.Environ()
	if static {
		cmd.Env = append(cmd.Env, "CGO_ENABLED=0")
	}
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("scriptedagent: go build %s: %w\n%s", pkg, err, b)
	}
	return out, nil
}
