package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agentbot/agentbot/github/githubtest"
	"github.com/agentbot/agentbot/internal/testtool"
	"github.com/agentbot/agentbot/state"
)

// opsMain starts serve in-process with App credentials for gh, the given
// hooks and extra environment.
func opsMain(t *testing.T, gh *githubtest.Server, dataDir string, env map[string]string, hooks ...Hook) *Main {
	t.Helper()
	dir := t.TempDir()
	base := map[string]string{
		"AGENTBOT_WEBHOOK_SECRET_FILE": writeFile(t, dir, "secret", testSecret),
		"AGENTBOT_PRIVATE_KEY_FILE":    writeFile(t, dir, "key.pem", string(gh.PrivateKeyPEM)),
		"AGENTBOT_APP_ID":              strconv.FormatInt(gh.AppID, 10),
		"AGENTBOT_GITHUB_URL":          gh.URL,
		"AGENTBOT_DATA_DIR":            dataDir,
		"AGENTBOT_STORE_TIMEOUT":       "100ms",
	}
	for k, v := range env {
		base[k] = v
	}
	m := NewMain(WithHooks(hooks...))
	m.Stdout, m.Stderr = io.Discard, &testtool.Buffer{}
	if err := m.ParseFlags([]string{"serve", "--listen", "127.0.0.1:0"}, envFunc(base)); err != nil {
		t.Fatal(err)
	}
	if err := m.Run(context.Background()); err != nil {
		m.Close()
		t.Fatalf("Run: %v", err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

// frontDoor stands where GitHub sends webhooks: while agentbot is down it
// answers 502; once starting, requests wait for open to name the agentbot
// behind it (serve scans the delivery log as soon as it listens, before a
// test can learn its address).
type frontDoor struct {
	srv      *httptest.Server
	starting atomic.Bool
	opened   chan struct{}
	target   *url.URL
}

func newFrontDoor(t *testing.T) *frontDoor {
	d := &frontDoor{opened: make(chan struct{})}
	d.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !d.starting.Load() {
			http.Error(w, "agentbot is down", http.StatusBadGateway)
			return
		}
		select {
		case <-d.opened:
		case <-time.After(10 * time.Second):
			http.Error(w, "agentbot never came up", http.StatusGatewayTimeout)
			return
		}
		httputil.NewSingleHostReverseProxy(d.target).ServeHTTP(w, r)
	}))
	t.Cleanup(d.srv.Close)
	return d
}

func (d *frontDoor) open(addr string) {
	d.target = &url.URL{Scheme: "http", Host: addr}
	close(d.opened)
}

// TestServeRecoversMissedDeliveries: deliveries GitHub failed to make while
// agentbot was down become tasks once it starts, without anyone asking.
func TestServeRecoversMissedDeliveries(t *testing.T) {
	gh := githubtest.New(t)
	door := newFrontDoor(t)
	gh.SetWebhook(door.srv.URL+"/webhook", testSecret)
	var missed []githubtest.Delivery
	for n := range 3 {
		d := gh.Deliver("issues", "labeled", 99, labeledPayload(n+1))
		if d.StatusCode != http.StatusBadGateway {
			t.Fatalf("delivery while down answered %d", d.StatusCode)
		}
		missed = append(missed, d)
	}

	door.starting.Store(true)
	dataDir := t.TempDir()
	m := opsMain(t, gh, dataDir, nil, redeliverHook)
	door.open(m.Addr())
	deadline := time.Now().Add(10 * time.Second)
	for {
		gh.WaitRedeliveries()
		recorded := 0
		for _, d := range missed {
			if seen, _ := m.Store.SeenDelivery(context.Background(), d.GUID); seen {
				recorded++
			}
		}
		if recorded == len(missed) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d missed deliveries recovered; calls: %v", recorded, len(missed), gh.Calls())
		}
		time.Sleep(10 * time.Millisecond) // polling for the first scan, which starts at once
	}
	tasks, err := m.Store.List(context.Background(), 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(tasks) != len(missed) {
		t.Errorf("%d tasks, want %d", len(tasks), len(missed))
	}
	tok, _, err := dataDirToken(dataDir, pagesTokenFile, false)
	if err != nil {
		t.Fatal(err)
	}
	_, metrics := getAs(t, "http://"+m.Addr()+"/metrics", "Bearer "+tok)
	if !strings.Contains(metrics, `agentbot_redeliveries_total{outcome="requested"} 3`) {
		t.Errorf("metrics do not count redeliveries:\n%s", metrics)
	}
}

