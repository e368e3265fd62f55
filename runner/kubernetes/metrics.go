package kubernetes

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics of the Kubernetes launcher. Labels are small fixed sets: never a
// task id, claim name or repository.
type metrics struct {
	timeToReady   *prometheus.HistogramVec
	claimFailures *prometheus.CounterVec
	execErrors    *prometheus.CounterVec
	reattaches    prometheus.Counter
}

func newMetrics(reg *prometheus.Registry) (*metrics, error) {
	m := &metrics{
		timeToReady: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "agentbot_kubernetes_claim_ready_seconds",
			Help:    "Time from creating a SandboxClaim to its Ready condition, by start (warm: adopted from the warm pool, cold: a new pod).",
			Buckets: []float64{0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600},
		}, []string{"start"}),
		claimFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "agentbot_kubernetes_claim_failures_total",
			Help: "SandboxClaims that did not become Ready or whose sandbox failed, by reason.",
		}, []string{"reason"}),
		execErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "agentbot_kubernetes_exec_errors_total",
			Help: "pods/exec streams that could not be set up or broke off, by agent-runner command.",
		}, []string{"command"}),
		reattaches: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "agentbot_kubernetes_reattaches_total",
			Help: "Times a broken exec stream was resumed with agent-runner attach.",
		}),
	}
	for _, c := range []prometheus.Collector{m.timeToReady, m.claimFailures, m.execErrors, m.reattaches} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("kubernetes launcher metrics: %w", err)
		}
	}
	return m, nil
}

// failureReason maps a claim or sandbox reason to the fixed label set.
func failureReason(reason string) string {
	switch reason {
	case "WarmPoolNotFound", "TemplateNotFound", "InvalidMetadata", "EnvVarsInjectionRejected",
		"VolumeClaimTemplatesError", "PodFailed", "PodSucceeded", "ClaimExpired", "SandboxExpired",
		reasonClaimDeleted, reasonPodGone, reasonReadyTimeout:
		return reason
	}
	return "other"
}
