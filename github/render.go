package github

import (
	"fmt"
	"regexp"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/agentbot/agentbot"
)

// MaxCommentBytes is GitHub's limit on an issue comment or PR body (65536
// characters). Rendering counts bytes, which is never fewer than
// characters, so a rendered comment always fits.
const MaxCommentBytes = 65536

// Budgets for the variable parts of a progress comment. Their sum plus the
// fixed lines stays well under MaxCommentBytes, so no part can crowd out
// another and the total needs no second pass.
const (
	budgetSummary = 40000
	budgetError   = 6000
	budgetLog     = 12000
	budgetNote    = 2000
	budgetLine    = 1000
	budgetShort   = 200 // phase, branch, ids, URLs
)

// ProgressView is everything a progress comment or check run shows about a
// task at one moment.
type ProgressView struct {
	TaskID       string
	State        agentbot.TaskState
	Phase        string // current phase while running
	TaskURL      string // the task's page
	Summary      string // the agent's summary (markdown)
	Error        string // what went wrong, when failed
	FailedPhase  string
	LogTail      []string // last lines of output, oldest first
	Elapsed      time.Duration
	CostUSD      float64
	PRURL        string
	Branch       string
	QueuedBehind string // the task this one waits for, if any
	Note         string // one extra sentence (e.g. "no changes were made")
	// Permanent marks a failure that a retry would repeat (a refused
	// protected-path edit, a settings problem): no retry is suggested.
	Permanent bool
	// Superseded marks a check run left on a commit the task moved past:
	// it completes as neutral, pointing at the new one.
	Superseded string
}

// CommentMarker starts every progress comment: a hidden line naming the
// task, so that a comment can be recognised as agentbot's.
func CommentMarker(taskID string) string {
	return "<!-- agentbot task=" + oneLine(taskID, budgetShort) + " -->"
}

// RenderComment renders the progress comment for v. It is pure and its
// output never exceeds MaxCommentBytes; long parts are cut on line
// boundaries with fences kept balanced.
func RenderComment(v ProgressView) string {
	var b strings.Builder
	b.WriteString(CommentMarker(v.TaskID))
	b.WriteString("\n")
	b.WriteString(headline(v))
	if v.Note != "" {
		b.WriteString("\n" + truncateMarkdown(v.Note, budgetNote) + "\n")
	}
	if v.Summary != "" && v.State != agentbot.StateQueued {
		b.WriteString("\n" + truncateMarkdown(quietMentions(strings.TrimSpace(v.Summary)), budgetSummary) + "\n")
	}
	if v.Error != "" {
		b.WriteString("\n" + fenced(strings.Split(strings.TrimRight(v.Error, "\n"), "\n"), budgetError, false))
	}
	if len(v.LogTail) > 0 && v.State != agentbot.StateSucceeded {
		b.WriteString("\n<details" + openIf(v.State == agentbot.StateRunning) + "><summary>Recent output</summary>\n\n")
		b.WriteString(fenced(v.LogTail, budgetLog, true))
		b.WriteString("\n</details>\n")
	}
	if (v.State == agentbot.StateFailed && !v.Permanent) || v.State == agentbot.StateCancelled {
		b.WriteString("\nComment `/agent retry` to run it again.\n")
	}
	if v.State == agentbot.StateRunning || v.State == agentbot.StateQueued {
		b.WriteString("\nComment `/agent cancel` to stop it.\n")
	}
	return FitComment(b.String())
}