// TestBackupWhileServing: `agentbot backup` while serve stores deliveries
// gets a copy that opens and holds every task acknowledged (202) before
// the backup began; with serve stopped it copies the file itself.
func TestBackupWhileServing(t *testing.T) {
	dataDir := t.TempDir()
	m, _ := serveMain(t, dataDir, WithHooks(adminHook))
	base := "http://" + m.Addr()
	var (
		mu    sync.Mutex
		acked []string
		stop  = make(chan struct{})
		wg    sync.WaitGroup
	)
	for w := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				id := fmt.Sprintf("backup-%d-%d", w, i)
				status, _, err := deliver(t, http.DefaultClient, base, id, labeledPayload(w*10000+i+1))
				if err != nil || status != http.StatusAccepted {
					t.Errorf("delivery %s: %d %v", id, status, err)
					return
				}
				mu.Lock()
				acked = append(acked, id)
				mu.Unlock()
			}
		}()
	}
	defer func() { close(stop); wg.Wait() }()
	deadline := time.Now().Add(20 * time.Second)
	for {
		mu.Lock()
		n := len(acked)
		mu.Unlock()
		if n >= 50 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("only %d deliveries acknowledged in 20s", n)
		}
		time.Sleep(5 * time.Millisecond)
	}
	mu.Lock()
	before := slices.Clone(acked)
	mu.Unlock()

	file := filepath.Join(t.TempDir(), "copy.db")
	out := runBackup(t, dataDir, "--url", base, file)
	if !strings.Contains(out, "from the running serve") {
		t.Errorf("backup said %q", out)
	}
	if fi, err := os.Stat(file); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("backup file: %v, mode %v", err, fi.Mode())
	}
	b, err := state.Open(file, state.Options{ReadOnly: true})
	if err != nil {
		t.Fatalf("the backup does not open: %v", err)
	}
	defer b.Close()
	for _, id := range before {
		if seen, _ := b.SeenDelivery(context.Background(), id); !seen {
			t.Fatalf("delivery %s, acknowledged before the backup, is not in it", id)
		}
	}
	got, err := b.Count(context.Background())
	if err != nil || got < len(before) {
		t.Errorf("backup holds %d tasks (%v), want at least %d", got, err, len(before))
	}

	// A wrong token is refused.
	req, _ := http.NewRequest(http.MethodGet, base+"/admin/backup", nil)
	req.Header.Set("Authorization", "Bearer not-the-token")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("backup with a wrong token answered %d", resp.StatusCode)
	}
}

func TestBackupOfAStoppedStore(t *testing.T) {
	dataDir := t.TempDir()
	m, _ := serveMain(t, dataDir, WithHooks())
	if status, _, err := deliver(t, http.DefaultClient, "http://"+m.Addr(), "one", labeledPayload(1)); err != nil || status != http.StatusAccepted {
		t.Fatalf("delivery: %d %v", status, err)
	}
	m.Close()
	file := filepath.Join(t.TempDir(), "copy.db")
	if out := runBackup(t, dataDir, file); !strings.Contains(out, "backed up 1 tasks") || !strings.Contains(out, "from the file") {
		t.Errorf("backup said %q", out)
	}
}

func runBackup(t *testing.T, dataDir string, args ...string) string {
	t.Helper()
	m := NewMain()
	var out strings.Builder
	m.Stdout, m.Stderr = &out, &out
	if err := m.ParseFlags(append([]string{"backup"}, args...), envFunc(map[string]string{"AGENTBOT_DATA_DIR": dataDir})); err != nil {
		t.Fatal(err)
	}
	if err := m.Run(context.Background()); err != nil {
		t.Fatalf("backup: %v\n%s", err, out.String())
	}
	return out.String()
}
