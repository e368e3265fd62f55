package gateway

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/agentbot/agentbot/runner"
)

// serveTCP starts g's shared TCP server on loopback and returns its
// address.
func serveTCP(t testing.TB, g *Gateway) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := NewTCPServer(g)
	done := make(chan error, 1)
	go func() { done <- s.Serve(ln) }()
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Error(err)
		}
		if err := <-done; err != http.ErrServerClosed {
			t.Errorf("Serve = %v", err)
		}
	})
	return ln.Addr().String()
}

// forwardTCP runs ForwardTCP to addr with key on a loopback port, as
// agent-runner does in a pod, and returns the proxy URL.
func forwardTCP(t testing.TB, addr, key string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ForwardTCP(ctx, ln, addr, key) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Error("ForwardTCP did not return")
		}
	})
	return "http://" + ln.Addr().String()
}

// openShared opens a task on g without its socket's forwarder: on the TCP
// server, the capability alone says whose a connection is.
func openShared(t testing.TB, g *Gateway, spec TaskSpec) *Task {
	t.Helper()
	task, err := g.Open(spec)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := task.Close(); err != nil {
			t.Error(err)
		}
	})
	return task
}

// TestTCPServer drives the shared listener as pods do: through ForwardTCP
// with the task's capability, and directly with the capability in the
// proxy URL; two tasks share it, and each reaches only its own allow-list.
func TestTCPServer(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, "hello from outside")
	}))
	defer srv.Close()
	plain := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "plain %s auth=%q", r.URL.Path, r.Header.Get("Proxy-Authorization"))
	}))
	defer plain.Close()
	p, pp := port(t, srv), port(t, &httptest.Server{URL: plain.URL})
	g := newGateway(t, Options{Resolver: hosts{"a.test": "127.0.0.1", "b.test": "127.0.0.1"}, AllowCIDRs: loopback})
	addr := serveTCP(t, g)
	var recA, recB recorder
	a := openShared(t, g, TaskSpec{TaskID: "ta", Allow: AllowList{{Host: "a.test", Port: p}, {Host: "a.test", Port: pp}}, Record: recA.record})
	openShared(t, g, TaskSpec{TaskID: "tb", Allow: AllowList{{Host: "b.test", Port: p}}, Record: recB.record})

	t.Run("HTTPS through ForwardTCP", func(t *testing.T) {
		c := proxyClient(t, forwardTCP(t, addr, a.Key()), srv)
		body := get(t, c, fmt.Sprintf("https://a.test:%d/", p), http.StatusOK)
		if body != "hello from outside" {
			t.Errorf("body = %q", body)
		}
		c.CloseIdleConnections()
		e := waitEvents(t, &recA, 1)[0]
		if e.Kind != runner.EgressConnect || e.Host != "a.test" || !e.Allowed || e.BytesIn < 100 {
			t.Errorf("task a's event = %+v", e)
		}
	})
	t.Run("plain HTTP through ForwardTCP, without the capability upstream", func(t *testing.T) {
		c := proxyClient(t, forwardTCP(t, addr, a.Key()), nil)
		body := get(t, c, fmt.Sprintf("http://a.test:%d/x", pp), http.StatusOK)
		if body != `plain /x auth=""` {
			t.Errorf("body = %q", body)
		}
	})
	t.Run("the capability in the proxy URL", func(t *testing.T) {
		u, _ := url.Parse("http://" + addr)
		u.User = url.UserPassword("agentbot", a.Key())
		before := len(recA.all())
		c := proxyClient(t, u.String(), srv)
		body := get(t, c, fmt.Sprintf("https://a.test:%d/", p), http.StatusOK)
		if body != "hello from outside" {
			t.Errorf("body = %q", body)
		}
		// The tunnel's event comes when it closes: wait for it, so the
		// refusals below count only their own.
		c.CloseIdleConnections()
		waitEvents(t, &recA, before+1)
	})
	t.Run("one task's capability does not open another's allow-list", func(t *testing.T) {
		before := len(recA.all())
		c := proxyClient(t, forwardTCP(t, addr, a.Key()), srv)
		if err := getErr(c, fmt.Sprintf("https://b.test:%d/", p)); err == nil || !strings.Contains(err.Error(), "Forbidden") {
			t.Errorf("task a reaching b.test: %v; want 403", err)
		}
		if evs := waitEvents(t, &recA, before+1); evs[len(evs)-1].Allowed || evs[len(evs)-1].Host != "b.test" {
			t.Errorf("task a's last event = %+v; want b.test blocked", evs[len(evs)-1])
		}
		if len(recB.all()) != 0 {
			t.Errorf("task b recorded %+v", recB.all())
		}
	})
	for _, tc := range []struct {
		name string
		key  string
	}{
		{"no capability", ""},
		{"a wrong capability", "agentbot-task-" + strings.Repeat("0", 64)},
		{"a capability with one character changed", a.Key()[:len(a.Key())-1] + "x"},
	} {
		t.Run("refused: "+tc.name, func(t *testing.T) {
			before := len(recA.all())
			u, _ := url.Parse("http://" + addr)
			if tc.key != "" {
				u.User = url.UserPassword("agentbot", tc.key)
			}
			err := getErr(proxyClient(t, u.String(), srv), fmt.Sprintf("https://a.test:%d/", p))
			if err == nil || !strings.Contains(err.Error(), "Proxy Authentication Required") {
				t.Errorf("CONNECT: %v; want 407", err)
			}
			if tc.key != "" {
				status := upgradeStatus(t, addr, tc.key)
				if !strings.Contains(status, "407") {
					t.Errorf("upgrade: %q; want 407", status)
				}
			}
			if n := len(recA.all()); n != before {
				t.Errorf("task a recorded %d events", n-before)
			}
		})
	}
}

