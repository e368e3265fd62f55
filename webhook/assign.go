package webhook

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"github.com/agentbot/agentbot"
)

// parseIssueChange handles the issues actions beyond labeled: assigned
// (a new task, when the assignee is the machine user a repository names in
// its settings — which only the dispatcher reads, so intake takes every
// assignment to a person), and unassigned and unlabeled (cancel what runs
// on the issue, when the assignee or the trigger label was agentbot's).
// ok=false leaves the event to parseIssues.
func parseIssueChange(e *issuesEvent, payload []byte, opts ParseOptions) (decision, bool, error) {
	switch e.Action {
	case "assigned", "unassigned", "unlabeled":
	default:
		return decision{}, false, nil
	}
	var d decision
	if why := common(&d, &e.eventBase); why != "" {
		return ignore(d, "%s", why), true, nil
	}
	if e.Issue.Number <= 0 {
		return ignore(d, "payload names no issue"), true, nil
	}
	d.Issue.Number = e.Issue.Number
	d.IsPullRequest = e.Issue.PullRequest != nil
	if e.Action == "unlabeled" {
		return unlabeled(d, e.Label.Name, opts), true, nil
	}
	// Only these actions carry an assignee; the common shapes stay lean.
	var a struct {
		Assignee *user `json:"assignee"`
	}
	if err := json.Unmarshal(payload, &a); err != nil {
		return decision{}, true, fmt.Errorf("issues event: %w: %w", ErrMalformed, err)
	}
	if a.Assignee == nil || a.Assignee.Login == "" {
		return ignore(d, "issues.%s names no assignee", e.Action), true, nil
	}
	if agentbot.IsBot(a.Assignee.Login, a.Assignee.Type) {
		return ignore(d, "assignee %q is a bot", a.Assignee.Login), true, nil
	}
	if e.Action == "unassigned" {
		d.Kind, d.Control, d.Assignee = agentbot.KindControl, agentbot.ControlCancel, a.Assignee.Login
		d.Reason = fmt.Sprintf("unassigned %q", d.Assignee)
		return d, true, nil
	}
	if d.IsPullRequest {
		return ignore(d, "assignment of a pull request is not a trigger"), true, nil
	}
	d.Assignee = a.Assignee.Login
	d.Kind = agentbot.KindNew
	d.Prompt = agentbot.Prompt{Title: e.Issue.Title, Body: e.Issue.Body}
	d.Reason = fmt.Sprintf("assigned %q", d.Assignee)
	return d, true, nil
}

// unlabeled cancels what runs on the issue when a trigger label is removed.
func unlabeled(d decision, label string, opts ParseOptions) decision {
	labels := opts.TriggerLabels
	if len(labels) == 0 {
		labels = []string{DefaultTriggerLabel}
	}
	if !slices.ContainsFunc(labels, func(l string) bool { return l == "*" || strings.EqualFold(l, label) }) {
		return ignore(d, "label %q is not a trigger label", label)
	}
	d.Kind, d.Control = agentbot.KindControl, agentbot.ControlCancel
	d.Label = label
	d.Reason = fmt.Sprintf("unlabeled %q", label)
	return d
}
