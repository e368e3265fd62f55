package github

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are registered once per Client on the injected registry. Labels
// are endpoint templates and small enumerations, never ids or repositories.
type metrics struct {
	requests      *prometheus.CounterVec
	duration      *prometheus.HistogramVec
	retries       *prometheus.CounterVec
	rateRemaining prometheus.Gauge
	tokens        *prometheus.CounterVec
	bundles       *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "agentbot_github_requests_total",
			Help: "GitHub REST requests (each attempt), by endpoint template and status class.",
		}, []string{"endpoint", "status"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "agentbot_github_request_duration_seconds",
			Help:    "Latency of GitHub REST attempts by endpoint template.",
			Buckets: prometheus.ExponentialBuckets(0.01, 2.5, 9),
		}, []string{"endpoint"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "agentbot_github_retries_total",
			Help: "GitHub REST retries by reason (network, server_error, primary_rate_limit, secondary_rate_limit).",
		}, []string{"reason"}),
		rateRemaining: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "agentbot_github_rate_limit_remaining",
			Help: "X-RateLimit-Remaining of the last GitHub response that carried it.",
		}),
		tokens: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "agentbot_github_tokens_minted_total",
			Help: "Installation access tokens minted, by kind (installation, scoped).",
		}, []string{"kind"}),
		bundles: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "agentbot_github_bundles_total",
			Help: "Result bundles handled, by outcome (pushed, rejected, failed).",
		}, []string{"outcome"}),
	}
	for _, c := range []prometheus.Collector{m.requests, m.duration, m.retries, m.rateRemaining, m.tokens, m.bundles} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("github: register metrics: %w", err)
		}
	}
	return m, nil
}
