// Package kubernetes is the launcher that runs every task attempt in its own
// Kubernetes sandbox through kubernetes-sigs/agent-sandbox.
//
// For each attempt it creates a SandboxClaim (extensions.agents.x-k8s.io
// v1beta1) that names a SandboxWarmPool, watches the claim until the
// agent-sandbox controller reports it Ready, and then runs agent-runner in the
// sandbox's pod through the pods/exec subresource: the job travels on stdin
// and the events come back on stdout, exactly as with the local launcher. No
// job, token or secret is ever written into an object stored in etcd.
//
// The claim carries a lifecycle backstop (shutdownTime with shutdownPolicy
// Delete) so that a bot that dies never leaks a sandbox for longer than the
// task's time limit plus a grace period; normally the bot deletes the claim
// itself when the task ends, and the API server's garbage collector removes
// the Sandbox and Pod the claim owns.
package kubernetes

import (
	"errors"
	"fmt"
	"path"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/util/validation"
)

// Defaults for Config.
const (
	DefaultWarmPool     = "agentbot-runner"
	DefaultContainer    = "runner"
	DefaultWorkspace    = "/workspace"
	DefaultAgentRunner  = "/usr/local/bin/agent-runner"
	DefaultGracePeriod  = 15 * time.Minute
	DefaultReadyTimeout = 10 * time.Minute
	// DefaultTimeLimit is used for the lifecycle backstop when a job carries
	// no time limit of its own.
	DefaultTimeLimit = time.Hour
	// DefaultQPS and DefaultBurst bound the launcher's requests to the API
	// server (client-go's own defaults, 5 and 10, made a hundred tasks
	// that start at once wait seconds for their claims: each start sends a
	// create, a list and a watch, and each run a list and a watch more).
	DefaultQPS   = 50
	DefaultBurst = 300
)

// Config configures the Kubernetes launcher. The service fills it from
// AGENTBOT_NAMESPACE and AGENTBOT_WARM_POOL; the rest has sensible defaults
// that match manifests/.
type Config struct {
	// Namespace holds the SandboxClaims, the SandboxWarmPool and the sandbox
	// pods (AGENTBOT_NAMESPACE).
	Namespace string
	// WarmPool is the SandboxWarmPool every claim names (AGENTBOT_WARM_POOL).
	// A pool with replicas 0 means every task cold-starts.
	WarmPool string
	// GracePeriod is added to a job's time limit to compute the claim's
	// shutdownTime, the backstop that deletes the sandbox if the bot never
	// does.
	GracePeriod time.Duration
	// ReadyTimeout bounds the wait for the claim to become Ready (image
	// pulls, scheduling).
	ReadyTimeout time.Duration
	// Container is the sandbox pod's container that runs agent-runner.
	Container string
	// Workspace is agent-runner's workspace inside the container.
	Workspace string
	// AgentRunner is the path of the agent-runner binary in the image.
	AgentRunner string
	// GatewayAddr is agentbot's egress gateway as the sandbox pods reach
	// it, host:port of the Service's gateway port
	// (AGENTBOT_GATEWAY_ADDR). A job with a Gateway but no address gets
	// this one; empty leaves jobs as they come.
	GatewayAddr string
	// QPS and Burst are the client-side rate limit of the launcher's API
	// requests (AGENTBOT_KUBE_QPS, AGENTBOT_KUBE_BURST); zero is the
	// default. Exec streams are not counted.
	QPS   float32
	Burst int
}

// withDefaults fills the zero fields.
func (c Config) withDefaults() Config {
	if c.WarmPool == "" {
		c.WarmPool = DefaultWarmPool
	}
	if c.GracePeriod == 0 {
		c.GracePeriod = DefaultGracePeriod
	}
	if c.ReadyTimeout == 0 {
		c.ReadyTimeout = DefaultReadyTimeout
	}
	if c.Container == "" {
		c.Container = DefaultContainer
	}
	if c.Workspace == "" {
		c.Workspace = DefaultWorkspace
	}
	if c.AgentRunner == "" {
		c.AgentRunner = DefaultAgentRunner
	}
	if c.QPS == 0 {
		c.QPS = DefaultQPS
	}
	if c.Burst == 0 {
		c.Burst = DefaultBurst
	}
	return c
}

// Validate reports every problem with the configuration, one line each.
// Zero values that have defaults are valid.
func (c Config) Validate() error {
	c = c.withDefaults()
	var errs []error
	if c.Namespace == "" {
		errs = append(errs, errors.New("kubernetes launcher: namespace is required (AGENTBOT_NAMESPACE)"))
	} else if msgs := validation.IsDNS1123Label(c.Namespace); len(msgs) > 0 {
		errs = append(errs, fmt.Errorf("kubernetes launcher: namespace %q is not a valid namespace name: %s", c.Namespace, strings.Join(msgs, "; ")))
	}
	if msgs := validation.IsDNS1123Subdomain(c.WarmPool); len(msgs) > 0 {
		errs = append(errs, fmt.Errorf("kubernetes launcher: warm pool %q is not a valid object name (AGENTBOT_WARM_POOL): %s", c.WarmPool, strings.Join(msgs, "; ")))
	}
	if msgs := validation.IsDNS1123Label(c.Container); len(msgs) > 0 {
		errs = append(errs, fmt.Errorf("kubernetes launcher: container %q is not a valid container name: %s", c.Container, strings.Join(msgs, "; ")))
	}
	if c.GracePeriod < 0 {
		errs = append(errs, fmt.Errorf("kubernetes launcher: grace period %s is negative", c.GracePeriod))
	}
	if c.ReadyTimeout < 0 {
		errs = append(errs, fmt.Errorf("kubernetes launcher: ready timeout %s is negative", c.ReadyTimeout))
	}
	if c.QPS < 0 {
		errs = append(errs, fmt.Errorf("kubernetes launcher: API request rate %g per second is negative (AGENTBOT_KUBE_QPS)", c.QPS))
	}
	if c.Burst < 0 {
		errs = append(errs, fmt.Errorf("kubernetes launcher: API request burst %d is negative (AGENTBOT_KUBE_BURST)", c.Burst))
	}
	if !path.IsAbs(c.Workspace) {
		errs = append(errs, fmt.Errorf("kubernetes launcher: workspace %q must be an absolute path in the container", c.Workspace))
	}
	if !path.IsAbs(c.AgentRunner) {
		errs = append(errs, fmt.Errorf("kubernetes launcher: agent-runner path %q must be an absolute path in the container", c.AgentRunner))
	}
	if c.GatewayAddr != "" {
		if err := checkGatewayAddr(c.GatewayAddr); err != nil {
			errs = append(errs, fmt.Errorf("kubernetes launcher: gateway address (AGENTBOT_GATEWAY_ADDR): %w", err))
		}
	}
	return errors.Join(errs...)
}
