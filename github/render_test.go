package github

import (
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/agentbot/agentbot"
)

func TestRenderCommentStates(t *testing.T) {
	tests := []struct {
		name    string
		view    ProgressView
		want    []string
		notWant []string
	}{
		{"queued", ProgressView{TaskID: "t1", State: agentbot.StateQueued, TaskURL: "https://bot/t1"},
			[]string{"<!-- agentbot task=t1 -->", "queued", "[task page](https://bot/t1)", "/agent cancel"}, []string{"retry"}},
		{"queued behind another task", ProgressView{TaskID: "t2", State: agentbot.StateQueued, QueuedBehind: "t1"},
			[]string{"Waiting for task `t1` on this issue"}, []string{"repository"}},
		{"running", ProgressView{TaskID: "t1", State: agentbot.StateRunning, Phase: "agent", Elapsed: 192 * time.Second, TaskURL: "https://bot/t1", LogTail: []string{"step one", "step two"}},
			[]string{"running", "phase `agent`", "3m12s elapsed", "step one\nstep two\n", "<details open>"}, []string{"retry"}},
		{"succeeded with PR", ProgressView{TaskID: "t1", State: agentbot.StateSucceeded, Elapsed: 5 * time.Minute, CostUSD: 0.4234, PRURL: "https://github.test/acme/widgets/pull/9", Summary: "Changed **two** files.", LogTail: []string{"noise"}},
			[]string{"done", "in 5m0s", "agent cost $0.42", "Pull request: https://github.test/acme/widgets/pull/9", "Changed **two** files."}, []string{"noise", "/agent retry", "/agent cancel"}},
		{"succeeded with branch only", ProgressView{TaskID: "t1", State: agentbot.StateSucceeded, Branch: "agentbot/issue-1-x", Note: "Draft PRs are off for this repository."},
			[]string{"Branch: `agentbot/issue-1-x`", "Draft PRs are off"}, nil},
		{"failed", ProgressView{TaskID: "t1", State: agentbot.StateFailed, FailedPhase: "init", Elapsed: time.Minute, Error: "scripts/init.sh exited 1", LogTail: []string{"npm ERR!"}},
			[]string{"failed", "during `init`", "after 1m0s", "scripts/init.sh exited 1", "npm ERR!", "/agent retry"}, []string{"<details open>"}},
		{"cancelled", ProgressView{TaskID: "t1", State: agentbot.StateCancelled, Elapsed: 2 * time.Second},
			[]string{"cancelled", "after 2s", "/agent retry"}, nil},
		{"failed for good", ProgressView{TaskID: "t1", State: agentbot.StateFailed, Error: "refused to push: .github/workflows/ci.yml is protected", Permanent: true},
			[]string{"failed", "is protected"}, []string{"/agent retry"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := RenderComment(tc.view)
			for _, w := range tc.want {
				if !strings.Contains(got, w) {
					t.Errorf("comment lacks %q:\n%s", w, got)
				}
			}
			for _, w := range tc.notWant {
				if strings.Contains(got, w) {
					t.Errorf("comment has %q:\n%s", w, got)
				}
			}
			if openFence(got) != "" {
				t.Errorf("unbalanced fence:\n%s", got)
			}
		})
	}
}

func TestRenderCommentStaysWithinGitHubsLimit(t *testing.T) {
	many := func(line string, n int) []string {
		out := make([]string, n)
		for i := range out {
			out[i] = line
		}
		return out
	}
	tests := []struct {
		name string
		view ProgressView
	}{
		{"huge summary with an open fence", ProgressView{State: agentbot.StateSucceeded, Summary: "Intro\n```go\n" + strings.Repeat("fmt.Println(\"é\")\n", 20000)}},
		{"huge log tail", ProgressView{State: agentbot.StateRunning, LogTail: many(strings.Repeat("x", 3000), 5000)}},
		{"log lines that try to close the fence", ProgressView{State: agentbot.StateFailed, LogTail: []string{"before", "```", "````", "# heading outside?", "`````` after"}, Error: "```\nboom\n```"}},
		{"terminal escapes", ProgressView{State: agentbot.StateRunning, LogTail: []string{"\x1b[31mred\x1b[0m text\r", "bell\a"}}},
		{"everything huge", ProgressView{
			TaskID: strings.Repeat("id", 500), State: agentbot.StateFailed, Phase: strings.Repeat("p", 5000), TaskURL: "https://x/" + strings.Repeat("u", 5000),
			Summary: strings.Repeat("~~~\nwords ", 30000), Error: strings.Repeat("日本語のエラー ", 20000), FailedPhase: strings.Repeat("f", 900),
			LogTail: many(strings.Repeat("ü", 2000), 3000), Note: strings.Repeat("note ", 10000), Branch: strings.Repeat("b", 900),
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for _, out := range []string{RenderComment(tc.view), RenderCheckRun(tc.view).Summary, RenderCheckRun(tc.view).Text} {
				if len(out) > MaxCommentBytes {
					t.Fatalf("%d bytes, over the limit", len(out))
				}
				if !utf8.ValidString(out) {
					t.Fatal("cut inside a character")
				}
				if f := openFence(out); f != "" {
					t.Fatalf("fence %q left open", f)
				}
				if strings.ContainsAny(out, "\x1b\a\r") {
					t.Fatalf("control characters leaked: %q", out)
				}
			}
		})
	}
}

