package bundle

import (
	"errors"
	"fmt"
	"path"
	"strings"
)

// Protected paths are the patterns of Settings.ProtectedPaths ("dir/**",
// "*.pem", ".github/workflows"): no commit of a bundle may change a file
// under one, nor put a symlink or submodule where a protected directory
// would be.

// checkProtected reads `git log --raw -z` and refuses an entry under a
// protected pattern, and a symlink or submodule (gitlink) whose path is a
// directory an anchored pattern covers something in.
func checkProtected(raw string, patterns []string) error {
	fields := strings.Split(raw, "\x00")
	for i := 0; i < len(fields); i++ {
		meta := strings.TrimLeft(fields[i], "\n")
		if !strings.HasPrefix(meta, ":") || i+1 >= len(fields) {
			continue
		}
		i++
		p := fields[i]
		// ":oldmode newmode oldsha newsha status"
		modes := strings.Fields(meta)
		newMode := ""
		if len(modes) >= 2 {
			newMode = modes[1]
		}
		for _, pat := range patterns {
			if matchPath(pat, p) {
				return &Rejected{Reason: fmt.Sprintf("a commit changes %s, which is protected (%s)", p, pat), Protected: true}
			}
			if (newMode == "120000" || newMode == "160000") && coversBelow(pat, p) {
				kind := "symlink"
				if newMode == "160000" {
					kind = "submodule"
				}
				return &Rejected{Reason: fmt.Sprintf("a commit makes %s a %s, where protected paths (%s) would be", p, kind, pat), Protected: true}
			}
		}
	}
	return nil
}

// coversBelow reports whether an anchored pattern can match a path strictly
// inside directory p (".github/workflows/**" covers something in ".github").
func coversBelow(pattern, p string) bool {
	pattern = strings.TrimPrefix(pattern, "/")
	if !strings.Contains(strings.TrimSuffix(pattern, "/"), "/") {
		return false
	}
	return coversSegs(strings.Split(strings.TrimSuffix(pattern, "/"), "/"), strings.Split(strings.ToLower(p), "/"))
}

func coversSegs(pat, segs []string) bool {
	if len(pat) == 0 {
		// p is the pattern's own directory, which covers what is inside.
		return len(segs) == 0
	}
	if len(segs) == 0 || pat[0] == "**" {
		return true
	}
	if ok, _ := path.Match(strings.ToLower(pat[0]), segs[0]); !ok {
		return false
	}
	return coversSegs(pat[1:], segs[1:])
}

// ValidPattern checks a protected-path pattern (settings refuse a bad one
// when they are read, before any bundle is checked against it).
func ValidPattern(p string) error {
	if strings.TrimSpace(p) == "" {
		return errors.New("empty protected path pattern")
	}
	for _, seg := range strings.Split(strings.Trim(p, "/"), "/") {
		if seg == "" || seg == ".." || seg == "." {
			return fmt.Errorf("protected path pattern %q has an empty, . or .. segment", p)
		}
		if _, err := path.Match(seg, ""); err != nil {
			return fmt.Errorf("protected path pattern %q: %w", p, err)
		}
	}
	return nil
}

// matchPath reports whether file path p falls under pattern. A pattern
// without a slash matches a file or directory name at any depth ("*.pem",
// "secrets"); otherwise it is anchored at the root, "**" spans any number
// of directories, and a pattern naming a directory covers what is inside
// (".github/workflows" protects ".github/workflows/ci.yml"). Matching
// ignores case.
func matchPath(pattern, p string) bool {
	// Case is folded: a checkout on a case-insensitive file system puts
	// ".GitHub/Workflows/x.yml" where ".github/workflows/x.yml" would be.
	pattern = strings.ToLower(strings.TrimPrefix(pattern, "/"))
	p = strings.ToLower(p)
	if strings.HasSuffix(pattern, "/") {
		pattern += "**"
	}
	segs := strings.Split(p, "/")
	if !strings.Contains(pattern, "/") && pattern != "**" {
		for _, s := range segs {
			if ok, _ := path.Match(pattern, s); ok {
				return true
			}
		}
		return false
	}
	return matchSegs(strings.Split(pattern, "/"), segs)
}

// matchSegs matches pattern segments against a prefix of path segments (a
// matched directory covers its contents).
func matchSegs(pat, segs []string) bool {
	if len(pat) == 0 {
		return true
	}
	if pat[0] == "**" {
		for i := 0; i <= len(segs); i++ {
			if matchSegs(pat[1:], segs[i:]) {
				return true
			}
		}
		return false
	}
	if len(segs) == 0 {
		return false
	}
	if ok, _ := path.Match(pat[0], segs[0]); !ok {
		return false
	}
	return matchSegs(pat[1:], segs[1:])
}
