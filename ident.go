package agentbot

import (
	"fmt"
	"regexp"
	"strings"
)

// taskIDPattern is what a task id may look like wherever it becomes part of
// a path (the task log file, the local launcher's workspace directory): a
// single safe file name, never a path.
var taskIDPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)

// CheckTaskID refuses a task id that is not a safe file or directory name.
// Ids come from the store, but they also come back from the sandbox and
// from URLs, so every place that builds a path from one checks it here.
func CheckTaskID(id string) error {
	if !taskIDPattern.MatchString(id) || strings.Contains(id, "..") {
		return fmt.Errorf("task id %q is not a safe file name", id)
	}
	return nil
}

// IsBot reports whether a GitHub account is a bot: its type is "Bot", or
// its login ends in "[bot]" (GitHub Apps, agentbot included). agentbot never
// acts for a bot and never answers one, so it can never trigger itself.
// accountType may be "" where only the login is known.
func IsBot(login, accountType string) bool {
	return strings.EqualFold(accountType, "Bot") || strings.HasSuffix(strings.ToLower(login), "[bot]")
}
