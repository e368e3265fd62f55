package webhook

import (
	"reflect"
	"testing"

	"github.com/agentbot/agentbot"
)

func TestParseReviewEvents(t *testing.T) {
	prPrompt := agentbot.Prompt{Title: "Update the README with new information.", Body: "This is a pretty simple change that we need to pull into master."}
	codertocat := agentbot.Sender{Login: "Codertocat", ID: 21031067, AuthorAssociation: "OWNER"}
	thread := &agentbot.ReviewRef{CommentID: 284312630, ThreadRoot: 284312630, ReviewID: 237895671, Path: "README.md", Line: 265, Side: "RIGHT", DiffHunk: "@@ -1 +1 @@\n-# Hello-World"}
	withPrompt := func(in string) agentbot.Prompt { p := prPrompt; p.Instructions = in; return p }
	const rc, rv = "pull_request_review_comment", "pull_request_review"
	const rcFile, rvFile = "pull_request_review_comment.created.json", "pull_request_review.submitted.json"
	tests := []struct {
		name    string
		event   string
		payload []byte
		opts    ParseOptions
		want    agentbot.Trigger // compared in full when Kind is set
	}{
		{
			name: "/agent as a thread's first comment", event: rc, payload: payload(t, rcFile),
			want: agentbot.Trigger{
				Kind: agentbot.KindFollowUp, InstallationID: 4242, Repository: helloFacts, Issue: hello(2), IsPullRequest: true,
				Review: thread, Prompt: withPrompt("use more emoji on this line"), Sender: codertocat, Reason: "/agent in a review thread",
			},
		},
		{
			name: "a reply names the thread's root; a range keeps its start", event: rc,
			payload: payload(t, rcFile, set("comment.in_reply_to_id", 284312000), set("comment.start_line", 260), set("comment.start_side", "RIGHT"), set("comment.body", "@agentbot-test please\nalso the footer")),
			opts:    ParseOptions{Mentions: []string{"agentbot-test"}},
			want: agentbot.Trigger{
				Kind: agentbot.KindFollowUp, InstallationID: 4242, Repository: helloFacts, Issue: hello(2), IsPullRequest: true,
				Review: &agentbot.ReviewRef{CommentID: 284312630, ThreadRoot: 284312000, ReviewID: 237895671, Path: "README.md", Line: 265, StartLine: 260, Side: "RIGHT", StartSide: "RIGHT", DiffHunk: "@@ -1 +1 @@\n-# Hello-World"},
				Prompt: withPrompt("please\nalso the footer"), Sender: codertocat, Reason: "/agent in a review thread",
			},
		},
		{
			name: "an outdated comment keeps its original line", event: rc,
			payload: payload(t, rcFile, set("comment.line", nil), set("comment.original_line", 12)),
			want: agentbot.Trigger{
				Kind: agentbot.KindFollowUp, InstallationID: 4242, Repository: helloFacts, Issue: hello(2), IsPullRequest: true,
				Review: &agentbot.ReviewRef{CommentID: 284312630, ThreadRoot: 284312630, ReviewID: 237895671, Path: "README.md", Line: 12, Side: "RIGHT", DiffHunk: "@@ -1 +1 @@\n-# Hello-World"},
				Prompt: withPrompt("use more emoji on this line"), Sender: codertocat, Reason: "/agent in a review thread",
			},
		},
		{
			name: "/agent status in a thread is a control", event: rc, payload: payload(t, rcFile, set("comment.body", "/agent status")),
			want: agentbot.Trigger{
				Kind: agentbot.KindControl, Control: agentbot.ControlStatus, InstallationID: 4242, Repository: helloFacts, Issue: hello(2), IsPullRequest: true,
				Review: thread, Sender: codertocat, Reason: "/agent status in a review thread",
			},
		},
		{
			name: "a typo in a thread is a suggestion", event: rc, payload: payload(t, rcFile, set("comment.body", "/agent cancle")),
			want: agentbot.Trigger{
				Kind: agentbot.KindControl, Control: agentbot.ControlTypo, Suggestion: agentbot.ControlCancel, InstallationID: 4242, Repository: helloFacts, Issue: hello(2), IsPullRequest: true,
				Review: thread, Prompt: agentbot.Prompt{Instructions: "cancle"}, Sender: codertocat, Reason: "/agent typo in a review thread",
			},
		},
		{
			name: "a review's body", event: rv, payload: payload(t, rvFile),
			want: agentbot.Trigger{
				Kind: agentbot.KindFollowUp, InstallationID: 4242, Repository: helloFacts, Issue: hello(2), IsPullRequest: true,
				Review: &agentbot.ReviewRef{ReviewID: 237895671}, Prompt: withPrompt("rename the heading and address my comments"), Sender: codertocat, Reason: "/agent in a review",
			},
		},
		{name: "a thread comment without a command", event: rc, payload: payload(t, rcFile, set("comment.body", "Maybe you should use more emoji."))},
		{name: "the command quoted", event: rc, payload: payload(t, rcFile, set("comment.body", "> /agent use more emoji"))},
		{name: "the command in a code block", event: rc, payload: payload(t, rcFile, set("comment.body", "```\n/agent use more emoji\n```"))},
		{name: "the command mid-line", event: rc, payload: payload(t, rcFile, set("comment.body", "try /agent use more emoji"))},
		{name: "a mention not configured", event: rc, payload: payload(t, rcFile, set("comment.body", "@agentbot-test use more emoji"))},
		{name: "an edited review comment", event: rc, payload: payload(t, rcFile, set("action", "edited"))},
		{name: "a deleted review comment", event: rc, payload: payload(t, rcFile, set("action", "deleted"))},
		{name: "a review comment by a bot", event: rc, payload: payload(t, rcFile, set("sender.type", "Bot"))},
		{name: "a review comment by a [bot] login", event: rc, payload: payload(t, rcFile, set("sender.login", "agentbot[bot]"))},
		{name: "a review comment without installation", event: rc, payload: payload(t, rcFile, set("installation", nil))},
		{name: "a review comment naming no pull request", event: rc, payload: payload(t, rcFile, set("pull_request", nil))},
		{name: "a review without a body", event: rv, payload: payload(t, rvFile, set("review.body", nil))},
		{name: "an approval without a command", event: rv, payload: payload(t, rvFile, set("review.body", "LGTM"), set("review.state", "approved"))},
		{name: "an edited review", event: rv, payload: payload(t, rvFile, set("action", "edited"))},
		{name: "a dismissed review", event: rv, payload: payload(t, rvFile, set("action", "dismissed"))},
		{name: "a review by a bot", event: rv, payload: payload(t, rvFile, set("sender.type", "Bot"))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse(tt.event, tt.payload, tt.opts)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if tt.want.Kind == "" {
				if !got.Ignored() {
					t.Fatalf("acted on (%s, %q); want ignored", got.Kind, got.Reason)
				}
				if got.Reason == "" {
					t.Error("ignored without a reason")
				}
				return
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got\n%+v\n%+v\nwant\n%+v\n%+v", got, got.Review, tt.want, tt.want.Review)
			}
		})
	}
}

func TestParseReviewMalformed(t *testing.T) {
	for _, ev := range []string{"pull_request_review_comment", "pull_request_review"} {
		if _, err := Parse(ev, []byte(`{"action":"created","comment":{"id":"x"}`), ParseOptions{}); err == nil {
			t.Errorf("%s: malformed payload accepted", ev)
		}
	}
	if _, err := Parse("pull_request_review", []byte(`{"action":"submitted","review":{"id":"seven"}}`), ParseOptions{}); err == nil {
		t.Error("a review id of the wrong type accepted")
	}
}