func TestLogTailCannotEscapeItsFence(t *testing.T) {
	v := ProgressView{State: agentbot.StateFailed, LogTail: []string{"ok", "```", "**bold outside?**", "`````"}}
	out := RenderComment(v)
	lines := strings.Split(out, "\n")
	start := -1
	for i, l := range lines {
		if strings.HasPrefix(l, "``````text") {
			start = i
			break
		}
	}
	if start < 0 {
		t.Fatalf("no fence longer than the longest backtick run:\n%s", out)
	}
	for i := start + 1; i < len(lines) && lines[i] != "``````"; i++ {
		if openFence(strings.Join(lines[:i+1], "\n")) == "" {
			t.Fatalf("line %q closed the log block:\n%s", lines[i], out)
		}
	}
}

func TestTruncateMarkdown(t *testing.T) {
	tests := []struct {
		name string
		in   string
		max  int
	}{
		{"short stays", "hello", 100},
		{"cut at a line", strings.Repeat("line\n", 100), 120},
		{"cut inside a backtick fence", "a\n```\n" + strings.Repeat("code\n", 100), 150},
		{"cut inside a tilde fence", "a\n~~~~\n" + strings.Repeat("code\n", 100), 150},
		{"closed fences stay closed", "```\nx\n```\n" + strings.Repeat("text ", 100), 150},
		{"multibyte", strings.Repeat("é", 500), 101},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := truncateMarkdown(tc.in, tc.max)
			if len(got) > tc.max || !utf8.ValidString(got) || openFence(got) != "" {
				t.Fatalf("truncateMarkdown = %d bytes, fence %q: %q", len(got), openFence(got), got)
			}
			if len(tc.in) <= tc.max && got != tc.in {
				t.Fatalf("changed a short text: %q", got)
			}
			if len(tc.in) > tc.max && !strings.HasSuffix(got, "*…(truncated)*") {
				t.Fatalf("does not say it cut: %q", got)
			}
		})
	}
}

func TestRenderCheckRunStates(t *testing.T) {
	tests := []struct {
		name       string
		view       ProgressView
		status     string
		conclusion string
		action     string
	}{
		{"queued", ProgressView{State: agentbot.StateQueued}, "queued", "", ActionCancel},
		{"running", ProgressView{State: agentbot.StateRunning}, "in_progress", "", ActionCancel},
		{"succeeded", ProgressView{State: agentbot.StateSucceeded}, "completed", "success", ""},
		{"failed", ProgressView{State: agentbot.StateFailed}, "completed", "failure", ActionRetry},
		{"failed for good: no retry button", ProgressView{State: agentbot.StateFailed, Permanent: true}, "completed", "failure", ""},
		{"cancelled", ProgressView{State: agentbot.StateCancelled}, "completed", "cancelled", ActionRetry},
		{"superseded by a pushed commit", ProgressView{State: agentbot.StateSucceeded, Superseded: "abc123"}, "completed", "neutral", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v := tc.view
			v.TaskID, v.TaskURL = "t9", "https://bot/t9"
			r := RenderCheckRun(v)
			var ids []string
			for _, a := range r.Actions {
				ids = append(ids, a.Identifier)
			}
			if r.Status != tc.status || r.Conclusion != tc.conclusion || strings.Join(ids, ",") != tc.action ||
				r.ExternalID != "t9" || r.DetailsURL != "https://bot/t9" || r.Title == "" || r.Summary == "" {
				t.Fatalf("check run = %+v", r)
			}
			r.HeadSHA = strings.Repeat("a", 40)
			if _, err := r.body(true); err != nil {
				t.Fatalf("rendered check run is not valid: %v", err)
			}
		})
	}
}

