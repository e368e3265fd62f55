package github

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"sort"
	"strings"
	"time"

	gh "github.com/google/go-github/v66/github"
	"sigs.k8s.io/yaml"

	"github.com/agentbot/agentbot"
	"github.com/agentbot/agentbot/bundle"
	"github.com/agentbot/agentbot/gateway"
)

// SettingsPath is where a repository configures agentbot, read from the
// default branch only: a pull request cannot change how agentbot treats it.
const SettingsPath = ".github/agentbot.yml"

// maxSettingsBytes bounds the settings file.
const maxSettingsBytes = 64 << 10

// Settings are a repository's agentbot settings.
type Settings struct {
	TriggerLabel   string
	BranchPrefix   string
	Template       string
	Agent          string
	Model          string        // "" = the agent's default
	TimeLimit      time.Duration // 0 = not set: the operator's default applies
	DraftPR        bool
	AllowedUsers   []string // with AllowedTeams: empty = anyone with write access
	AllowedTeams   []string // "org/team-slug", or a slug in the owner's organisation
	ProtectedPaths []string // patterns a pushed bundle must not touch
	MaxTurns       int      // 0 = the agent's default
	// Assignee is the login (a machine user: Apps cannot be assignees)
	// whose assignment to an issue starts a task; "" = assignment does not.
	Assignee string
	// Egress are hosts the sandbox may reach beyond the operator's
	// allow-list ("registry.npmjs.org", "*.example.com:443"), within the
	// operator's ceiling.
	Egress []string
	// MaxCostUSD lowers the operator's model budget for a task (0 = the
	// operator's).
	MaxCostUSD float64
	// PermissionMode narrows Claude Code's permission mode below the
	// operator's ("" = the operator's); it never widens it.
	PermissionMode string
	// AllowedTools narrow the tools Claude Code may use to those of the
	// operator's that are also here (nil = the operator's).
	AllowedTools []string
}

// DefaultSettings are the settings of a repository without a settings file.
func DefaultSettings() Settings {
	return Settings{
		TriggerLabel:   "agent-task",
		BranchPrefix:   "agentbot/",
		Template:       "default",
		Agent:          "claude",
		DraftPR:        true,
		ProtectedPaths: []string{".github/**"},
	}
}

// MaxTimeLimit bounds time_limit.
const MaxTimeLimit = 6 * time.Hour

// SettingsError lists what is wrong with a settings file. Error() is meant
// to be posted back on the issue as it is.
type SettingsError struct {
	Path     string
	Problems []string
}

func (e *SettingsError) Error() string {
	return fmt.Sprintf("%s: %s", e.Path, strings.Join(e.Problems, "; "))
}

// settingsKeys are the keys of the settings file, in documentation order.
var settingsKeys = []string{
	"trigger_label", "branch_prefix", "template", "agent", "model", "time_limit",
	"draft_pr", "allowed_users", "allowed_teams", "protected_paths", "max_turns", "assignee",
	"egress", "max_cost_usd", "permission_mode", "allowed_tools",
}

var (
	templateName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)
	agentName    = regexp.MustCompile(`^[a-z][a-z0-9-]*$`)
	modelName    = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:/@\[\]-]*$`)
	loginName    = regexp.MustCompile(`^@?[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\[bot\])?$`)
	teamName     = regexp.MustCompile(`^@?(?:[A-Za-z0-9][A-Za-z0-9-]*/)?[A-Za-z0-9][A-Za-z0-9_.-]*$`)
	// toolName is a Claude Code tool, optionally with a specifier
	// ("Bash(go test:*)"); no comma, since the list is passed comma-joined.
	toolName = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_-]*(?:\([^(),\n]+\))?$`)
)

// ParseSettings parses a settings file strictly: unknown keys, wrong types
// and bad values are all reported in one *SettingsError. Keys left out keep
// their defaults; an empty file is all defaults.
func ParseSettings(data []byte) (Settings, error) {
	s := DefaultSettings()
	raw, empty, problem := settingsKeysOf(data)
	switch {
	case problem != "":
		return Settings{}, &SettingsError{Path: SettingsPath, Problems: []string{problem}}
	case empty:
		return s, nil
	}
	sp := settingsParser{raw: raw, problems: unknownKeys(raw)}
	sp.fields(&s)
	if len(sp.problems) > 0 {
		return Settings{}, &SettingsError{Path: SettingsPath, Problems: sp.problems}
	}
	return s, nil
}

