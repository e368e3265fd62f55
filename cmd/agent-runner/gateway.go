package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"

	"github.com/agentbot/agentbot/gateway"
	"github.com/agentbot/agentbot/runner"
)

// maxJobBytes bounds the job read here, as agentrun bounds its own read.
const maxJobBytes = 16 << 20

// startGateway reads the job from stdin and, when it names a gateway over
// TCP (a Kubernetes pod's only way out), forwards job.Gateway.Listen to it
// with the task's capability for as long as the run lasts. It returns the
// job's bytes for agentrun to read and check as ever, and the function
// that stops the forwarder and waits for its connections. A job it cannot
// decode is passed on untouched: agentrun reports what is wrong with it.
func startGateway(ctx context.Context, stdin io.Reader) (io.Reader, func(), error) {
	if stdin == nil {
		return nil, func() {}, nil
	}
	var read bytes.Buffer // all the decoder took, for a job it cannot decode
	var raw json.RawMessage
	dec := json.NewDecoder(io.TeeReader(io.LimitReader(stdin, maxJobBytes), &read))
	if err := dec.Decode(&raw); err != nil {
		return io.MultiReader(&read, stdin), func() {}, nil
	}
	var job struct {
		Gateway *runner.JobGateway `json:"gateway"`
	}
	rest := io.MultiReader(bytes.NewReader(raw), dec.Buffered(), stdin)
	if json.Unmarshal(raw, &job) != nil || job.Gateway == nil || job.Gateway.Addr == "" {
		return rest, func() {}, nil
	}
	gw := job.Gateway
	listen := gw.Listen
	if listen == "" {
		listen = gateway.PodListen
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return nil, nil, fmt.Errorf("gateway forwarder: %w", err)
	}
	fctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- gateway.ForwardTCP(fctx, ln, gw.Addr, gw.Capability) }()
	stop := func() {
		cancel()
		<-done
	}
	return rest, stop, nil
}
