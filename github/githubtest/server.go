package githubtest

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"
)

// need is an authentication requirement of a route.
type need struct {
	app bool
	// perms are alternatives "name:level"; any one suffices. Empty with
	// app=false means any valid installation token.
	perms []string
}

func app() need                      { return need{app: true} }
func inst(perms ...string) need      { return need{perms: perms} }
func anyInstallationToken() need     { return need{} }
func (n need) describe() string      { return strings.Join(n.perms, " or ") }
func (n need) wantsPermission() bool { return len(n.perms) > 0 }

// req is one request being handled, with s.mu held.
type req struct {
	w    http.ResponseWriter
	r    *http.Request
	body []byte
	tok  *Token
	repo *repo
	call *Call
	s    *Server
}

type handler func(q *req)

// routes lists every endpoint the fake implements, with its authentication.
func (s *Server) routes() {
	s.handle("GET /repos/{owner}/{repo}/installation", app(), s.getRepoInstallation)
	s.handle("POST /app/installations/{id}/access_tokens", app(), s.mintToken)
	s.handle("DELETE /installation/token", anyInstallationToken(), s.revokeToken)
	s.handle("GET /repos/{owner}/{repo}", inst("metadata:read"), s.getRepo)
	s.handle("GET /repos/{owner}/{repo}/branches/{branch...}", inst("metadata:read"), s.getBranch)
	s.handle("GET /repos/{owner}/{repo}/contents/{path...}", inst("contents:read"), s.getContents)
	s.handle("GET /repos/{owner}/{repo}/compare/{basehead...}", inst("contents:read"), s.compare)
	s.handle("GET /repos/{owner}/{repo}/collaborators/{username}/permission", inst("metadata:read"), s.getPermission)
	s.handle("GET /orgs/{org}/teams/{team}/memberships/{username}", inst("members:read"), s.getMembership)
	s.handle("GET /repos/{owner}/{repo}/issues/{number}", inst("issues:read", "pull_requests:read"), s.getIssue)
	s.handle("POST /repos/{owner}/{repo}/issues/{number}/comments", inst("issues:write", "pull_requests:write"), s.createComment)
	s.handle("GET /repos/{owner}/{repo}/issues/{number}/comments", inst("issues:read", "pull_requests:read"), s.listComments)
	s.handle("PATCH /repos/{owner}/{repo}/issues/comments/{id}", inst("issues:write", "pull_requests:write"), s.editComment)
	s.handle("POST /repos/{owner}/{repo}/issues/{number}/reactions", inst("issues:write", "pull_requests:write"), s.reactIssue)
	s.handle("POST /repos/{owner}/{repo}/issues/comments/{id}/reactions", inst("issues:write", "pull_requests:write"), s.reactComment)
	s.handle("GET /repos/{owner}/{repo}/pulls", inst("pull_requests:read"), s.listPulls)
	s.handle("POST /repos/{owner}/{repo}/pulls", inst("pull_requests:write"), s.createPull)
	s.handle("GET /repos/{owner}/{repo}/pulls/{number}", inst("pull_requests:read"), s.getPull)
	s.handle("POST /repos/{owner}/{repo}/pulls/{number}/requested_reviewers", inst("pull_requests:write"), s.requestReviewers)
	s.handle("GET /repos/{owner}/{repo}/pulls/{number}/reviews", inst("pull_requests:read"), s.listReviews)
	s.handle("GET /repos/{owner}/{repo}/pulls/{number}/comments", inst("pull_requests:read"), s.listReviewComments)
	s.handle("POST /repos/{owner}/{repo}/pulls/{number}/comments/{id}/replies", inst("pull_requests:write"), s.replyReviewComment)
	s.handle("GET /repos/{owner}/{repo}/pulls/{number}/reviews/{id}/comments", inst("pull_requests:read"), s.listReviewOwnComments)
	s.handle("POST /graphql", inst("pull_requests:read"), s.graphql)
	s.handle("POST /repos/{owner}/{repo}/check-runs", inst("checks:write"), s.createCheckRun)
	s.handle("PATCH /repos/{owner}/{repo}/check-runs/{id}", inst("checks:write"), s.updateCheckRun)
	s.handle("GET /repos/{owner}/{repo}/commits/{ref}/check-runs", inst("checks:read"), s.listCheckRuns)
	s.handle("GET /app", app(), s.getApp)
	s.handle("GET /app/installations", app(), s.listInstallations)
	s.handle("GET /app/hook/deliveries", app(), s.listDeliveries)
	s.handle("POST /app/hook/deliveries/{id}/attempts", app(), s.redeliver)
	// GitHub serves the manifest conversion without authentication.
	s.mux.HandleFunc("POST /app-manifests/{code}/conversions", func(w http.ResponseWriter, r *http.Request) {
		q := r.Context().Value(reqKey{}).(*req)
		q.w, q.r = w, r
		s.convertManifest(q)
	})
}