// TestTCPServerClosedTask: a task's capability dies with it. Its open
// tunnel over the shared listener ends, a new upgrade or request is
// refused with 407, and ForwardTCP passes the refusal to the client.
func TestTCPServerClosedTask(t *testing.T) {
	echo := echoServer(t)
	p := echo.Addr().(*net.TCPAddr).Port
	g := newGateway(t, Options{Resolver: hosts{"echo.test": "127.0.0.1"}, AllowCIDRs: loopback})
	addr := serveTCP(t, g)
	task, err := g.Open(TaskSpec{TaskID: "t1", Allow: AllowList{{Host: "echo.test", Port: p}}})
	if err != nil {
		t.Fatal(err)
	}
	proxy := forwardTCP(t, addr, task.Key())
	c, br := connectThrough(t, strings.TrimPrefix(proxy, "http://"), fmt.Sprintf("echo.test:%d", p))
	defer c.Close()
	if got := echoOnce(t, c, br, "ping"); got != "ping" {
		t.Fatalf("echo = %q", got)
	}
	if err := task.Close(); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := br.Read(make([]byte, 1)); err == nil {
		t.Errorf("the tunnel still answers (%d bytes) after the task closed", n)
	}
	if status := upgradeStatus(t, addr, task.Key()); !strings.Contains(status, "407") {
		t.Errorf("upgrade with the closed task's capability: %q; want 407", status)
	}
	// Through the forwarder, the client reads the gateway's refusal.
	c2, err := net.Dial("tcp", strings.TrimPrefix(proxy, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	fmt.Fprintf(c2, "CONNECT echo.test:%d HTTP/1.1\r\nHost: echo.test\r\n\r\n", p)
	resp, err := http.ReadResponse(bufio.NewReader(c2), nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusProxyAuthRequired || !strings.Contains(string(body), "not the capability of a running task") {
		t.Errorf("through the forwarder: %s %q; want 407 saying why", resp.Status, body)
	}
}

// TestTCPServerModelRelay: the model relay on the shared listener takes
// the capability as the model key, as a pod's agent sends it.
func TestTCPServerModelRelay(t *testing.T) {
	var sawKey string
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sawKey = r.Header.Get("X-Api-Key")
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"model":"claude-test","usage":{"input_tokens":3,"output_tokens":4}}`)
	}))
	defer api.Close()
	u, _ := url.Parse(api.URL)
	g := newGateway(t, Options{Model: ModelOptions{AnthropicURL: u, AnthropicKey: "sk-operator"}})
	addr := serveTCP(t, g)
	task := openShared(t, g, TaskSpec{TaskID: "t1"})
	for _, tc := range []struct {
		name, base, key string
		want            int
	}{
		{"through ForwardTCP", forwardTCP(t, addr, task.Key()), task.Key(), http.StatusOK},
		{"directly", "http://" + addr, task.Key(), http.StatusOK},
		{"directly with a wrong key", "http://" + addr, "sk-guess", http.StatusUnauthorized},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sawKey = ""
			req, _ := http.NewRequest(http.MethodPost, tc.base+"/anthropic/v1/messages", strings.NewReader(`{}`))
			req.Header.Set("X-Api-Key", tc.key)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.want {
				t.Fatalf("%s %q; want %d", resp.Status, body, tc.want)
			}
			if tc.want == http.StatusOK && sawKey != "sk-operator" {
				t.Errorf("the API saw key %q; want the operator's", sawKey)
			}
			if tc.want != http.StatusOK && (sawKey != "" || !strings.Contains(string(body), "authentication_error")) {
				t.Errorf("refused call: API saw %q, body %q", sawKey, body)
			}
		})
	}
	// The relay charges an answer once it has copied it out, which can be
	// just after the client has read its last byte.
	deadline := time.Now().Add(10 * time.Second)
	for {
		cost, usage := task.Spent()
		if cost > 0 && usage.OutputTokens == 8 {
			break
		}
		if time.Now().After(deadline) || usage.OutputTokens > 8 {
			t.Fatalf("spent %v %+v; want two answers metered", cost, usage)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func get(t *testing.T, c *http.Client, u string, want int) string {
	t.Helper()
	resp, err := c.Get(u)
	if err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != want {
		t.Fatalf("GET %s: %s %q", u, resp.Status, body)
	}
	return string(body)
}

func getErr(c *http.Client, u string) error {
	resp, err := c.Get(u)
	if err == nil {
		resp.Body.Close()
		return fmt.Errorf("went through: %s", resp.Status)
	}
	return err
}

// upgradeStatus is the gateway's status line for ForwardTCP's upgrade
// with key.
func upgradeStatus(t *testing.T, addr, key string) string {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: %s\r\nProxy-Authorization: Bearer %s\r\n\r\n", UpgradeProtocol, key)
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(line)
}

func echoServer(t testing.TB) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _ = io.Copy(c, c)
			}()
		}
	}()
	return ln
}

// connectThrough opens a CONNECT tunnel to target through the proxy at
// proxyAddr.
func connectThrough(t *testing.T, proxyAddr, target string) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", proxyAddr)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", target, target)
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	if err != nil || resp.StatusCode != http.StatusOK {
		c.Close()
		t.Fatalf("CONNECT %s: %v %v", target, resp, err)
	}
	return c, br
}

func echoOnce(t *testing.T, c net.Conn, br *bufio.Reader, msg string) string {
	t.Helper()
	if _, err := io.WriteString(c, msg); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(br, buf); err != nil {
		t.Fatal(err)
	}
	return string(buf)
}
