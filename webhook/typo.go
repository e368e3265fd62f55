package webhook

import (
	"strings"

	"github.com/agentbot/agentbot"
)

// suggestControl is the control command word a one-word instruction was
// probably meant to be ("cancle", "stauts"), or "" when it is not close to
// any. The distance allowed grows with the word (one edit up to five
// letters, two from six), so a short real instruction ("/agent hello") is
// not mistaken for `/agent help`; an exact command word is not a typo.
func suggestControl(word string) agentbot.Control {
	w := strings.ToLower(word)
	if len(w) < 3 || strings.ContainsAny(w, " \t\n") {
		return ""
	}
	limit := 1
	if len(w) >= 6 {
		limit = 2
	}
	best, bestD := agentbot.Control(""), limit+1
	for _, c := range controls {
		if w == string(c) {
			return ""
		}
		if d := osaDistance(w, string(c)); d < bestD {
			best, bestD = c, d
		}
	}
	return best
}

// osaDistance is the optimal string alignment distance: insertions,
// deletions, substitutions and swaps of two neighbouring letters ("ut" for
// "tu"), each one edit — a swap is the commonest typo.
func osaDistance(a, b string) int {
	d := make([][]int, len(a)+1)
	for i := range d {
		d[i] = make([]int, len(b)+1)
		d[i][0] = i
	}
	for j := range d[0] {
		d[0][j] = j
	}
	for i := 1; i <= len(a); i++ {
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			d[i][j] = min(d[i-1][j]+1, d[i][j-1]+1, d[i-1][j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				d[i][j] = min(d[i][j], d[i-2][j-2]+1)
			}
		}
	}
	return d[len(a)][len(b)]
}
