package agent

// Codex runs the OpenAI Codex CLI non-interactively:
//
//	codex exec --dangerously-bypass-approvals-and-sandbox --color never \
//	    --output-last-message SUMMARY_FILE [--model M] -
//
// with the prompt on standard input ("-"). workspace-write is the
// non-deprecated spelling of --full-auto: edits inside the repository are
// allowed without asking. Codex streams its progress on standard error and
// its final message on standard output; both become log events, and the
// final message, which --output-last-message also writes to a file, becomes
// the summary. Codex has no turn limit flag, so MaxTurns is not used.
type Codex struct {
	Bin string
}

func (Codex) Name() string { return "codex" }

func (c Codex) Invocation(req Request) (Invocation, error) {
	// Codex's own sandbox (landlock, seccomp) cannot nest in agentbot's and
	// would only refuse what agentbot's allows; narrowed, it keeps it.
	args := []string{"exec", "--dangerously-bypass-approvals-and-sandbox", "--color", "never"}
	if m := req.Spec.PermissionMode; m != "" && m != "bypassPermissions" {
		args = []string{"exec", "--sandbox", "workspace-write", "--color", "never"}
	}
	if req.SummaryFile != "" {
		args = append(args, "--output-last-message", req.SummaryFile)
	}
	if req.Spec.Model != "" {
		args = append(args, "--model", req.Spec.Model)
	}
	args = append(args, "-")
	return Invocation{Path: c.Bin, Args: args, StdinPromptFile: true}, nil
}

func (Codex) NewParser(req Request) Parser {
	return plainLines{summaryFile: req.SummaryFile}
}
