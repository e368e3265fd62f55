package agent

import "fmt"

// Command runs any executable the operator names in AgentSpec.Command (split
// on white space, no shell) in the repository, with the prompt on standard
// input and in $AGENTBOT_PROMPT_FILE. Its output lines become log events; a
// summary it writes to $AGENTBOT_SUMMARY_FILE becomes the result's summary.
type Command struct{}

func (Command) Name() string { return "command" }

func (Command) Invocation(req Request) (Invocation, error) {
	argv := SplitCommand(req.Spec.Command)
	if len(argv) == 0 {
		return Invocation{}, fmt.Errorf("agent: the command agent needs agent.command")
	}
	return Invocation{Path: argv[0], Args: argv[1:], StdinPromptFile: true}, nil
}

func (Command) NewParser(req Request) Parser {
	return plainLines{summaryFile: req.SummaryFile}
}
