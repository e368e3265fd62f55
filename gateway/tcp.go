package gateway

import (
	"bufio"
	"context"
	"encoding/base64"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/agentbot/agentbot/runner"
)

// UpgradeProtocol is the Upgrade token of a connection ForwardTCP opens: the
// gateway checks the capability once and then serves the connection's bytes
// exactly as if they had arrived on the task's own socket, so a CONNECT
// tunnel over it is spliced end to end.
const UpgradeProtocol = "agentbot-task/1"

// switched is the gateway's whole answer to an upgrade it grants.
const (
	statusSwitched = "HTTP/1.1 101"
	switched       = statusSwitched + " Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: " + UpgradeProtocol + "\r\n\r\n"
)

// PodListen is where agent-runner listens inside a pod (runner.JobGateway
// Listen): the proxy address the agent's environment names.
const PodListen = "127.0.0.1:3128"

// TCPServer serves every task's egress on one TCP listener, for sandboxes
// that cannot be given a socket of their own (Kubernetes pods reach one
// Service port). A connection belongs to no task by where it arrives, so
// each says whose it is with the task's capability (Task.Key):
//
//   - ForwardTCP's connections carry it once, in Proxy-Authorization of an
//     Upgrade: agentbot-task/1 request; the rest of the connection is the
//     task's.
//   - Any other request carries it itself: in Proxy-Authorization (Basic
//     with any user, or Bearer) for CONNECT and proxy requests, the git
//     relay's included, or as the model key (x-api-key or a bearer token)
//     for the model relay.
//
// A capability is valid while its task is open: Task.Close voids it and
// ends the task's connections, so a closed task's key is refused (407)
// like a wrong one.
type TCPServer struct {
	g   *Gateway
	srv *http.Server

	refused *refusals // wrong capabilities, per source

	mu     sync.Mutex
	lns    map[*Task]*connListener // the tasks' servers' listeners for upgraded connections
	closed bool
	wg     sync.WaitGroup // the tasks' Serve on lns
}

// NewTCPServer makes the shared server of g; it listens on nothing until
// Serve.
func NewTCPServer(g *Gateway) *TCPServer {
	s := &TCPServer{g: g, lns: map[*Task]*connListener{}, refused: newRefusals(time.Now)}
	s.srv = &http.Server{Handler: s, ReadHeaderTimeout: 30 * time.Second, ErrorLog: g.errLog}
	return s
}

// Serve accepts connections on ln until Close; it returns
// http.ErrServerClosed then.
func (s *TCPServer) Serve(ln net.Listener) error { return s.srv.Serve(ln) }

// Close stops the listener and the connections still authenticating; the
// tasks' own connections end with their tasks (Task.Close, Gateway.Close).
func (s *TCPServer) Close() error {
	s.mu.Lock()
	s.closed = true
	lns := make([]*connListener, 0, len(s.lns))
	for _, l := range s.lns {
		lns = append(lns, l)
	}
	s.mu.Unlock()
	err := s.srv.Close()
	for _, l := range lns {
		_ = l.Close() // Accept returns, the task's Serve on it ends
	}
	s.wg.Wait()
	return err
}

// ServeHTTP finds the request's task by its capability and serves it as
// the task's listener would.
func (s *TCPServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	upgrade := strings.EqualFold(r.Header.Get("Upgrade"), UpgradeProtocol)
	proxied := upgrade || r.Method == http.MethodConnect || r.URL.IsAbs()
	key := proxyKey(r.Header.Get("Proxy-Authorization"))
	if key == "" && !proxied {
		key = sentKey(r) // the model relay checks it again, in constant time
	}
	t := s.g.byCapability(key)
	if t == nil {
		logIt, cut := s.refused.note(r.RemoteAddr)
		switch {
		case logIt:
			s.g.log.Warn("gateway: request without a running task's capability", "remote", r.RemoteAddr, "method", r.Method, "upgrade", upgrade)
		case cut > 0:
			s.g.log.Warn("gateway: requests without a running task's capability, not logged one by one", "remote", r.RemoteAddr, "count", cut, "per", refusalSummary)
		}
		if !logIt {
			http.Error(w, "agentbot gateway: too many requests without a running task's capability", http.StatusTooManyRequests)
			return
		}
		if proxied {
			w.Header().Set("Proxy-Authenticate", `Basic realm="agentbot"`)
			http.Error(w, "agentbot gateway: this is not the capability of a running task", http.StatusProxyAuthRequired)
			return
		}
		writeAPIError(w, http.StatusUnauthorized, map[string]any{"type": "error",
			"error": map[string]string{"type": "authentication_error", "message": "agentbot: this is not the key of a running task"}})
		return
	}
	r.Header.Del("Proxy-Authorization")
	if upgrade {
		s.upgrade(w, t)
		return
	}
	// The task's own listener ends its requests when it closes; here the
	// connection is the shared server's, so the task's end cancels them.
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	go func() {
		select {
		case <-t.done:
			cancel()
		case <-ctx.Done():
		}
	}()
	t.ServeHTTP(w, r.WithContext(ctx))
}