// headline is the comment's first visible line — state, phase, time, cost,
// task page — and, for a queued or finished task, the line after it.
func headline(v ProgressView) string {
	link := ""
	if v.TaskURL != "" {
		link = " · [task page](" + oneLine(v.TaskURL, budgetShort) + ")"
	}
	elapsed := ""
	if v.Elapsed > 0 {
		elapsed = formatDuration(v.Elapsed)
	}
	with := func(line, sep string) string {
		if elapsed != "" {
			line += sep + elapsed
		}
		return line
	}
	cost := ""
	if v.CostUSD > 0 {
		cost = fmt.Sprintf(" · agent cost $%.2f", v.CostUSD)
	}
	switch v.State {
	case agentbot.StateQueued:
		if v.QueuedBehind != "" {
			return "⏳ **agentbot: queued**" + link + "\n\nWaiting for task `" + inlineCode(v.QueuedBehind) + "` on this issue to finish.\n"
		}
		return "⏳ **agentbot: queued**" + link + "\n\nThe task will start as soon as a worker is free.\n"
	case agentbot.StateRunning:
		line := "🔄 **agentbot: running**"
		if v.Phase != "" {
			line += " · phase `" + inlineCode(v.Phase) + "`"
		}
		if elapsed != "" {
			line += " · " + elapsed + " elapsed"
		}
		return line + link + "\n"
	case agentbot.StateSucceeded:
		line := with("✅ **agentbot: done**", " in ") + cost + link + "\n"
		switch {
		case v.PRURL != "":
			line += "\nPull request: " + oneLine(v.PRURL, budgetShort) + "\n"
		case v.Branch != "":
			line += "\nBranch: `" + inlineCode(v.Branch) + "`\n"
		}
		return line
	case agentbot.StateFailed:
		line := "❌ **agentbot: failed**"
		if v.FailedPhase != "" {
			line += " during `" + inlineCode(v.FailedPhase) + "`"
		}
		return with(line, " after ") + cost + link + "\n"
	case agentbot.StateCancelled:
		return with("🚫 **agentbot: cancelled**", " after ") + link + "\n"
	}
	return "**agentbot: " + inlineCode(string(v.State)) + "**" + link + "\n"
}

func openIf(open bool) string {
	if open {
		return " open"
	}
	return ""
}

// FitComment returns body cut to MaxCommentBytes, fences balanced.
func FitComment(body string) string {
	return truncateMarkdown(body, MaxCommentBytes)
}

// RenderCheckRun renders the check run for v: status, conclusion, output and
// buttons (Cancel while queued or running, Retry after failure or
// cancellation). HeadSHA is left for the caller.
func RenderCheckRun(v ProgressView) CheckRun {
	r := CheckRun{DetailsURL: v.TaskURL, ExternalID: v.TaskID}
	var summary []string
	if v.TaskURL != "" {
		summary = append(summary, "[Task page]("+oneLine(v.TaskURL, budgetShort)+")")
	}
	if v.Elapsed > 0 {
		summary = append(summary, "Elapsed: "+formatDuration(v.Elapsed))
	}
	if v.CostUSD > 0 {
		summary = append(summary, fmt.Sprintf("Agent cost: $%.2f", v.CostUSD))
	}
	switch {
	case v.Superseded != "":
		// The run moved the pull request past this commit; the result's
		// own check run is on the new head.
		r.Status, r.Conclusion, r.Title = "completed", "neutral", "Superseded"
		summary = append(summary, "This task pushed `"+inlineCode(v.Superseded)+"`; its result is in the check run on that commit.")
		v.Summary, v.Error, v.LogTail = "", "", nil
	case v.State == agentbot.StateQueued:
		r.Status, r.Title = "queued", "Queued"
		if v.QueuedBehind != "" {
			summary = append(summary, "Waiting for task `"+inlineCode(v.QueuedBehind)+"`")
		}
		r = r.WithCancel()
	case v.State == agentbot.StateRunning:
		r.Status, r.Title = "in_progress", "Running"
		if v.Phase != "" {
			r.Title = "Running: " + oneLine(v.Phase, 60)
		}
		r = r.WithCancel()
	case v.State == agentbot.StateSucceeded:
		r.Status, r.Conclusion, r.Title = "completed", "success", "Done"
		if v.PRURL != "" {
			summary = append(summary, "Pull request: "+oneLine(v.PRURL, budgetShort))
		}
	case v.State == agentbot.StateFailed:
		r.Status, r.Conclusion, r.Title = "completed", "failure", "Failed"
		if v.FailedPhase != "" {
			r.Title = "Failed during " + oneLine(v.FailedPhase, 60)
		}
		if !v.Permanent {
			r = r.WithRetry()
		}
	case v.State == agentbot.StateCancelled:
		r.Status, r.Conclusion, r.Title = "completed", "cancelled", "Cancelled"
		r = r.WithRetry()
	default:
		r.Status, r.Title = "queued", oneLine(string(v.State), 60)
	}
	parts := []string{strings.Join(summary, " · ")}
	if v.Note != "" {
		parts = append(parts, truncateMarkdown(v.Note, budgetNote))
	}
	if v.Summary != "" {
		parts = append(parts, truncateMarkdown(quietMentions(strings.TrimSpace(v.Summary)), budgetSummary))
	}
	if v.Error != "" {
		parts = append(parts, fenced(strings.Split(strings.TrimRight(v.Error, "\n"), "\n"), budgetError, false))
	}
	r.Summary = truncateMarkdown(strings.TrimSpace(strings.Join(parts, "\n\n")), maxCheckOutput)
	if r.Summary == "" {
		r.Summary = r.Title
	}
	if len(v.LogTail) > 0 {
		r.Text = fenced(v.LogTail, budgetLog, true)
	}
	return r
}

