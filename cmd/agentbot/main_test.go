package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/go-chi/chi/v5"

	"github.com/agentbot/agentbot"
	"github.com/agentbot/agentbot/internal/testtool"
	"github.com/agentbot/agentbot/state"
	"github.com/agentbot/agentbot/webhook"
)

const testSecret = "s3cret-for-tests"

func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func pemFile(t *testing.T, dir, name, typ string, der []byte) string {
	t.Helper()
	return writeFile(t, dir, name, string(pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})))
}

func envFunc(env map[string]string) func(string) string {
	return func(k string) string { return env[k] }
}

func TestParseFlags(t *testing.T) {
	dir := t.TempDir()
	secret := writeFile(t, dir, "secret", testSecret+"\n")
	empty := writeFile(t, dir, "empty", "\n")
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	pkcs8, _ := x509.MarshalPKCS8PrivateKey(rsaKey)
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ecDER, _ := x509.MarshalPKCS8PrivateKey(ecKey)
	pkcs1File := pemFile(t, dir, "app.pem", "RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(rsaKey))
	pkcs8File := pemFile(t, dir, "app8.pem", "PRIVATE KEY", pkcs8)
	ecFile := pemFile(t, dir, "ec.pem", "PRIVATE KEY", ecDER)
	notPEM := writeFile(t, dir, "junk.pem", "not a key")
	aFile := writeFile(t, dir, "afile", "x")

	base := map[string]string{"AGENTBOT_WEBHOOK_SECRET_FILE": secret, "AGENTBOT_DATA_DIR": dir}
	with := func(kv ...string) map[string]string {
		m := map[string]string{}
		for k, v := range base {
			m[k] = v
		}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}
	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		wantErr []string // one substring per expected line
		check   func(t *testing.T, m *Main)
	}{
		{
			name: "defaults", args: []string{"serve"}, env: base,
			check: func(t *testing.T, m *Main) {
				c := m.Config
				if c.Listen != ":8080" || string(c.WebhookSecret) != testSecret || c.GitHubURL.String() != "https://api.github.com/" ||
					fmt.Sprint(c.TriggerLabels) != "[agent-task]" || c.MaxBody != webhook.DefaultMaxBody || c.AppID != 0 || c.PrivateKey != nil {
					t.Errorf("config %+v", c)
				}
			},
		},
		{
			name: "environment", args: []string{"serve"},
			env: with("AGENTBOT_LISTEN", "127.0.0.1:9000", "AGENTBOT_APP_ID", "12345", "AGENTBOT_PRIVATE_KEY_FILE", pkcs1File,
				"AGENTBOT_GITHUB_URL", "https://ghe.example.test/api/v3", "AGENTBOT_LOG_LEVEL", "debug", "AGENTBOT_TRIGGER_LABELS", "agent-task, ai "),
			check: func(t *testing.T, m *Main) {
				c := m.Config
				if c.Listen != "127.0.0.1:9000" || c.AppID != 12345 || c.PrivateKey == nil || c.GitHubURL.String() != "https://ghe.example.test/api/v3/" ||
					c.LogLevel.String() != "DEBUG" || fmt.Sprint(c.TriggerLabels) != "[agent-task ai]" {
					t.Errorf("config %+v", c)
				}
			},
		},
		{
			name: "flag wins over environment", args: []string{"serve", "--listen", "127.0.0.1:7000", "--app-id", "7", "--private-key-file", pkcs8File},
			env: with("AGENTBOT_LISTEN", "127.0.0.1:9000"),
			check: func(t *testing.T, m *Main) {
				if m.Config.Listen != "127.0.0.1:7000" || m.Config.AppID != 7 || m.Config.PrivateKey == nil {
					t.Errorf("config %+v", m.Config)
				}
			},
		},
		{name: "metrics listen not host:port", args: []string{"serve"}, env: with("AGENTBOT_METRICS_LISTEN", "9090"), wantErr: []string{`--metrics-listen ($AGENTBOT_METRICS_LISTEN): "9090" is not host:port`}},
		{name: "metrics listen on the main address", args: []string{"serve", "--listen", "127.0.0.1:9000"}, env: with("AGENTBOT_METRICS_LISTEN", "127.0.0.1:9000"), wantErr: []string{"give /metrics its own port"}},
		{name: "missing secret", args: []string{"serve"}, env: map[string]string{}, wantErr: []string{"AGENTBOT_WEBHOOK_SECRET_FILE): required"}},
		{name: "empty secret", args: []string{"serve"}, env: with("AGENTBOT_WEBHOOK_SECRET_FILE", empty), wantErr: []string{"is empty: an empty secret would accept unsigned deliveries"}},
		{name: "secret file missing", args: []string{"serve"}, env: with("AGENTBOT_WEBHOOK_SECRET_FILE", filepath.Join(dir, "nope")), wantErr: []string{"nope does not exist"}},
		{
			name: "every bad value reported, one line each", args: []string{"serve"},
			env: with("AGENTBOT_LISTEN", "8080", "AGENTBOT_APP_ID", "abc", "AGENTBOT_PRIVATE_KEY_FILE", notPEM, "AGENTBOT_GITHUB_URL", "ftp://x",
				"AGENTBOT_LOG_LEVEL", "chatty", "AGENTBOT_MAX_BODY", "-1", "AGENTBOT_DELIVERY_RETENTION", "forever", "AGENTBOT_DATA_DIR", aFile),
			wantErr: []string{
				`--listen ($AGENTBOT_LISTEN): "8080" is not host:port`,
				"is not a directory",
				`--app-id ($AGENTBOT_APP_ID): "abc" is not a positive number`,
				"junk.pem is not a PEM file",
				`"ftp://x" is not an http(s) URL`,
				`"chatty" is not debug, info, warn or error`,
				`--max-body ($AGENTBOT_MAX_BODY)`,
				`--delivery-retention ($AGENTBOT_DELIVERY_RETENTION): "forever"`,
			},
		},
		{name: "EC private key", args: []string{"serve", "--app-id", "1", "--private-key-file", ecFile}, env: base, wantErr: []string{"not an RSA key"}},
		{name: "key without App id", args: []string{"serve", "--private-key-file", pkcs1File}, env: base, wantErr: []string{"--app-id ($AGENTBOT_APP_ID): required when a private key file is set"}},
		{name: "App id without key", args: []string{"serve", "--app-id", "5"}, env: base, wantErr: []string{"--private-key-file ($AGENTBOT_PRIVATE_KEY_FILE): required when the App id is set"}},
		{name: "no command", args: nil, wantErr: []string{"no command given"}},
		{name: "unknown command", args: []string{"frobnicate"}, wantErr: []string{`unknown command "frobnicate"`}},
		{name: "stray argument", args: []string{"serve", "extra"}, env: base, wantErr: []string{"unexpected arguments"}},
		{
			name: "tasks needs no secret", args: []string{"tasks", "--json", "--state", "queued,running", "--limit", "0"}, env: map[string]string{"AGENTBOT_DATA_DIR": dir},
			check: func(t *testing.T, m *Main) {
				if !m.Tasks.JSON || m.Tasks.Limit != 0 || fmt.Sprint(m.Tasks.states) != "[queued running]" || m.Options.DataDir != dir {
					t.Errorf("tasks options %+v", m.Tasks)
				}
			},
		},
		{name: "tasks with a bad state", args: []string{"tasks", "--state", "done"}, env: base, wantErr: []string{`--state: "done" is not a task state`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := NewMain()
			var stderr bytes.Buffer
			m.Stdout, m.Stderr = io.Discard, &stderr
			err := m.ParseFlags(tt.args, envFunc(tt.env))
			if tt.wantErr == nil {
				if err != nil {
					t.Fatalf("ParseFlags: %v", err)
				}
				tt.check(t, m)
				return
			}
			if err == nil {
				t.Fatal("ParseFlags succeeded")
			}
			lines := strings.Split(err.Error(), "\n")
			if len(lines) != len(tt.wantErr) {
				t.Errorf("%d error lines, want %d:\n%v", len(lines), len(tt.wantErr), err)
			}
			for _, w := range tt.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q:\n%v", w, err)
				}
			}
			if strings.Contains(err.Error(), testSecret) {
				t.Error("error reveals the secret")
			}
		})
	}
}

