package webhook

import (
	"strconv"
	"testing"

	"github.com/agentbot/agentbot"
)

func TestParseCommandMentionsAndTypos(t *testing.T) {
	opts := ParseOptions{Mentions: []string{"agentbot-app", "robo"}}
	tests := []struct {
		name         string
		body         string
		found        bool
		control      agentbot.Control
		suggestion   agentbot.Control
		instructions string
	}{
		{name: "mention starts a command", body: "@agentbot-app fix the flaky test", found: true, instructions: "fix the flaky test"},
		{name: "mention with the bot suffix and a comma", body: "@Agentbot-App[bot], add docs", found: true, instructions: "add docs"},
		{name: "alias, indented up to three spaces", body: "hi\n   @robo: please\nthanks", found: true, instructions: "please\nthanks"},
		{name: "mention as a control word", body: "@robo cancel", found: true, control: agentbot.ControlCancel},
		{name: "mention mid-line is not a command", body: "ask @robo to do it"},
		{name: "quoted mention", body: "> @robo fix it"},
		{name: "mention in a fence", body: "```\n@robo fix it\n```"},
		{name: "mention in indented code", body: "    @robo fix it"},
		{name: "mention in an HTML comment", body: "<!--\n@robo fix it\n-->"},
		{name: "longer login is someone else", body: "@robot fix it"},
		{name: "unknown name", body: "@someone fix it"},
		{name: "typo of cancel", body: "/agent cancle", found: true, control: agentbot.ControlTypo, suggestion: agentbot.ControlCancel, instructions: ""},
		{name: "swapped letters of status", body: "/agent stauts", found: true, control: agentbot.ControlTypo, suggestion: agentbot.ControlStatus},
		{name: "typo through a mention", body: "@robo rerty", found: true, control: agentbot.ControlTypo, suggestion: agentbot.ControlRetry},
		{name: "short word far enough from help", body: "/agent hello", found: true, instructions: "hello"},
		{name: "one real word is instructions", body: "/agent refactor", found: true, instructions: "refactor"},
		{name: "two words are instructions", body: "/agent cancle everything", found: true, instructions: "cancle everything"},
		{name: "exact command", body: "/agent status", found: true, control: agentbot.ControlStatus},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := parseCommand(tc.body, opts)
			if got.Found != tc.found || got.Control != tc.control || got.Suggestion != tc.suggestion ||
				(tc.control != agentbot.ControlTypo && got.Instructions != tc.instructions) {
				t.Fatalf("parseCommand(%q) = %+v", tc.body, got)
			}
		})
	}
}

func TestMentionsNeedConfiguration(t *testing.T) {
	if got := parseCommand("@agentbot fix it", ParseOptions{}); got.Found {
		t.Fatalf("a mention with no names configured started %+v", got)
	}
}

func TestSuggestControl(t *testing.T) {
	tests := []struct {
		word string
		want agentbot.Control
	}{
		{"cancle", agentbot.ControlCancel},
		{"CANCLE", agentbot.ControlCancel},
		{"cancel", ""},
		{"stauts", agentbot.ControlStatus},
		{"statsu", agentbot.ControlStatus},
		{"hepl", agentbot.ControlHelp},
		{"retyr", agentbot.ControlRetry},
		{"hello", ""},
		{"fix", ""},
		{"documentation", ""},
	}
	for _, tc := range tests {
		t.Run(tc.word, func(t *testing.T) {
			if got := suggestControl(tc.word); got != tc.want {
				t.Fatalf("suggestControl(%q) = %q, want %q", tc.word, got, tc.want)
			}
		})
	}
}

func TestParseIssueCommentTypoAndMention(t *testing.T) {
	payload := func(body string) []byte {
		return []byte(`{"action":"created","repository":{"name":"demo","full_name":"octo/demo","owner":{"login":"octo"}},
			"installation":{"id":7},"sender":{"login":"alice","type":"User"},
			"issue":{"number":4,"title":"T","body":"B"},"comment":{"id":99,"body":` + strconv.Quote(body) + `}}`)
	}
	opts := ParseOptions{Mentions: []string{"agentbot-app"}}
	typo, err := Parse("issue_comment", payload("/agent cancle"), opts)
	if err != nil || typo.Kind != agentbot.KindControl || typo.Control != agentbot.ControlTypo ||
		typo.Suggestion != agentbot.ControlCancel || typo.Prompt.Instructions != "cancle" {
		t.Fatalf("typo: %+v, %v", typo, err)
	}
	m, err := Parse("issue_comment", payload("@agentbot-app add a README"), opts)
	if err != nil || m.Kind != agentbot.KindNew || m.Prompt.Instructions != "add a README" || m.CommentID != 99 {
		t.Fatalf("mention: %+v, %v", m, err)
	}
}
