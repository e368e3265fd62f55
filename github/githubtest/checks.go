package githubtest

// Check runs, as the fake serves them.

import (
	"fmt"
	"net/http"
	"net/url"
	"os/exec"
	"strconv"
	"unicode/utf8"
)

type checkRunRequest struct {
	Name        *string `json:"name"`
	HeadSHA     *string `json:"head_sha"`
	Status      *string `json:"status"`
	Conclusion  *string `json:"conclusion"`
	DetailsURL  *string `json:"details_url"`
	ExternalID  *string `json:"external_id"`
	StartedAt   *string `json:"started_at"`
	CompletedAt *string `json:"completed_at"`
	Output      *struct {
		Title   *string `json:"title"`
		Summary *string `json:"summary"`
		Text    *string `json:"text"`
	} `json:"output"`
	Actions *[]Action `json:"actions"`
}

var (
	checkStatuses    = map[string]bool{"queued": true, "in_progress": true, "completed": true}
	checkConclusions = map[string]bool{"action_required": true, "cancelled": true, "failure": true, "neutral": true, "success": true, "skipped": true, "stale": true, "timed_out": true}
)

// applyCheckRun validates body and applies it to cr, answering 422 itself.
func (q *req) applyCheckRun(cr *CheckRun, body *checkRunRequest) bool {
	bad := func(field, msg string) bool {
		validationError(q.w, "Invalid request.\n\n"+msg, map[string]string{"resource": "CheckRun", "field": field, "code": "invalid"})
		return false
	}
	if body.Status != nil {
		if !checkStatuses[*body.Status] {
			return bad("status", fmt.Sprintf("%q is not a valid status", *body.Status))
		}
		cr.Status = *body.Status
	}
	if body.Conclusion != nil {
		if !checkConclusions[*body.Conclusion] {
			return bad("conclusion", fmt.Sprintf("%q is not a valid conclusion", *body.Conclusion))
		}
		if body.Status != nil && *body.Status != "completed" {
			return bad("conclusion", "a conclusion needs status completed")
		}
		cr.Conclusion, cr.Status = *body.Conclusion, "completed"
	}
	if cr.Status == "completed" && cr.Conclusion == "" {
		return bad("conclusion", "conclusion is required when status is completed")
	}
	if cr.Status != "completed" {
		cr.Conclusion = ""
	}
	if body.DetailsURL != nil {
		if u, err := url.Parse(*body.DetailsURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") {
			return bad("details_url", "details_url is not a URL")
		}
		cr.DetailsURL = *body.DetailsURL
	}
	if body.ExternalID != nil {
		cr.ExternalID = *body.ExternalID
	}
	if o := body.Output; o != nil {
		if o.Title == nil || o.Summary == nil || *o.Summary == "" {
			return bad("output", "output needs a title and a summary")
		}
		for _, s := range []*string{o.Summary, o.Text} {
			if s != nil && utf8.RuneCountInString(*s) > 65535 {
				return bad("output", "output summary and text are limited to 65535 characters")
			}
		}
		cr.Title, cr.Summary, cr.Text = *o.Title, *o.Summary, ""
		if o.Text != nil {
			cr.Text = *o.Text
		}
	}
	if body.Actions != nil {
		if len(*body.Actions) > 3 {
			return bad("actions", "at most 3 actions")
		}
		for _, a := range *body.Actions {
			if a.Label == "" || a.Identifier == "" || a.Description == "" ||
				utf8.RuneCountInString(a.Label) > 20 || utf8.RuneCountInString(a.Description) > 40 || utf8.RuneCountInString(a.Identifier) > 20 {
				return bad("actions", "action label ≤ 20, description ≤ 40, identifier ≤ 20 characters, all required")
			}
		}
		cr.Actions = append([]Action(nil), (*body.Actions)...)
	}
	return true
}

