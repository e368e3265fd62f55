package webhook

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/agentbot/agentbot"
)

// payload reads testdata/name and applies edits to its decoded JSON.
func payload(t testing.TB, name string, edits ...func(map[string]any)) []byte {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	if len(edits) == 0 {
		return raw
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	for _, e := range edits {
		e(m)
	}
	out, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// set assigns a value at a dotted path ("comment.body"); nil deletes.
func set(path string, v any) func(map[string]any) {
	return func(m map[string]any) {
		keys := splitPath(path)
		for _, k := range keys[:len(keys)-1] {
			m = m[k].(map[string]any)
		}
		if v == nil {
			delete(m, keys[len(keys)-1])
			return
		}
		m[keys[len(keys)-1]] = v
	}
}

func splitPath(p string) []string {
	var out []string
	start := 0
	for i := 0; i < len(p); i++ {
		if p[i] == '.' {
			out = append(out, p[start:i])
			start = i + 1
		}
	}
	return append(out, p[start:])
}

// helloFacts is what the Codertocat payloads say of their repository.
var helloFacts = agentbot.RepoFacts{DefaultBranch: "master", CloneURL: "https://github.com/Codertocat/Hello-World.git"}

func hello(n int) agentbot.IssueRef {
	return agentbot.IssueRef{Repo: agentbot.Repo{Owner: "Codertocat", Name: "Hello-World"}, Number: n}
}

func TestParse(t *testing.T) {
	bot := set("sender.type", "Bot")
	tests := []struct {
		name    string
		event   string
		payload []byte
		opts    ParseOptions
		want    agentbot.Trigger // compared in full when Kind is set
		ignored bool
		wantErr bool
	}{
		{
			name: "issues.labeled with the trigger label", event: "issues",
			payload: payload(t, "issues.labeled.json"),
			want: agentbot.Trigger{
				Kind: agentbot.KindNew, InstallationID: 4242, Repository: helloFacts, Issue: hello(1), Label: "agent-task",
				Prompt: agentbot.Prompt{Title: "Spelling error in the README file", Body: "It looks like you accidently spelled 'commit' with two 't's.\n\nPlease fix it in README.md."},
				Sender: agentbot.Sender{Login: "Codertocat", ID: 21031067}, Reason: `labeled "agent-task"`,
			},
		},
		{
			name: "issues.labeled with a configured label, any case", event: "issues",
			payload: payload(t, "issues.labeled.json", set("label.name", "AI")),
			opts:    ParseOptions{TriggerLabels: []string{"agent-task", "ai"}},
			want: agentbot.Trigger{
				Kind: agentbot.KindNew, InstallationID: 4242, Repository: helloFacts, Issue: hello(1), Label: "AI",
				Prompt: agentbot.Prompt{Title: "Spelling error in the README file", Body: "It looks like you accidently spelled 'commit' with two 't's.\n\nPlease fix it in README.md."},
				Sender: agentbot.Sender{Login: "Codertocat", ID: 21031067}, Reason: `labeled "AI"`,
			},
		},
		{
			name: "issues.labeled with any label when the operator accepts *", event: "issues",
			payload: payload(t, "issues.labeled.json", set("label.name", "robots")),
			opts:    ParseOptions{TriggerLabels: []string{"*"}},
			want: agentbot.Trigger{
				Kind: agentbot.KindNew, InstallationID: 4242, Repository: helloFacts, Issue: hello(1), Label: "robots",
				Prompt: agentbot.Prompt{Title: "Spelling error in the README file", Body: "It looks like you accidently spelled 'commit' with two 't's.\n\nPlease fix it in README.md."},
				Sender: agentbot.Sender{Login: "Codertocat", ID: 21031067}, Reason: `labeled "robots"`,
			},
		},
		{name: "issues.labeled with another label", event: "issues", payload: payload(t, "issues.labeled.json", set("label.name", "bug")), ignored: true},
		{name: "issues.labeled by a bot", event: "issues", payload: payload(t, "issues.labeled.json", bot), ignored: true},
		{name: "issues.labeled by a [bot] login", event: "issues", payload: payload(t, "issues.labeled.json", set("sender.login", "agentbot[bot]")), ignored: true},
		{name: "issues.labeled without installation", event: "issues", payload: payload(t, "issues.labeled.json", set("installation", nil)), ignored: true},
		{name: "issues.labeled without repository", event: "issues", payload: payload(t, "issues.labeled.json", set("repository", nil)), ignored: true},
		{name: "issues.unlabeled of another label", event: "issues", payload: payload(t, "issues.labeled.json", set("action", "unlabeled"), set("label.name", "bug")), ignored: true},
		{name: "issues.edited", event: "issues", payload: payload(t, "issues.labeled.json", set("action", "edited")), ignored: true},
		{
			name: "/agent on an issue", event: "issue_comment",
			payload: payload(t, "issue_comment.created.issue.json"),
			want: agentbot.Trigger{
				Kind: agentbot.KindNew, InstallationID: 4242, Repository: helloFacts, Issue: hello(1), CommentID: 492700400,
				Prompt: agentbot.Prompt{Title: "Spelling error in the README file", Body: "It looks like you accidently spelled 'commit' with two 't's.", Instructions: "fix the typo and add a test\nKeep the diff small."},
				Sender: agentbot.Sender{Login: "Codertocat", ID: 21031067, AuthorAssociation: "OWNER"}, Reason: "/agent on an issue",
			},
		},
		{
			name: "/agent on a pull request is a follow-up", event: "issue_comment",
			payload: payload(t, "issue_comment.created.pr.json"),
			want: agentbot.Trigger{
				Kind: agentbot.KindFollowUp, InstallationID: 4242, Repository: helloFacts, Issue: hello(2), IsPullRequest: true, CommentID: 492700401,
				Prompt: agentbot.Prompt{Title: "Fix the spelling of commit (#1)", Body: "Fixes #1\n\nWritten by agentbot.", Instructions: "also update the changelog"},
				Sender: agentbot.Sender{Login: "Codertocat", ID: 21031067, AuthorAssociation: "OWNER"}, Reason: "/agent on a pull request",
			},
		},
		{
			name: "/agent cancel on a pull request", event: "issue_comment",
			payload: payload(t, "issue_comment.created.pr.json", set("comment.body", "/agent cancel")),
			want: agentbot.Trigger{
				Kind: agentbot.KindControl, Control: agentbot.ControlCancel, InstallationID: 4242, Repository: helloFacts, Issue: hello(2), IsPullRequest: true, CommentID: 492700401,
				Sender: agentbot.Sender{Login: "Codertocat", ID: 21031067, AuthorAssociation: "OWNER"}, Reason: "/agent cancel",
			},
		},
		{
			name: "/agent status on an issue", event: "issue_comment",
			payload: payload(t, "issue_comment.created.issue.json", set("comment.body", "/agent Status"), set("comment.author_association", "CONTRIBUTOR")),
			want: agentbot.Trigger{
				Kind: agentbot.KindControl, Control: agentbot.ControlStatus, InstallationID: 4242, Repository: helloFacts, Issue: hello(1), CommentID: 492700400,
				Sender: agentbot.Sender{Login: "Codertocat", ID: 21031067, AuthorAssociation: "CONTRIBUTOR"}, Reason: "/agent status",
			},
		},
		{name: "pull_request null is an issue", event: "issues", payload: payload(t, "issues.labeled.json", set("issue.pull_request", nil), func(m map[string]any) { m["issue"].(map[string]any)["pull_request"] = nil }),
			want: agentbot.Trigger{
				Kind: agentbot.KindNew, InstallationID: 4242, Repository: helloFacts, Issue: hello(1), Label: "agent-task",
				Prompt: agentbot.Prompt{Title: "Spelling error in the README file", Body: "It looks like you accidently spelled 'commit' with two 't's.\n\nPlease fix it in README.md."},
				Sender: agentbot.Sender{Login: "Codertocat", ID: 21031067}, Reason: `labeled "agent-task"`,
			}},
		{name: "comment without a command", event: "issue_comment", payload: payload(t, "issue_comment.created.issue.json", set("comment.body", "Looks good to me")), ignored: true},
		{name: "quoted command", event: "issue_comment", payload: payload(t, "issue_comment.created.issue.json", set("comment.body", "> /agent do it\n\nno")), ignored: true},
		{name: "comment edited", event: "issue_comment", payload: payload(t, "issue_comment.created.issue.json", set("action", "edited")), ignored: true},
		{name: "comment deleted", event: "issue_comment", payload: payload(t, "issue_comment.created.issue.json", set("action", "deleted")), ignored: true},
		{name: "comment by a bot", event: "issue_comment", payload: payload(t, "issue_comment.created.issue.json", bot), ignored: true},
		{
			name: "check run cancel button", event: "check_run",
			payload: payload(t, "check_run.requested_action.json"),
			want: agentbot.Trigger{
				Kind: agentbot.KindControl, Control: agentbot.ControlCancel, InstallationID: 4242,
				Issue: agentbot.IssueRef{Repo: agentbot.Repo{Owner: "electron", Name: "electron"}, Number: 26764}, IsPullRequest: true,
				Repository: agentbot.RepoFacts{DefaultBranch: "master", CloneURL: "https://github.com/electron/electron.git"},
				HeadBranch: "miniak/event-process-id", HeadSHA: "5bd5f196a46b8222fb7484f05faba41a73cf34bd", CheckRunID: 1494503112,
				ExternalID: "01JZ0000000000000000000000", Sender: agentbot.Sender{Login: "codebytere", ID: 2036040},
				Reason: "check run requested_action cancel",
			},
		},
		{
			name: "check run rerequested without pull request maps by external_id", event: "check_run",
			payload: payload(t, "check_run.rerequested.json"),
			want: agentbot.Trigger{
				Kind: agentbot.KindControl, Control: agentbot.ControlRetry, InstallationID: 4242,
				Issue:      agentbot.IssueRef{Repo: agentbot.Repo{Owner: "github", Name: "hello-world"}},
				Repository: agentbot.RepoFacts{DefaultBranch: "master", CloneURL: "http://github.com/github/hello-world.git"},
				HeadBranch: "master", HeadSHA: "d6fde92930d4715a2b49857d24b940956b26d2d3", CheckRunID: 4,
				ExternalID: "01JZ0000000000000000000000", Sender: agentbot.Sender{Login: "octocat", ID: 5346},
				Reason: "check run rerequested retry",
			},
		},
		{name: "check run retry button", event: "check_run", payload: payload(t, "check_run.requested_action.json", set("requested_action.identifier", "retry")),
			want: agentbot.Trigger{
				Kind: agentbot.KindControl, Control: agentbot.ControlRetry, InstallationID: 4242,
				Issue: agentbot.IssueRef{Repo: agentbot.Repo{Owner: "electron", Name: "electron"}, Number: 26764}, IsPullRequest: true,
				Repository: agentbot.RepoFacts{DefaultBranch: "master", CloneURL: "https://github.com/electron/electron.git"},
				HeadBranch: "miniak/event-process-id", HeadSHA: "5bd5f196a46b8222fb7484f05faba41a73cf34bd", CheckRunID: 1494503112,
				ExternalID: "01JZ0000000000000000000000", Sender: agentbot.Sender{Login: "codebytere", ID: 2036040},
				Reason: "check run requested_action retry",
			}},
		{name: "someone else's check run button", event: "check_run", payload: payload(t, "check_run.requested_action.json", set("requested_action.identifier", "lgtm|26764")), ignored: true},
		{name: "check run with neither pull request nor external_id", event: "check_run", payload: payload(t, "check_run.rerequested.json", set("check_run.external_id", "")), ignored: true},
		{name: "check run button pressed by a bot", event: "check_run", payload: payload(t, "check_run.requested_action.json", bot), ignored: true},
		{name: "check run completed", event: "check_run", payload: payload(t, "check_run.requested_action.json", set("action", "completed")), ignored: true},
		{name: "unhandled event", event: "pull_request", payload: []byte(`{"action":"opened"}`), ignored: true},
		{name: "ping is not a trigger", event: "ping", payload: payload(t, "ping.json"), ignored: true},
		{name: "malformed JSON", event: "issues", payload: []byte(`{"action":`), wantErr: true},
		{name: "JSON of the wrong shape", event: "issue_comment", payload: []byte(`{"action":"created","comment":{"body":5}}`), wantErr: true},
		{name: "malformed JSON of an unhandled event", event: "push", payload: []byte(`not json`), wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse(tt.event, tt.payload, tt.opts)
			if tt.wantErr {
				if !errors.Is(err, ErrMalformed) {
					t.Fatalf("Parse error = %v, want ErrMalformed", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if tt.ignored {
				if !got.Ignored() || got.Reason == "" {
					t.Errorf("Parse = %+v, want ignored with a reason", got)
				}
				return
			}
			if got != tt.want {
				t.Errorf("Parse =\n %+v\nwant\n %+v", got, tt.want)
			}
		})
	}
}

func TestParseComment(t *testing.T) {
	tests := []struct {
		name string
		body string
		want Command
	}{
		{"bare command", "/agent", Command{Found: true}},
		{"instructions", "/agent fix it", Command{Found: true, Instructions: "fix it"}},
		{"instructions continue on later lines", "Thanks!\n/agent fix it\n\nand add tests", Command{Found: true, Instructions: "fix it\n\nand add tests"}},
		{"case-insensitive command word", "/AGENT Fix", Command{Found: true, Instructions: "Fix"}},
		{"up to three spaces of indentation", "   /agent go", Command{Found: true, Instructions: "go"}},
		{"CRLF line endings", "hi\r\n/agent do it\r\nmore", Command{Found: true, Instructions: "do it\nmore"}},
		{"first command wins", "/agent one\n/agent two", Command{Found: true, Instructions: "one\n/agent two"}},
		{"cancel", "/agent cancel", Command{Found: true, Control: agentbot.ControlCancel}},
		{"retry with trailing space and a note below", "/agent Retry  \nit was flaky", Command{Found: true, Control: agentbot.ControlRetry}},
		{"status", "please\n/agent status", Command{Found: true, Control: agentbot.ControlStatus}},
		{"help", "/agent help", Command{Found: true, Control: agentbot.ControlHelp}},
		{"control word with more text is an instruction", "/agent cancel the old flag", Command{Found: true, Instructions: "cancel the old flag"}},
		{"command after a code block counts", "```\n/agent in fence\n```\n/agent after", Command{Found: true, Instructions: "after"}},
		{"no command", "LGTM", Command{}},
		{"empty", "", Command{}},
		{"mid-line", "you can say /agent fix", Command{}},
		{"quoted", "> /agent fix", Command{}},
		{"nested quote", ">> /agent fix", Command{}},
		{"inline code", "`/agent fix`", Command{}},
		{"longer word", "/agents fix", Command{}},
		{"hyphenated", "/agent-fix", Command{}},
		{"indented code block", "    /agent fix", Command{}},
		{"tab-indented code block", "\t/agent fix", Command{}},
		{"backtick fence", "```sh\n/agent fix\n```", Command{}},
		{"tilde fence closed only by a long enough fence", "~~~~\n~~~\n/agent fix\n~~~~", Command{}},
		{"unclosed fence", "```\n/agent fix", Command{}},
		{"HTML comment", "<!-- /agent fix -->", Command{}},
		{"multi-line HTML comment", "<!--\n/agent fix\n-->\nok", Command{}},
		{"unclosed HTML comment", "<!-- draft\n/agent fix", Command{}},
		{"command after an HTML comment", "<!-- note -->\n/agent go", Command{Found: true, Instructions: "go"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ParseComment(tt.body); got != tt.want {
				t.Errorf("ParseComment(%q) = %+v, want %+v", tt.body, got, tt.want)
			}
		})
	}
}
