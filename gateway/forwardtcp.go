package gateway

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"
)

// ForwardTCP is Forward for a sandbox that reaches the gateway over TCP
// (a Kubernetes pod): it accepts connections on ln and joins each to the
// gateway's TCPServer at addr, authenticated as the task whose capability
// it holds, until ctx ends or ln fails. Each connection costs one exchange
// (an Upgrade: agentbot-task/1 request and its 101) before the client's
// bytes flow; after it the bytes are not looked at, so the client speaks
// to the gateway exactly as on the task's own socket. A refusal (a task
// that has ended answers 407) is passed to the client as the gateway wrote
// it. It returns once every connection it joined has ended.
func ForwardTCP(ctx context.Context, ln net.Listener, addr, capability string) error {
	if capability == "" {
		return errors.New("gateway: forward: no capability")
	}
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return fmt.Errorf("gateway: forward: gateway address: %w", err)
	}
	hello := []byte("GET / HTTP/1.1\r\nHost: " + addr + "\r\nConnection: Upgrade\r\nUpgrade: " + UpgradeProtocol +
		"\r\nProxy-Authorization: Bearer " + capability + "\r\n\r\n")
	d := net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
	return forward(ctx, ln, func(ctx context.Context) (net.Conn, error) { return d.DialContext(ctx, "tcp", addr) },
		func(c, up net.Conn) bool { return upgradeTo(c, up, hello) })
}

// upgradeTo asks the gateway on up for the task's connection. On a refusal
// it passes the gateway's answer to the client and reports false.
func upgradeTo(c, up net.Conn, hello []byte) bool {
	_ = up.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := up.Write(hello); err != nil {
		return false
	}
	// The 101 is the gateway's fixed answer: read exactly it, so nothing
	// of the tunnel is read ahead into a buffer and the copy after can
	// splice. Anything else is a refusal, read as HTTP.
	got := make([]byte, len(switched))
	n, err := io.ReadFull(up, got[:len(statusSwitched)])
	if err == nil && string(got[:n]) == statusSwitched {
		if _, err := io.ReadFull(up, got[n:]); err != nil || string(got) != switched {
			return false
		}
		_ = up.SetDeadline(time.Time{})
		return true
	}
	resp, err := http.ReadResponse(bufio.NewReader(io.MultiReader(bytes.NewReader(got[:n]), up)), nil)
	if err != nil {
		return false
	}
	// Tell the client why, in HTTP, whatever it sent; then hang up, after
	// reading what it sent (a close with unread bytes resets the
	// connection, and the client may lose the answer).
	resp.Close = true
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	if resp.Write(c) == nil {
		closeWrite(c)
		_, _ = io.Copy(io.Discard, io.LimitReader(c, 1<<20))
	}
	return false
}
