package dispatch

import (
	"fmt"
	"slices"
	"strings"

	"github.com/agentbot/agentbot/github"
)

// narrowMode is the narrower of the operator's and the repository's
// permission modes. The operator's stays when the repository asks for the
// same or a wider one ("" is the widest: bypassPermissions, or acceptEdits
// for an agent that runs as root); note says when the repository asked
// for more than the operator allows.
func narrowMode(operator, repo string) (mode, note string) {
	if repo == "" {
		return operator, ""
	}
	op, r := github.PermissionModeRank(operator), github.PermissionModeRank(repo)
	if r > op {
		return repo, ""
	}
	if r < op {
		note = fmt.Sprintf("The repository's permission_mode: %s is wider than this agentbot's %s, so Claude Code runs in %s.", repo, operator, operator)
	}
	return operator, note
}

// narrowTools is the repository's tools that the operator allows (an empty
// operator list allows every tool). A repository tool is allowed when the
// operator names it, or names its bare tool ("Bash" allows "Bash(go test:*)").
// When none survive, the operator's list stays: an empty list would mean
// every tool. note names the tools the operator does not allow.
func narrowTools(operator, repo []string) (tools []string, note string) {
	if len(repo) == 0 {
		return operator, ""
	}
	if len(operator) == 0 {
		return slices.Clone(repo), ""
	}
	var refused []string
	for _, t := range repo {
		bare, _, _ := strings.Cut(t, "(")
		if slices.Contains(operator, t) || slices.Contains(operator, bare) {
			if !slices.Contains(tools, t) {
				tools = append(tools, t)
			}
		} else {
			refused = append(refused, t)
		}
	}
	if len(refused) > 0 {
		note = "The repository's allowed_tools: asks for " + strings.Join(refused, ", ") + ", which this agentbot does not allow; Claude Code may not use them."
	}
	if len(tools) == 0 {
		tools = operator
	}
	return tools, note
}
