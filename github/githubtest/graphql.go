package githubtest

// Review threads: replies, a review's own comments, and the one GraphQL
// query agentbot makes (whether a thread is resolved).

import (
	"bytes"
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"unicode"

	"github.com/agentbot/agentbot"
)

// ReviewThreadsQuery is the only GraphQL document the fake answers
// (compared with whitespace removed); github.ReviewThreadsQuery must be it.
const ReviewThreadsQuery = `query($owner:String!,$name:String!,$number:Int!){repository(owner:$owner,name:$name){pullRequest(number:$number){reviewThreads(first:100){nodes{isResolved comments(first:100){nodes{databaseId}}}}}}}`

func reviewCommentJSON(c ReviewComment) map[string]any {
	u := userJSON(c.User)
	if c.Bot {
		u["type"] = "Bot"
	}
	m := map[string]any{"id": c.ID, "user": u, "path": c.Path, "line": c.Line, "body": c.Body,
		"side": c.Side, "diff_hunk": c.DiffHunk, "pull_request_review_id": c.ReviewID}
	if c.StartLine > 0 {
		m["start_line"] = c.StartLine
	}
	if c.InReplyTo != 0 {
		m["in_reply_to_id"] = c.InReplyTo
	}
	return m
}

// ResolveThread marks the review thread whose first comment is rootID
// resolved (or open again).
func (s *Server) ResolveThread(ref agentbot.IssueRef, rootID int64, resolved bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.mustRepo(ref.Repo).resolved[rootID] = resolved
}

// ReviewComments returns pull request ref's review comments, replies
// included, oldest first.
func (s *Server) ReviewComments(ref agentbot.IssueRef) []ReviewComment {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.mustRepo(ref.Repo).reviewCmts[ref.Number])
}

// replyReviewComment answers POST .../pulls/{n}/comments/{id}/replies as
// GitHub does: the reply joins the thread of comment id (in_reply_to_id is
// the thread's first comment, even when id is a reply).
func (s *Server) replyReviewComment(q *req) {
	pr, ok := s.prOf(q)
	if !ok {
		return
	}
	id, ok := q.intParam("id")
	if !ok {
		return
	}
	var body struct {
		Body *string `json:"body"`
	}
	if !q.decodeStrict(&body) {
		return
	}
	if body.Body == nil || strings.TrimSpace(*body.Body) == "" || len([]rune(*body.Body)) > maxBody {
		validationError(q.w, "Validation Failed", map[string]string{"resource": "PullRequestReviewComment", "field": "body", "code": "invalid"})
		return
	}
	cmts := q.repo.reviewCmts[pr.Number]
	i := slices.IndexFunc(cmts, func(c ReviewComment) bool { return c.ID == id })
	if i < 0 {
		writeError(q.w, http.StatusNotFound, "Not Found")
		return
	}
	parent := cmts[i]
	root := parent.InReplyTo
	if root == 0 {
		root = parent.ID
	}
	c := ReviewComment{ID: s.newID(), InReplyTo: root, User: BotLogin, Path: parent.Path, Line: parent.Line,
		StartLine: parent.StartLine, Side: parent.Side, DiffHunk: parent.DiffHunk, Body: *body.Body, Bot: true}
	q.repo.reviewCmts[pr.Number] = append(cmts, c)
	writeJSON(q.w, http.StatusCreated, reviewCommentJSON(c))
}

func (s *Server) listReviewOwnComments(q *req) {
	pr, ok := s.prOf(q)
	if !ok {
		return
	}
	id, ok := q.intParam("id")
	if !ok {
		return
	}
	if !slices.ContainsFunc(q.repo.reviews[pr.Number], func(r Review) bool { return r.ID == id }) {
		writeError(q.w, http.StatusNotFound, "Not Found")
		return
	}
	out := []any{}
	for _, c := range q.repo.reviewCmts[pr.Number] {
		if c.ReviewID == id {
			out = append(out, reviewCommentJSON(c))
		}
	}
	writeJSON(q.w, http.StatusOK, out)
}

func stripSpace(s string) string {
	return strings.Map(func(r rune) rune {
		if unicode.IsSpace(r) {
			return -1
		}
		return r
	}, s)
}

// graphql answers ReviewThreadsQuery and refuses any other document with
// a GraphQL error naming what it accepts.
func (s *Server) graphql(q *req) {
	var body struct {
		Query     string `json:"query"`
		Variables struct {
			Owner  string `json:"owner"`
			Name   string `json:"name"`
			Number int    `json:"number"`
		} `json:"variables"`
		OperationName string `json:"operationName"`
	}
	dec := json.NewDecoder(bytes.NewReader(q.body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&body); err != nil {
		writeError(q.w, http.StatusBadRequest, "Problems parsing JSON: "+err.Error())
		return
	}
	if stripSpace(body.Query) != stripSpace(ReviewThreadsQuery) {
		s.t.Errorf("githubtest: GraphQL query %q is not the one the fake answers (%s)", body.Query, ReviewThreadsQuery)
		writeJSON(q.w, http.StatusOK, map[string]any{"errors": []any{map[string]any{
			"message": "githubtest answers only the reviewThreads query: " + ReviewThreadsQuery}}})
		return
	}
	v := body.Variables
	full := v.Owner + "/" + v.Name
	rp := s.repos[full]
	if rp == nil || !slices.Contains(q.tok.Repos, full) {
		writeJSON(q.w, http.StatusOK, map[string]any{"data": map[string]any{"repository": nil},
			"errors": []any{map[string]any{"type": "NOT_FOUND", "message": "Could not resolve to a Repository with the name '" + full + "'."}}})
		return
	}
	if rp.prs[v.Number] == nil {
		writeJSON(q.w, http.StatusOK, map[string]any{"data": map[string]any{"repository": map[string]any{"pullRequest": nil}},
			"errors": []any{map[string]any{"type": "NOT_FOUND", "message": "Could not resolve to a PullRequest."}}})
		return
	}
	writeJSON(q.w, http.StatusOK, map[string]any{"data": map[string]any{"repository": map[string]any{
		"pullRequest": map[string]any{"reviewThreads": map[string]any{"nodes": rp.threadNodes(v.Number)}}}}})
}

// threadNodes groups pull request n's review comments into threads, in
// the order each thread started.
func (rp *repo) threadNodes(n int) []any {
	var roots []int64
	ids := map[int64][]any{}
	for _, c := range rp.reviewCmts[n] {
		root := c.InReplyTo
		if root == 0 {
			root = c.ID
		}
		if _, ok := ids[root]; !ok {
			roots = append(roots, root)
		}
		ids[root] = append(ids[root], map[string]any{"databaseId": c.ID})
	}
	nodes := []any{}
	for _, r := range roots {
		nodes = append(nodes, map[string]any{"isResolved": rp.resolved[r], "comments": map[string]any{"nodes": ids[r]}})
	}
	return nodes
}
