package doctor

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/agentbot/agentbot/github"
)

// NeededPermissions are what agentbot asks of every installation
// (app-manifest.yml's default_permissions), NeededEvents the events it
// acts on.
var (
	NeededPermissions = map[string]string{
		"contents": "write", "issues": "write", "pull_requests": "write", "checks": "write", "metadata": "read",
	}
	NeededEvents = []string{"check_run", "issue_comment", "issues"}
)

// GitHub is what the GitHub checks read (github.Client).
type GitHub interface {
	GetApp(ctx context.Context) (github.App, error)
	ListInstallations(ctx context.Context, maxPages int) ([]github.Installation, error)
	ListHookDeliveries(ctx context.Context, since time.Time, maxPages int) ([]github.HookDelivery, bool, error)
}

// GitHubChecks are: the App's JWT accepted (cheap), each installation's
// permissions and events, and the delivery log's failures of the last day.
func GitHubChecks(gh GitHub, appID int64) []Check {
	return []Check{
		{Name: "github app", Cheap: true, Run: func(ctx context.Context) (string, error) {
			a, err := gh.GetApp(ctx)
			if err != nil {
				return "", problem(fmt.Sprintf("check AGENTBOT_GITHUB_URL, that AGENTBOT_APP_ID (%d) is the App's id and that the private key is the App's current one (GitHub → App settings → Private keys)", appID),
					"GitHub did not accept the App: %v", err)
			}
			return fmt.Sprintf("%s (%s)", a.Slug, a.HTMLURL), nil
		}},
		{Name: "github installations", Run: func(ctx context.Context) (string, error) {
			ins, err := gh.ListInstallations(ctx, 10)
			if err != nil {
				return "", err
			}
			if len(ins) == 0 {
				return "", problem("install the App on an account or organization (GitHub → App settings → Install App)", "the App has no installations")
			}
			var bad []string
			for _, in := range ins {
				if miss := missing(in); miss != "" {
					bad = append(bad, fmt.Sprintf("%s (installation %d) lacks %s", in.Account, in.ID, miss))
				}
			}
			if len(bad) > 0 {
				return "", problem("grant them in the App's settings (Permissions & events), then have each owner accept the new permissions on the installation page",
					"%s", strings.Join(bad, "; "))
			}
			return fmt.Sprintf("%d, each grants what agentbot needs", len(ins)), nil
		}},
		{Name: "github recent deliveries", Run: func(ctx context.Context) (string, error) {
			log, _, err := gh.ListHookDeliveries(ctx, time.Now().Add(-24*time.Hour), 5)
			if err != nil {
				return "", err
			}
			failed := map[int]int{}
			n := 0
			for _, d := range log {
				if d.Failed() {
					failed[d.StatusCode]++
					n++
				}
			}
			if n > 0 {
				var parts []string
				for code, c := range failed {
					parts = append(parts, fmt.Sprintf("%d answered %s", c, statusText(code)))
				}
				slices.Sort(parts)
				return "", problem("see the webhook's Recent Deliveries in the App's settings; check that the webhook URL reaches agentbot's /webhook and that the secret matches AGENTBOT_WEBHOOK_SECRET_FILE (serve redelivers what it missed once it is reachable)",
					"%d of %d deliveries in the last day failed: %s", n, len(log), strings.Join(parts, ", "))
			}
			return fmt.Sprintf("%d in the last day, none failed", len(log)), nil
		}},
	}
}

func statusText(code int) string {
	if code == 0 {
		return "nothing (no connection)"
	}
	return fmt.Sprint(code)
}

// missing names the permissions and events an installation lacks.
func missing(in github.Installation) string {
	var out []string
	for name, level := range NeededPermissions {
		if rank(in.Permissions[name]) < rank(level) {
			out = append(out, fmt.Sprintf("%s:%s", name, level))
		}
	}
	for _, ev := range NeededEvents {
		if !slices.Contains(in.Events, ev) {
			out = append(out, "event "+ev)
		}
	}
	slices.Sort(out)
	return strings.Join(out, ", ")
}

func rank(level string) int {
	switch level {
	case "read":
		return 1
	case "write":
		return 2
	case "admin":
		return 3
	}
	return 0
}
