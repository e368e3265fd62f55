// Package gitserver runs a real git smart-HTTP server for tests: git's own
// `git http-backend` behind net/http/cgi in an httptest server, serving bare
// repositories under a temporary root. Every request passes through an
// Authorize hook with the basic-auth credentials, so tests can require the
// installation tokens a fake GitHub minted (read for fetch, write for push).
package gitserver

import (
	"fmt"
	"net"
	"net/http"
	"net/http/cgi"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// Authorize decides whether a request may go on. repo is "owner/name",
// write is true for pushes (receive-pack). user and pass are the basic-auth
// credentials (empty when none were sent).
type Authorize func(repo, user, pass string, write bool) bool

// Server is a git smart-HTTP server over bare repositories in Root.
type Server struct {
	URL  string
	Root string

	t         testing.TB
	srv       *httptest.Server
	mu        sync.Mutex
	authorize Authorize
	requests  []string
}

// New starts a server on loopback; authorize may be nil to allow
// everything.
func New(t testing.TB, authorize Authorize) *Server {
	t.Helper()
	return NewAt(t, "127.0.0.1", authorize)
}

// NewAt starts a server listening on ip (on a free port): a real node's
// pods reach the host on its bridge address, not on loopback.
func NewAt(t testing.TB, ip string, authorize Authorize) *Server {
	t.Helper()
	out, err := exec.Command("git", "--exec-path").Output()
	if err != nil {
		t.Fatalf("gitserver: git --exec-path: %v", err)
	}
	backend := filepath.Join(strings.TrimSpace(string(out)), "git-http-backend")
	if _, err := os.Stat(backend); err != nil {
		t.Fatalf("gitserver: %s not found (install git): %v", backend, err)
	}
	s := &Server{Root: t.TempDir(), t: t, authorize: authorize}
	cgiHandler := &cgi.Handler{
		Path: backend,
		Env: []string{
			"GIT_PROJECT_ROOT=" + s.Root,
			"GIT_HTTP_EXPORT_ALL=1",
			// git http-backend serves receive-pack only to a REMOTE_USER,
			// which net/http/cgi never sets; authentication happens in front
			// of the CGI instead, so pushes are switched on here.
			"GIT_CONFIG_COUNT=1",
			"GIT_CONFIG_KEY_0=http.receivepack",
			"GIT_CONFIG_VALUE_0=true",
		},
	}
	s.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		repo, write := s.classify(r)
		user, pass, _ := r.BasicAuth()
		s.mu.Lock()
		s.requests = append(s.requests, r.Method+" "+r.URL.Path)
		authz := s.authorize
		s.mu.Unlock()
		if authz != nil && !authz(repo, user, pass, write) {
			w.Header().Set("WWW-Authenticate", `Basic realm="gitserver"`)
			http.Error(w, "authentication required", http.StatusUnauthorized)
			return
		}
		cgiHandler.ServeHTTP(w, r)
	}))
	l, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatalf("gitserver: listen on %s: %v", ip, err)
	}
	s.srv.Listener.Close()
	s.srv.Listener = l
	s.srv.Start()
	t.Cleanup(s.srv.Close)
	s.URL = s.srv.URL
	return s
}

// SetAuthorize replaces the authorisation hook.
func (s *Server) SetAuthorize(a Authorize) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.authorize = a
}

// Requests lists "METHOD /path" of every request so far.
func (s *Server) Requests() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.requests...)
}

// classify extracts "owner/name" from /owner/name.git/... and whether the
// request is part of a push.
func (s *Server) classify(r *http.Request) (repo string, write bool) {
	p := strings.TrimPrefix(r.URL.Path, "/")
	if i := strings.Index(p, ".git"); i >= 0 {
		repo = p[:i]
	}
	write = strings.HasSuffix(r.URL.Path, "/git-receive-pack") || r.URL.Query().Get("service") == "git-receive-pack"
	return repo, write
}

// CloneURL is the HTTP URL of repository owner/name.
func (s *Server) CloneURL(owner, name string) string {
	return fmt.Sprintf("%s/%s/%s.git", s.URL, owner, name)
}

// BarePath is the on-disk path of repository owner/name.
func (s *Server) BarePath(owner, name string) string {
	return filepath.Join(s.Root, owner, name+".git")
}

// CreateRepo makes a bare repository owner/name whose branch holds files,
// committed once, and returns that commit's SHA.
func (s *Server) CreateRepo(owner, name, branch string, files map[string]string) string {
	s.t.Helper()
	bare := s.BarePath(owner, name)
	s.git("", "init", "--bare", "--initial-branch="+branch, bare)
	work := s.t.TempDir()
	s.git(work, "init", "--initial-branch="+branch, ".")
	for path, content := range files {
		full := filepath.Join(work, path)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			s.t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(content), 0o644); err != nil {
			s.t.Fatal(err)
		}
	}
	s.git(work, "add", "-A")
	s.git(work, "-c", "user.name=seed", "-c", "user.email=seed@example.com", "commit", "-q", "-m", "seed")
	s.git(work, "push", "-q", bare, branch)
	return s.RevParse(owner, name, branch)
}

// RevParse resolves rev in repository owner/name ("" when it does not exist).
func (s *Server) RevParse(owner, name, rev string) string {
	s.t.Helper()
	out, err := exec.Command("git", "--git-dir", s.BarePath(owner, name), "rev-parse", "--verify", "-q", rev+"^{commit}").Output()
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(out))
}

// Branches lists the branches of repository owner/name.
func (s *Server) Branches(owner, name string) []string {
	s.t.Helper()
	out := s.git("", "--git-dir", s.BarePath(owner, name), "for-each-ref", "--format=%(refname:short)", "refs/heads/")
	return strings.Fields(out)
}

// Show returns the content of path at rev in repository owner/name.
func (s *Server) Show(owner, name, rev, path string) (string, error) {
	out, err := exec.Command("git", "--git-dir", s.BarePath(owner, name), "show", rev+":"+path).Output()
	return string(out), err
}

func (s *Server) git(dir string, args ...string) string {
	s.t.Helper()
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GIT_TERMINAL_PROMPT=0")
	out, err := cmd.CombinedOutput()
	if err != nil {
		s.t.Fatalf("gitserver: git %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}
