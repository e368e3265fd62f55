package main

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agentbot/agentbot/github/githubtest"
	"github.com/agentbot/agentbot/internal/testtool"
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
	_, metrics := get(t, "http://"+m.Addr()+"/metrics")
	if !strings.Contains(metrics, `agentbot_redeliveries_total{outcome="requested"} 3`) {
		t.Errorf("metrics do not count redeliveries:\n%s", metrics)
	}
}
