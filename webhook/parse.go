package webhook

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/agentbot/agentbot"
)

// DefaultTriggerLabel is the label that asks agentbot to work on an issue.
const DefaultTriggerLabel = "agent-task"

// ErrMalformed is wrapped by Parse's error when the payload is not JSON of
// the event's shape.
var ErrMalformed = errors.New("malformed payload")

// ParseOptions tunes Parse.
type ParseOptions struct {
	// TriggerLabels are the labels whose issues.labeled event creates a task,
	// compared case-insensitively as GitHub compares label names. Empty means
	// [DefaultTriggerLabel].
	TriggerLabels []string
	// Mentions are the names a comment line may start with, as "@name",
	// instead of /agent: the App's own login (learned from GET /app at
	// start) and the operator's aliases.
	Mentions []string
	// Learned, if set, also accepts each repository's own trigger label
	// (and, at first sight, any label: see Labels).
	Learned *Labels
}

// Parse decides what one webhook delivery asks of agentbot. It is pure: no
// I/O, no clock. A zero Kind (Trigger.Ignored) means nothing, with the reason
// in Trigger.Reason; an error (wrapping ErrMalformed) means the payload is
// not valid JSON of the event's shape.
//
// Handled: issues.labeled with a trigger label (new task);
// issue_comment.created with an /agent command (new task on an issue,
// follow-up on a pull request, or a control command); check_run
// requested_action "cancel"/"retry" and check_run.rerequested (controls);
// pull_request_review_comment.created and pull_request_review.submitted
// with an /agent command (follow-up in a review thread or on a review's
// body, or a control command; see review.go).
// Bots, edits, deletions and every other event are ignored.
func Parse(event string, payload []byte, opts ParseOptions) (agentbot.Trigger, error) {
	d, err := parse(event, payload, opts)
	return d.Trigger, err
}

// decision is Parse's result plus what the delivery log line names even when
// the delivery is ignored.
type decision struct {
	agentbot.Trigger
	Action string
	Repo   string
	// Forget names a repository whose learned trigger label is stale.
	Forget string
}

func parse(event string, payload []byte, opts ParseOptions) (decision, error) {
	switch event {
	case "issues":
		var e issuesEvent
		if err := e.decode(payload); err != nil {
			return decision{}, malformed(event, err)
		}
		if d, ok, err := parseIssueChange(&e, payload, opts); ok {
			return d, err
		}
		return parseIssues(&e, opts), nil
	case "issue_comment":
		var e issueCommentEvent
		if err := e.decode(payload); err != nil {
			return decision{}, malformed(event, err)
		}
		return parseIssueComment(&e, opts), nil
	case "check_run":
		var e checkRunEvent
		if err := e.decode(payload); err != nil {
			return decision{}, malformed(event, err)
		}
		return parseCheckRun(&e), nil
	case "push":
		return parsePush(payload)
	case "pull_request_review_comment":
		return parseReviewComment(payload, opts)
	case "pull_request_review":
		return parseReview(payload, opts)
	default:
		if !valid(payload) {
			return decision{}, fmt.Errorf("%s event: %w: not JSON", event, ErrMalformed)
		}
		return ignore(decision{}, "event %q is not handled", event), nil
	}
}

func malformed(event string, err error) error {
	return fmt.Errorf("%s event: %w: %w", event, ErrMalformed, err)
}

func ignore(d decision, format string, args ...any) decision {
	d.Kind = ""
	d.Reason = fmt.Sprintf(format, args...)
	return d
}

// common fills what every handled event shares and reports why the event
// cannot be acted on, if it cannot.
func common(d *decision, ev *eventBase) string {
	d.Action = ev.Action
	owner, name := ev.Repository.Owner.Login, ev.Repository.Name
	if owner != "" && name != "" {
		d.Repo = owner + "/" + name
	}
	d.Issue.Repo = agentbot.Repo{Owner: owner, Name: name}
	d.InstallationID = ev.Installation.ID
	d.Repository = agentbot.RepoFacts{DefaultBranch: ev.Repository.DefaultBranch, CloneURL: ev.Repository.CloneURL}
	d.Sender = agentbot.Sender{Login: ev.Sender.Login, ID: ev.Sender.ID}
	switch {
	case agentbot.IsBot(ev.Sender.Login, ev.Sender.Type):
		return fmt.Sprintf("sender %q is a bot", ev.Sender.Login)
	case d.Repo == "":
		return "payload names no repository"
	case d.InstallationID == 0:
		return "payload names no installation"
	}
	return ""
}