// serveMain starts serve in-process on 127.0.0.1:0 over dataDir.
func serveMain(t *testing.T, dataDir string, opts ...Option) (*Main, *testtool.Buffer) {
	t.Helper()
	secret := writeFile(t, t.TempDir(), "secret", testSecret)
	m := NewMain(opts...)
	logs := &testtool.Buffer{}
	m.Stdout, m.Stderr = io.Discard, logs
	env := map[string]string{"AGENTBOT_WEBHOOK_SECRET_FILE": secret, "AGENTBOT_DATA_DIR": dataDir, "AGENTBOT_STORE_TIMEOUT": "100ms"}
	if err := m.ParseFlags([]string{"serve", "--listen", "127.0.0.1:0"}, envFunc(env)); err != nil {
		t.Fatal(err)
	}
	if err := m.Run(context.Background()); err != nil {
		m.Close()
		t.Fatalf("Run: %v", err)
	}
	t.Cleanup(func() { m.Close() })
	return m, logs
}

func labeledPayload(n int) []byte {
	return fmt.Appendf(nil, `{"action":"labeled","label":{"name":"agent-task"},"issue":{"number":%d,"title":"Issue %d","body":"Do the thing"},`+
		`"repository":{"name":"hello","full_name":"octo/hello","owner":{"login":"octo"}},"installation":{"id":99},`+
		`"sender":{"login":"octocat","id":1,"type":"User"}}`, n, n)
}

