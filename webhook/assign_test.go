package webhook

import (
	"testing"

	"github.com/agentbot/agentbot"
)

func TestParseIssueChanges(t *testing.T) {
	payload := func(action, extra string) []byte {
		return []byte(`{"action":"` + action + `","repository":{"name":"demo","full_name":"octo/demo","owner":{"login":"octo"}},
			"installation":{"id":7},"sender":{"login":"alice","type":"User"},
			"issue":{"number":4,"title":"T","body":"B"}` + extra + `}`)
	}
	tests := []struct {
		name     string
		action   string
		extra    string
		kind     agentbot.TaskKind
		control  agentbot.Control
		assignee string
		label    string
	}{
		{name: "assigned to a person starts a task (the dispatcher checks the login)", action: "assigned",
			extra: `,"assignee":{"login":"robo-user","type":"User"}`, kind: agentbot.KindNew, assignee: "robo-user"},
		{name: "assigned to a bot", action: "assigned", extra: `,"assignee":{"login":"ci[bot]","type":"Bot"}`},
		{name: "assigned without an assignee", action: "assigned"},
		{name: "unassigned cancels", action: "unassigned",
			extra: `,"assignee":{"login":"robo-user","type":"User"}`, kind: agentbot.KindControl, control: agentbot.ControlCancel, assignee: "robo-user"},
		{name: "trigger label removed cancels", action: "unlabeled", extra: `,"label":{"name":"Agent-Task"}`,
			kind: agentbot.KindControl, control: agentbot.ControlCancel, label: "Agent-Task"},
		{name: "another label removed", action: "unlabeled", extra: `,"label":{"name":"bug"}`},
		{name: "an assignment on a pull request", action: "assigned",
			extra: `,"assignee":{"login":"robo-user","type":"User"},"issue":{"number":5,"pull_request":{"url":"x"}}`},
		{name: "opened is not a trigger", action: "opened"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Parse("issues", payload(tc.action, tc.extra), ParseOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if got.Kind != tc.kind || got.Control != tc.control || got.Assignee != tc.assignee || got.Label != tc.label {
				t.Fatalf("Parse = %+v", got)
			}
			if got.Kind != "" && (got.Issue.Number == 0 || got.InstallationID != 7) {
				t.Fatalf("coordinates missing: %+v", got)
			}
		})
	}
}