// PullRequestBody is the body of the draft PR for an issue: the closing
// keyword, the agent's summary and a link to the task.
func PullRequestBody(issueNumber int, summary, taskURL string) string {
	var b strings.Builder
	if issueNumber > 0 {
		fmt.Fprintf(&b, "Fixes #%d\n\n", issueNumber)
	}
	if s := quietMentions(strings.TrimSpace(summary)); s != "" {
		b.WriteString(truncateMarkdown(s, budgetSummary) + "\n\n")
	}
	b.WriteString("---\n<sub>Opened by agentbot")
	if taskURL != "" {
		b.WriteString(" · [task page](" + oneLine(taskURL, budgetShort) + ")")
	}
	b.WriteString(". Comment `/agent <instructions>` on this pull request for a follow-up.</sub>\n")
	return FitComment(b.String())
}

func formatDuration(d time.Duration) string {
	if d < time.Second {
		return d.Round(time.Millisecond).String()
	}
	return d.Round(time.Second).String()
}

// oneLine flattens s to a single bounded line.
func oneLine(s string, max int) string {
	s = strings.Join(strings.Fields(s), " ")
	return truncateUTF8(s, max)
}

// inlineCode makes s safe inside single backticks.
func inlineCode(s string) string {
	return strings.ReplaceAll(oneLine(s, budgetShort), "`", "'")
}

var ansiEscape = regexp.MustCompile("\x1b\\[[0-9;?]*[ -/]*[@-~]|\x1b[@-Z\\\\-_]")

// cleanLine removes terminal escapes and control characters from one line
// of output and bounds its length.
func cleanLine(s string) string {
	s = ansiEscape.ReplaceAllString(s, "")
	s = strings.Map(func(r rune) rune {
		if r == '\t' {
			return r
		}
		if r < 0x20 || r == 0x7f {
			return -1
		}
		return r
	}, s)
	if len(s) > budgetLine {
		s = truncateUTF8(s, budgetLine) + " …"
	}
	return s
}

// fenced puts lines in a code fence longer than any backtick run inside,
// within budget bytes. With keepTail the last lines are kept (a log tail),
// otherwise the first (an error message).
func fenced(lines []string, budget int, keepTail bool) string {
	clean := make([]string, len(lines))
	longest := 0
	for i, l := range lines {
		clean[i] = cleanLine(l)
		longest = max(longest, longestRun(clean[i], '`'))
	}
	fence := strings.Repeat("`", max(3, longest+1))
	room := budget - 2*len(fence) - 40
	var kept []string
	used := 0
	omitted := 0
	for i := range clean {
		idx := i
		if keepTail {
			idx = len(clean) - 1 - i
		}
		l := clean[idx]
		if used+len(l)+1 > room {
			omitted = len(clean) - len(kept)
			break
		}
		used += len(l) + 1
		kept = append(kept, l)
	}
	if keepTail {
		for i, j := 0, len(kept)-1; i < j; i, j = i+1, j-1 {
			kept[i], kept[j] = kept[j], kept[i]
		}
	}
	var b strings.Builder
	b.WriteString(fence + "text\n")
	if keepTail && omitted > 0 {
		fmt.Fprintf(&b, "… %d earlier lines omitted\n", omitted)
	}
	for _, l := range kept {
		b.WriteString(l + "\n")
	}
	if !keepTail && omitted > 0 {
		fmt.Fprintf(&b, "… %d more lines omitted\n", omitted)
	}
	b.WriteString(fence + "\n")
	return b.String()
}

func longestRun(s string, c byte) int {
	best, cur := 0, 0
	for i := 0; i < len(s); i++ {
		if s[i] == c {
			cur++
			best = max(best, cur)
		} else {
			cur = 0
		}
	}
	return best
}

