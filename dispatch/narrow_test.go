package dispatch

import (
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/agentbot/agentbot"
	"github.com/agentbot/agentbot/github"
	"github.com/agentbot/agentbot/runner"
)

func TestNarrowMode(t *testing.T) {
	cases := []struct {
		operator, repo, want string
		wantNote             bool
	}{
		{"", "", "", false},
		{"", "bypassPermissions", "", false}, // the operator's "" keeps the runner's root fallback
		{"", "acceptEdits", "acceptEdits", false},
		{"", "plan", "plan", false},
		{"acceptEdits", "", "acceptEdits", false},
		{"acceptEdits", "acceptEdits", "acceptEdits", false},
		{"acceptEdits", "default", "default", false},
		{"acceptEdits", "bypassPermissions", "acceptEdits", true},
		{"default", "dontAsk", "dontAsk", false},
		{"default", "acceptEdits", "default", true},
		{"dontAsk", "plan", "plan", false},
		{"plan", "dontAsk", "plan", true},
		{"plan", "bypassPermissions", "plan", true},
	}
	for _, tc := range cases {
		t.Run(tc.operator+"/"+tc.repo, func(t *testing.T) {
			got, note := narrowMode(tc.operator, tc.repo)
			if got != tc.want || (note != "") != tc.wantNote {
				t.Fatalf("narrowMode(%q, %q) = %q, %q; want %q, note %v", tc.operator, tc.repo, got, note, tc.want, tc.wantNote)
			}
			if tc.wantNote && (!strings.Contains(note, tc.repo) || !strings.Contains(note, "runs in "+tc.operator)) {
				t.Errorf("note does not name both modes: %q", note)
			}
		})
	}
}

func TestNarrowTools(t *testing.T) {
	cases := []struct {
		name           string
		operator, repo []string
		want           []string
		refused        []string // named in the note
	}{
		{"neither: every tool", nil, nil, nil, nil},
		{"operator only", []string{"Edit", "Read"}, nil, []string{"Edit", "Read"}, nil},
		{"empty repository list is not set", []string{"Edit"}, []string{}, []string{"Edit"}, nil},
		{"repository only: the operator allows all", nil, []string{"Read"}, []string{"Read"}, nil},
		{"intersection", []string{"Edit", "Read", "Bash"}, []string{"Read", "Edit"}, []string{"Read", "Edit"}, nil},
		{"a bare operator tool allows its specifiers", []string{"Read", "Bash"}, []string{"Bash(go test:*)"}, []string{"Bash(go test:*)"}, nil},
		{"a specifier does not allow the bare tool", []string{"Bash(go test:*)"}, []string{"Bash"}, []string{"Bash(go test:*)"}, []string{"Bash"}},
		{"refused tool dropped and noted", []string{"Edit", "Read"}, []string{"Read", "Bash", "WebFetch"}, []string{"Read"}, []string{"Bash", "WebFetch"}},
		{"nothing survives: the operator's list, never all", []string{"Read"}, []string{"Bash"}, []string{"Read"}, []string{"Bash"}},
		{"duplicates once", []string{"Read"}, []string{"Read", "Read"}, []string{"Read"}, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, note := narrowTools(tc.operator, tc.repo)
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("narrowTools(%q, %q) = %q, want %q", tc.operator, tc.repo, got, tc.want)
			}
			if (note != "") != (len(tc.refused) > 0) {
				t.Fatalf("note %q, want one naming %q", note, tc.refused)
			}
			for _, r := range tc.refused {
				if !strings.Contains(note, r) {
					t.Errorf("note %q does not name %s", note, r)
				}
			}
		})
	}
}

// TestRepositoryNarrowsAgent: the job's agent carries the narrower of the
// operator's and the repository's permission mode and tools, and the
// task's comment says what the repository asked for beyond the operator.
func TestRepositoryNarrowsAgent(t *testing.T) {
	h := newHarness(t)
	h.store.Close()
	rec := &jobRecorder{}
	h.wrap = func(l runner.Launcher) runner.Launcher { rec.Launcher = l; return rec }
	h.tweak = func(o *Options) {
		o.Agent.PermissionMode, o.Agent.AllowedTools = "acceptEdits", []string{"Edit", "Read", "Bash"}
	}
	h.open()
	jobs := func() []runner.Job {
		rec.mu.Lock()
		defer rec.mu.Unlock()
		return slices.Clone(rec.jobs)
	}

	h.gh.SetFile(testRepo, github.SettingsPath, "permission_mode: plan\nallowed_tools: [Read, 'Bash(go test:*)']\n")
	h.start()
	done := h.waitState(h.enqueue(h.issue(83, "Narrow", "scripted: write narrow.txt x")).ID, agentbot.StateSucceeded)
	js := jobs()
	if len(js) != 1 || js[0].Agent.PermissionMode != "plan" || !reflect.DeepEqual(js[0].Agent.AllowedTools, []string{"Read", "Bash(go test:*)"}) {
		t.Fatalf("jobs %+v; want one in plan mode with Read, Bash(go test:*)", js)
	}
	if c := h.comment(done); strings.Contains(c.Body, "permission_mode") || strings.Contains(c.Body, "allowed_tools") {
		t.Errorf("a narrowing within the operator's is noted:\n%s", c.Body)
	}

	h.gh.SetFile(testRepo, github.SettingsPath, "permission_mode: bypassPermissions\nallowed_tools: [Read, WebFetch]\n")
	done = h.waitState(h.enqueue(h.issue(91, "Wide", "scripted: write wide.txt x")).ID, agentbot.StateSucceeded)
	js = jobs()
	if len(js) != 2 || js[1].Agent.PermissionMode != "acceptEdits" || !reflect.DeepEqual(js[1].Agent.AllowedTools, []string{"Read"}) {
		t.Fatalf("second job's agent %+v; want acceptEdits with Read only", js[len(js)-1].Agent)
	}
	c := h.comment(done)
	for _, want := range []string{"permission_mode: bypassPermissions is wider than this agentbot's acceptEdits", "allowed_tools: asks for WebFetch"} {
		if !strings.Contains(c.Body, want) {
			t.Errorf("final comment does not say %q:\n%s", want, c.Body)
		}
	}
}
