package agentrun

import (
	"context"
	"fmt"
	"net"
	"strings"

	"github.com/agentbot/agentbot/gateway"
	"github.com/agentbot/agentbot/runner"
)

// startGateway forwards the job's loopback proxy address to the gateway's
// socket (the sandbox's only way out) until the returned stop is called.
// Without a gateway socket in the job it does nothing (a gateway over TCP,
// from a Kubernetes pod, is forwarded by the agent-runner command itself
// before the job reaches Run).
func (r *run) startGateway(ctx context.Context) (stop func(), err error) {
	gw := r.job.Gateway
	if gw == nil || gw.Socket == "" {
		return func() {}, nil
	}
	ln, err := net.Listen("tcp", gw.Listen)
	if err != nil {
		return nil, fail(runner.ExitInternal, "cannot listen on %s for the egress gateway: %v", gw.Listen, err)
	}
	fctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := gateway.Forward(fctx, ln, gw.Socket); err != nil && fctx.Err() == nil {
			r.log.Error("agent-runner's gateway forwarder stopped", "err", err)
		}
	}()
	return func() { cancel(); <-done }, nil
}

// proxyVars are the job's variables agent-runner's own git commands take
// from its Env: with a gateway, the clone goes through the proxy to the
// git relay.
var proxyVars = []string{"HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "all_proxy", "no_proxy"}

// gitProxyEnv is the proxy part of the job's Env, for agent-runner's git.
func gitProxyEnv(job runner.Job) []string {
	if job.Gateway == nil {
		return nil
	}
	var env []string
	for _, k := range proxyVars {
		if v, ok := job.Env[k]; ok {
			env = append(env, k+"="+v)
		}
	}
	return env
}

// checkGateway refuses a gateway whose listen address is not on loopback:
// the forwarder must not open the gateway to anything but the sandbox.
func checkGateway(gw *runner.JobGateway) string {
	if gw == nil {
		return ""
	}
	host, _, err := net.SplitHostPort(gw.Listen)
	if err != nil || (host != "127.0.0.1" && host != "::1" && host != "localhost") {
		return fmt.Sprintf("gateway.listen %q is not a loopback address", gw.Listen)
	}
	switch {
	case gw.Socket != "" && gw.Addr != "":
		return "the gateway names both a socket and an address"
	case gw.Addr != "":
		return ""
	case !strings.HasPrefix(gw.Socket, "/"):
		return fmt.Sprintf("gateway.socket %q is not an absolute path", gw.Socket)
	}
	return ""
}