// deliver POSTs a signed delivery and returns the status and body.
func deliver(t *testing.T, client *http.Client, base, id string, body []byte) (int, string, error) {
	req, err := http.NewRequest(http.MethodPost, base+"/webhook", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-GitHub-Event", "issues")
	req.Header.Set("X-GitHub-Delivery", id)
	req.Header.Set("X-Hub-Signature-256", webhook.Signature([]byte(testSecret), body))
	resp, err := client.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), nil
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestServeInProcess(t *testing.T) {
	dataDir := t.TempDir()
	var (
		mu       sync.Mutex
		enqueued []string
		stopped  bool
	)
	m, logs := serveMain(t, dataDir, WithHooks(dispatchHook, func(ctx context.Context, m *Main) (Plugin, error) {
		if m.Store == nil || m.Registry == nil || m.Logger == nil {
			t.Error("hook ran before the store, registry and logger were ready")
		}
		var p Plugin
		p.Enqueued = func(task *agentbot.Task) {
			mu.Lock()
			defer mu.Unlock()
			enqueued = append(enqueued, task.ID)
		}
		p.Routes = func(r chi.Router) {
			r.Get("/tasks/{id}", func(w http.ResponseWriter, r *http.Request) {
				task, err := m.Store.Get(r.Context(), chi.URLParam(r, "id"))
				if err != nil {
					http.Error(w, "not found", http.StatusNotFound)
					return
				}
				io.WriteString(w, string(task.State))
			})
		}
		p.Stop = func(context.Context) error {
			mu.Lock()
			defer mu.Unlock()
			stopped = true
			return nil
		}
		return p, nil
	}))
	base := "http://" + m.Addr()

	tests := []struct {
		path       string
		wantStatus int
		wantBody   string
	}{
		{"/healthz", http.StatusOK, "ok"},
		{"/readyz", http.StatusOK, "ready"},
		{"/nope", http.StatusNotFound, ""},
	}
	for _, tt := range tests {
		if status, body := get(t, base+tt.path); status != tt.wantStatus || !strings.Contains(body, tt.wantBody) {
			t.Errorf("GET %s = %d %q", tt.path, status, body)
		}
	}

	status, body, err := deliver(t, http.DefaultClient, base, "inproc-1", labeledPayload(3))
	if err != nil || status != http.StatusAccepted {
		t.Fatalf("delivery: %d %q %v", status, body, err)
	}
	var resp struct {
		TaskID string `json:"task_id"`
	}
	json.Unmarshal([]byte(body), &resp)
	if status, body := get(t, base+"/tasks/"+resp.TaskID); status != http.StatusOK || body != "queued" {
		t.Errorf("extension route: %d %q", status, body)
	}
	mu.Lock()
	if fmt.Sprint(enqueued) != fmt.Sprint([]string{resp.TaskID}) {
		t.Errorf("Enqueued got %v, want [%s]", enqueued, resp.TaskID)
	}
	mu.Unlock()

	if status, _ := get(t, base+"/metrics"); status != http.StatusUnauthorized {
		t.Errorf("/metrics without auth: %d, want 401", status)
	}
	tok, _, err := dataDirToken(dataDir, pagesTokenFile, false)
	if err != nil {
		t.Fatal(err)
	}
	_, metrics := getAs(t, base+"/metrics", "Bearer "+tok)
	for _, want := range []string{
		`agentbot_webhook_deliveries_total{event="issues",outcome="queued"} 1`,
		`agentbot_tasks{state="queued"} 1`,
		"agentbot_webhook_intake_duration_seconds_bucket",
		"agentbot_store_operation_duration_seconds_bucket",
		"go_goroutines",
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}

	// A second server on the same data dir fails fast with the lock error.
	m2 := NewMain()
	m2.Stdout, m2.Stderr = io.Discard, io.Discard
	secret := writeFile(t, t.TempDir(), "secret", testSecret)
	if err := m2.ParseFlags([]string{"serve", "--listen", "127.0.0.1:0", "--store-timeout", "100ms"}, envFunc(map[string]string{"AGENTBOT_WEBHOOK_SECRET_FILE": secret, "AGENTBOT_DATA_DIR": dataDir})); err != nil {
		t.Fatal(err)
	}
	if err := m2.Run(context.Background()); !errors.Is(err, state.ErrLocked) {
		t.Errorf("second serve Run = %v, want ErrLocked", err)
	}
	m2.Close()

	// tasks refuses clearly while serve holds the file.
	if _, err := runTasks(t, dataDir, "--store-timeout", "100ms"); err == nil || !strings.Contains(err.Error(), "database is locked by another agentbot") {
		t.Errorf("tasks during serve: %v", err)
	}

	if err := m.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	mu.Lock()
	if !stopped {
		t.Error("hook's stop was not called")
	}
	mu.Unlock()
	if !strings.Contains(logs.String(), `"msg":"listening"`) || strings.Contains(logs.String(), testSecret) {
		t.Errorf("logs: %s", logs)
	}

	// After serve stops, tasks reads the file.
	out, err := runTasks(t, dataDir)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, resp.TaskID) || !strings.Contains(out, "octo/hello#3") || !strings.Contains(out, "queued") {
		t.Errorf("tasks table:\n%s", out)
	}
	out, err = runTasks(t, dataDir, "--json")
	if err != nil {
		t.Fatal(err)
	}
	var listed []agentbot.Task
	if err := json.Unmarshal([]byte(out), &listed); err != nil || len(listed) != 1 || listed[0].ID != resp.TaskID || listed[0].DeliveryID != "inproc-1" {
		t.Errorf("tasks --json: %v %s", err, out)
	}
	out, err = runTasks(t, dataDir, "--json", "--state", "running")
	if err != nil || strings.TrimSpace(out) != "[]" {
		t.Errorf("tasks --state running: %v %q", err, out)
	}
}

