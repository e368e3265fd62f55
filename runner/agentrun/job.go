package agentrun

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strings"

	"github.com/agentbot/agentbot/runner"
	"github.com/agentbot/agentbot/runner/agent"
)

var (
	templateName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)
	commitID     = regexp.MustCompile(`^[0-9a-f]{40}([0-9a-f]{24})?$`)
)

func readJob(stdin io.Reader) (runner.Job, error) {
	var job runner.Job
	if stdin == nil {
		return job, fail(runner.ExitBadJob, "bad job: no standard input")
	}
	// One JSON document, decoded as it arrives: a launcher need not close
	// standard input (an exec stream may not be able to) for the run to start.
	if err := json.NewDecoder(io.LimitReader(stdin, maxJob)).Decode(&job); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
			return job, fail(runner.ExitBadJob, "bad job: standard input ended before one whole JSON job (at most %d bytes)", maxJob)
		}
		return job, fail(runner.ExitBadJob, "bad job: %v", err)
	}
	var problems []string
	check := func(ok bool, problem string) {
		if !ok {
			problems = append(problems, problem)
		}
	}
	check(job.Version == runner.ProtocolVersion, fmt.Sprintf("version %d is not %d", job.Version, runner.ProtocolVersion))
	check(job.TaskID != "", "task_id is empty")
	check(job.CloneURL != "", "clone_url is empty")
	check(job.Branch != "" && validRef(job.Branch), fmt.Sprintf("branch %q is not a valid branch name", job.Branch))
	check(job.BaseBranch == "" || validRef(job.BaseBranch), fmt.Sprintf("base_branch %q is not a valid branch name", job.BaseBranch))
	if job.FollowUp {
		check(commitID.MatchString(job.ExpectedHeadSHA), "a follow-up needs expected_head_sha, a full commit id")
	}
	check(job.Template == "" || templateName.MatchString(job.Template), fmt.Sprintf("template %q is not a plain name", job.Template))
	check(job.TimeLimit > 0, "time_limit must be positive")
	check(job.AuthorName != "" && job.AuthorEmail != "", "author_name and author_email are needed")
	switch job.Agent.Name {
	case "claude", "codex":
	case "command":
		check(len(agent.SplitCommand(job.Agent.Command)) > 0, "agent.command is empty")
	default:
		problems = append(problems, fmt.Sprintf("agent.name %q is not claude, codex or command", job.Agent.Name))
	}
	if u := job.CloneURL; strings.Contains(u, "@") && (strings.HasPrefix(u, "http://") || strings.HasPrefix(u, "https://")) {
		problems = append(problems, "clone_url must not carry credentials (use token)")
	}
	if p := checkGateway(job.Gateway); p != "" {
		problems = append(problems, p)
	}
	if len(problems) > 0 {
		return job, fail(runner.ExitBadJob, "bad job: %s", strings.Join(problems, "; "))
	}
	return job, nil
}

// validRef accepts branch names git accepts and that cannot be read as
// options or ranges.
func validRef(name string) bool {
	if strings.HasPrefix(name, "-") || strings.HasPrefix(name, "/") || strings.HasSuffix(name, "/") ||
		strings.HasSuffix(name, ".lock") || strings.HasSuffix(name, ".") || strings.Contains(name, "..") ||
		strings.Contains(name, "@{") || strings.Contains(name, "//") {
		return false
	}
	for _, c := range name {
		if c < 0x20 || c == 0x7f || strings.ContainsRune(" ~^:?*[\\", c) {
			return false
		}
	}
	return true
}
