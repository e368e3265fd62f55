package githubtest

import (
	"net/http"
	"slices"
	"strings"
)

// DefaultEvents are the webhook events an installation subscribes to
// unless SetInstallationEvents says otherwise (app-manifest.yml's).
func DefaultEvents() []string {
	return []string{"check_run", "issue_comment", "issues", "pull_request"}
}

// appMeta is what GET /app and GET /app/installations tell beyond the
// installations' permissions.
type appMeta struct {
	events map[int64][]string // installation → events, when set
}

// SetInstallationEvents replaces the events installation id subscribes to.
func (s *Server) SetInstallationEvents(id int64, events ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.installations[id] == nil {
		s.t.Fatalf("githubtest: no installation %d", id)
	}
	if s.app.events == nil {
		s.app.events = map[int64][]string{}
	}
	s.app.events[id] = slices.Clone(events)
}

func (s *Server) eventsOf(id int64) []string {
	if ev, ok := s.app.events[id]; ok {
		return slices.Clone(ev)
	}
	return DefaultEvents()
}

// getApp answers GET /app: the App the JWT names, with the manifest's
// default permissions and events.
func (s *Server) getApp(q *req) {
	out := s.appJSON()
	out["slug"], out["name"] = s.AppSlug, s.AppSlug
	out["html_url"] = HTMLBase + "/apps/" + s.AppSlug
	out["permissions"] = DefaultInstallationPermissions()
	out["events"] = DefaultEvents()
	writeJSON(q.w, http.StatusOK, out)
}

// listInstallations answers GET /app/installations in installation id
// order, paged like every list.
func (s *Server) listInstallations(q *req) {
	ids := make([]int64, 0, len(s.installations))
	for id := range s.installations {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	items := make([]any, 0, len(ids))
	for _, id := range ids {
		in := s.installations[id]
		account := "acme"
		if len(in.repos) > 0 {
			account, _, _ = strings.Cut(in.repos[0], "/")
		}
		items = append(items, map[string]any{
			"id": id, "app_id": s.AppID, "account": userJSON(account),
			"permissions": copyMap(in.perms), "events": s.eventsOf(id),
			"repository_selection": "selected",
		})
	}
	q.page(items, nil)
}
