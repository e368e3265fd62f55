package github

import (
	"fmt"
	"regexp"
	"strings"
	"unicode"

	"golang.org/x/text/unicode/norm"
)

var nonSlug = regexp.MustCompile(`[^a-z0-9]+`)

// BranchName is the branch of a new task: prefix + "issue-<n>-<slug>", the
// slug taken from the issue title (at most 40 characters), its letters
// transliterated to ASCII so "Ünïcödé" reads "unicode", not "n-c-d".
func BranchName(prefix string, issueNumber int, title string) string {
	slug := strings.Trim(nonSlug.ReplaceAllString(asciiFold(strings.ToLower(title)), "-"), "-")
	if len(slug) > 40 {
		cut := slug[:40]
		if i := strings.LastIndexByte(cut, '-'); i > 20 && slug[40] != '-' {
			cut = cut[:i] // end on a whole word
		}
		slug = strings.TrimRight(cut, "-")
	}
	name := fmt.Sprintf("%sissue-%d", prefix, issueNumber)
	if slug != "" {
		name += "-" + slug
	}
	return name
}

// TaskBranchName is the branch of a task that has no issue (one made
// through the task API): prefix + "task-<id>-<slug>".
func TaskBranchName(prefix, taskID, title string) string {
	return strings.Replace(BranchName(prefix, 0, title), "issue-0", "task-"+strings.ToLower(taskID), 1)
}

// letters are the Latin letters compatibility decomposition leaves whole.
var letters = strings.NewReplacer("ß", "ss", "æ", "ae", "œ", "oe", "ø", "o", "ł", "l", "đ", "d", "ð", "d", "þ", "th", "ı", "i")

// asciiFold decomposes s (NFKD: "ü" is "u" and a combining diaeresis, "ﬁ"
// is "fi") and drops the combining marks, so accented Latin letters keep
// their base letter. Scripts without one (CJK, Cyrillic) are left to the
// slug rule, which drops them.
func asciiFold(s string) string {
	s = letters.Replace(norm.NFKD.String(s))
	return strings.Map(func(r rune) rune {
		if unicode.Is(unicode.Mn, r) {
			return -1
		}
		return r
	}, s)
}
