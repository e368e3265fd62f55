package dispatch

import (
	"strings"
	"testing"
)

func TestCodeBlock(t *testing.T) {
	cases := []struct {
		name, in, want string
	}{
		{"plain", "time_limit: bad", "```\ntime_limit: bad\n```"},
		{"trailing newline dropped", "x\n", "```\nx\n```"},
		{"one backtick", "key `a`", "```\nkey `a`\n```"},
		{"three backticks", "value ``` closes", "````\nvalue ``` closes\n````"},
		{"longest run wins", "a ``` b ````` c `", "``````\na ``` b ````` c `\n``````"},
		{"backticks at the end", "ends ````", "`````\nends ````\n`````"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := codeBlock(tc.in)
			if got != tc.want {
				t.Fatalf("codeBlock(%q) = %q, want %q", tc.in, got, tc.want)
			}
			// The block is closed only by its last line.
			lines := strings.Split(got, "\n")
			fence := lines[0]
			for _, l := range lines[1 : len(lines)-1] {
				if strings.HasPrefix(strings.TrimSpace(l), fence) {
					t.Errorf("line %q would close the fence %q", l, fence)
				}
			}
		})
	}
}