func parseIssues(e *issuesEvent, opts ParseOptions) decision {
	var d decision
	if e.Action != "labeled" {
		d.Action, d.Repo = e.Action, e.Repository.FullName
		return ignore(d, "issues.%s is not a trigger", e.Action)
	}
	if why := common(&d, &e.eventBase); why != "" {
		return ignore(d, "%s", why)
	}
	labels := opts.TriggerLabels
	if len(labels) == 0 {
		labels = []string{DefaultTriggerLabel}
	}
	label := e.Label.Name
	// "*" accepts every label: for operators whose repositories set their
	// own trigger_label, which the dispatcher checks against the settings
	// file (intake never calls GitHub).
	if !slices.ContainsFunc(labels, func(l string) bool { return l == "*" || strings.EqualFold(l, label) }) && !opts.Learned.accepts(d.Repo, label) {
		return ignore(d, "label %q is not a trigger label", label)
	}
	if e.Issue.Number <= 0 {
		return ignore(d, "payload names no issue")
	}
	d.Kind = agentbot.KindNew
	d.Issue.Number = e.Issue.Number
	d.IsPullRequest = e.Issue.PullRequest != nil
	d.Label = label
	d.Prompt = agentbot.Prompt{Title: e.Issue.Title, Body: e.Issue.Body}
	d.Reason = fmt.Sprintf("labeled %q", label)
	return d
}

func parseIssueComment(e *issueCommentEvent, opts ParseOptions) decision {
	var d decision
	if e.Action != "created" {
		d.Action, d.Repo = e.Action, e.Repository.FullName
		return ignore(d, "issue_comment.%s is not a trigger", e.Action)
	}
	if why := common(&d, &e.eventBase); why != "" {
		return ignore(d, "%s", why)
	}
	cmd := parseCommand(e.Comment.Body, opts)
	if !cmd.Found {
		return ignore(d, "comment has no /agent command")
	}
	if e.Issue.Number <= 0 {
		return ignore(d, "payload names no issue")
	}
	d.Issue.Number = e.Issue.Number
	d.IsPullRequest = e.Issue.PullRequest != nil
	d.CommentID = e.Comment.ID
	d.Sender.AuthorAssociation = e.Comment.AuthorAssociation
	switch {
	case cmd.Control != "":
		d.Kind = agentbot.KindControl
		d.Control = cmd.Control
		d.Suggestion, d.Prompt.Instructions = cmd.Suggestion, cmd.Typed
		d.Reason = "/agent " + string(cmd.Control)
		return d
	case d.IsPullRequest:
		d.Kind = agentbot.KindFollowUp
		d.Reason = "/agent on a pull request"
	default:
		d.Kind = agentbot.KindNew
		d.Reason = "/agent on an issue"
	}
	d.Prompt = agentbot.Prompt{
		Title:        e.Issue.Title,
		Body:         e.Issue.Body,
		Instructions: cmd.Instructions,
	}
	return d
}

// Check-run button identifiers agentbot offers (at most 20 characters each,
// GitHub's limit).
const (
	ActionCancel = "cancel"
	ActionRetry  = "retry"
)

func parseCheckRun(e *checkRunEvent) decision {
	var d decision
	var control agentbot.Control
	switch e.Action {
	case "requested_action":
		switch e.RequestedAction.Identifier {
		case ActionCancel:
			control = agentbot.ControlCancel
		case ActionRetry:
			control = agentbot.ControlRetry
		}
	case "rerequested":
		control = agentbot.ControlRetry
	}
	if control == "" {
		d.Action, d.Repo = e.Action, e.Repository.FullName
		if e.Action == "requested_action" {
			return ignore(d, "check run action %q is not agentbot's", e.RequestedAction.Identifier)
		}
		return ignore(d, "check_run.%s is not a trigger", e.Action)
	}
	if why := common(&d, &e.eventBase); why != "" {
		return ignore(d, "%s", why)
	}
	run := &e.CheckRun
	d.CheckRunID = run.ID
	d.HeadSHA = run.HeadSHA
	d.HeadBranch = run.CheckSuite.HeadBranch
	d.ExternalID = run.ExternalID
	if len(run.PullRequests) > 0 && run.PullRequests[0].Number > 0 {
		d.Issue.Number = run.PullRequests[0].Number
		d.IsPullRequest = true
	}
	if d.Issue.Number == 0 && d.ExternalID == "" {
		return ignore(d, "check run names neither a pull request nor a task")
	}
	d.Kind = agentbot.KindControl
	d.Control = control
	d.Reason = "check run " + e.Action + " " + string(control)
	return d
}