const truncatedMark = "\n\n*…(truncated)*"

// truncateMarkdown cuts s to at most max bytes, preferring a line boundary,
// closing a code fence left open by the cut and saying that it cut.
func truncateMarkdown(s string, max int) string {
	if len(s) <= max {
		return s
	}
	budget := max - len(truncatedMark)
	for budget > 0 {
		cut := truncateUTF8(s, budget)
		if i := strings.LastIndexByte(cut, '\n'); i > len(cut)*4/5 {
			cut = cut[:i]
		}
		out := cut
		if f := openFence(cut); f != "" {
			out += "\n" + f
		}
		out += truncatedMark
		if len(out) <= max {
			return out
		}
		budget -= len(out) - max
	}
	return truncateUTF8(s, max)
}

// openFence returns the fence that closes a code block left open at the end
// of s, or "" when every block is closed. It follows CommonMark: a fence is
// three or more backticks or tildes after at most three spaces, closed by
// the same character repeated at least as often.
func openFence(s string) string {
	var open string
	for _, line := range strings.Split(s, "\n") {
		t := strings.TrimLeft(line, " ")
		if len(line)-len(t) > 3 || len(t) < 3 || (t[0] != '`' && t[0] != '~') {
			continue
		}
		n := longestPrefix(t, t[0])
		if n < 3 {
			continue
		}
		if open == "" {
			if t[0] == '`' && strings.ContainsRune(t[n:], '`') {
				continue // not a fence: info strings cannot hold backticks
			}
			open = t[:n]
		} else if t[0] == open[0] && n >= len(open) && strings.TrimSpace(t[n:]) == "" {
			open = ""
		}
	}
	return open
}

func longestPrefix(s string, c byte) int {
	n := 0
	for n < len(s) && s[n] == c {
		n++
	}
	return n
}

// truncateUTF8 cuts s to at most n bytes without splitting a character.
func truncateUTF8(s string, n int) string {
	if len(s) <= n {
		return s
	}
	if n <= 0 {
		return ""
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// truncateRunes cuts s to at most n characters.
func truncateRunes(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	r := []rune(s)
	return string(r[:n])
}

// mention is an @user or @org/team reference GitHub would notify.
var (
	mention = regexp.MustCompile(`(^|[^A-Za-z0-9_.+\-/@])@([A-Za-z0-9][A-Za-z0-9-]*(?:/[A-Za-z0-9_.-]+)?)`)
	// closing matches GitHub's closing keywords before an issue reference
	// (#12, owner/repo#12, or an issue or pull request URL).
	closing = regexp.MustCompile(`(?i)(^|[^A-Za-z0-9_])(close[sd]?|fix(?:e[sd])?|resolve[sd]?)(\s*:\s*|\s+)(#\d|[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+#\d|https?://)`)
	// invisible are format characters an agent could slip between @ and a
	// name (or into a keyword) to get past the patterns above.
	invisible = strings.NewReplacer("\u200b", "", "\u200c", "", "\u200d", "", "\u200e", "", "\u200f", "",
		"\u2060", "", "\u2061", "", "\u2062", "", "\u2063", "", "\u2064", "", "\ufeff", "", "\u00ad", "",
		"\uff20", "@", "\ufe6b", "@")
)

// Inert is quietMentions, for the callers that put sandbox text in a
// view's Note (agentbot's own notes may mention the person they answer).
func Inert(s string) string { return quietMentions(s) }

// quietMentions renders text that came from the sandbox (a summary, a
// note) inert: no @ in it notifies anyone and no closing keyword in it
// closes an issue when agentbot posts it. It does not try to tell code from
// prose — an unmatched backtick, an indented block or a fence with
// backticks in its info string would each fool such a parser, and GitHub's
// own idea of code decides what pings — so every @name and every "fixes
// #n" gets a zero-width space (after the @, inside the keyword), code
// included. Invisible characters and full-width @ are normalised first.
func quietMentions(s string) string {
	s = invisible.Replace(s)
	if strings.Contains(s, "@") {
		s = mention.ReplaceAllString(s, "$1@\u200b$2")
	}
	return closing.ReplaceAllStringFunc(s, func(m string) string {
		sub := closing.FindStringSubmatch(m)
		kw := sub[2]
		return sub[1] + kw[:1] + "\u200b" + kw[1:] + sub[3] + sub[4]
	})
}
