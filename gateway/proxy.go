package gateway

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/agentbot/agentbot/runner"
)

// blockedError is a refusal by policy (as opposed to a failure to reach an
// allowed host): the attempt is recorded as blocked and answered 403.
type blockedError struct{ reason string }

func (e *blockedError) Error() string { return e.reason }

// dial connects to host:port for the task, if its allow-list and the
// address checks let it.
func (t *Task) dial(ctx context.Context, host string, port int) (net.Conn, error) {
	if !t.spec.Allow.Allows(host, port) {
		return nil, &blockedError{fmt.Sprintf("%s:%d is not on this task's allow-list", host, port)}
	}
	return t.g.dialAddrs(ctx, host, port)
}

// dialAddrs resolves host and connects to the first checked address that
// answers: the address dialled is the address checked, so a second DNS
// answer cannot rebind the name to the host.
func (g *Gateway) dialAddrs(ctx context.Context, host string, port int) (net.Conn, error) {
	addrs, err := g.addrs.resolve(ctx, g.resolver, host, port)
	if err != nil {
		return nil, err
	}
	var errs []error
	for _, a := range addrs {
		c, err := g.dialer.DialContext(ctx, "tcp", a.String())
		if err == nil {
			return c, nil
		}
		errs = append(errs, err)
	}
	return nil, fmt.Errorf("connect %s:%d: %w", host, port, errors.Join(errs...))
}

// dialChecked is the plain-HTTP transport's dialer: the allow-list was
// checked per request, the addresses are checked here.
func (g *Gateway) dialChecked(ctx context.Context, _, addr string) (net.Conn, error) {
	host, port, err := hostPort(addr, 80)
	if err != nil {
		return nil, err
	}
	return g.dialAddrs(ctx, host, port)
}

func hostPort(hp string, defaultPort int) (string, int, error) {
	host, p, err := net.SplitHostPort(hp)
	if err != nil {
		var addrErr *net.AddrError
		if !errors.As(err, &addrErr) || addrErr.Err != "missing port in address" {
			return "", 0, fmt.Errorf("bad address %q: %w", hp, err)
		}
		host, p = hp, strconv.Itoa(defaultPort)
	}
	port, err := strconv.Atoi(p)
	if err != nil || port < 1 || port > 65535 || host == "" {
		return "", 0, fmt.Errorf("bad address %q", hp)
	}
	return normalHost(host), port, nil
}

// connect answers CONNECT with a tunnel to an allowed host.
func (t *Task) connect(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	ev := runner.Egress{Kind: runner.EgressConnect, Host: r.Host}
	host, port, err := hostPort(r.Host, 443)
	if err != nil {
		t.refuse(w, ev, start, &blockedError{err.Error()})
		return
	}
	ev.Host, ev.Port = host, port
	up, err := t.dial(r.Context(), host, port)
	if err != nil {
		t.refuse(w, ev, start, err)
		return
	}
	ev.Allowed = true
	client, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		_ = up.Close()
		ev.Reason = "hijack: " + err.Error()
		t.finish(ev, start)
		return
	}
	if !t.track(client, true) || !t.track(up, true) {
		_, _ = client.Close(), up.Close()
		ev.Reason = "the task ended"
		t.finish(ev, start)
		return
	}
	defer t.track(client, false)
	defer t.track(up, false)
	if _, err := io.WriteString(client, "HTTP/1.1 200 Connection established\r\n\r\n"); err != nil {
		_, _ = client.Close(), up.Close()
		ev.Reason = "answer: " + err.Error()
		t.finish(ev, start)
		return
	}
	// A client may send its first bytes (a TLS hello) before reading the
	// 200; the server's reader holds them.
	if n := brw.Reader.Buffered(); n > 0 {
		early, _ := brw.Reader.Peek(n)
		if _, err := up.Write(early); err == nil {
			ev.BytesOut += int64(n)
		}
	}
	out, in := pipe(client, up)
	ev.BytesOut += out
	ev.BytesIn = in
	t.finish(ev, start)
}

