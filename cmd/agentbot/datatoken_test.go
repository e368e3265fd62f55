package main

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/agentbot/agentbot/github/githubtest"
	"github.com/agentbot/agentbot/internal/testtool"
	"github.com/agentbot/agentbot/web"
)

// pagesMain starts serve in-process with the dispatcher (so the task
// pages exist) on dataDir, and returns its log.
func pagesMain(t *testing.T, gh *githubtest.Server, dataDir string, env map[string]string) (*Main, *testtool.Buffer) {
	t.Helper()
	dir := t.TempDir()
	all := map[string]string{
		"AGENTBOT_WEBHOOK_SECRET_FILE": writeFile(t, dir, "secret", testSecret),
		"AGENTBOT_PRIVATE_KEY_FILE":    writeFile(t, dir, "key.pem", string(gh.PrivateKeyPEM)),
		"AGENTBOT_APP_ID":              strconv.FormatInt(gh.AppID, 10),
		"AGENTBOT_GITHUB_URL":          gh.URL,
		"AGENTBOT_DATA_DIR":            dataDir,
		"AGENTBOT_STORE_TIMEOUT":       "100ms",
		"AGENTBOT_AGENT":               "command",
		"AGENTBOT_AGENT_COMMAND":       "/bin/true",
		"AGENTBOT_AGENT_RUNNER":        "/bin/true",
		"AGENTBOT_LOCAL_ISOLATION":     "none",
	}
	for k, v := range env {
		all[k] = v
	}
	m := NewMain(WithHooks(dispatchHook))
	logs := &testtool.Buffer{}
	m.Stdout, m.Stderr = io.Discard, logs
	if err := m.ParseFlags([]string{"serve", "--listen", "127.0.0.1:0"}, envFunc(all)); err != nil {
		t.Fatal(err)
	}
	if err := m.Run(context.Background()); err != nil {
		m.Close()
		t.Fatalf("Run: %v\n%s", err, logs)
	}
	t.Cleanup(func() { m.Close() })
	return m, logs
}

