// Package githubtest is a small, strict, in-process fake of the parts of
// GitHub's REST API that agentbot uses, for tests in any package. It checks
// authentication the way GitHub does (App JWTs against the public half of a
// key generated per test; installation tokens it minted, scoped to
// repositories and permissions), rejects what GitHub would reject for these
// calls, and records every call and side effect so tests can assert on what
// was sent. Repositories live in a real git server (internal/gitserver):
// branches, files and commits are read from the bare repositories, and
// GitAuthorize lets that server accept exactly the tokens minted here.
//
// A call to an endpoint the fake does not implement answers 404 and fails
// the test: agentbot must not depend on behaviour nobody has modelled.
package githubtest

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agentbot/agentbot"
	"github.com/agentbot/agentbot/internal/gitserver"
)

// BotLogin is the login GitHub shows for the App's comments and PRs.
const BotLogin = "agentbot[bot]"

// HTMLBase is the prefix of the html_url values the fake hands out.
const HTMLBase = "https://github.test"

// DefaultInstallationPermissions are what an installation grants unless
// SetInstallationPermissions says otherwise.
func DefaultInstallationPermissions() map[string]string {
	return map[string]string{
		"contents": "write", "issues": "write", "pull_requests": "write",
		"checks": "write", "metadata": "read", "members": "read",
	}
}

// Server is the fake. Create it with New; it shuts down when the test ends.
type Server struct {
	// URL is the REST base URL, with a trailing slash (github.Config.BaseURL).
	URL string
	// AppID and PrivateKeyPEM are the App's credentials (github.Config).
	AppID         int64
	PrivateKeyPEM []byte
	// AppSlug is what GET /app answers as the App's slug.
	AppSlug string

	t   testing.TB
	srv *httptest.Server
	pub *rsa.PublicKey
	mux *http.ServeMux

	mu            sync.Mutex
	now           func() time.Time
	installations map[int64]*installation
	repos         map[string]*repo
	tokens        map[string]*Token
	teams         map[string]map[string]bool
	calls         []Call
	failures      []*failure
	unexpected    []string
	nextID        int64
	tokenLifetime time.Duration
	remaining     int
	hooks         hookLog      // deliveries.go
	app           appMeta      // app.go
	manifests     manifestFlow // manifest.go
}

type installation struct {
	id    int64
	repos []string // full names
	perms map[string]string
}

type repo struct {
	ref           agentbot.Repo
	id            int64
	git           *gitserver.Server
	defaultBranch string
	private       bool
	perms         map[string]string // login → admin|maintain|write|triage|read|none
	issues        map[int]*issue
	comments      []*Comment
	reactions     []Reaction
	prs           map[int]*PullRequest
	checkRuns     []*CheckRun
	reviews       map[int][]Review
	reviewCmts    map[int][]ReviewComment
	resolved      map[int64]bool // review threads by their first comment
}

type issue struct {
	number            int
	title, body, user string
	isPR              bool
}

// Call is one request the fake received.
type Call struct {
	Method string
	Path   string // unescaped
	Query  string
	// Auth is "app" (a valid JWT), "installation" (a valid token), "none"
	// or "invalid".
	Auth         string
	Installation int64
	Body         string
	Status       int
	// Time is when the request arrived.
	Time time.Time
}

func (c Call) String() string {
	s := c.Method + " " + c.Path
	if c.Query != "" {
		s += "?" + c.Query
	}
	return fmt.Sprintf("%s → %d (%s)", s, c.Status, c.Auth)
}

// Token is an installation token the fake minted. Value is the secret:
// tests grep logs for it.
type Token struct {
	Value        string
	Installation int64
	Repos        []string // full names
	Permissions  map[string]string
	ExpiresAt    time.Time
	// Revoked is set by a DELETE /installation/token that came with this
	// token.
	Revoked bool
	// GitReads counts the git fetch requests (upload-pack) the token
	// authorized on GitAuthorize's server.
	GitReads int
	// Scoped is set when the request named repositories or permissions
	// (a down-scoped token rather than the installation's own).
	Scoped bool
}

