package githubtest

import (
	"encoding/base64"
	"fmt"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/agentbot/agentbot"
)

// maxBody is GitHub's limit on comment and PR bodies, in characters.
const maxBody = 65536

func (s *Server) getRepoInstallation(q *req) {
	full := q.r.PathValue("owner") + "/" + q.r.PathValue("repo")
	for _, in := range s.installations {
		for _, r := range in.repos {
			if strings.EqualFold(r, full) {
				writeJSON(q.w, http.StatusOK, map[string]any{"id": in.id, "app_id": s.AppID})
				return
			}
		}
	}
	writeError(q.w, http.StatusNotFound, "Not Found")
}

func (s *Server) mintToken(q *req) {
	id, ok := q.intParam("id")
	if !ok {
		return
	}
	in := s.installations[id]
	if in == nil {
		writeError(q.w, http.StatusNotFound, "Not Found")
		return
	}
	var body struct {
		Repositories  []string          `json:"repositories"`
		RepositoryIDs []int64           `json:"repository_ids"`
		Permissions   map[string]string `json:"permissions"`
	}
	if len(q.body) > 0 && !q.decodeStrict(&body) {
		return
	}
	if len(body.RepositoryIDs) > 0 {
		validationError(q.w, "githubtest does not model repository_ids; name repositories")
		return
	}
	tok := &Token{Value: newTokenValue(), Installation: id, ExpiresAt: s.now().Add(s.tokenLifetime),
		Scoped: len(body.Repositories) > 0 || len(body.Permissions) > 0}
	selection := "all"
	if len(body.Repositories) > 0 {
		selection = "selected"
		for _, name := range body.Repositories {
			full := ""
			for _, r := range in.repos {
				if _, n, _ := strings.Cut(r, "/"); n == name || r == name {
					full = r
				}
			}
			if full == "" {
				validationError(q.w, "There is at least one repository that does not exist or is not accessible to the parent installation.")
				return
			}
			tok.Repos = append(tok.Repos, full)
		}
	} else {
		tok.Repos = append([]string(nil), in.repos...)
	}
	if len(body.Permissions) > 0 {
		tok.Permissions = map[string]string{"metadata": "read"}
		for name, level := range body.Permissions {
			if rank(level) == 0 {
				validationError(q.w, fmt.Sprintf("The permission level %q for %q is not valid.", level, name))
				return
			}
			if rank(in.perms[name]) < rank(level) {
				validationError(q.w, "The permissions requested are not granted to this installation.")
				return
			}
			tok.Permissions[name] = level
		}
	} else {
		tok.Permissions = copyMap(in.perms)
	}
	s.tokens[tok.Value] = tok
	var repos []map[string]any
	for _, full := range tok.Repos {
		owner, name, _ := strings.Cut(full, "/")
		r := map[string]any{"name": name, "full_name": full, "owner": map[string]any{"login": owner}}
		if rp := s.repos[full]; rp != nil {
			r["id"] = rp.id
		}
		repos = append(repos, r)
	}
	writeJSON(q.w, http.StatusCreated, map[string]any{
		"token":                tok.Value,
		"expires_at":           tok.ExpiresAt.UTC().Format("2006-01-02T15:04:05Z"),
		"permissions":          tok.Permissions,
		"repository_selection": selection,
		"repositories":         repos,
	})
}

func (s *Server) revokeToken(q *req) {
	q.tok.Revoked = true
	q.w.WriteHeader(http.StatusNoContent)
}

func (s *Server) repoJSON(rp *repo) map[string]any {
	return map[string]any{
		"id":             rp.id,
		"name":           rp.ref.Name,
		"full_name":      rp.ref.FullName(),
		"owner":          map[string]any{"login": rp.ref.Owner, "type": "Organization"},
		"private":        rp.private,
		"default_branch": rp.defaultBranch,
		"clone_url":      rp.git.CloneURL(rp.ref.Owner, rp.ref.Name),
		"html_url":       HTMLBase + "/" + rp.ref.FullName(),
		"url":            s.URL + "repos/" + rp.ref.FullName(),
	}
}

func (s *Server) getRepo(q *req) { writeJSON(q.w, http.StatusOK, s.repoJSON(q.repo)) }

func (s *Server) getBranch(q *req) {
	branch := q.r.PathValue("branch")
	sha := q.repo.branchHead(branch)
	if sha == "" {
		writeError(q.w, http.StatusNotFound, "Branch not found")
		return
	}
	writeJSON(q.w, http.StatusOK, map[string]any{"name": branch, "commit": map[string]any{"sha": sha}, "protected": false})
}

