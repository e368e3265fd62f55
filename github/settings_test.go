package github

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestParseSettings(t *testing.T) {
	full := DefaultSettings()
	full.TriggerLabel = "robot"
	full.BranchPrefix = "bot/"
	full.Template = "go-service"
	full.Agent = "codex"
	full.Model = "o4-mini"
	full.TimeLimit = 90 * time.Minute
	full.DraftPR = false
	full.AllowedUsers = []string{"alice", "@bob"}
	full.AllowedTeams = []string{"acme/maintainers"}
	full.ProtectedPaths = []string{".github/**", "*.pem"}
	full.MaxTurns = 40

	tests := []struct {
		name     string
		yaml     string
		want     Settings
		problems []string // substrings of the SettingsError
	}{
		{name: "empty file", yaml: "", want: DefaultSettings()},
		{name: "only a comment", yaml: "# nothing yet\n", want: DefaultSettings()},
		{name: "everything", yaml: `
trigger_label: robot
branch_prefix: bot/
template: go-service
agent: codex
model: o4-mini
time_limit: 1h30m
draft_pr: false
allowed_users: [alice, "@bob"]
allowed_teams: [acme/maintainers]
protected_paths: [".github/**", "*.pem"]
max_turns: 40
`, want: full},
		{name: "unknown key with a suggestion", yaml: "trigger_lable: x\n", problems: []string{`unknown key "trigger_lable"`, `did you mean "trigger_label"`}},
		{name: "unknown key far from any", yaml: "colour: blue\n", problems: []string{`unknown key "colour"`, "known keys are"}},
		{name: "dash instead of underscore", yaml: "time-limit: 10m\n", problems: []string{`did you mean "time_limit"`}},
		{name: "several problems at once", yaml: "time_limit: soon\ndraft_pr: maybe\nmax_turns: -1\n", problems: []string{"time_limit", "draft_pr", "max_turns"}},
		{name: "time limit too long", yaml: "time_limit: 48h\n", problems: []string{"between 1m and 6h"}},
		{name: "time limit as a number", yaml: "time_limit: 30\n", problems: []string{"time_limit must be a duration"}},
		{name: "bad branch prefix", yaml: "branch_prefix: 'a..b/'\n", problems: []string{"branch_prefix"}},
		{name: "list expected", yaml: "allowed_users: alice\n", problems: []string{"allowed_users must be a list"}},
		{name: "bad protected pattern", yaml: "protected_paths: ['../etc']\n", problems: []string{"protected_paths"}},
		{name: "model as number", yaml: "model: 4\n", problems: []string{"model must be a string"}},
		{name: "not a mapping", yaml: "- a\n- b\n", problems: []string{"must be a mapping"}},
		{name: "duplicate key", yaml: "agent: a\nagent: b\n", problems: []string{"not valid YAML"}},
		{name: "bad yaml", yaml: "agent: [\n", problems: []string{"not valid YAML"}},
		{name: "narrowed Claude Code", yaml: "permission_mode: acceptEdits\nallowed_tools: [Edit, Read, 'Bash(go test:*)']\n",
			want: func() Settings {
				s := DefaultSettings()
				s.PermissionMode, s.AllowedTools = "acceptEdits", []string{"Edit", "Read", "Bash(go test:*)"}
				return s
			}()},
		{name: "unknown permission mode", yaml: "permission_mode: yolo\n", problems: []string{"permission_mode must be one of bypassPermissions, acceptEdits, default, dontAsk, plan"}},
		{name: "permission mode as a list", yaml: "permission_mode: [plan]\n", problems: []string{"permission_mode must be one of"}},
		{name: "tool with a comma", yaml: "allowed_tools: ['Bash(a,b)']\n", problems: []string{`allowed_tools: "Bash(a,b)" is not a Claude Code tool`}},
		{name: "tools not a list", yaml: "allowed_tools: Edit\n", problems: []string{"allowed_tools must be a list"}},
		{name: "an empty protected_paths keeps the defaults", yaml: "protected_paths: []\n", want: DefaultSettings()},
		{name: "protected_paths add to the defaults", yaml: "protected_paths: ['secrets/**', '.github/workflows/**']\n",
			want: func() Settings {
				s := DefaultSettings()
				s.ProtectedPaths = []string{".github/**", "secrets/**", ".github/workflows/**"}
				return s
			}()},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseSettings([]byte(tc.yaml))
			if len(tc.problems) == 0 {
				if err != nil {
					t.Fatalf("ParseSettings: %v", err)
				}
				if !reflect.DeepEqual(got, tc.want) {
					t.Fatalf("settings = %+v\nwant %+v", got, tc.want)
				}
				return
			}
			var se *SettingsError
			if !errors.As(err, &se) {
				t.Fatalf("err = %v, want *SettingsError", err)
			}
			for _, p := range tc.problems {
				if !strings.Contains(se.Error(), p) {
					t.Errorf("error %q does not mention %q", se.Error(), p)
				}
			}
			if !strings.HasPrefix(se.Error(), ".github/agentbot.yml: ") {
				t.Errorf("error %q does not name the file", se.Error())
			}
		})
	}
}

func TestSettingsComeFromTheDefaultBranchOnly(t *testing.T) {
	tests := []struct {
		name       string
		onDefault  string // "" = no file
		onBranch   string
		wantLabel  string
		wantErrHas string
	}{
		{name: "no file gives defaults", wantLabel: "agent-task"},
		{name: "file on the default branch", onDefault: "trigger_label: robot\n", wantLabel: "robot"},
		{name: "a PR branch cannot change settings", onDefault: "trigger_label: robot\n", onBranch: "trigger_label: pwned\nallowed_users: [mallory]\n", wantLabel: "robot"},
		{name: "a PR branch file alone is ignored", onBranch: "trigger_label: pwned\n", wantLabel: "agent-task"},
		{name: "bad file is reported", onDefault: "trigger_lable: robot\n", wantErrHas: `did you mean "trigger_label"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			if tc.onDefault != "" {
				h.gh.SetFile(h.repo, SettingsPath, tc.onDefault)
			}
			if tc.onBranch != "" {
				h.gh.CommitFile(h.repo, "agentbot/issue-1", SettingsPath, tc.onBranch)
			}
			s, err := h.client.Settings(context.Background(), instID, h.repo)
			if tc.wantErrHas != "" {
				var se *SettingsError
				if !errors.As(err, &se) || !strings.Contains(err.Error(), tc.wantErrHas) {
					t.Fatalf("err = %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if s.TriggerLabel != tc.wantLabel || len(s.AllowedUsers) != 0 {
				t.Fatalf("settings = %+v", s)
			}
			calls := h.gh.CallsTo("GET", "/repos/acme/widgets/contents/.github/agentbot.yml")
			// No ref: GitHub reads the default branch, never a PR's.
			if len(calls) != 1 || calls[0].Query != "" {
				t.Fatalf("contents calls = %v, want one without a ref", calls)
			}
		})
	}
}
