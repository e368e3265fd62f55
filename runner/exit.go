package runner

import "fmt"

// ExitMeaning says in words what an exit code of agent-runner means, for
// the task's comment and the one-shot CLI.
func ExitMeaning(code int) string {
	switch code {
	case ExitOK:
		return "agent-runner ended without a result"
	case ExitBadJob:
		return "agent-runner refused the job"
	case ExitClone:
		return "the repository could not be cloned"
	case ExitInit:
		return "the template's init script failed"
	case ExitAgent:
		return "the agent failed"
	case ExitTimeout:
		return "the time limit passed"
	case ExitCommit:
		return "the changes could not be committed"
	case ExitBundle:
		return "the result could not be bundled"
	case ExitCancelled:
		return "the run was cancelled"
	case ExitInternal:
		return "agent-runner failed internally"
	}
	return fmt.Sprintf("agent-runner exited with code %d", code)
}
