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
	var wg sync.WaitGroup
	defer wg.Wait()
	stop := context.AfterFunc(ctx, func() { _ = ln.Close() })
	defer stop()
	var d net.Dialer
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
			up, err := d.DialContext(ctx, "unix", socket)
			if err != nil {
				_ = c.Close() // the client sees the gateway is not there
				return
			}
			done := context.AfterFunc(ctx, func() { _, _ = c.Close(), up.Close() })
			defer done()
			pipe(c, up)
		}()
	}
}