// Command is what a comment asks of agentbot.
type Command struct {
	// Found is true when a line of the comment starts with /agent.
	Found bool
	// Control is set for `/agent cancel|retry|status|help` alone on the line.
	Control agentbot.Control
	// Instructions is the text after /agent: the rest of its line and every
	// line after it.
	Instructions string
	// Typed and Suggestion are, for ControlTypo, the word given and the
	// command it is near.
	Typed      string
	Suggestion agentbot.Control
}

var controls = []agentbot.Control{agentbot.ControlCancel, agentbot.ControlRetry, agentbot.ControlStatus, agentbot.ControlHelp}

// ParseComment finds the first /agent command in a comment body. The command
// must start a line (up to three spaces of indentation, as Markdown allows);
// quoted lines ("> /agent"), fenced and indented code blocks and HTML
// comments do not count, so quoting or documenting the command never runs
// it. The command word is matched case-insensitively and must be followed by
// whitespace or the end of the line.
func ParseComment(body string) Command {
	lines := strings.Split(normalizeNewlines(stripHTMLComments(body)), "\n")
	var fence string // the opening fence while inside a fenced code block
	for i, line := range lines {
		trimmed, indent := trimIndent(line)
		if fence != "" {
			if closesFence(trimmed, fence) {
				fence = ""
			}
			continue
		}
		if f := openingFence(trimmed); f != "" && indent < 4 {
			fence = f
			continue
		}
		if indent >= 4 {
			continue // indented code block
		}
		rest, ok := cutCommand(trimmed)
		if !ok {
			continue
		}
		cmd := Command{Found: true}
		if words := strings.Fields(rest); len(words) == 1 {
			for _, c := range controls {
				if strings.EqualFold(words[0], string(c)) {
					cmd.Control = c
					return cmd
				}
			}
		}
		text := rest
		if i+1 < len(lines) {
			text += "\n" + strings.Join(lines[i+1:], "\n")
		}
		cmd.Instructions = strings.TrimSpace(text)
		return cmd
	}
	return Command{}
}

const commandWord = "/agent"

func cutCommand(line string) (string, bool) {
	if len(line) < len(commandWord) || !strings.EqualFold(line[:len(commandWord)], commandWord) {
		return "", false
	}
	rest := line[len(commandWord):]
	if rest != "" && rest[0] != ' ' && rest[0] != '\t' {
		return "", false // "/agents", "/agent-foo"
	}
	return strings.TrimSpace(rest), true
}

// trimIndent removes leading spaces and tabs, reporting the indentation in
// columns (a tab counts as four, as in Markdown).
func trimIndent(line string) (string, int) {
	n := 0
	for i := 0; i < len(line); i++ {
		switch line[i] {
		case ' ':
			n++
		case '\t':
			n += 4 - n%4
		default:
			return line[i:], n
		}
	}
	return "", n
}

func openingFence(line string) string {
	for _, c := range []byte{'`', '~'} {
		n := 0
		for n < len(line) && line[n] == c {
			n++
		}
		if n >= 3 {
			// A backtick fence's info string may not contain backticks.
			if c == '`' && strings.Contains(line[n:], "`") {
				return ""
			}
			return line[:n]
		}
	}
	return ""
}

func closesFence(line, fence string) bool {
	n := 0
	for n < len(line) && line[n] == fence[0] {
		n++
	}
	return n >= len(fence) && strings.TrimSpace(line[n:]) == ""
}

func normalizeNewlines(s string) string {
	if !strings.Contains(s, "\r") {
		return s
	}
	return strings.ReplaceAll(strings.ReplaceAll(s, "\r\n", "\n"), "\r", "\n")
}

// stripHTMLComments removes <!-- ... --> spans; an unclosed one runs to the
// end, as in HTML.
func stripHTMLComments(s string) string {
	if !strings.Contains(s, "<!--") {
		return s
	}
	var b strings.Builder
	for {
		start := strings.Index(s, "<!--")
		if start < 0 {
			b.WriteString(s)
			return b.String()
		}
		b.WriteString(s[:start])
		end := strings.Index(s[start+4:], "-->")
		if end < 0 {
			return b.String()
		}
		s = s[start+4+end+3:]
	}
}