func runTasks(t *testing.T, dataDir string, args ...string) (string, error) {
	t.Helper()
	m := NewMain()
	var out bytes.Buffer
	m.Stdout, m.Stderr = &out, io.Discard
	if err := m.ParseFlags(append([]string{"tasks", "--data-dir", dataDir}, args...), envFunc(nil)); err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	err := m.Run(context.Background())
	return out.String(), err
}

func TestTasksOnAFreshDataDir(t *testing.T) {
	out, err := runTasks(t, t.TempDir(), "--json")
	if err != nil || strings.TrimSpace(out) != "[]" {
		t.Errorf("tasks on an empty dir: %v %q", err, out)
	}
}

func TestHookErrorStopsServe(t *testing.T) {
	dataDir := t.TempDir()
	secret := writeFile(t, t.TempDir(), "secret", testSecret)
	errBoom := errors.New("dispatcher could not start")
	m := NewMain(WithHooks(func(context.Context, *Main) (Plugin, error) { return Plugin{}, errBoom }))
	m.Stdout, m.Stderr = io.Discard, io.Discard
	if err := m.ParseFlags([]string{"serve", "--listen", "127.0.0.1:0"}, envFunc(map[string]string{"AGENTBOT_WEBHOOK_SECRET_FILE": secret, "AGENTBOT_DATA_DIR": dataDir})); err != nil {
		t.Fatal(err)
	}
	if err := m.Run(context.Background()); !errors.Is(err, errBoom) {
		t.Fatalf("Run = %v", err)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	// The store was closed: the data dir is free again.
	s, err := state.Open(filepath.Join(dataDir, "agentbot.db"), state.Options{})
	if err != nil {
		t.Fatalf("store still held after a failed Run and Close: %v", err)
	}
	s.Close()
}
