package state

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the store's Prometheus metrics. Labels are fixed small sets
// (operation names, task states), never ids.
type metrics struct {
	tasks          *prometheus.GaugeVec
	opDuration     *prometheus.HistogramVec
	commitDuration prometheus.Histogram
	groupSize      prometheus.Histogram
}

var latencyBuckets = []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, 1}

func newMetrics() *metrics {
	return &metrics{
		tasks: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "agentbot_tasks",
			Help: "Tasks in the store by state.",
		}, []string{"state"}),
		opDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "agentbot_store_operation_duration_seconds",
			Help:    "Latency of store operations, including the wait for a durable commit.",
			Buckets: latencyBuckets,
		}, []string{"op"}),
		commitDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "agentbot_store_group_commit_duration_seconds",
			Help:    "Duration of one group-commit transaction (write and fsync).",
			Buckets: latencyBuckets,
		}),
		groupSize: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "agentbot_store_group_commit_size",
			Help:    "Writes folded into one group-commit transaction.",
			Buckets: []float64{1, 2, 4, 8, 16, 32, 64, 128, 256, 512},
		}),
	}
}

func (m *metrics) register(reg *prometheus.Registry) error {
	return errors.Join(
		reg.Register(m.tasks),
		reg.Register(m.opDuration),
		reg.Register(m.commitDuration),
		reg.Register(m.groupSize),
	)
}
