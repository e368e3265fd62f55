package bundle

import "testing"

func TestMatchPath(t *testing.T) {
	tests := []struct {
		pattern, path string
		want          bool
	}{
		{".github/workflows/**", ".github/workflows/ci.yml", true},
		{".github/workflows/**", ".github/workflows/sub/ci.yml", true},
		{".github/workflows/**", ".github/dependabot.yml", false},
		{".github/workflows/**", "x/.github/workflows/ci.yml", false},
		{".github/workflows", ".github/workflows/ci.yml", true},
		{".github/workflows/", ".github/workflows/ci.yml", true},
		{"/.github/workflows/*.yml", ".github/workflows/ci.yml", true},
		{"*.pem", "a/b/key.pem", true},
		{"*.pem", "a/b/key.pem.txt", false},
		{"secrets", "config/secrets/db.txt", true},
		{"**/secrets/*", "a/b/secrets/x", true},
		{"docs/**/*.md", "docs/a/b/c.md", true},
		{"docs/**/*.md", "docs/c.md", true},
		{"docs/**/*.md", "src/c.md", false},
		{"**", "anything/at/all", true},
		{".github/workflows/**", ".GITHUB/workflows/ci.yml", true},
	}
	for _, tc := range tests {
		t.Run(tc.pattern+" "+tc.path, func(t *testing.T) {
			if got := matchPath(tc.pattern, tc.path); got != tc.want {
				t.Fatalf("matchPath(%q, %q) = %v", tc.pattern, tc.path, got)
			}
		})
	}
}

func TestCoversBelow(t *testing.T) {
	tests := []struct {
		pattern, dir string
		want         bool
	}{
		{".github/workflows/**", ".github", true},
		{".github/workflows/**", ".GitHub", true},
		{".github/workflows", ".github/workflows", true},
		{".github/workflows/**", ".github/workflows", true},
		{".github/workflows/**", "docs", false},
		{".github/workflows/**", ".github/ISSUE_TEMPLATE", false},
		{"deploy/keys/*.pem", "deploy", true},
		{"*.pem", "certs", false},
		{"secrets", "secrets", false},
	}
	for _, tc := range tests {
		t.Run(tc.pattern+" "+tc.dir, func(t *testing.T) {
			if got := coversBelow(tc.pattern, tc.dir); got != tc.want {
				t.Fatalf("coversBelow(%q, %q) = %v", tc.pattern, tc.dir, got)
			}
		})
	}
}
