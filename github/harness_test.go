package github

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/agentbot/agentbot"
	"github.com/agentbot/agentbot/github/githubtest"
	"github.com/agentbot/agentbot/internal/gitserver"
	"github.com/agentbot/agentbot/internal/testtool"
)

// allLogs captures the slog output of every client in every test of the
// package; TestMain greps it for every token any fake minted.
var allLogs = &testtool.Buffer{}

var (
	mintedMu sync.Mutex
	minted   []string
)

func TestMain(m *testing.M) {
	code := m.Run()
	logs := allLogs.String()
	mintedMu.Lock()
	defer mintedMu.Unlock()
	for _, tok := range minted {
		if strings.Contains(logs, tok) {
			fmt.Fprintf(os.Stderr, "FAIL: a minted token value appears in the captured logs\n")
			code = 1
		}
	}
	if code == 0 && len(minted) == 0 {
		fmt.Fprintf(os.Stderr, "FAIL: no tokens were minted; the log check checked nothing\n")
		code = 1
	}
	os.Exit(code)
}

// harness is one fake GitHub, one real git server and a Client wired to
// them, with one installation (instID) on repo acme/widgets.
type harness struct {
	t      *testing.T
	gh     *githubtest.Server
	git    *gitserver.Server
	client *Client
	reg    *prometheus.Registry
	logs   *testtool.Buffer
	repo   agentbot.Repo
	base   string // head of main at start

	sleepMu sync.Mutex
	sleeps  []time.Duration
}

const instID = 77

func newHarness(t *testing.T, opts ...func(*Config)) *harness {
	t.Helper()
	h := &harness{t: t, gh: githubtest.New(t), logs: &testtool.Buffer{}, repo: agentbot.Repo{Owner: "acme", Name: "widgets"}}
	h.git = gitserver.New(t, h.gh.GitAuthorize())
	h.base = h.git.CreateRepo("acme", "widgets", "main", map[string]string{"README.md": "widgets\n", "src/app.go": "package app\n"})
	h.gh.AddRepo(h.repo, h.git, "main")
	h.gh.AddInstallation(instID, h.repo)
	h.reg = prometheus.NewRegistry()
	cfg := Config{
		BaseURL:    h.gh.URL,
		AppID:      h.gh.AppID,
		PrivateKey: h.gh.PrivateKeyPEM,
		Registry:   h.reg,
		Logger: slog.New(slog.NewJSONHandler(multiWriter{h.logs, allLogs}, &slog.HandlerOptions{Level: slog.LevelDebug})).
			With(slog.String("test", t.Name())),
		RetryBase: time.Millisecond,
		RetryCap:  10 * time.Millisecond,
		Sleep: func(ctx context.Context, d time.Duration) error {
			h.sleepMu.Lock()
			h.sleeps = append(h.sleeps, d)
			h.sleepMu.Unlock()
			return ctx.Err()
		},
	}
	for _, o := range opts {
		o(&cfg)
	}
	c, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(c.Close)
	h.client = c
	t.Cleanup(func() {
		// Per test: no token value in this test's logs.
		logs := h.logs.String()
		for _, tok := range h.gh.Tokens() {
			mintedMu.Lock()
			minted = append(minted, tok.Value)
			mintedMu.Unlock()
			if strings.Contains(logs, tok.Value) {
				t.Errorf("token minted for %v appears in the logs", tok.Repos)
			}
		}
	})
	return h
}

// logErr sends an error through the captured logger, so that error texts
// are covered by the token grep too.
func (h *harness) logErr(err error) {
	h.client.logger.Error("test saw error", slog.Any("err", err))
}

func (h *harness) waits() []time.Duration {
	h.sleepMu.Lock()
	defer h.sleepMu.Unlock()
	return append([]time.Duration(nil), h.sleeps...)
}

func (h *harness) ref(n int) agentbot.IssueRef { return agentbot.IssueRef{Repo: h.repo, Number: n} }

type multiWriter []interface{ Write([]byte) (int, error) }

func (m multiWriter) Write(p []byte) (int, error) {
	for _, w := range m {
		if _, err := w.Write(p); err != nil {
			return 0, err
		}
	}
	return len(p), nil
}

// work is a git working clone of the harness repository (straight from the
// bare directory, no HTTP) for making commits and bundles.
type work struct {
	t   *testing.T
	dir string
}

func (h *harness) clone() *work {
	h.t.Helper()
	w := &work{t: h.t, dir: h.t.TempDir()}
	w.git("clone", "-q", h.git.BarePath("acme", "widgets"), ".")
	return w
}

func (w *work) git(args ...string) string {
	w.t.Helper()
	cmd := exec.Command("git", args...)
	cmd.Dir = w.dir
	cmd.Env = append(os.Environ(), "GIT_AUTHOR_NAME=agent", "GIT_AUTHOR_EMAIL=agent@example.com",
		"GIT_COMMITTER_NAME=agent", "GIT_COMMITTER_EMAIL=agent@example.com", "GIT_CONFIG_GLOBAL=/dev/null")
	out, err := cmd.CombinedOutput()
	if err != nil {
		w.t.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

// commit writes files (content "" deletes) and commits them.
func (w *work) commit(msg string, files map[string]string) string {
	w.t.Helper()
	for p, content := range files {
		full := w.dir + "/" + p
		if content == "" {
			w.git("rm", "-q", p)
			continue
		}
		if err := os.MkdirAll(full[:strings.LastIndex(full, "/")], 0o755); err != nil {
			w.t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(content), 0o644); err != nil {
			w.t.Fatal(err)
		}
		w.git("add", p)
	}
	w.git("commit", "-q", "-m", msg)
	return w.git("rev-parse", "HEAD")
}

// bundle writes a bundle of revs and returns its path.
func (w *work) bundle(revs ...string) string {
	w.t.Helper()
	path := w.t.TempDir() + "/result.bundle"
	w.git(append([]string{"bundle", "create", "-q", path}, revs...)...)
	return path
}
