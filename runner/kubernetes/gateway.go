package kubernetes

import (
	"errors"
	"fmt"
	"net"
	"strconv"

	"github.com/agentbot/agentbot/runner"
)

// withGateway completes the job's way out through agentbot's gateway. The
// capability travels only in the job, on exec's stdin: never in the claim,
// the pod or anything else etcd stores (the claim carries the task id and
// repository, nothing secret).
func (l *Launcher) withGateway(job runner.Job) (runner.Job, error) {
	if job.Gateway == nil {
		return job, nil
	}
	gw := *job.Gateway
	if gw.Addr == "" {
		gw.Addr = l.cfg.GatewayAddr
	}
	switch {
	case gw.Addr == "":
		return job, errors.New("the job names a gateway but has no address, and AGENTBOT_GATEWAY_ADDR is not set")
	case gw.Capability == "":
		return job, errors.New("the job names a gateway without the task's capability")
	}
	if err := checkGatewayAddr(gw.Addr); err != nil {
		return job, fmt.Errorf("gateway address: %w", err)
	}
	job.Gateway = &gw
	return job, nil
}

// checkGatewayAddr accepts host:port with a port in range.
func checkGatewayAddr(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%q is not host:port", addr)
	}
	if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 || host == "" {
		return fmt.Errorf("%q is not host:port", addr)
	}
	return nil
}