// getAs GETs url with an Authorization header ("" sends none).
func getAs(t *testing.T, url, authorization string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	if authorization != "" {
		req.Header.Set("Authorization", authorization)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestPagesTokenGenerated: with no pages credentials configured, serve
// makes a token in the data dir (0600), refuses the pages, the dashboard
// and /metrics without it and serves them with it; a restart reuses it;
// no log line holds it.
func TestPagesTokenGenerated(t *testing.T) {
	gh := githubtest.New(t)
	dataDir := filepath.Join(t.TempDir(), "data") // serve creates it
	m, logs := pagesMain(t, gh, dataDir, nil)
	path := filepath.Join(dataDir, pagesTokenFile)
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatalf("no token file: %v", err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("token file mode %04o, want 0600", fi.Mode().Perm())
	}
	b, _ := os.ReadFile(path)
	tok := strings.TrimSpace(string(b))
	if len(tok) != 64 {
		t.Fatalf("token %d characters, want 64 (256 bits in hex)", len(tok))
	}
	base := "http://" + m.Addr()
	for _, p := range []string{"/", "/tasks", "/tasks/x/log", "/metrics"} {
		for _, bad := range []string{"", "Bearer ", "Bearer " + tok[:63], "Bearer " + tok + "x", "Basic " + tok} {
			if status, _ := getAs(t, base+p, bad); status != http.StatusUnauthorized {
				t.Errorf("GET %s with %q: %d, want 401", p, bad, status)
			}
		}
	}
	if status, body := getAs(t, base+"/tasks?format=json", "Bearer "+tok); status != http.StatusOK || !strings.Contains(body, `"tasks"`) {
		t.Errorf("GET /tasks with the token: %d %q", status, body)
	}
	if status, body := getAs(t, base+"/metrics", "Bearer "+tok); status != http.StatusOK || !strings.Contains(body, "go_goroutines") {
		t.Errorf("GET /metrics with the token: %d", status)
	}
	// A browser sends basic auth: the generated token is the password.
	req, _ := http.NewRequest(http.MethodGet, base+"/", nil)
	req.SetBasicAuth(pagesUser, tok)
	if status, _ := getAs(t, base+"/", req.Header.Get("Authorization")); status != http.StatusOK {
		t.Errorf("dashboard with basic auth: %d", status)
	}
	if status, _ := getAs(t, base+"/healthz", ""); status != http.StatusOK {
		t.Errorf("/healthz needs no auth, got %d", status)
	}
	if !strings.Contains(logs.String(), path) {
		t.Errorf("the log does not say where the token is:\n%s", logs)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}

	// A second start reuses the file, and says so.
	m2, logs2 := pagesMain(t, gh, dataDir, nil)
	b2, _ := os.ReadFile(path)
	if strings.TrimSpace(string(b2)) != tok {
		t.Error("the second start replaced the token")
	}
	if status, _ := getAs(t, "http://"+m2.Addr()+"/tasks", "Bearer "+tok); status != http.StatusOK {
		t.Errorf("second start refuses the first token: %d", status)
	}
	if !strings.Contains(logs2.String(), "using the token in the data dir") {
		t.Errorf("second start's log:\n%s", logs2)
	}
	for _, l := range []string{logs.String(), logs2.String()} {
		if strings.Contains(l, tok) {
			t.Fatal("the token is in the log")
		}
	}
}

// TestPagesTokenConfigured: an operator's token is the one the pages and
// /metrics take; no file is made.
func TestPagesTokenConfigured(t *testing.T) {
	gh := githubtest.New(t)
	dataDir := t.TempDir()
	tokFile := writeFile(t, t.TempDir(), "pages-token", "operator-chosen-token-0123456789\n")
	m, _ := pagesMain(t, gh, dataDir, map[string]string{"AGENTBOT_PAGES_TOKEN_FILE": tokFile})
	if _, err := os.Stat(filepath.Join(dataDir, pagesTokenFile)); !os.IsNotExist(err) {
		t.Errorf("a token file was made beside a configured token: %v", err)
	}
	base := "http://" + m.Addr()
	for _, p := range []string{"/tasks", "/metrics"} {
		if status, _ := getAs(t, base+p, ""); status != http.StatusUnauthorized {
			t.Errorf("GET %s without auth: %d", p, status)
		}
		if status, _ := getAs(t, base+p, "Bearer operator-chosen-token-0123456789"); status != http.StatusOK {
			t.Errorf("GET %s with the operator's token: %d", p, status)
		}
	}
}

// TestMetricsListen: with AGENTBOT_METRICS_LISTEN, /metrics is served
// there without auth and is gone from the main listener.
func TestMetricsListen(t *testing.T) {
	gh := githubtest.New(t)
	m, _ := pagesMain(t, gh, t.TempDir(), map[string]string{"AGENTBOT_METRICS_LISTEN": "127.0.0.1:0"})
	if m.MetricsAddr() == "" {
		t.Fatal("no metrics listener")
	}
	if status, body := getAs(t, "http://"+m.MetricsAddr()+"/metrics", ""); status != http.StatusOK || !strings.Contains(body, "go_goroutines") {
		t.Errorf("metrics listener: %d", status)
	}
	if status, _ := getAs(t, "http://"+m.MetricsAddr()+"/tasks", ""); status != http.StatusNotFound {
		t.Errorf("the metrics listener serves /tasks: %d", status)
	}
	tok, _, err := dataDirToken(m.Config.DataDir, pagesTokenFile, false)
	if err != nil {
		t.Fatal(err)
	}
	if status, _ := getAs(t, "http://"+m.Addr()+"/metrics", "Bearer "+tok); status != http.StatusNotFound {
		t.Errorf("main listener /metrics with its own listener set: %d, want 404", status)
	}
}

// TestPagesTokenFileRefused: a token file others may read, or a short
// one, stops serve with a line saying what to do; nothing is rewritten.
func TestPagesTokenFileRefused(t *testing.T) {
	for name, tc := range map[string]struct {
		content string
		mode    os.FileMode
		want    string
	}{
		"readable by others": {strings.Repeat("a", 64), 0o644, "others may read it"},
		"too short":          {"short", 0o600, "fewer than 32 characters"},
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, pagesTokenFile)
			if err := os.WriteFile(path, []byte(tc.content), tc.mode); err != nil {
				t.Fatal(err)
			}
			os.Chmod(path, tc.mode)
			_, err := pagesAuth(dir, web.Auth{}, slog.New(slog.DiscardHandler))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err %v, want %q", err, tc.want)
			}
			if b, _ := os.ReadFile(path); string(b) != tc.content {
				t.Error("the file was rewritten")
			}
		})
	}
}
