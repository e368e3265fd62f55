package main

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"

	"github.com/agentbot/agentbot/dispatch"
	"github.com/agentbot/agentbot/gateway"
)

// gatewayEnv reads the gateway's settings from agentbot's environment. An
// operator who pointed the agents at a model API with ANTHROPIC_BASE_URL or
// OPENAI_BASE_URL (and not AGENTBOT_ANTHROPIC_URL) keeps that upstream: the
// relay goes there now instead of the agent.
func gatewayEnv(getenv func(string) string) func(string) string {
	return func(name string) string {
		v := getenv(name)
		if v != "" {
			return v
		}
		switch name {
		case "AGENTBOT_ANTHROPIC_URL":
			return getenv("ANTHROPIC_BASE_URL")
		case "AGENTBOT_OPENAI_URL":
			return getenv("OPENAI_BASE_URL")
		}
		return ""
	}
}

// newEgress starts the gateway the local launcher's sandboxes leave
// through, its sockets in dataDir/gateway: searchable (not readable) by the
// sandboxes' uid, each socket given to the task's sandbox alone by the
// launcher's mounts.
func newEgress(dataDir string, getenv func(string) string, log *slog.Logger) (*dispatch.Egress, func() error, error) {
	cfg, err := gateway.ConfigFromEnv(gatewayEnv(getenv))
	if err != nil {
		return nil, nil, fmt.Errorf("egress gateway:\n%w", err)
	}
	dir := filepath.Join(dataDir, "gateway")
	if err := os.MkdirAll(dir, 0o711); err != nil {
		return nil, nil, fmt.Errorf("egress gateway: %w", err)
	}
	if err := os.Chmod(dir, 0o711); err != nil {
		return nil, nil, fmt.Errorf("egress gateway: %w", err)
	}
	opts := cfg.Options
	opts.Dir, opts.Logger = dir, log
	g, err := gateway.New(opts)
	if err != nil {
		return nil, nil, err
	}
	return &dispatch.Egress{Gateway: g, Allow: cfg.Allow, Ceiling: cfg.Ceiling}, g.Close, nil
}

// newPodEgress is newEgress for Kubernetes: the sandbox pods reach the
// gateway on listen (AGENTBOT_GATEWAY_LISTEN, the Service's gateway port),
// each connection proving its task with the capability its job carried.
func newPodEgress(dataDir, listen string, getenv func(string) string, log *slog.Logger) (*dispatch.Egress, func() error, error) {
	eg, closeGateway, err := newEgress(dataDir, getenv, log)
	if err != nil {
		return nil, nil, err
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return nil, nil, errors.Join(fmt.Errorf("egress gateway: AGENTBOT_GATEWAY_LISTEN: %w", err), closeGateway())
	}
	g, ok := eg.Gateway.(*gateway.Gateway)
	if !ok {
		return nil, nil, errors.Join(errors.New("egress gateway: not a gateway"), ln.Close(), closeGateway())
	}
	srv := gateway.NewTCPServer(g)
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, net.ErrClosed) {
			log.Error("egress gateway listener stopped", "listen", listen, "err", err)
		}
	}()
	log.Info("egress gateway for sandbox pods", "listen", ln.Addr().String())
	eg.Pods = true
	return eg, func() error { return errors.Join(srv.Close(), closeGateway()) }, nil
}
