package gateway

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/agentbot/agentbot/runner"
)

// hosts is a Resolver over a fixed table, so a test can give an allowed
// name a loopback server's address; names it lacks do not exist.
type hosts map[string]string

func (h hosts) LookupNetIP(_ context.Context, _, host string) ([]netip.Addr, error) {
	a, ok := h[host]
	if !ok {
		return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
	}
	return []netip.Addr{netip.MustParseAddr(a)}, nil
}

// recorder keeps the egress events of a task.
type recorder struct {
	mu  sync.Mutex
	evs []runner.Egress
}

func (r *recorder) record(e runner.Egress) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.evs = append(r.evs, e)
}

func (r *recorder) all() []runner.Egress {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]runner.Egress(nil), r.evs...)
}

// loopback lets the sandbox reach loopback test servers, as an operator's
// AllowCIDRs would open an internal registry.
var loopback = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}

// newGateway makes a gateway whose sockets live in a short directory (a
// unix socket's path is limited to 107 bytes, which t.TempDir can pass).
func newGateway(t testing.TB, opts Options) *Gateway {
	t.Helper()
	dir, err := os.MkdirTemp("", "gw")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	opts.Dir = dir
	if opts.Self == nil {
		opts.Self = []netip.AddrPort{}
	}
	g, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := g.Close(); err != nil {
			t.Error(err)
		}
	})
	return g
}

// openTask opens spec's task and, as agent-runner does in the sandbox,
// forwards a loopback port to its socket; it returns the proxy URL.
func openTask(t testing.TB, g *Gateway, spec TaskSpec) (*Task, string) {
	t.Helper()
	if spec.TaskID == "" {
		spec.TaskID = "t1"
	}
	task, err := g.Open(spec)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Forward(ctx, ln, task.Socket) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Error("Forward did not return")
		}
		if err := task.Close(); err != nil {
			t.Error(err)
		}
	})
	return task, "http://" + ln.Addr().String()
}

// proxyClient is an HTTP client that goes through proxy and trusts srv's
// certificate (issued to example.com by httptest).
func proxyClient(t testing.TB, proxy string, srv *httptest.Server) *http.Client {
	t.Helper()
	u, err := url.Parse(proxy)
	if err != nil {
		t.Fatal(err)
	}
	tr := &http.Transport{Proxy: http.ProxyURL(u), ForceAttemptHTTP2: false}
	if srv != nil && srv.TLS != nil {
		pool := x509.NewCertPool()
		pool.AddCert(srv.Certificate())
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, ServerName: "example.com"}
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 20 * time.Second}
}

func port(t testing.TB, srv *httptest.Server) int {
	t.Helper()
	u, _ := url.Parse(srv.URL)
	p, err := strconv.Atoi(u.Port())
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func rule(t testing.TB, s string) Rule {
	t.Helper()
	r, err := ParseRule(s)
	if err != nil {
		t.Fatal(err)
	}
	return r
}
