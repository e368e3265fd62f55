package github

import (
	"context"
	"fmt"

	gh "github.com/google/go-github/v66/github"

	"github.com/agentbot/agentbot"
)

// CheckRunName is the name of every check run agentbot creates.
const CheckRunName = "agentbot"

// Identifiers of the check-run buttons; a check_run requested_action
// delivery carries them back.
const (
	ActionCancel = "cancel"
	ActionRetry  = "retry"
)

// GitHub's limits on check runs.
const (
	maxCheckOutput      = 65535 // summary and text, characters
	maxActionLabel      = 20
	maxActionDesc       = 40
	maxActionIdentifier = 20
	maxActions          = 3
)

// CheckAction is a button on a check run.
type CheckAction struct {
	Label, Description, Identifier string
}

// CancelAction is the button that cancels a running task.
func CancelAction() CheckAction {
	return CheckAction{Label: "Cancel", Description: "Stop this agentbot task", Identifier: ActionCancel}
}

// RetryAction is the button that re-runs a failed task.
func RetryAction() CheckAction {
	return CheckAction{Label: "Retry", Description: "Run this agentbot task again", Identifier: ActionRetry}
}

// CheckRun is the state of agentbot's check run on one commit. Status is
// queued, in_progress or completed; Conclusion (success, failure,
// cancelled, neutral, …) goes with completed.
type CheckRun struct {
	HeadSHA    string
	Status     string
	Conclusion string
	Title      string
	Summary    string
	Text       string
	DetailsURL string
	ExternalID string
	Actions    []CheckAction
}

// WithCancel returns r with the Cancel button.
func (r CheckRun) WithCancel() CheckRun {
	r.Actions = append(append([]CheckAction(nil), r.Actions...), CancelAction())
	return r
}

// WithRetry returns r with the Retry button.
func (r CheckRun) WithRetry() CheckRun {
	r.Actions = append(append([]CheckAction(nil), r.Actions...), RetryAction())
	return r
}

// checkRunBody is sent on create and update. Actions is never omitted, so
// an update without buttons clears the old ones (Cancel must not outlive
// the run).
type checkRunBody struct {
	Name       string          `json:"name,omitempty"`
	HeadSHA    string          `json:"head_sha,omitempty"`
	Status     string          `json:"status,omitempty"`
	Conclusion string          `json:"conclusion,omitempty"`
	DetailsURL string          `json:"details_url,omitempty"`
	ExternalID string          `json:"external_id,omitempty"`
	Output     *checkRunOutput `json:"output,omitempty"`
	Actions    []checkAction   `json:"actions"`
}

type checkRunOutput struct {
	Title   string `json:"title"`
	Summary string `json:"summary"`
	Text    string `json:"text,omitempty"`
}

type checkAction struct {
	Label       string `json:"label"`
	Description string `json:"description"`
	Identifier  string `json:"identifier"`
}

var checkStatuses = map[string]bool{"queued": true, "in_progress": true, "completed": true}

var checkConclusions = map[string]bool{
	"success": true, "failure": true, "neutral": true, "cancelled": true,
	"skipped": true, "timed_out": true, "action_required": true,
}