func (s *Server) getContents(q *req) {
	rp := q.repo
	filePath := strings.Trim(q.r.PathValue("path"), "/")
	ref := q.r.URL.Query().Get("ref")
	if ref == "" {
		ref = rp.defaultBranch
	}
	commit := revParse(rp.bare(), ref)
	if commit == "" || strings.HasPrefix(ref, "-") {
		writeError(q.w, http.StatusNotFound, "No commit found for the ref "+ref)
		return
	}
	obj := commit + ":" + filePath
	kind, err := exec.Command("git", "--git-dir", rp.bare(), "cat-file", "-t", obj).Output()
	if err != nil {
		writeError(q.w, http.StatusNotFound, "Not Found")
		return
	}
	name := filePath[strings.LastIndex(filePath, "/")+1:]
	switch strings.TrimSpace(string(kind)) {
	case "blob":
		data, err := exec.Command("git", "--git-dir", rp.bare(), "cat-file", "blob", obj).Output()
		if err != nil {
			writeError(q.w, http.StatusInternalServerError, err.Error())
			return
		}
		enc := base64.StdEncoding.EncodeToString(data)
		var lines []string
		for len(enc) > 60 {
			lines = append(lines, enc[:60])
			enc = enc[60:]
		}
		lines = append(lines, enc)
		writeJSON(q.w, http.StatusOK, map[string]any{
			"type": "file", "encoding": "base64", "size": len(data), "name": name, "path": filePath,
			"content": strings.Join(lines, "\n") + "\n",
		})
	case "tree":
		out, _ := exec.Command("git", "--git-dir", rp.bare(), "ls-tree", "--name-only", obj).Output()
		var entries []map[string]any
		for _, n := range strings.Fields(string(out)) {
			entries = append(entries, map[string]any{"name": n, "path": strings.TrimPrefix(filePath+"/"+n, "/")})
		}
		writeJSON(q.w, http.StatusOK, entries)
	default:
		writeError(q.w, http.StatusNotFound, "Not Found")
	}
}

// compare answers base...head with GitHub's status: identical, ahead (head
// descends from base), behind, or diverged.
func (s *Server) compare(q *req) {
	baseRev, headRev, ok := strings.Cut(q.r.PathValue("basehead"), "...")
	bare := q.repo.bare()
	resolve := func(rev string) string {
		if strings.HasPrefix(rev, "-") {
			return ""
		}
		if sha := revParse(bare, "refs/heads/"+rev); sha != "" {
			return sha
		}
		return revParse(bare, rev)
	}
	base, head := resolve(baseRev), resolve(headRev)
	if !ok || base == "" || head == "" {
		writeError(q.w, http.StatusNotFound, "Not Found")
		return
	}
	count := func(a, b string) int {
		out, _ := exec.Command("git", "--git-dir", bare, "rev-list", "--count", a+".."+b).Output()
		n, _ := strconv.Atoi(strings.TrimSpace(string(out)))
		return n
	}
	ahead, behind := count(base, head), count(head, base)
	status := "diverged"
	switch {
	case ahead == 0 && behind == 0:
		status = "identical"
	case behind == 0:
		status = "ahead"
	case ahead == 0:
		status = "behind"
	}
	writeJSON(q.w, http.StatusOK, map[string]any{
		"status": status, "ahead_by": ahead, "behind_by": behind, "total_commits": ahead,
		"base_commit": map[string]any{"sha": base}, "commits": []any{},
	})
}

func (s *Server) getPermission(q *req) {
	login := q.r.PathValue("username")
	level, ok := q.repo.perms[login]
	if !ok {
		writeError(q.w, http.StatusNotFound, "Not Found")
		return
	}
	perm := map[string]string{"admin": "admin", "maintain": "write", "write": "write", "triage": "read", "read": "read", "none": "none"}[level]
	writeJSON(q.w, http.StatusOK, map[string]any{"permission": perm, "role_name": level, "user": map[string]any{"login": login}})
}

func (s *Server) getMembership(q *req) {
	key := q.r.PathValue("org") + "/" + q.r.PathValue("team")
	if !s.teams[key][q.r.PathValue("username")] {
		writeError(q.w, http.StatusNotFound, "Not Found")
		return
	}
	writeJSON(q.w, http.StatusOK, map[string]any{"state": "active", "role": "member"})
}

func userJSON(login string) map[string]any {
	typ := "User"
	if strings.HasSuffix(login, "[bot]") {
		typ = "Bot"
	}
	return map[string]any{"login": login, "type": typ}
}

// issueOf resolves {number}; it answers 404 itself.
func (q *req) issueOf() (*issue, bool) {
	n, ok := q.intParam("number")
	if !ok {
		return nil, false
	}
	is := q.repo.issues[int(n)]
	if is == nil {
		writeError(q.w, http.StatusNotFound, "Not Found")
		return nil, false
	}
	return is, true
}

func (s *Server) getIssue(q *req) {
	is, ok := q.issueOf()
	if !ok {
		return
	}
	out := map[string]any{
		"id": is.number, "number": is.number, "title": is.title, "body": is.body, "state": "open",
		"html_url": fmt.Sprintf("%s/%s/issues/%d", HTMLBase, q.repo.ref.FullName(), is.number),
		"user":     userJSON(is.user),
	}
	if is.isPR {
		out["pull_request"] = map[string]any{"url": fmt.Sprintf("%srepos/%s/pulls/%d", s.URL, q.repo.ref.FullName(), is.number)}
		out["html_url"] = fmt.Sprintf("%s/%s/pull/%d", HTMLBase, q.repo.ref.FullName(), is.number)
	}
	writeJSON(q.w, http.StatusOK, out)
}