func (s *Server) checkRunJSON(cr *CheckRun) map[string]any {
	var conclusion any
	if cr.Conclusion != "" {
		conclusion = cr.Conclusion
	}
	return map[string]any{
		"id": cr.ID, "name": cr.Name, "head_sha": cr.HeadSHA, "status": cr.Status, "conclusion": conclusion,
		"details_url": cr.DetailsURL, "external_id": cr.ExternalID,
		"output":  map[string]any{"title": cr.Title, "summary": cr.Summary, "text": cr.Text},
		"actions": cr.Actions,
		"app":     s.appJSON(),
	}
}

// listCheckRuns lists the check runs on a commit (a SHA or a branch name),
// newest first, filtered by check_name and app_id as GitHub does.
func (s *Server) listCheckRuns(q *req) {
	query := q.r.URL.Query()
	ref := q.r.PathValue("ref")
	sha := ref
	if len(ref) != 40 {
		sha = q.repo.branchHead(ref)
	}
	if sha == "" {
		validationError(q.w, "No commit found for SHA: "+ref)
		return
	}
	if f := query.Get("filter"); f != "" && f != "latest" && f != "all" {
		validationError(q.w, "Invalid request.\n\nfilter must be latest or all")
		return
	}
	if id := query.Get("app_id"); id != "" && id != strconv.FormatInt(s.AppID, 10) {
		q.page([]any{}, func(p []any) any { return map[string]any{"total_count": 0, "check_runs": p} })
		return
	}
	items := []any{}
	seen := map[string]bool{}
	for i := len(q.repo.checkRuns) - 1; i >= 0; i-- {
		cr := q.repo.checkRuns[i]
		if cr.HeadSHA != sha || (query.Get("check_name") != "" && cr.Name != query.Get("check_name")) {
			continue
		}
		if query.Get("filter") != "all" {
			// "latest": only the newest run of each name.
			if seen[cr.Name] {
				continue
			}
			seen[cr.Name] = true
		}
		items = append(items, s.checkRunJSON(cr))
	}
	total := len(items)
	q.page(items, func(p []any) any { return map[string]any{"total_count": total, "check_runs": p} })
}

func (s *Server) createCheckRun(q *req) {
	var body checkRunRequest
	if !q.decodeStrict(&body) {
		return
	}
	if body.Name == nil || *body.Name == "" || body.HeadSHA == nil {
		validationError(q.w, "Invalid request.\n\nname and head_sha are required")
		return
	}
	if err := exec.Command("git", "--git-dir", q.repo.bare(), "cat-file", "-e", *body.HeadSHA+"^{commit}").Run(); err != nil || len(*body.HeadSHA) != 40 {
		validationError(q.w, "No commit found for SHA: "+*body.HeadSHA)
		return
	}
	cr := &CheckRun{ID: s.newID(), Name: *body.Name, HeadSHA: *body.HeadSHA, Status: "queued"}
	if !q.applyCheckRun(cr, &body) {
		return
	}
	q.repo.checkRuns = append(q.repo.checkRuns, cr)
	writeJSON(q.w, http.StatusCreated, s.checkRunJSON(cr))
}

func (s *Server) updateCheckRun(q *req) {
	id, ok := q.intParam("id")
	if !ok {
		return
	}
	var cr *CheckRun
	for _, c := range q.repo.checkRuns {
		if c.ID == id {
			cr = c
		}
	}
	if cr == nil {
		writeError(q.w, http.StatusNotFound, "Not Found")
		return
	}
	var body checkRunRequest
	if !q.decodeStrict(&body) {
		return
	}
	if body.HeadSHA != nil {
		validationError(q.w, "Invalid request.\n\nhead_sha cannot be changed")
		return
	}
	next := *cr
	if !q.applyCheckRun(&next, &body) {
		return
	}
	if body.Name != nil {
		next.Name = *body.Name
	}
	next.Updates++
	*cr = next
	writeJSON(q.w, http.StatusOK, s.checkRunJSON(cr))
}
