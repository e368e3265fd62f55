package webhook

import (
	"encoding/json"
	"testing"
)

// TestHandlesMatchesParse keeps Handles honest: each sample delivery that
// Parse turns into a task has an event and action Handles names, and the
// same payload is acted on under no action Handles leaves out.
func TestHandlesMatchesParse(t *testing.T) {
	tests := []struct {
		name, event, file string
		edits             []func(map[string]any)
	}{
		{"labeled issue", "issues", "issues.labeled.json", []func(map[string]any){set("label.name", DefaultTriggerLabel)}},
		{"comment command", "issue_comment", "issue_comment.created.issue.json", []func(map[string]any){set("comment.body", "/agent fix it")}},
		{"check run button", "check_run", "check_run.requested_action.json", nil},
		{"check run re-run", "check_run", "check_run.rerequested.json", nil},
		{"review thread command", "pull_request_review_comment", "pull_request_review_comment.created.json", nil},
		{"review body command", "pull_request_review", "pull_request_review.submitted.json", nil},
	}
	others := []string{"opened", "edited", "deleted", "closed", "unlabeled", "completed", "created", "labeled", "requested_action", "rerequested", "submitted", "dismissed"}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body := payload(t, tt.file, tt.edits...)
			tr, err := Parse(tt.event, body, ParseOptions{})
			if err != nil || tr.Kind == "" || !Handles(tt.event, actionOf(t, body)) {
				t.Fatalf("sample is not acted on (kind %q, reason %q, err %v); the test needs a payload Parse acts on", tr.Kind, tr.Reason, err)
			}
			for _, action := range others {
				tr, err := Parse(tt.event, payload(t, tt.file, append(tt.edits, set("action", action))...), ParseOptions{})
				if err != nil {
					t.Fatalf("action %s: %v", action, err)
				}
				if tr.Kind != "" && !Handles(tt.event, action) {
					t.Errorf("Parse acts on %s.%s but Handles says no: its missed deliveries would never be recovered", tt.event, action)
				}
			}
		})
	}
	if Handles("pull_request", "opened") || Handles("push", "") {
		t.Error("Handles names an event Parse ignores")
	}
}

// actionOf is the delivery's action.
func actionOf(t *testing.T, body []byte) string {
	var v struct {
		Action string `json:"action"`
	}
	if err := json.Unmarshal(body, &v); err != nil {
		t.Fatal(err)
	}
	return v.Action
}
