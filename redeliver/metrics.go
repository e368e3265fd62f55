package redeliver

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	redeliveries   *prometheus.CounterVec
	scans          *prometheus.CounterVec
	failedAttempts prometheus.Gauge
	backlog        prometheus.Gauge
}

func newMetrics() *metrics {
	return &metrics{
		redeliveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "agentbot_redeliveries_total",
			Help: "Redeliveries of missed webhook deliveries asked of GitHub, by outcome (requested, failed).",
		}, []string{"outcome"}),
		scans: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "agentbot_redelivery_scans_total",
			Help: "Scans of the App's webhook delivery log, by result (ok, error).",
		}, []string{"result"}),
		failedAttempts: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "agentbot_webhook_failed_attempts",
			Help: "Delivery attempts without a 2xx answer in the look-back window, at the last scan.",
		}),
		backlog: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "agentbot_redelivery_backlog",
			Help: "Redeliveries due but left for the next scan by the per-scan bound, at the last scan.",
		}),
	}
}

func (m *metrics) register(reg prometheus.Registerer) error {
	for _, c := range []prometheus.Collector{m.redeliveries, m.scans, m.failedAttempts, m.backlog} {
		if err := reg.Register(c); err != nil {
			return fmt.Errorf("redeliver: register metrics: %w", err)
		}
	}
	return nil
}
