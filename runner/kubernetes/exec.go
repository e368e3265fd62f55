package kubernetes

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/httpstream"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/remotecommand"
	"k8s.io/client-go/util/exec"
)

// ExecRequest is one command to run in a sandbox pod's container.
type ExecRequest struct {
	Namespace string
	Pod       string
	Container string
	Command   []string
	// Stdin may be nil.
	Stdin  io.Reader
	Stdout io.Writer
	Stderr io.Writer
}

// Executor runs a command in a pod. The launcher uses PodExecutor, which
// goes through the API server's pods/exec subresource; tests substitute an
// executor that runs the same binary locally.
type Executor interface {
	// Exec runs req to completion. A nil error means the command ran and
	// exited with exitCode; a non-nil error means the stream could not be
	// set up or broke off, and the command's fate is unknown (it may still
	// be running in the pod). Once Exec returns it writes no more to
	// req.Stdout or req.Stderr.
	Exec(ctx context.Context, req ExecRequest) (exitCode int, err error)
}

// PodExecutor is the Executor that uses pods/exec: WebSocket first, SPDY as
// the fallback for API servers or proxies that cannot upgrade to WebSocket.
type PodExecutor struct {
	config *rest.Config
	client rest.Interface
}

// NewPodExecutor returns a PodExecutor talking to the API server of config.
func NewPodExecutor(config *rest.Config) (*PodExecutor, error) {
	cfg := rest.CopyConfig(config)
	cfg.GroupVersion = &corev1.SchemeGroupVersion
	cfg.APIPath = "/api"
	cfg.NegotiatedSerializer = scheme.Codecs.WithoutConversion()
	if cfg.UserAgent == "" {
		cfg.UserAgent = "agentbot"
	}
	client, err := rest.RESTClientFor(cfg)
	if err != nil {
		return nil, fmt.Errorf("kubernetes exec client: %w", err)
	}
	return &PodExecutor{config: cfg, client: client}, nil
}

// Exec implements Executor.
func (p *PodExecutor) Exec(ctx context.Context, req ExecRequest) (int, error) {
	u := p.client.Post().
		Resource("pods").
		Namespace(req.Namespace).
		Name(req.Pod).
		SubResource("exec").
		VersionedParams(&corev1.PodExecOptions{
			Container: req.Container,
			Command:   req.Command,
			Stdin:     req.Stdin != nil,
			Stdout:    req.Stdout != nil,
			Stderr:    req.Stderr != nil,
		}, scheme.ParameterCodec).
		URL()
	ws, err := remotecommand.NewWebSocketExecutor(p.config, "GET", u.String())
	if err != nil {
		return 0, fmt.Errorf("exec in pod %s/%s: websocket executor: %w", req.Namespace, req.Pod, err)
	}
	spdy, err := remotecommand.NewSPDYExecutor(p.config, "POST", u)
	if err != nil {
		return 0, fmt.Errorf("exec in pod %s/%s: spdy executor: %w", req.Namespace, req.Pod, err)
	}
	executor, err := remotecommand.NewFallbackExecutor(ws, spdy, func(err error) bool {
		return httpstream.IsUpgradeFailure(err) || httpstream.IsHTTPSProxyError(err)
	})
	if err != nil {
		return 0, fmt.Errorf("exec in pod %s/%s: %w", req.Namespace, req.Pod, err)
	}
	// remotecommand returns when ctx ends without waiting for its copying
	// goroutines; these writers make sure they stop writing to ours.
	var stdout, stderr *detachable
	opts := remotecommand.StreamOptions{Stdin: req.Stdin}
	if req.Stdout != nil {
		stdout = &detachable{w: req.Stdout}
		opts.Stdout = stdout
	}
	if req.Stderr != nil {
		stderr = &detachable{w: req.Stderr}
		opts.Stderr = stderr
	}
	err = executor.StreamWithContext(ctx, opts)
	stdout.detach()
	stderr.detach()
	var exitErr exec.CodeExitError
	switch {
	case err == nil:
		return 0, nil
	case errors.As(err, &exitErr):
		return exitErr.Code, nil
	default:
		return 0, fmt.Errorf("exec in pod %s/%s: %w", req.Namespace, req.Pod, err)
	}
}

// detachable passes writes on to w until detached; after that it fails
// them, so a goroutine still copying sees its stream closed.
type detachable struct {
	mu       sync.Mutex
	w        io.Writer
	detached bool
}

func (d *detachable) Write(p []byte) (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.detached {
		return 0, io.ErrClosedPipe
	}
	return d.w.Write(p)
}

// detach waits for a write in progress and stops later ones; nil is fine.
func (d *detachable) detach() {
	if d == nil {
		return
	}
	d.mu.Lock()
	d.detached = true
	d.mu.Unlock()
}
