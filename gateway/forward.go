package gateway

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
)

// Forward accepts connections on ln and joins each to the unix socket at
// socket, until ctx ends or ln fails. Inside the local sandbox, whose
// network namespace has only its loopback, agent-runner runs it on
// 127.0.0.1:PORT so that tools find the gateway at an ordinary proxy
// address. It returns once every connection it joined has ended.
func Forward(ctx context.Context, ln net.Listener, socket string) error {
	var d net.Dialer
	return forward(ctx, ln, func(ctx context.Context) (net.Conn, error) { return d.DialContext(ctx, "unix", socket) }, nil)
}

// forward is the accept loop of Forward and ForwardTCP: each connection on
// ln is joined to one dial makes, after join (when set) has prepared the
// upstream; join reporting false drops both.
func forward(ctx context.Context, ln net.Listener, dial func(context.Context) (net.Conn, error), join func(c, up net.Conn) bool) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	stop := context.AfterFunc(ctx, func() { _ = ln.Close() })
	defer stop()
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return ctx.Err()
			}
			return fmt.Errorf("gateway: forward: accept: %w", err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			up, err := dial(ctx)
			if err != nil {
				_ = c.Close() // the client sees the gateway is not there
				return
			}
			done := context.AfterFunc(ctx, func() { _, _ = c.Close(), up.Close() })
			defer done()
			if join != nil && !join(c, up) {
				_, _ = c.Close(), up.Close()
				return
			}
			pipe(c, up)
		}()
	}
}