func (s *Server) handle(pattern string, n need, h handler) {
	s.mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		q := r.Context().Value(reqKey{}).(*req)
		q.w, q.r = w, r
		if !s.authenticate(q, n) {
			return
		}
		h(q)
	})
}

type reqKey struct{}

// statusRecorder remembers the status written.
type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (w *statusRecorder) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusRecorder) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 4<<20))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	call := &Call{Method: r.Method, Path: r.URL.Path, Query: r.URL.RawQuery, Body: string(body), Auth: "none", Time: time.Now()}
	rec := &statusRecorder{ResponseWriter: w}
	defer func() {
		call.Status = rec.status
		s.calls = append(s.calls, *call)
	}()
	if f := s.takeFailure(r, false); f != nil {
		call.Auth = "unchecked"
		s.writeFailure(rec, f)
		return
	}
	if _, pattern := s.mux.Handler(r); pattern == "" {
		s.unexpected = append(s.unexpected, r.Method+" "+r.URL.Path)
		s.t.Errorf("githubtest: %s %s is not an endpoint the fake implements (nor one agentbot should call)", r.Method, r.URL.Path)
		writeError(rec, http.StatusNotFound, "Not Found")
		return
	}
	s.remaining = max(s.remaining-1, 1)
	rec.Header().Set("X-RateLimit-Limit", "5000")
	rec.Header().Set("X-RateLimit-Remaining", strconv.Itoa(s.remaining))
	rec.Header().Set("X-RateLimit-Reset", strconv.FormatInt(s.now().Add(time.Hour).Unix(), 10))
	rec.Header().Set("X-RateLimit-Resource", "core")
	q := &req{body: body, call: call, s: s}
	r.Body = io.NopCloser(bytes.NewReader(body))
	r = r.WithContext(context.WithValue(r.Context(), reqKey{}, q))
	if !s.failsAfter(r) {
		s.mux.ServeHTTP(rec, r)
		return
	}
	// Carry the request out, then answer with the failure if it worked.
	done := httptest.NewRecorder()
	s.mux.ServeHTTP(done, r)
	if done.Code >= 200 && done.Code < 300 {
		if f := s.takeFailure(r, true); f != nil {
			s.writeFailure(rec, f)
			return
		}
	}
	for k, v := range done.Header() {
		rec.Header()[k] = v
	}
	rec.WriteHeader(done.Code)
	_, _ = rec.Write(done.Body.Bytes())
}

// failsAfter reports whether a FailAfter failure is pending for r.
func (s *Server) failsAfter(r *http.Request) bool {
	for _, f := range s.failures {
		if f.after && f.left > 0 && (f.method == "" || f.method == r.Method) {
			if ok, _ := path.Match(f.pattern, r.URL.Path); ok {
				return true
			}
		}
	}
	return false
}

func (s *Server) takeFailure(r *http.Request, after bool) *failure {
	for _, f := range s.failures {
		if f.after != after || f.left <= 0 || (f.method != "" && f.method != r.Method) {
			continue
		}
		if ok, _ := path.Match(f.pattern, r.URL.Path); ok {
			f.left--
			return f
		}
	}
	return nil
}

