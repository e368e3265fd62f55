package webhook

import (
	"strings"

	"github.com/agentbot/agentbot"
)

// parseCommand is ParseComment with what intake knows beyond the /agent
// word: a line starting with a mention of agentbot (its App's login or
// an alias the operator configured) is a command too, under the same
// rules (line start, not quoted, not in code), and a lone mistyped command
// word becomes a suggestion rather than instructions.
func parseCommand(body string, opts ParseOptions) Command {
	cmd := ParseComment(mentionsAsCommand(body, opts.Mentions))
	if !cmd.Found || cmd.Control != "" {
		return cmd
	}
	if c := suggestControl(cmd.Instructions); c != "" {
		return Command{Found: true, Control: agentbot.ControlTypo, Typed: cmd.Instructions, Suggestion: c}
	}
	return cmd
}

// mentionsAsCommand rewrites each line that starts (after at most three
// spaces, as a command may) with "@name" — name one of names, matched as
// GitHub matches logins, case-insensitively, "[bot]" allowed, followed by
// whitespace, ":" or "," or the line's end — to start with /agent instead.
// Fences, quotes and indented code are then ParseComment's to judge, as
// for /agent itself: a rewritten line keeps its indentation, and a quoted
// line starts with ">", not "@".
func mentionsAsCommand(body string, names []string) string {
	if len(names) == 0 || !strings.Contains(body, "@") {
		return body
	}
	lines := strings.SplitAfter(body, "\n")
	for i, line := range lines {
		rest, indent := trimIndent(line)
		if indent > 3 || !strings.HasPrefix(rest, "@") {
			continue
		}
		if after, ok := cutMention(rest[1:], names); ok {
			lines[i] = line[:len(line)-len(rest)] + commandWord + " " + after
		}
	}
	return strings.Join(lines, "")
}

// cutMention strips one of names (and an optional "[bot]", ":" or ",")
// from the start of s, which must then end or go on with whitespace.
func cutMention(s string, names []string) (string, bool) {
	for _, n := range names {
		if n == "" || len(s) < len(n) || !strings.EqualFold(s[:len(n)], n) {
			continue
		}
		rest := s[len(n):]
		if len(rest) >= 5 && strings.EqualFold(rest[:5], "[bot]") {
			rest = rest[5:]
		}
		rest = strings.TrimPrefix(strings.TrimPrefix(rest, ":"), ",")
		if rest == "" || strings.ContainsRune(" \t\r\n", rune(rest[0])) {
			return rest, true
		}
	}
	return "", false
}
