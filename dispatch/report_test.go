package dispatch

import (
	"strings"
	"testing"

	"github.com/agentbot/agentbot"
	"github.com/agentbot/agentbot/runner"
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

// TestRunFailureNamesTheLimit: a run the launcher saw hit a sandbox limit
// fails with that limit first, whatever the agent said of its own death.
func TestRunFailureNamesTheLimit(t *testing.T) {
	cases := []struct {
		name  string
		out   followed
		want  string
		avoid string
	}{
		{"memory", followed{code: runner.ExitAgent, limitHit: "the agent used more than 4 GiB of memory",
			errEvent: &runner.Event{Type: runner.EventError, Phase: runner.PhaseAgent, Message: "agent command exited with status 137"}},
			"the agent used more than 4 GiB of memory: agent command exited with status 137", ""},
		{"no limit", followed{code: runner.ExitAgent,
			errEvent: &runner.Event{Type: runner.EventError, Phase: runner.PhaseAgent, Message: "agent command exited with status 1"}},
			"agent command exited with status 1", "limit"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := runFailure(&agentbot.Task{Phase: runner.PhaseAgent}, tc.out, nil)
			if !strings.HasPrefix(f.msg, tc.want) {
				t.Errorf("message %q does not start with %q", f.msg, tc.want)
			}
			if tc.avoid != "" && strings.Contains(f.msg, tc.avoid) {
				t.Errorf("message %q mentions %q", f.msg, tc.avoid)
			}
		})
	}
}
