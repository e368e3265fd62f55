package web

import (
	"context"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/agentbot/agentbot"
)

// dashboardRows bounds the recent tasks the dashboard reads.
const dashboardRows = 500

// Counter counts tasks per state across the whole store (state.Store).
type Counter interface {
	CountByState(ctx context.Context) (map[agentbot.TaskState]int, error)
}

// DashboardRow is one task on the dashboard.
type DashboardRow struct {
	TaskSummary
	Title    string  `json:"title,omitempty"`
	IssueURL string  `json:"issue_url,omitempty"`
	Outcome  string  `json:"outcome,omitempty"`
	CostUSD  float64 `json:"cost_usd,omitempty"`
}

// StateCount is one state's number of tasks, with the link filtering it.
type StateCount struct {
	State agentbot.TaskState `json:"state"`
	N     int                `json:"count"`
	Href  string             `json:"-"`
}

type dashboardPage struct {
	Rows   []DashboardRow `json:"tasks"`
	Counts []StateCount   `json:"counts"`
	State  string         `json:"state,omitempty"`
	Repo   string         `json:"repo,omitempty"`
	Repos  []string       `json:"-"`
	Live   bool           `json:"-"`
}

// dashboard is GET /: running and recent tasks, filtered by state and
// repository (query parameters, so it works without JavaScript), the
// counts per state, and a script that refreshes running rows.
func (h *Handler) dashboard(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	page := dashboardPage{State: q.Get("state"), Repo: strings.ToLower(q.Get("repo"))}
	if page.State != "" && !agentbot.TaskState(page.State).Valid() {
		http.Error(w, "unknown state", http.StatusBadRequest)
		return
	}
	tasks, err := h.opts.Store.List(r.Context(), dashboardRows)
	if err != nil {
		h.log.Error("web: list tasks", "err", err)
		http.Error(w, "cannot list tasks", http.StatusInternalServerError)
		return
	}
	repos := map[string]bool{}
	for _, t := range tasks {
		repo := strings.ToLower(t.Ref().Repo.FullName())
		repos[repo] = true
		if (page.State != "" && string(t.State) != page.State) || (page.Repo != "" && repo != page.Repo) {
			continue
		}
		page.Rows = append(page.Rows, h.row(t))
		if t.State == agentbot.StateRunning || t.State == agentbot.StateQueued {
			page.Live = true
		}
	}
	// Running first, then newest first (List's order).
	slices.SortStableFunc(page.Rows, func(a, b DashboardRow) int {
		return boolRank(b.State == agentbot.StateRunning) - boolRank(a.State == agentbot.StateRunning)
	})
	page.Repos = slices.Sorted(func(yield func(string) bool) {
		for r := range repos {
			if !yield(r) {
				return
			}
		}
	})
	if page.Counts, err = h.counts(r.Context(), page.Repo); err != nil {
		h.log.Error("web: count tasks", "err", err)
		http.Error(w, "cannot count tasks", http.StatusInternalServerError)
		return
	}
	if page.Rows == nil {
		page.Rows = []DashboardRow{}
	}
	if wantsJSON(r) {
		writeJSON(w, http.StatusOK, page)
		return
	}
	h.render(w, "dashboard", page)
}

func boolRank(b bool) int {
	if b {
		return 1
	}
	return 0
}

func (h *Handler) counts(ctx context.Context, repo string) ([]StateCount, error) {
	var n map[agentbot.TaskState]int
	if h.opts.Counter != nil {
		var err error
		if n, err = h.opts.Counter.CountByState(ctx); err != nil {
			return nil, err
		}
	}
	out := make([]StateCount, 0, 5)
	for _, st := range []agentbot.TaskState{agentbot.StateRunning, agentbot.StateQueued, agentbot.StateSucceeded, agentbot.StateFailed, agentbot.StateCancelled} {
		v := url.Values{"state": {string(st)}}
		if repo != "" {
			v.Set("repo", repo)
		}
		out = append(out, StateCount{State: st, N: n[st], Href: "/?" + v.Encode()})
	}
	return out, nil
}

func (h *Handler) row(t *agentbot.Task) DashboardRow {
	r := DashboardRow{TaskSummary: h.summary(t), Title: t.Trigger.Prompt.Title, CostUSD: t.Result.CostUSD}
	web := "https://github.com/" + t.Ref().Repo.FullName()
	if u := strings.TrimSuffix(t.Trigger.Repository.CloneURL, ".git"); strings.HasPrefix(u, "https://") {
		web = u
	}
	kind := "issues"
	if t.Trigger.IsPullRequest {
		kind = "pull"
	}
	r.IssueURL = web + "/" + kind + "/" + strconv.Itoa(t.Ref().Number)
	switch {
	case !t.State.Terminal():
	case t.Result.PRURL != "":
		r.Outcome = "pull request"
	case t.Result.NoChanges:
		r.Outcome = "no changes"
	case t.Result.Error != "":
		r.Outcome = t.Result.Error
	default:
		r.Outcome = string(t.State)
	}
	return r
}