// proxyKey is the capability in a Proxy-Authorization value: the password
// of Basic credentials (the user is ignored, so a proxy URL such as
// http://agentbot:KEY@host:port works) or a bearer token.
func proxyKey(h string) string {
	scheme, cred, ok := strings.Cut(strings.TrimSpace(h), " ")
	switch {
	case !ok:
		return ""
	case strings.EqualFold(scheme, "Bearer"):
		return strings.TrimSpace(cred)
	case strings.EqualFold(scheme, "Basic"):
		b, err := base64.StdEncoding.DecodeString(strings.TrimSpace(cred))
		if err != nil {
			return ""
		}
		_, pass, _ := strings.Cut(string(b), ":")
		return pass
	}
	return ""
}

// byCapability is the open task whose key is key, or nil. The map is keyed
// by 256 random bits under a randomly seeded hash: its timing tells an
// attacker nothing a guess could use.
func (g *Gateway) byCapability(key string) *Task {
	if key == "" {
		return nil
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.byKey[key]
}

// upgrade hands the connection to t's server, once it has said yes.
func (s *TCPServer) upgrade(w http.ResponseWriter, t *Task) {
	c, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		http.Error(w, "agentbot gateway: "+err.Error(), http.StatusInternalServerError)
		return
	}
	_ = c.SetDeadline(time.Time{}) // the header timeout's deadline is the shared server's business
	if _, err := io.WriteString(c, switched); err != nil {
		_ = c.Close()
		return
	}
	if n := brw.Reader.Buffered(); n > 0 {
		// The client did not wait for the 101 (ForwardTCP does): keep what
		// was read ahead. Only the io.Reader and net.Conn methods show,
		// so no copy can go around the buffer.
		c = &bufferedConn{Conn: c, r: brw.Reader}
	}
	l := s.listener(t)
	if l == nil || !l.deliver(c) {
		_ = c.Close() // the task ended meanwhile
	}
}

// listener is t's listener for upgraded connections, started on first use
// and served by t's own server, so Task.Close ends its connections like
// those of the task's socket. Nil once s or t has closed.
func (s *TCPServer) listener(t *Task) *connListener {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	if l, ok := s.lns[t]; ok {
		return l
	}
	l := &connListener{conns: make(chan net.Conn), done: make(chan struct{}), addr: fakeAddr(t.ID)}
	s.lns[t] = l
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		_ = t.srv.Serve(l) // ends when the task's server closes l
		_ = l.Close()
		s.mu.Lock()
		delete(s.lns, t)
		s.mu.Unlock()
	}()
	return l
}

// connListener is a net.Listener whose connections come from deliver.
type connListener struct {
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
	addr  net.Addr
}

func (l *connListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *connListener) deliver(c net.Conn) bool {
	select {
	case l.conns <- c:
		return true
	case <-l.done:
		return false
	}
}

func (l *connListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *connListener) Addr() net.Addr { return l.addr }

type fakeAddr string

func (a fakeAddr) Network() string { return "agentbot-task" }
func (a fakeAddr) String() string  { return string(a) }

// bufferedConn reads what a bufio.Reader holds before the connection.
type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *bufferedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// JobGateway is what the job of a task whose sandbox reaches the gateway
// at addr (host:port of the TCP listener) carries for agent-runner.
func (t *Task) JobGateway(addr string) *runner.JobGateway {
	return &runner.JobGateway{Listen: PodListen, Addr: addr, Capability: t.key}
}
