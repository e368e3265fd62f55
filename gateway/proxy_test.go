package gateway

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agentbot/agentbot/runner"
)

// TestConnect drives the egress proxy as a sandboxed client would: HTTPS
// through CONNECT to a loopback server that the test resolver gives an
// allowed name, and every way that must be refused.
func TestConnect(t *testing.T) {
	var served atomic.Int64
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		served.Add(1)
		fmt.Fprint(w, "hello from outside")
	}))
	defer srv.Close()
	p := port(t, srv)
	srvAddr := netip.MustParseAddrPort(strings.TrimPrefix(srv.URL, "https://"))
	names := hosts{"allowed.test": "127.0.0.1", "a.example.test": "127.0.0.1", "evil.test": "127.0.0.1",
		"metadata.test": "169.254.169.254", "v6metadata.test": "fe80::1", "private.test": "10.1.2.3"}

	tests := []struct {
		name    string
		host    string
		allow   string
		cidrs   []netip.Prefix
		self    []netip.AddrPort
		wantOK  bool
		wantWhy string
	}{
		{name: "an allowed name reaches its server", host: "allowed.test", allow: "allowed.test:%d", cidrs: loopback, wantOK: true},
		{name: "a wildcard covers a subdomain", host: "a.example.test", allow: "*.example.test:%d", cidrs: loopback, wantOK: true},
		{name: "a name not on the list", host: "evil.test", allow: "allowed.test:%d", cidrs: loopback, wantWhy: "not on this task's allow-list"},
		{name: "an allowed name on another port", host: "allowed.test", allow: "allowed.test", cidrs: loopback, wantWhy: "not on this task's allow-list"},
		{name: "an allowed name that resolves to loopback", host: "allowed.test", allow: "allowed.test:%d", wantWhy: "internal address"},
		{name: "an allowed name that resolves to cloud metadata", host: "metadata.test", allow: "metadata.test:%d", cidrs: loopback, wantWhy: "169.254.169.254 is an internal address"},
		{name: "an allowed name that resolves to IPv6 link-local", host: "v6metadata.test", allow: "v6metadata.test:%d", cidrs: loopback, wantWhy: "fe80::1 is an internal address"},
		{name: "an allowed name that resolves to a private range", host: "private.test", allow: "private.test:%d", cidrs: loopback, wantWhy: "10.1.2.3 is an internal address"},
		{name: "agentbot's own address, inside an allowed range", host: "allowed.test", allow: "allowed.test:%d", cidrs: loopback,
			self: []netip.AddrPort{srvAddr}, wantWhy: "is agentbot itself"},
		{name: "an address literal", host: "127.0.0.1", allow: "allowed.test:%d", cidrs: loopback, wantWhy: "not on this task's allow-list"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := served.Load()
			g := newGateway(t, Options{Resolver: names, AllowCIDRs: tc.cidrs, Self: tc.self})
			var rec recorder
			_, proxy := openTask(t, g, TaskSpec{Allow: AllowList{rule(t, strings.ReplaceAll(tc.allow, "%d", strconv.Itoa(p)))}, Record: rec.record})
			client := proxyClient(t, proxy, srv)
			resp, err := client.Get(fmt.Sprintf("https://%s:%d/", tc.host, p))
			if tc.wantOK {
				if err != nil {
					t.Fatalf("GET through the gateway: %v", err)
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if string(body) != "hello from outside" {
					t.Errorf("body = %q", body)
				}
			} else if err == nil {
				resp.Body.Close()
				t.Fatalf("GET %s went through (%s); want it refused", tc.host, resp.Status)
			} else if served.Load() != before {
				t.Errorf("the server was reached")
			}
			client.CloseIdleConnections() // the tunnel's event comes when it closes
			evs := waitEvents(t, &rec, 1)
			e := evs[0]
			if e.Kind != runner.EgressConnect || e.Host != tc.host || e.Port != p || e.Allowed != tc.wantOK {
				t.Errorf("event = %+v", e)
			}
			if tc.wantOK && (e.Reason != "" || e.BytesOut < 100 || e.BytesIn < 100) {
				t.Errorf("allowed tunnel: reason %q, %d bytes out, %d in; want no reason and a TLS exchange's bytes", e.Reason, e.BytesOut, e.BytesIn)
			}
			if !tc.wantOK && !strings.Contains(e.Reason, tc.wantWhy) {
				t.Errorf("reason = %q, want it to say %q", e.Reason, tc.wantWhy)
			}
		})
	}
}

// waitEvents waits (with a deadline) for n events: a tunnel's event is
// recorded when both sides have closed, a moment after the client is done.
func waitEvents(t *testing.T, rec *recorder, n int) []runner.Egress {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if evs := rec.all(); len(evs) >= n {
			return evs
		}
		if time.Now().After(deadline) {
			t.Fatalf("got %d events, want %d: %+v", len(rec.all()), n, rec.all())
		}
		time.Sleep(5 * time.Millisecond)
	}
}
