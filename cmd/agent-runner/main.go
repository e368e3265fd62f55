// Command agent-runner runs inside every agentbot sandbox. It reads one
// runner.Job as JSON on standard input, clones the repository, runs the
// template's init and the coding agent, commits and bundles the result, and
// writes runner.Events as JSON lines (docs/protocol.md).
//
//	agent-runner [run] [--workspace DIR]       run the job on stdin (the default)
//	agent-runner attach [--workspace DIR] --from N
//	                                           replay events after seq N and follow
//	agent-runner bundle [--workspace DIR]      write the result bundle to stdout
//
// The workspace defaults to $AGENTBOT_WORKSPACE, else /workspace. It builds
// as a static binary: CGO_ENABLED=0 go build ./cmd/agent-runner.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/agentbot/agentbot/runner"
	"github.com/agentbot/agentbot/runner/agent"
	"github.com/agentbot/agentbot/runner/agentrun"
	"github.com/agentbot/agentbot/runner/sandbox"
)

func main() {
	os.Exit(Main(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

// Main runs agent-runner with args (without the program name) and returns
// its exit code.
func Main(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	cmd := "run"
	if len(args) > 0 && len(args[0]) > 0 && args[0][0] != '-' {
		cmd, args = args[0], args[1:]
	}
	switch cmd {
	case "run":
		return runCmd(args, stdin, stdout, stderr)
	case "attach":
		return attachCmd(args, stdout, stderr)
	case "bundle":
		return bundleCmd(args, stdout, stderr)
	case sandbox.AgentInitCommand:
		// Not for people: the first process of the agent's namespaces
		// under gVisor, started by agent-runner itself.
		return sandbox.RunAgentInit(args, stderr)
	case "help":
		fmt.Fprintln(stdout, "usage: agent-runner [run|attach|bundle] [--workspace DIR] [--from N]")
		return runner.ExitOK
	}
	fmt.Fprintf(stderr, "agent-runner: unknown command %q (run, attach, bundle)\n", cmd)
	return runner.ExitBadJob
}

func runCmd(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("agent-runner run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	workspace := fs.String("workspace", "", "workspace directory (default $AGENTBOT_WORKSPACE, else /workspace)")
	claudeBin := fs.String("claude-bin", os.Getenv("AGENTBOT_CLAUDE_BIN"), "Claude Code program (default $AGENTBOT_CLAUDE_BIN, else claude on PATH)")
	codexBin := fs.String("codex-bin", os.Getenv("AGENTBOT_CODEX_BIN"), "Codex CLI program (default $AGENTBOT_CODEX_BIN, else codex on PATH)")
	if err := fs.Parse(args); err != nil {
		return runner.ExitBadJob
	}
	// Before the job (and its token) is read: a process of our uid, the
	// agent, must not read our memory or open our descriptors.
	if err := sandbox.SetNonDumpable(); err != nil {
		fmt.Fprintf(stderr, "agent-runner: %v\n", err)
		return runner.ExitInternal
	}
	if v := os.Getenv(sandbox.RlimitsEnv); v != "" {
		l, err := sandbox.DecodeLimits(v)
		if err == nil {
			err = sandbox.ApplyRlimits(0, l)
		}
		if err != nil {
			fmt.Fprintf(stderr, "agent-runner: %v\n", err)
			return runner.ExitInternal
		}
	}

	// A launcher that loses its connection closes our standard output: the
	// run must go on (the events file keeps everything for attach), so a
	// write to a broken pipe is an error to ignore, not a fatal signal, and
	// a hang-up is not an end. Notify rather than Ignore: ignored signals
	// would stay ignored in the agent's processes.
	quiet := make(chan os.Signal, 1)
	signal.Notify(quiet, syscall.SIGPIPE, syscall.SIGHUP)
	defer signal.Stop(quiet)

	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(stop)
	done := make(chan struct{})
	defer close(done)
	go func() {
		select {
		case <-stop:
			cancel(agentrun.ErrCancelled)
		case <-done:
		}
	}()

	var agentUser *syscall.Credential
	if v := os.Getenv(sandbox.AgentUserEnv); v != "" {
		uid, gid, err := sandbox.ParseAgentUser(v)
		if err != nil {
			fmt.Fprintf(stderr, "agent-runner: %v\n", err)
			return runner.ExitInternal
		}
		agentUser = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}}
	}

	stdin, stopGateway, err := startGateway(ctx, stdin)
	if err != nil {
		fmt.Fprintf(stderr, "agent-runner: %v\n", err)
		return runner.ExitInternal
	}
	defer stopGateway()

	return agentrun.Run(ctx, agentrun.Options{
		Workspace:  agentrun.ResolveWorkspace(*workspace),
		Stdin:      stdin,
		Stdout:     stdout,
		Logger:     slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
		Agents:     agent.Binaries{Claude: *claudeBin, Codex: *codexBin},
		AgentBwrap: os.Getenv(sandbox.AgentBwrapEnv),
		AgentUser:  agentUser,
	})
}

func attachCmd(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("agent-runner attach", flag.ContinueOnError)
	fs.SetOutput(stderr)
	workspace := fs.String("workspace", "", "workspace directory (default $AGENTBOT_WORKSPACE, else /workspace)")
	from := fs.Int("from", 0, "write the events whose seq is greater than this")
	if err := fs.Parse(args); err != nil {
		return runner.ExitBadJob
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	code, err := agentrun.Attach(ctx, agentrun.ResolveWorkspace(*workspace), *from, stdout)
	if errors.Is(err, agentrun.ErrRunnerGone) {
		fmt.Fprintln(stderr, "agent-runner: runner is gone")
		return runner.ExitInternal
	}
	if err != nil {
		fmt.Fprintf(stderr, "agent-runner: attach: %v\n", err)
		return runner.ExitInternal
	}
	return code
}

func bundleCmd(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("agent-runner bundle", flag.ContinueOnError)
	fs.SetOutput(stderr)
	workspace := fs.String("workspace", "", "workspace directory (default $AGENTBOT_WORKSPACE, else /workspace)")
	if err := fs.Parse(args); err != nil {
		return runner.ExitBadJob
	}
	if err := agentrun.WriteBundle(agentrun.ResolveWorkspace(*workspace), stdout); err != nil {
		fmt.Fprintf(stderr, "agent-runner: %v\n", err)
		return 1
	}
	return runner.ExitOK
}