func (r CheckRun) body(create bool) (checkRunBody, error) {
	b := checkRunBody{
		Status:     r.Status,
		Conclusion: r.Conclusion,
		DetailsURL: r.DetailsURL,
		ExternalID: r.ExternalID,
		Actions:    []checkAction{},
	}
	if create {
		if r.HeadSHA == "" {
			return b, fmt.Errorf("no head SHA")
		}
		b.Name, b.HeadSHA = CheckRunName, r.HeadSHA
	}
	if r.Status != "" && !checkStatuses[r.Status] {
		return b, fmt.Errorf("status %q is not queued, in_progress or completed", r.Status)
	}
	if r.Conclusion != "" {
		if !checkConclusions[r.Conclusion] {
			return b, fmt.Errorf("conclusion %q is not a check-run conclusion", r.Conclusion)
		}
		if r.Status != "" && r.Status != "completed" {
			return b, fmt.Errorf("conclusion %q needs status completed, not %q", r.Conclusion, r.Status)
		}
	}
	if r.Status == "completed" && r.Conclusion == "" {
		return b, fmt.Errorf("status completed needs a conclusion")
	}
	if r.Title != "" || r.Summary != "" || r.Text != "" {
		title := r.Title
		if title == "" {
			title = CheckRunName
		}
		summary := r.Summary
		if summary == "" {
			summary = title
		}
		b.Output = &checkRunOutput{
			Title:   truncateRunes(title, 200),
			Summary: truncateMarkdown(summary, maxCheckOutput),
			Text:    truncateMarkdown(r.Text, maxCheckOutput),
		}
	}
	if len(r.Actions) > maxActions {
		return b, fmt.Errorf("%d actions; GitHub allows %d", len(r.Actions), maxActions)
	}
	for _, a := range r.Actions {
		if a.Label == "" || a.Identifier == "" || len([]rune(a.Label)) > maxActionLabel ||
			len([]rune(a.Description)) > maxActionDesc || len([]rune(a.Identifier)) > maxActionIdentifier {
			return b, fmt.Errorf("action %q exceeds GitHub's limits (label %d, description %d, identifier %d characters)", a.Label, maxActionLabel, maxActionDesc, maxActionIdentifier)
		}
		b.Actions = append(b.Actions, checkAction(a))
	}
	return b, nil
}

// CreateCheckRun creates the agentbot check run on run.HeadSHA and returns
// its id, which the task keeps so that later updates (and a restarted bot)
// edit the same run. When GitHub answers 5xx (or the connection drops) the
// run is looked for by its ExternalID before it is created again; without
// an ExternalID such a failure is returned, not retried.
func (c *Client) CreateCheckRun(ctx context.Context, installationID int64, repo agentbot.Repo, run CheckRun) (int64, error) {
	if err := checkRepo(repo); err != nil {
		return 0, err
	}
	body, err := run.body(true)
	if err != nil {
		return 0, fmt.Errorf("github: check run on %s@%s: %w", repo, run.HeadSHA, err)
	}
	var out gh.CheckRun
	var find func(context.Context) (bool, error)
	if run.ExternalID != "" {
		find = func(ctx context.Context) (bool, error) {
			id, ok, err := c.findCheckRun(ctx, installationID, repo, run.HeadSHA, run.ExternalID)
			out.ID = &id
			return ok, err
		}
	}
	if err := c.create(ctx, installationID, epCreateCheckRun, repoPath(repo)+"/check-runs", body, &out, find); err != nil {
		return 0, fmt.Errorf("github: check run on %s@%s: %w", repo, run.HeadSHA, err)
	}
	if out.GetID() == 0 {
		return 0, fmt.Errorf("github: check run on %s@%s: GitHub returned no id", repo, run.HeadSHA)
	}
	return out.GetID(), nil
}

// UpdateCheckRun sets check run id to run. Actions not in run are removed;
// HeadSHA is ignored (a check run stays on its commit).
func (c *Client) UpdateCheckRun(ctx context.Context, installationID int64, repo agentbot.Repo, id int64, run CheckRun) error {
	if err := checkRepo(repo); err != nil {
		return err
	}
	if id <= 0 {
		return fmt.Errorf("github: update check run on %s: id %d is not valid", repo, id)
	}
	body, err := run.body(false)
	if err != nil {
		return fmt.Errorf("github: update check run %d on %s: %w", id, repo, err)
	}
	path := fmt.Sprintf("%s/check-runs/%d", repoPath(repo), id)
	if _, err := c.call(ctx, installationID, epUpdateCheckRun, path, body, nil); err != nil {
		return fmt.Errorf("github: update check run %d on %s: %w", id, repo, err)
	}
	return nil
}
