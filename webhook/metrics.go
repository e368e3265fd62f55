package webhook

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the intake's Prometheus metrics; labels are fixed small sets
// (event names mapped to a known list, outcomes), never ids or repositories.
type metrics struct {
	deliveries *prometheus.CounterVec
	latency    *prometheus.HistogramVec
}

func newMetrics() *metrics {
	return &metrics{
		deliveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "agentbot_webhook_deliveries_total",
			Help: "Webhook deliveries by event (issues, issue_comment, check_run, ping, other, none) and outcome.",
		}, []string{"event", "outcome"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "agentbot_webhook_intake_duration_seconds",
			Help:    "Time from request to answer, including the durable commit of a new task.",
			Buckets: []float64{.0005, .001, .002, .003, .005, .0075, .01, .025, .05, .1, .25, 1},
		}, []string{"outcome"}),
	}
}

func (m *metrics) register(reg *prometheus.Registry) error {
	return errors.Join(reg.Register(m.deliveries), reg.Register(m.latency))
}