// commentBody decodes {"body": …} and checks it as GitHub does.
func (q *req) commentBody() (string, bool) {
	var body struct {
		Body *string `json:"body"`
	}
	if !q.decodeStrict(&body) {
		return "", false
	}
	if body.Body == nil || strings.TrimSpace(*body.Body) == "" {
		validationError(q.w, "Validation Failed", map[string]string{"resource": "IssueComment", "field": "body", "code": "missing_field"})
		return "", false
	}
	if n := utf8.RuneCountInString(*body.Body); n > maxBody {
		validationError(q.w, "Validation Failed", map[string]string{"resource": "IssueComment", "code": "custom", "field": "body",
			"message": fmt.Sprintf("body is too long (maximum is %d characters)", maxBody)})
		return "", false
	}
	return *body.Body, true
}

func (s *Server) commentJSON(c *Comment) map[string]any {
	out := map[string]any{
		"id": c.ID, "body": c.Body, "user": userJSON(c.Author),
		"html_url":   fmt.Sprintf("%s/%s/issues/%d#issuecomment-%d", HTMLBase, c.Ref.Repo.FullName(), c.Ref.Number, c.ID),
		"created_at": c.Created.UTC().Format(time.RFC3339),
		"updated_at": c.Updated.UTC().Format(time.RFC3339),
	}
	if c.Author == BotLogin {
		out["performed_via_github_app"] = s.appJSON()
	}
	return out
}

func (s *Server) appJSON() map[string]any {
	return map[string]any{"id": s.AppID, "slug": strings.TrimSuffix(BotLogin, "[bot]")}
}

// listComments lists an issue's comments oldest first; since keeps those
// updated at or after a time, as GitHub does.
func (s *Server) listComments(q *req) {
	is, ok := q.issueOf()
	if !ok {
		return
	}
	var since time.Time
	if v := q.r.URL.Query().Get("since"); v != "" {
		t, err := time.Parse(time.RFC3339, v)
		if err != nil {
			validationError(q.w, "Invalid request.\n\nsince is not an ISO 8601 timestamp")
			return
		}
		since = t
	}
	items := []any{}
	for _, c := range q.repo.comments {
		if c.Ref.Number == is.number && !c.Updated.Before(since) {
			items = append(items, s.commentJSON(c))
		}
	}
	q.page(items, nil)
}

func (s *Server) createComment(q *req) {
	is, ok := q.issueOf()
	if !ok {
		return
	}
	body, ok := q.commentBody()
	if !ok {
		return
	}
	now := s.now()
	c := &Comment{ID: s.newID(), Ref: agentbot.IssueRef{Repo: q.repo.ref, Number: is.number}, Author: BotLogin, Body: body, Created: now, Updated: now}
	q.repo.comments = append(q.repo.comments, c)
	writeJSON(q.w, http.StatusCreated, s.commentJSON(c))
}

func (q *req) commentOf() (*Comment, bool) {
	id, ok := q.intParam("id")
	if !ok {
		return nil, false
	}
	for _, c := range q.repo.comments {
		if c.ID == id {
			return c, true
		}
	}
	writeError(q.w, http.StatusNotFound, "Not Found")
	return nil, false
}

func (s *Server) editComment(q *req) {
	c, ok := q.commentOf()
	if !ok {
		return
	}
	body, ok := q.commentBody()
	if !ok {
		return
	}
	c.Edits = append(c.Edits, c.Body)
	c.Body = body
	c.Updated = s.now()
	writeJSON(q.w, http.StatusOK, s.commentJSON(c))
}

var reactions = map[string]bool{"+1": true, "-1": true, "laugh": true, "confused": true, "heart": true, "hooray": true, "rocket": true, "eyes": true}

func (s *Server) react(q *req, ref agentbot.IssueRef, commentID int64) {
	var body struct {
		Content string `json:"content"`
	}
	if !q.decodeStrict(&body) {
		return
	}
	if !reactions[body.Content] {
		validationError(q.w, "Validation Failed", map[string]string{"resource": "Reaction", "field": "content", "code": "invalid"})
		return
	}
	r := Reaction{Ref: ref, CommentID: commentID, Content: body.Content}
	for _, old := range q.repo.reactions {
		if old == r {
			writeJSON(q.w, http.StatusOK, map[string]any{"id": 1, "content": r.Content, "user": userJSON(BotLogin)})
			return
		}
	}
	q.repo.reactions = append(q.repo.reactions, r)
	writeJSON(q.w, http.StatusCreated, map[string]any{"id": s.newID(), "content": r.Content, "user": userJSON(BotLogin)})
}

func (s *Server) reactIssue(q *req) {
	is, ok := q.issueOf()
	if !ok {
		return
	}
	s.react(q, agentbot.IssueRef{Repo: q.repo.ref, Number: is.number}, 0)
}

func (s *Server) reactComment(q *req) {
	c, ok := q.commentOf()
	if !ok {
		return
	}
	s.react(q, c.Ref, c.ID)
}
