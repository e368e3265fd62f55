package agentbot

import (
	"strings"
	"testing"
)

func TestCheckTaskID(t *testing.T) {
	tests := []struct {
		name string
		id   string
		ok   bool
	}{
		{"store id", "20240101T000000-0001", true},
		{"dots and dashes", "a.b_c-d", true},
		{"empty", "", false},
		{"leading dot", ".hidden", false},
		{"parent", "..", false},
		{"double dot inside", "a..b", false},
		{"slash", "a/b", false},
		{"backslash", `a\b`, false},
		{"nul", "a\x00b", false},
		{"too long", strings.Repeat("a", 129), false},
		{"128 characters", "a" + strings.Repeat("b", 127), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := CheckTaskID(tt.id); (err == nil) != tt.ok {
				t.Errorf("CheckTaskID(%q) = %v, want ok=%v", tt.id, err, tt.ok)
			}
		})
	}
}

func TestIsBot(t *testing.T) {
	tests := []struct {
		name, login, typ string
		want             bool
	}{
		{"user", "octocat", "User", false},
		{"user without type", "octocat", "", false},
		{"app login", "agentbot[bot]", "", true},
		{"app login any case", "AgentBot[BOT]", "User", true},
		{"bot type", "dependabot", "Bot", true},
		{"bot type any case", "renovate", "bot", true},
		{"bot in the middle", "bot[bot]x", "User", false},
		{"login named bot", "bot", "User", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := IsBot(tt.login, tt.typ); got != tt.want {
				t.Errorf("IsBot(%q, %q) = %v, want %v", tt.login, tt.typ, got, tt.want)
			}
		})
	}
}