// pipe copies both ways until both are done, half-closing each side as its
// source ends, and closes both. io.Copy between a unix and a TCP socket
// splices on Linux: the bytes never enter this process's memory.
func pipe(client, up net.Conn) (out, in int64) {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		out, _ = io.Copy(up, client) // a tunnel ends with an error as often as not
		closeWrite(up)
	}()
	in, _ = io.Copy(client, up)
	closeWrite(client)
	wg.Wait()
	_, _ = client.Close(), up.Close()
	return out, in
}

func closeWrite(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
	}
}

// refuse answers an attempt that did not go through: 403 for policy, 502
// for an allowed host that could not be reached.
func (t *Task) refuse(w http.ResponseWriter, ev runner.Egress, start time.Time, err error) {
	code := http.StatusBadGateway
	var b *blockedError
	if errors.As(err, &b) {
		code = http.StatusForbidden
		ev.Allowed = false
	} else {
		ev.Allowed = true
	}
	ev.Reason = err.Error()
	http.Error(w, "agentbot gateway: "+ev.Reason, code)
	t.finish(ev, start)
}

func (t *Task) finish(ev runner.Egress, start time.Time) {
	ev.Millis = time.Since(start).Milliseconds()
	t.record(ev)
}

// forward relays a plain-HTTP proxy request to an allowed host.
func (t *Task) forward(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	ev := runner.Egress{Kind: runner.EgressHTTP, Host: r.URL.Host}
	host, port, err := hostPort(r.URL.Host, 80)
	switch {
	case err != nil:
		t.refuse(w, ev, start, &blockedError{err.Error()})
		return
	case r.URL.Scheme != "http":
		t.refuse(w, ev, start, &blockedError{"only http:// is proxied in the clear; use CONNECT for " + r.URL.Scheme})
		return
	}
	ev.Host, ev.Port = host, port
	if !t.spec.Allow.Allows(host, port) {
		t.refuse(w, ev, start, &blockedError{fmt.Sprintf("%s:%d is not on this task's allow-list", host, port)})
		return
	}
	target := *r.URL
	rp := &httputil.ReverseProxy{
		Rewrite:   func(pr *httputil.ProxyRequest) { pr.Out.URL = &target; pr.Out.Host = r.Host },
		Transport: t.g.proxied,
	}
	t.relay(w, r, &ev, rp)
	t.finish(ev, start)
}

// relay runs rp for the request, counting the bytes each way into ev and
// turning a transport failure into ev's reason (a dial the address checks
// refused is blocked).
func (t *Task) relay(w http.ResponseWriter, r *http.Request, ev *runner.Egress, rp *httputil.ReverseProxy) {
	ev.Allowed = true
	// The upstream may answer before the transport has read the request
	// body to its end (an SSE answer's first event does); without full
	// duplex the server discards the body's rest as the answer starts,
	// the transport's read fails and the upstream connection dies mid-
	// answer. The listener is HTTP/1 over a socket, which supports it.
	_ = http.NewResponseController(w).EnableFullDuplex()
	body := &countingReader{r: r.Body}
	if r.Body != nil && r.Body != http.NoBody {
		r.Body = body
	}
	cw := &countingWriter{ResponseWriter: w}
	rp.ErrorLog = t.g.errLog
	rp.BufferPool = relayBuffers
	rp.ErrorHandler = func(w http.ResponseWriter, _ *http.Request, err error) {
		var b *blockedError
		code := http.StatusBadGateway
		if errors.As(err, &b) {
			ev.Allowed, code = false, http.StatusForbidden
		}
		ev.Reason = err.Error()
		http.Error(w, "agentbot gateway: "+ev.Reason, code)
	}
	rp.ServeHTTP(cw, r)
	ev.BytesOut, ev.BytesIn = body.n.Load(), cw.n
}

type countingReader struct {
	r io.ReadCloser
	n atomic.Int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}

func (c *countingReader) Close() error { return c.r.Close() }

// countingWriter counts the body bytes written to the sandbox; Unwrap lets
// http.ResponseController reach the connection's Flush.
type countingWriter struct {
	http.ResponseWriter
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.ResponseWriter.Write(p)
	c.n += int64(n)
	return n, err
}

func (c *countingWriter) Unwrap() http.ResponseWriter { return c.ResponseWriter }