func (s *Server) writeFailure(w http.ResponseWriter, f *failure) {
	for k, v := range f.headers {
		w.Header().Set(k, v)
	}
	msg := map[string]string{"message": http.StatusText(f.status)}
	switch {
	case (f.status == 403 || f.status == 429) && f.headers["X-RateLimit-Remaining"] == "0":
		msg["message"] = "API rate limit exceeded for installation."
		msg["documentation_url"] = "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api#about-rate-limits"
	case f.status == 429 || (f.status == 403 && f.headers["Retry-After"] != ""):
		msg["message"] = "You have exceeded a secondary rate limit. Please wait a few minutes before you try again."
		msg["documentation_url"] = "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api#about-secondary-rate-limits"
	}
	writeJSON(w, f.status, msg)
}

// authenticate checks the Authorization header against n; it writes
// GitHub's refusal and returns false when the request may not go on.
func (s *Server) authenticate(q *req, n need) bool {
	authz := q.r.Header.Get("Authorization")
	scheme, cred, _ := strings.Cut(authz, " ")
	if authz == "" {
		writeError(q.w, http.StatusUnauthorized, "Requires authentication")
		return false
	}
	if n.app {
		if !strings.EqualFold(scheme, "Bearer") {
			q.call.Auth = "invalid"
			writeError(q.w, http.StatusUnauthorized, "A JSON web token could not be decoded")
			return false
		}
		if err := s.verifyJWT(cred); err != nil {
			q.call.Auth = "invalid"
			writeError(q.w, http.StatusUnauthorized, err.Error())
			return false
		}
		q.call.Auth = "app"
		return true
	}
	if !strings.EqualFold(scheme, "token") && !strings.EqualFold(scheme, "Bearer") {
		q.call.Auth = "invalid"
		writeError(q.w, http.StatusUnauthorized, "Bad credentials")
		return false
	}
	tok := s.tokens[cred]
	if tok == nil || tok.Revoked || !s.now().Before(tok.ExpiresAt) {
		q.call.Auth = "invalid"
		writeError(q.w, http.StatusUnauthorized, "Bad credentials")
		return false
	}
	q.call.Auth, q.call.Installation, q.tok = "installation", tok.Installation, tok
	if owner := q.r.PathValue("owner"); owner != "" {
		full := owner + "/" + q.r.PathValue("repo")
		rp := s.repos[full]
		if rp == nil || !slices.Contains(tok.Repos, full) {
			// GitHub hides repositories a token cannot see.
			writeError(q.w, http.StatusNotFound, "Not Found")
			return false
		}
		q.repo = rp
	}
	if n.wantsPermission() {
		ok := false
		for _, p := range n.perms {
			name, level, _ := strings.Cut(p, ":")
			if rank(tok.Permissions[name]) >= rank(level) {
				ok = true
			}
		}
		if !ok {
			writeError(q.w, http.StatusForbidden, "Resource not accessible by integration (needs "+n.describe()+")")
			return false
		}
	}
	return true
}