// Comment is an issue or pull request comment. Edits holds earlier bodies,
// oldest first.
type Comment struct {
	ID      int64
	Ref     agentbot.IssueRef
	Author  string
	Body    string
	Edits   []string
	Created time.Time
	Updated time.Time
}

// Reaction is a reaction by the App; CommentID 0 is the issue itself.
type Reaction struct {
	Ref       agentbot.IssueRef
	CommentID int64
	Content   string
}

// PullRequest is a pull request as the fake holds it.
type PullRequest struct {
	Number      int
	Title, Body string
	Head, Base  string
	HeadSHA     string // at creation; the API answers the live branch head
	Draft       bool
	State       string
	Author      string
	Reviewers   []string
}

// CheckRun is a check run with its latest state; Updates counts PATCHes.
type CheckRun struct {
	ID                     int64
	Name, HeadSHA          string
	Status, Conclusion     string
	Title, Summary, Text   string
	DetailsURL, ExternalID string
	Actions                []Action
	Updates                int
}

// Action is a check-run button.
type Action struct {
	Label       string `json:"label"`
	Description string `json:"description"`
	Identifier  string `json:"identifier"`
}

// Review is a pull request review (for follow-up prompts). ID is set by
// AddReview.
type Review struct {
	ID                int64
	User, State, Body string
	Bot               bool
}

// ReviewComment is an inline review comment. ID is set by
// AddReviewComment (and the replies endpoint); InReplyTo is the thread's
// first comment, 0 for that first comment itself; ReviewID the review it
// belongs to.
type ReviewComment struct {
	ID, InReplyTo, ReviewID int64
	User, Path, Body        string
	Line, StartLine         int
	Side, DiffHunk          string
	Bot                     bool
}

type failure struct {
	method, pattern string
	left            int
	status          int
	headers         map[string]string
	// after: the request is carried out first and only its answer is
	// replaced (GitHub answering 502 for a comment it did create).
	after bool
}

// appKey is the App key of every fake in the process: a 2048-bit RSA key
// takes from 50 ms to seconds to generate under the race detector, and
// the packages' tests start hundreds of fakes. A test that needs a key the
// fake does not know generates its own.
var appKey = sync.OnceValues(func() (*rsa.PrivateKey, error) { return rsa.GenerateKey(rand.Reader, 2048) })

// New starts a fake GitHub for t, with the process's App key.
func New(t testing.TB) *Server {
	t.Helper()
	key, err := appKey()
	if err != nil {
		t.Fatalf("githubtest: generate key: %v", err)
	}
	s := &Server{
		AppID:         4242,
		AppSlug:       "agentbot-test",
		PrivateKeyPEM: pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}),
		t:             t,
		pub:           &key.PublicKey,
		now:           time.Now,
		installations: map[int64]*installation{},
		repos:         map[string]*repo{},
		tokens:        map[string]*Token{},
		teams:         map[string]map[string]bool{},
		nextID:        1000,
		tokenLifetime: time.Hour,
		remaining:     5000,
	}
	s.mux = http.NewServeMux()
	s.routes()
	s.srv = httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(s.srv.Close)
	t.Cleanup(s.WaitRedeliveries) // runs first: no redelivery outlives the test
	s.URL = s.srv.URL + "/"
	return s
}

// AddInstallation makes installation id with access to repos (which need
// not be added yet) and DefaultInstallationPermissions.
func (s *Server) AddInstallation(id int64, repos ...agentbot.Repo) {
	s.mu.Lock()
	defer s.mu.Unlock()
	in := &installation{id: id, perms: DefaultInstallationPermissions()}
	for _, r := range repos {
		in.repos = append(in.repos, r.FullName())
	}
	s.installations[id] = in
}

// SetInstallationPermissions replaces what installation id grants.
func (s *Server) SetInstallationPermissions(id int64, perms map[string]string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	in := s.installations[id]
	if in == nil {
		s.t.Fatalf("githubtest: no installation %d", id)
	}
	in.perms = copyMap(perms)
}