func TestBranchNameAndPRBody(t *testing.T) {
	tests := []struct {
		title, want string
	}{
		{"Crash on start!", "agentbot/issue-12-crash-on-start"},
		{"  Ünïcode — and   spaces ", "agentbot/issue-12-unicode-and-spaces"},
		{"ünïcödé", "agentbot/issue-12-unicode"},
		{"Straße öffnen, Ærø ﬁx", "agentbot/issue-12-strasse-offnen-aero-fix"},
		{"Crème brûlée 日本", "agentbot/issue-12-creme-brulee"},
		{"日本語", "agentbot/issue-12"},
		{"", "agentbot/issue-12"},
		{"A very long title that goes on and on and on beyond forty characters", "agentbot/issue-12-a-very-long-title-that-goes-on-and-on"},
	}
	for _, tc := range tests {
		if got := BranchName("agentbot/", 12, tc.title); got != tc.want {
			t.Errorf("BranchName(%q) = %q, want %q", tc.title, got, tc.want)
		}
		if err := checkBranchPrefix(BranchName("agentbot/", 12, tc.title) + "/"); err != "" {
			t.Errorf("BranchName(%q) is not a valid ref: %s", tc.title, err)
		}
	}
	body := PullRequestBody(12, strings.Repeat("s", 100000), "https://bot/t")
	if !strings.HasPrefix(body, "Fixes #12\n") || len(body) > MaxCommentBytes || !strings.Contains(body, "(truncated)") {
		t.Fatalf("PR body: %d bytes, prefix %q", len(body), body[:20])
	}
}

func TestAgentSummaryMentionsNobody(t *testing.T) {
	const zw = "@\u200b"
	cases := []struct {
		name, in, want string
	}{
		{"user", "Thanks @alice for the report", "Thanks " + zw + "alice for the report"},
		{"team", "cc @acme/maintainers.", "cc " + zw + "acme/maintainers."},
		{"start and punctuation", "@bob,(@carol)", zw + "bob,(" + zw + "carol)"},
		{"email untouched", "mail ops@example.com", "mail ops@example.com"},
		// Code is not told from prose (any such parser can be fooled):
		// a @ in code gets the zero-width space too.
		{"inline code too", "run `npm i @scope/pkg` then ping @dave", "run `npm i " + zw + "scope/pkg` then ping " + zw + "dave"},
		{"fenced code too", "```\n@eve\n```\n@frank", "```\n" + zw + "eve\n```\n" + zw + "frank"},
		{"no mention", "plain text", "plain text"},
		// Adversarial shapes that fooled the code-aware version or could.
		{"unmatched backtick", "`oops @alice", "`oops " + zw + "alice"},
		{"four-space indent", "    @bob", "    " + zw + "bob"},
		{"backticks in a fence's info string", "```a`b\n@carol\n```", "```a`b\n" + zw + "carol\n```"},
		{"html", "<b>@dave</b><a href=x>@erin</a>", "<b>" + zw + "dave</b><a href=x>" + zw + "erin</a>"},
		{"zero-width joiner", "@\u200dalice and @\u200bbob", zw + "alice and " + zw + "bob"},
		{"full-width at", "\uff20mallory", zw + "mallory"},
		{"soft hyphen in the name", "@ali\u00adce", zw + "alice"},
		{"closes", "This closes #12.", "This c\u200bloses #12."},
		{"fixes with colon, any case", "FIXES: #3", "F\u200bIXES: #3"},
		{"resolved cross-repo", "resolved acme/widgets#4", "r\u200besolved acme/widgets#4"},
		{"fix by URL", "fix https://github.com/acme/widgets/issues/5", "f\u200bix https://github.com/acme/widgets/issues/5"},
		{"keyword split by a zero-width space", "clo\u200bses #6", "c\u200bloses #6"},
		{"not a keyword", "prefixes #7 and a fixture", "prefixes #7 and a fixture"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := quietMentions(tc.in); got != tc.want {
				t.Fatalf("quietMentions(%q) = %q, want %q", tc.in, got, tc.want)
			}
		})
	}
	// And where the summary is shown: the progress comment and the PR body.
	v := ProgressView{TaskID: "t1", State: agentbot.StateSucceeded, Summary: "Done. @alice please review."}
	for name, body := range map[string]string{
		"comment": RenderComment(v),
		"PR body": PullRequestBody(3, v.Summary, ""),
	} {
		if strings.Contains(body, " @alice") || !strings.Contains(body, zw+"alice") {
			t.Errorf("%s still mentions @alice:\n%s", name, body)
		}
	}
}
