// Package doctor checks that agentbot can do its job where it runs: its
// settings and secret files, GitHub (reachable, the App's JWT accepted,
// what each installation grants, recent delivery failures) and the
// launcher (the local one's git, sandbox, agent CLI and cgroups; the
// Kubernetes one's namespace, CRDs, warm pool, template and permissions).
// Each check says ok or names the problem and its fix. `agentbot doctor`
// runs them all; serve runs the cheap ones at start for /readyz?verbose.
package doctor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"
)

// Problem is a check's failure: what is wrong and what to do about it.
type Problem struct {
	What, Fix string
}

func (p *Problem) Error() string { return p.What }

// problem makes a *Problem.
func problem(fix, format string, args ...any) error {
	return &Problem{What: fmt.Sprintf(format, args...), Fix: fix}
}

// Check is one thing to verify. Run returns what it found (for ok) or an
// error, a *Problem when the fix is known.
type Check struct {
	Name string
	// Cheap checks make no request beyond the local host and GitHub's
	// one GET /app; serve runs them at start.
	Cheap bool
	Run   func(ctx context.Context) (string, error)
}

// Result is a check's outcome.
type Result struct {
	Name   string `json:"name"`
	OK     bool   `json:"ok"`
	Detail string `json:"detail,omitempty"`
	Fix    string `json:"fix,omitempty"`
}

// Run runs checks in order, each within timeout.
func Run(ctx context.Context, checks []Check, timeout time.Duration) []Result {
	out := make([]Result, 0, len(checks))
	for _, c := range checks {
		cctx, cancel := context.WithTimeout(ctx, timeout)
		detail, err := c.Run(cctx)
		cancel()
		r := Result{Name: c.Name, OK: err == nil, Detail: detail}
		if err != nil {
			r.Detail = err.Error()
			var p *Problem
			if errors.As(err, &p) {
				r.Fix = p.Fix
			}
		}
		out = append(out, r)
	}
	return out
}

// Cheap keeps the cheap checks.
func Cheap(checks []Check) []Check {
	var out []Check
	for _, c := range checks {
		if c.Cheap {
			out = append(out, c)
		}
	}
	return out
}

// Print writes one line per result ("ok" or "problem", then the fix on the
// next line) and returns how many are problems.
func Print(w io.Writer, results []Result) int {
	bad := 0
	for _, r := range results {
		if r.OK {
			fmt.Fprintf(w, "ok       %s", r.Name)
			if r.Detail != "" {
				fmt.Fprintf(w, ": %s", r.Detail)
			}
			fmt.Fprintln(w)
			continue
		}
		bad++
		fmt.Fprintf(w, "problem  %s: %s\n", r.Name, r.Detail)
		if r.Fix != "" {
			fmt.Fprintf(w, "         fix: %s\n", r.Fix)
		}
	}
	return bad
}

// File checks that a setting's file is readable and not empty (the
// content is never shown: these are secrets).
func File(setting, path string) Check {
	return Check{Name: "file " + setting, Cheap: true, Run: func(context.Context) (string, error) {
		if path == "" {
			return "", problem("set "+setting+" to the file's path", "%s is not set", setting)
		}
		b, err := os.ReadFile(path)
		switch {
		case err != nil:
			return "", problem("make "+path+" readable by the user agentbot runs as", "%s: %v", setting, err)
		case len(strings.TrimSpace(string(b))) == 0:
			return "", problem("write the value into "+path, "%s: %s is empty", setting, path)
		}
		return path, nil
	}}
}