// AddRepo serves repository r from git's bare repository of the same name,
// creating it (with a README on defaultBranch) when it does not exist yet.
func (s *Server) AddRepo(r agentbot.Repo, git *gitserver.Server, defaultBranch string) {
	s.t.Helper()
	if _, err := os.Stat(git.BarePath(r.Owner, r.Name)); err != nil {
		git.CreateRepo(r.Owner, r.Name, defaultBranch, map[string]string{"README.md": "# " + r.Name + "\n"})
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.nextID++
	s.repos[r.FullName()] = &repo{
		ref: r, id: s.nextID, git: git, defaultBranch: defaultBranch,
		perms: map[string]string{}, issues: map[int]*issue{}, prs: map[int]*PullRequest{},
		reviews: map[int][]Review{}, reviewCmts: map[int][]ReviewComment{}, resolved: map[int64]bool{},
	}
}

// SetPrivate marks r private.
func (s *Server) SetPrivate(r agentbot.Repo, private bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.mustRepo(r).private = private
}

// SetPermission gives login a role on r: admin, maintain, write, triage,
// read or none. Users never set are unknown to GitHub (404).
func (s *Server) SetPermission(r agentbot.Repo, login, level string) {
	switch level {
	case "admin", "maintain", "write", "triage", "read", "none":
	default:
		s.t.Fatalf("githubtest: %q is not a repository role", level)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.mustRepo(r).perms[login] = level
}

// SetTeamMember makes login an active member of team org/slug.
func (s *Server) SetTeamMember(org, slug, login string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	key := org + "/" + slug
	if s.teams[key] == nil {
		s.teams[key] = map[string]bool{}
	}
	s.teams[key][login] = true
}

// SetFile commits content at path on r's default branch (in the real bare
// repository) and returns the new commit.
func (s *Server) SetFile(r agentbot.Repo, filePath, content string) string {
	s.mu.Lock()
	rp := s.mustRepo(r)
	s.mu.Unlock()
	return s.CommitFile(r, rp.defaultBranch, filePath, content)
}

// CommitFile commits content at path on branch of r (creating the branch
// from the default branch when missing) and returns the new commit.
func (s *Server) CommitFile(r agentbot.Repo, branch, filePath, content string) string {
	s.t.Helper()
	s.mu.Lock()
	rp := s.mustRepo(r)
	s.mu.Unlock()
	bare := rp.git.BarePath(r.Owner, r.Name)
	index := s.t.TempDir() + "/index"
	git := func(stdin string, args ...string) string {
		cmd := exec.Command("git", append([]string{"--git-dir", bare}, args...)...)
		cmd.Env = append(os.Environ(), "GIT_INDEX_FILE="+index,
			"GIT_AUTHOR_NAME=githubtest", "GIT_AUTHOR_EMAIL=githubtest@example.com",
			"GIT_COMMITTER_NAME=githubtest", "GIT_COMMITTER_EMAIL=githubtest@example.com")
		cmd.Stdin = strings.NewReader(stdin)
		out, err := cmd.Output()
		if err != nil {
			s.t.Fatalf("githubtest: git %s: %v", strings.Join(args, " "), err)
		}
		return strings.TrimSpace(string(out))
	}
	parent := revParse(bare, "refs/heads/"+branch)
	if parent == "" {
		parent = revParse(bare, "refs/heads/"+rp.defaultBranch)
	}
	git("", "read-tree", parent)
	blob := git(content, "hash-object", "-w", "--stdin")
	git("", "update-index", "--add", "--cacheinfo", "100644,"+blob+","+filePath)
	tree := git("", "write-tree")
	commit := git("", "commit-tree", tree, "-p", parent, "-m", "githubtest: set "+filePath)
	git("", "update-ref", "refs/heads/"+branch, commit)
	return commit
}

// AddIssue files issue number on r.
func (s *Server) AddIssue(r agentbot.Repo, number int, title, body, author string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	rp := s.mustRepo(r)
	if _, dup := rp.issues[number]; dup {
		s.t.Fatalf("githubtest: %s#%d exists", r, number)
	}
	rp.issues[number] = &issue{number: number, title: title, body: body, user: author}
}

// AddPullRequest opens a pull request from head to base on r as author and
// returns its number; head must exist in the git repository.
func (s *Server) AddPullRequest(r agentbot.Repo, head, base, title, body, author string) int {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	rp := s.mustRepo(r)
	sha := rp.branchHead(head)
	if sha == "" {
		s.t.Fatalf("githubtest: AddPullRequest: no branch %q in %s", head, r)
	}
	return rp.addPR(&PullRequest{Title: title, Body: body, Head: head, Base: base, HeadSHA: sha, State: "open", Author: author})
}

// AddReview records a review on pull request ref and returns its id.
func (s *Server) AddReview(ref agentbot.IssueRef, rv Review) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	rp := s.mustRepo(ref.Repo)
	rv.ID = s.newID()
	rp.reviews[ref.Number] = append(rp.reviews[ref.Number], rv)
	return rv.ID
}

// AddReviewComment records an inline review comment on pull request ref
// and returns its id.
func (s *Server) AddReviewComment(ref agentbot.IssueRef, c ReviewComment) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	rp := s.mustRepo(ref.Repo)
	c.ID = s.newID()
	rp.reviewCmts[ref.Number] = append(rp.reviewCmts[ref.Number], c)
	return c.ID
}