// settingsKeysOf decodes the file into its top-level keys; empty for a file
// with nothing in it, problem when it is not a YAML mapping.
func settingsKeysOf(data []byte) (raw map[string]json.RawMessage, empty bool, problem string) {
	if len(data) > maxSettingsBytes {
		return nil, false, fmt.Sprintf("file is %d bytes, more than the %d allowed", len(data), maxSettingsBytes)
	}
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, true, ""
	}
	js, err := yaml.YAMLToJSONStrict(data)
	if err != nil {
		return nil, false, "not valid YAML: " + strings.TrimPrefix(err.Error(), "yaml: ")
	}
	if bytes.Equal(bytes.TrimSpace(js), []byte("null")) {
		return nil, true, ""
	}
	if err := json.Unmarshal(js, &raw); err != nil {
		return nil, false, "the file must be a mapping of keys to values, such as `trigger_label: agent-task`"
	}
	return raw, false, ""
}

// unknownKeys names, in order, the keys agentbot does not know, with the
// nearest known one.
func unknownKeys(raw map[string]json.RawMessage) []string {
	keys := make([]string, 0, len(raw))
	for k := range raw {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var problems []string
	for _, k := range keys {
		if !slices.Contains(settingsKeys, k) {
			msg := fmt.Sprintf("unknown key %q", k)
			if near := nearestKey(k); near != "" {
				msg += fmt.Sprintf(" (did you mean %q?)", near)
			}
			problems = append(problems, msg+"; known keys are "+strings.Join(settingsKeys, ", "))
		}
	}
	return problems
}

// settingsParser checks one settings file's values, collecting every
// problem rather than stopping at the first.
type settingsParser struct {
	raw      map[string]json.RawMessage
	problems []string
}

func (p *settingsParser) problem(format string, args ...any) {
	p.problems = append(p.problems, fmt.Sprintf(format, args...))
}

// fields sets each key the file has on s.
func (p *settingsParser) fields(s *Settings) {
	p.str("trigger_label", &s.TriggerLabel, nil, "a label name", false)
	if len(s.TriggerLabel) > 50 {
		p.problem("trigger_label %q is longer than GitHub's 50-character label limit", s.TriggerLabel)
	}
	p.str("branch_prefix", &s.BranchPrefix, nil, "", false)
	if err := checkBranchPrefix(s.BranchPrefix); err != "" {
		p.problem("branch_prefix %q %s", s.BranchPrefix, err)
	}
	p.str("template", &s.Template, templateName, "a template name (letters, digits, . _ -)", false)
	p.str("agent", &s.Agent, agentName, "an agent name such as claude", false)
	p.str("model", &s.Model, modelName, "a model name", true)
	if v, ok := p.raw["time_limit"]; ok {
		var x string
		if err := json.Unmarshal(v, &x); err != nil {
			p.problem("time_limit must be a duration such as 30m or 1h30m")
		} else if d, err := time.ParseDuration(x); err != nil || d < time.Minute || d > MaxTimeLimit {
			p.problem("time_limit %q must be a duration between 1m and %s, such as 30m", x, MaxTimeLimit)
		} else {
			s.TimeLimit = d
		}
	}
	if v, ok := p.raw["draft_pr"]; ok {
		if err := json.Unmarshal(v, &s.DraftPR); err != nil {
			p.problem("draft_pr must be true or false")
		}
	}
	p.list("allowed_users", &s.AllowedUsers, loginName.MatchString, "a GitHub login")
	p.list("allowed_teams", &s.AllowedTeams, teamName.MatchString, "a team such as my-org/my-team")
	// A repository's protected paths add to the defaults: a settings file
	// can protect more, never less (the operator's floor is added again
	// at push time).
	var protected []string
	p.list("protected_paths", &protected, func(x string) bool { return bundle.ValidPattern(x) == nil }, "a path pattern such as .github/workflows/**")
	s.ProtectedPaths = MergePaths(s.ProtectedPaths, protected)
	p.str("assignee", &s.Assignee, loginName, "a GitHub login", true)
	s.Assignee = strings.TrimPrefix(s.Assignee, "@")
	p.list("egress", &s.Egress, func(x string) bool { _, err := gateway.ParseRule(x); return err == nil }, "a host such as registry.npmjs.org, *.example.com or pypi.org:443")
	if v, ok := p.raw["max_cost_usd"]; ok {
		if err := json.Unmarshal(v, &s.MaxCostUSD); err != nil || s.MaxCostUSD <= 0 || s.MaxCostUSD > 1e6 {
			p.problem("max_cost_usd must be a positive dollar figure such as 2.50")
			s.MaxCostUSD = 0
		}
	}
	if v, ok := p.raw["permission_mode"]; ok {
		if err := json.Unmarshal(v, &s.PermissionMode); err != nil || PermissionModeRank(s.PermissionMode) < 0 {
			p.problem("permission_mode must be one of %s", strings.Join(PermissionModes, ", "))
			s.PermissionMode = ""
		}
	}
	p.list("allowed_tools", &s.AllowedTools, func(x string) bool { return len(x) <= 100 && toolName.MatchString(x) }, "a Claude Code tool such as Edit or Bash(go test:*)")
	if v, ok := p.raw["max_turns"]; ok {
		if err := json.Unmarshal(v, &s.MaxTurns); err != nil || s.MaxTurns < 0 || s.MaxTurns > 10000 {
			p.problem("max_turns must be a whole number between 0 and 10000")
		}
	}
}

// PermissionModes are Claude Code's permission modes, widest first:
// bypassPermissions runs every tool without asking, acceptEdits asks before
// commands, default and dontAsk refuse what was not allowed (in print mode
// nobody answers a prompt), plan only reads.
var PermissionModes = []string{"bypassPermissions", "acceptEdits", "default", "dontAsk", "plan"}

// PermissionModeRank is mode's place in PermissionModes (0 = widest), the
// widest for "" (Claude Code's mode in agentbot when none is set), and -1
// for a mode agentbot does not know.
func PermissionModeRank(mode string) int {
	if mode == "" {
		return 0
	}
	return slices.Index(PermissionModes, mode)
}

// MergePaths is every pattern of the lists, each once, in first-seen order.
func MergePaths(lists ...[]string) []string {
	var out []string
	for _, l := range lists {
		for _, p := range l {
			if !slices.Contains(out, p) {
				out = append(out, p)
			}
		}
	}
	return out
}

// str sets *dst from a string key matching re (any string when re is nil).
func (p *settingsParser) str(key string, dst *string, re *regexp.Regexp, what string, allowEmpty bool) {
	v, ok := p.raw[key]
	if !ok {
		return
	}
	var x string
	if err := json.Unmarshal(v, &x); err != nil {
		p.problem("%s must be a string", key)
		return
	}
	if x == "" && allowEmpty {
		*dst = ""
		return
	}
	if x == "" || (re != nil && !re.MatchString(x)) || len(x) > 100 {
		p.problem("%s %q is not %s", key, x, what)
		return
	}
	*dst = x
}

// list sets *dst from a list-of-strings key whose every item passes check.
func (p *settingsParser) list(key string, dst *[]string, check func(string) bool, what string) {
	v, ok := p.raw[key]
	if !ok {
		return
	}
	var x []string
	if err := json.Unmarshal(v, &x); err != nil {
		p.problem("%s must be a list of strings", key)
		return
	}
	for _, item := range x {
		if !check(item) {
			p.problem("%s: %q is not %s", key, item, what)
			return
		}
	}
	if x == nil {
		x = []string{}
	}
	*dst = x
}

// checkBranchPrefix returns why prefix cannot begin a git branch name, or "".
func checkBranchPrefix(p string) string {
	switch {
	case p == "":
		return "must not be empty"
	case strings.HasPrefix(p, "/") || strings.HasPrefix(p, "-") || strings.HasPrefix(p, "."):
		return "must not start with /, - or ."
	case strings.Contains(p, "..") || strings.Contains(p, "//") || strings.Contains(p, "@{") || strings.Contains(p, "/."):
		return "contains .., //, /. or @{"
	case strings.ContainsAny(p, " ~^:?*[\\\t\n"):
		return "contains a character git forbids in branch names"
	case len(p) > 100:
		return "is longer than 100 characters"
	}
	return ""
}

// nearestKey suggests a known key within edit distance 3.
func nearestKey(k string) string {
	best, bestD := "", 4
	for _, known := range settingsKeys {
		if d := editDistance(strings.ToLower(strings.ReplaceAll(k, "-", "_")), known); d < bestD {
			best, bestD = known, d
		}
	}
	return best
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// Settings reads and parses SettingsPath from repo's default branch. A
// missing file gives DefaultSettings; a bad one a *SettingsError.
func (c *Client) Settings(ctx context.Context, installationID int64, repo agentbot.Repo) (Settings, error) {
	if err := checkRepo(repo); err != nil {
		return Settings{}, err
	}
	// Without a ref the contents API reads the default branch — never a
	// pull request's — in one call instead of two.
	var file gh.RepositoryContent
	path := repoPath(repo) + "/contents/" + SettingsPath
	if _, err := c.call(ctx, installationID, epContents, path, nil, &file); err != nil {
		if IsNotFound(err) {
			return DefaultSettings(), nil
		}
		return Settings{}, fmt.Errorf("github: settings of %s: %w", repo, err)
	}
	if file.GetType() != "file" {
		return Settings{}, &SettingsError{Path: SettingsPath, Problems: []string{fmt.Sprintf("is a %s, not a file", file.GetType())}}
	}
	if file.GetSize() > maxSettingsBytes || file.GetEncoding() != "base64" {
		return Settings{}, &SettingsError{Path: SettingsPath, Problems: []string{fmt.Sprintf("file is %d bytes, more than the %d allowed", file.GetSize(), maxSettingsBytes)}}
	}
	content, err := file.GetContent()
	if err != nil {
		return Settings{}, fmt.Errorf("github: settings of %s: content is not base64: %w", repo, err)
	}
	return ParseSettings([]byte(content))
}
