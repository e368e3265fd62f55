// Package agent adapts coding-agent programs to agent-runner: each Adapter
// says how to start its agent (program, arguments, standard input) and how to
// read what it prints, so agent-runner can run any of them the same way — in
// the repository, in its own process group, time-limited, with the output
// turned into events.
//
// Adapters: "claude" (Claude Code in print mode with stream-json output),
// "codex" (OpenAI Codex CLI, codex exec) and "command" (any executable, given
// the prompt on standard input and in $AGENTBOT_PROMPT_FILE).
package agent

import (
	"fmt"
	"os"
	"strings"

	"github.com/agentbot/agentbot/runner"
)

// Request is what an adapter needs to start its agent for one job.
type Request struct {
	// RepoDir is the cloned repository, the agent's working directory.
	RepoDir string
	// PromptFile holds the prompt; it lies outside the repository.
	PromptFile string
	// SummaryFile is where an agent may leave its final summary (outside the
	// repository). The command adapter reads it; codex writes it.
	SummaryFile string
	Spec        runner.AgentSpec
}

// Invocation is how to start the agent.
type Invocation struct {
	Path string
	Args []string
	// StdinPromptFile feeds the prompt file to the agent's standard input;
	// otherwise standard input is empty.
	StdinPromptFile bool
}

// Output is something the agent reported on a line of its standard output.
type Output struct {
	// Type is runner.EventLog or runner.EventProgress.
	Type    string
	Message string
	Tool    string
	File    string
}

// Report is what the agent said about the whole run.
type Report struct {
	Summary string
	CostUSD float64
	Usage   *runner.Usage
	// Failed is set when the agent reported failure (even with exit status
	// 0); Reason says why.
	Failed bool
	Reason string
}

// Parser reads one run's standard output. Standard error is not parsed: it
// becomes log events as it is.
type Parser interface {
	// Line handles one line of standard output (without its newline).
	Line(line string) []Output
	// Report is called once the agent has exited.
	Report() Report
}

// Adapter starts one kind of agent.
type Adapter interface {
	Name() string
	Invocation(req Request) (Invocation, error)
	NewParser(req Request) Parser
}

// Binaries names the programs of the CLI-based adapters; empty fields mean
// "claude" and "codex" found on PATH.
type Binaries struct {
	Claude string
	Codex  string
}

// Lookup returns the adapter for spec.Name.
func Lookup(name string, bins Binaries) (Adapter, error) {
	switch name {
	case "claude":
		return Claude{Bin: or(bins.Claude, "claude")}, nil
	case "codex":
		return Codex{Bin: or(bins.Codex, "codex")}, nil
	case "command":
		return Command{}, nil
	}
	return nil, fmt.Errorf("agent: unknown agent %q (want claude, codex or command)", name)
}

func or(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// SplitCommand splits an operator-given command line on white space. It does
// no shell processing at all: no quotes, no variables, no globbing.
func SplitCommand(s string) []string { return strings.Fields(s) }

// plainLines is the parser of agents whose standard output is plain text:
// every line is a log line.
type plainLines struct {
	summaryFile string
}

func (p plainLines) Line(line string) []Output {
	return []Output{{Type: runner.EventLog, Message: line}}
}

func (p plainLines) Report() Report {
	var r Report
	if p.summaryFile != "" {
		if b, err := os.ReadFile(p.summaryFile); err == nil {
			r.Summary = strings.TrimSpace(string(b))
		}
	}
	return r
}