// verifyJWT checks an App JWT the way GitHub does: RS256 signed by the
// App's key, issued by the App, valid now, living at most ten minutes.
func (s *Server) verifyJWT(tok string) error {
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return errors.New("A JSON web token could not be decoded")
	}
	var hdr struct {
		Alg string `json:"alg"`
	}
	if err := decodeSegment(parts[0], &hdr); err != nil || hdr.Alg != "RS256" {
		return errors.New("A JSON web token could not be decoded")
	}
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil {
		return errors.New("A JSON web token could not be decoded")
	}
	sum := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
	if err := rsa.VerifyPKCS1v15(s.pub, crypto.SHA256, sum[:], sig); err != nil {
		return errors.New("A JSON web token could not be decoded")
	}
	var claims struct {
		Iss json.RawMessage `json:"iss"`
		Iat int64           `json:"iat"`
		Exp int64           `json:"exp"`
	}
	if err := decodeSegment(parts[1], &claims); err != nil {
		return errors.New("A JSON web token could not be decoded")
	}
	iss := strings.Trim(string(claims.Iss), `"`)
	if iss != strconv.FormatInt(s.AppID, 10) {
		return errors.New("'Issuer' claim ('iss') must be an Integer")
	}
	now := s.now().Unix()
	switch {
	case claims.Iat == 0 || claims.Exp == 0:
		return errors.New("Missing 'issued at' or 'expiration time' claim")
	case claims.Iat > now+60:
		return errors.New("'Issued at' claim ('iat') must be an Integer representing a time in the past")
	case claims.Exp <= now:
		return errors.New("'Expiration time' claim ('exp') must be a numeric value representing the future time at which the assertion expires")
	case claims.Exp-claims.Iat > 600:
		return errors.New("'Expiration time' claim ('exp') is too far in the future")
	}
	return nil
}

func decodeSegment(seg string, v any) error {
	raw, err := base64.RawURLEncoding.DecodeString(seg)
	if err != nil {
		return err
	}
	return json.Unmarshal(raw, v)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	if v != nil {
		_ = json.NewEncoder(w).Encode(v)
	}
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]string{"message": msg, "documentation_url": "https://docs.github.com/rest"})
}

// validationError answers 422 the way GitHub does, with field errors.
func validationError(w http.ResponseWriter, msg string, errs ...map[string]string) {
	body := map[string]any{"message": msg, "documentation_url": "https://docs.github.com/rest"}
	if len(errs) > 0 {
		body["errors"] = errs
	}
	writeJSON(w, http.StatusUnprocessableEntity, body)
}

// decodeStrict decodes a JSON body, refusing unknown keys; it answers the
// request itself and returns false on failure.
func (q *req) decodeStrict(v any) bool {
	dec := json.NewDecoder(bytes.NewReader(q.body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		if strings.Contains(err.Error(), "unknown field") {
			validationError(q.w, "Invalid request.\n\n"+err.Error())
			return false
		}
		writeError(q.w, http.StatusBadRequest, "Problems parsing JSON")
		return false
	}
	return true
}

func (q *req) intParam(name string) (int64, bool) {
	n, err := strconv.ParseInt(q.r.PathValue(name), 10, 64)
	if err != nil || n <= 0 {
		writeError(q.w, http.StatusNotFound, "Not Found")
		return 0, false
	}
	return n, true
}

// page answers a list endpoint with GitHub's paging: per_page (default
// 30, at most 100), page (from 1) and a Link header naming the next page.
func (q *req) page(items []any, wrap func(page []any) any) {
	query := q.r.URL.Query()
	perPage, err := strconv.Atoi(query.Get("per_page"))
	if err != nil || perPage <= 0 {
		perPage = 30
	}
	perPage = min(perPage, 100)
	pg, err := strconv.Atoi(query.Get("page"))
	if err != nil || pg <= 0 {
		pg = 1
	}
	from := min((pg-1)*perPage, len(items))
	to := min(from+perPage, len(items))
	if to < len(items) {
		next := *q.r.URL
		query.Set("page", strconv.Itoa(pg+1))
		next.RawQuery = query.Encode()
		q.w.Header().Set("Link", fmt.Sprintf("<%s%s>; rel=\"next\"", strings.TrimSuffix(q.s.URL, "/"), next.RequestURI()))
	}
	out := append([]any{}, items[from:to]...)
	if wrap != nil {
		writeJSON(q.w, http.StatusOK, wrap(out))
		return
	}
	writeJSON(q.w, http.StatusOK, out)
}

func (s *Server) newID() int64 {
	s.nextID++
	return s.nextID
}

func newTokenValue() string {
	b := make([]byte, 18)
	if _, err := rand.Read(b); err != nil {
		panic(fmt.Sprintf("githubtest: random: %v", err))
	}
	return "ghs_" + hex.EncodeToString(b)
}