// SetTokenLifetime sets the lifetime of tokens minted from now on.
func (s *Server) SetTokenLifetime(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tokenLifetime = d
}

// FailNext makes the next n requests matching method ("" = any) and
// pathPattern (path.Match syntax on the unescaped path, e.g.
// "/repos/acme/widgets/issues/*/comments") answer status with headers and a
// GitHub-shaped message, before any authentication. A 403 or 429 with
// X-RateLimit-Remaining: 0 reads as a primary rate limit; with Retry-After
// (or a bare 429) as a secondary one.
func (s *Server) FailNext(method, pathPattern string, n, status int, headers map[string]string) {
	if _, err := path.Match(pathPattern, ""); err != nil {
		s.t.Fatalf("githubtest: FailNext pattern %q: %v", pathPattern, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failures = append(s.failures, &failure{method: method, pattern: pathPattern, left: n, status: status, headers: copyMap(headers)})
}

// FailAfter makes the next n requests matching method and pathPattern (as
// in FailNext) that succeed be carried out — the comment, check run or pull
// request is created — and then answered with status instead of the real
// answer: GitHub timing out or answering 502 after it did the work. A
// request that the fake refuses anyway (auth, validation) keeps its answer
// and does not use up a failure.
func (s *Server) FailAfter(method, pathPattern string, n, status int) {
	if _, err := path.Match(pathPattern, ""); err != nil {
		s.t.Fatalf("githubtest: FailAfter pattern %q: %v", pathPattern, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failures = append(s.failures, &failure{method: method, pattern: pathPattern, left: n, status: status, after: true})
}

// mustRepo is called with s.mu held.
func (s *Server) mustRepo(r agentbot.Repo) *repo {
	rp := s.repos[r.FullName()]
	if rp == nil {
		s.t.Fatalf("githubtest: repository %s was not added", r)
	}
	return rp
}

func (rp *repo) bare() string { return rp.git.BarePath(rp.ref.Owner, rp.ref.Name) }

func (rp *repo) branchHead(branch string) string {
	if branch == "" || strings.HasPrefix(branch, "-") {
		return ""
	}
	return revParse(rp.bare(), "refs/heads/"+branch)
}

func (rp *repo) addPR(pr *PullRequest) int {
	n := 1
	for k := range rp.issues {
		n = max(n, k+1)
	}
	pr.Number = n
	rp.issues[n] = &issue{number: n, title: pr.Title, body: pr.Body, user: pr.Author, isPR: true}
	rp.prs[n] = pr
	return n
}

func revParse(bare, rev string) string {
	out, err := exec.Command("git", "--git-dir", bare, "rev-parse", "--verify", "-q", rev+"^{commit}").Output()
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(out))
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

func copyMap(m map[string]string) map[string]string {
	if m == nil {
		return nil
	}
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}
