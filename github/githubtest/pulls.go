package githubtest

// Pull requests and their reviews, as the fake serves them.

import (
	"fmt"
	"net/http"
	"os/exec"
	"slices"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"
)

func (s *Server) prJSON(rp *repo, pr *PullRequest) map[string]any {
	head := rp.branchHead(pr.Head)
	if head == "" || pr.State != "open" {
		head = pr.HeadSHA
	}
	var reviewers []map[string]any
	for _, r := range pr.Reviewers {
		reviewers = append(reviewers, userJSON(r))
	}
	return map[string]any{
		"id": pr.Number, "number": pr.Number, "state": pr.State, "title": pr.Title, "body": pr.Body, "draft": pr.Draft,
		"url":                 fmt.Sprintf("%srepos/%s/pulls/%d", s.URL, rp.ref.FullName(), pr.Number),
		"html_url":            fmt.Sprintf("%s/%s/pull/%d", HTMLBase, rp.ref.FullName(), pr.Number),
		"user":                userJSON(pr.Author),
		"head":                map[string]any{"ref": pr.Head, "sha": head, "label": rp.ref.Owner + ":" + pr.Head, "repo": s.repoJSON(rp)},
		"base":                map[string]any{"ref": pr.Base, "sha": rp.branchHead(pr.Base), "repo": s.repoJSON(rp)},
		"requested_reviewers": reviewers,
	}
}

func (s *Server) prOf(q *req) (*PullRequest, bool) {
	n, ok := q.intParam("number")
	if !ok {
		return nil, false
	}
	pr := q.repo.prs[int(n)]
	if pr == nil {
		writeError(q.w, http.StatusNotFound, "Not Found")
		return nil, false
	}
	return pr, true
}

func (s *Server) getPull(q *req) {
	if pr, ok := s.prOf(q); ok {
		writeJSON(q.w, http.StatusOK, s.prJSON(q.repo, pr))
	}
}

func (s *Server) listPulls(q *req) {
	query := q.r.URL.Query()
	state := query.Get("state")
	if state == "" {
		state = "open"
	}
	head := query.Get("head")
	if head != "" {
		owner, branch, ok := strings.Cut(head, ":")
		if !ok || owner != q.repo.ref.Owner {
			writeJSON(q.w, http.StatusOK, []any{})
			return
		}
		head = branch
	}
	var nums []int
	for n, pr := range q.repo.prs {
		if (state == "all" || pr.State == state) && (head == "" || pr.Head == head) && (query.Get("base") == "" || pr.Base == query.Get("base")) {
			nums = append(nums, n)
		}
	}
	sort.Sort(sort.Reverse(sort.IntSlice(nums)))
	out := []any{}
	for _, n := range nums {
		out = append(out, s.prJSON(q.repo, q.repo.prs[n]))
	}
	writeJSON(q.w, http.StatusOK, out)
}

func (s *Server) createPull(q *req) {
	var body struct {
		Title               *string `json:"title"`
		Head                string  `json:"head"`
		Base                string  `json:"base"`
		Body                string  `json:"body"`
		Draft               bool    `json:"draft"`
		MaintainerCanModify *bool   `json:"maintainer_can_modify"`
	}
	if !q.decodeStrict(&body) {
		return
	}
	rp := q.repo
	if body.Title == nil || strings.TrimSpace(*body.Title) == "" {
		validationError(q.w, "Validation Failed", map[string]string{"resource": "PullRequest", "field": "title", "code": "missing_field"})
		return
	}
	if utf8.RuneCountInString(body.Body) > maxBody {
		validationError(q.w, "Validation Failed", map[string]string{"resource": "PullRequest", "field": "body", "code": "custom", "message": "body is too long (maximum is 65536 characters)"})
		return
	}
	head := body.Head
	if owner, branch, ok := strings.Cut(head, ":"); ok {
		if owner != rp.ref.Owner {
			validationError(q.w, "Validation Failed", map[string]string{"resource": "PullRequest", "field": "head", "code": "invalid"})
			return
		}
		head = branch
	}
	if rp.branchHead(body.Base) == "" {
		validationError(q.w, "Validation Failed", map[string]string{"resource": "PullRequest", "field": "base", "code": "invalid"})
		return
	}
	headSHA := rp.branchHead(head)
	if headSHA == "" {
		validationError(q.w, "Validation Failed", map[string]string{"resource": "PullRequest", "field": "head", "code": "invalid"})
		return
	}
	out, err := exec.Command("git", "--git-dir", rp.bare(), "rev-list", "--count", "refs/heads/"+body.Base+"..refs/heads/"+head).Output()
	if n, _ := strconv.Atoi(strings.TrimSpace(string(out))); err != nil || n == 0 {
		validationError(q.w, "Validation Failed", map[string]string{"resource": "PullRequest", "code": "custom",
			"message": fmt.Sprintf("No commits between %s and %s", body.Base, head)})
		return
	}
	for _, pr := range rp.prs {
		if pr.State == "open" && pr.Head == head {
			validationError(q.w, "Validation Failed", map[string]string{"resource": "PullRequest", "code": "custom",
				"message": fmt.Sprintf("A pull request already exists for %s:%s.", rp.ref.Owner, head)})
			return
		}
	}
	pr := &PullRequest{Title: *body.Title, Body: body.Body, Head: head, Base: body.Base, HeadSHA: headSHA, Draft: body.Draft, State: "open", Author: BotLogin}
	rp.addPR(pr)
	writeJSON(q.w, http.StatusCreated, s.prJSON(rp, pr))
}

func (s *Server) requestReviewers(q *req) {
	pr, ok := s.prOf(q)
	if !ok {
		return
	}
	var body struct {
		Reviewers     []string `json:"reviewers"`
		TeamReviewers []string `json:"team_reviewers"`
	}
	if !q.decodeStrict(&body) {
		return
	}
	for _, r := range body.Reviewers {
		if r == pr.Author {
			validationError(q.w, "Review cannot be requested from pull request author.")
			return
		}
		if lvl, ok := q.repo.perms[r]; !ok || lvl == "none" {
			validationError(q.w, fmt.Sprintf("Reviews may only be requested from collaborators. One or more of the users or teams you specified is not a collaborator of the %s repository.", q.repo.ref.FullName()))
			return
		}
	}
	for _, r := range body.Reviewers {
		if !slices.Contains(pr.Reviewers, r) {
			pr.Reviewers = append(pr.Reviewers, r)
		}
	}
	writeJSON(q.w, http.StatusCreated, s.prJSON(q.repo, pr))
}

func (s *Server) listReviews(q *req) {
	pr, ok := s.prOf(q)
	if !ok {
		return
	}
	out := []any{}
	for i, rv := range q.repo.reviews[pr.Number] {
		u := userJSON(rv.User)
		if rv.Bot {
			u["type"] = "Bot"
		}
		id := rv.ID
		if id == 0 {
			id = int64(i + 1)
		}
		out = append(out, map[string]any{"id": id, "user": u, "state": rv.State, "body": rv.Body})
	}
	writeJSON(q.w, http.StatusOK, out)
}

func (s *Server) listReviewComments(q *req) {
	pr, ok := s.prOf(q)
	if !ok {
		return
	}
	out := []any{}
	for i, c := range q.repo.reviewCmts[pr.Number] {
		if c.ID == 0 {
			c.ID = int64(i + 1)
		}
		out = append(out, reviewCommentJSON(c))
	}
	writeJSON(q.w, http.StatusOK, out)
}
