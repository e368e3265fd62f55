package dispatch

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the dispatcher's; labels are small fixed sets (kind, outcome,
// launcher operation), never task ids or repository names.
type metrics struct {
	started        *prometheus.CounterVec
	finished       *prometheus.CounterVec
	queueDepth     prometheus.Gauge
	running        prometheus.Gauge
	duration       *prometheus.HistogramVec
	timeToStart    prometheus.Histogram
	launcherErrors *prometheus.CounterVec
	requeued       prometheus.Counter
	panics         prometheus.Counter
	egressBlocked  prometheus.Counter
	modelCost      prometheus.Counter
}

func newMetrics() *metrics {
	return &metrics{
		started: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "agentbot_dispatch_tasks_started_total",
			Help: "Agent runs started, by task kind (new, follow-up).",
		}, []string{"kind"}),
		finished: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "agentbot_dispatch_tasks_finished_total",
			Help: "Tasks finished, by outcome (succeeded, no_changes, failed, cancelled, refused, ignored).",
		}, []string{"outcome"}),
		queueDepth: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "agentbot_dispatch_queue_depth",
			Help: "Tasks queued and not yet running.",
		}),
		running: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "agentbot_dispatch_tasks_running",
			Help: "Agent runs in progress.",
		}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "agentbot_dispatch_task_duration_seconds",
			Help:    "From runner start to the end of a task, by outcome.",
			Buckets: []float64{5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200},
		}, []string{"outcome"}),
		timeToStart: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "agentbot_dispatch_time_to_start_seconds",
			Help:    "From the task's creation (delivery) to its runner's start.",
			Buckets: []float64{0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900},
		}),
		launcherErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "agentbot_dispatch_launcher_errors_total",
			Help: "Launcher failures, by operation (start, attach, wait, bundle, stop, cleanup).",
		}, []string{"op"}),
		requeued: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "agentbot_dispatch_tasks_requeued_total",
			Help: "Running tasks re-queued after a restart interrupted them.",
		}),
		panics: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "agentbot_dispatch_panics_total",
			Help: "Panics recovered while handling a task (each is a bug; the task is left for the next scan or restart).",
		}),
		egressBlocked: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "agentbot_egress_blocked_total",
			Help: "Connections and requests from sandboxes that the egress gateway refused.",
		}),
		modelCost: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "agentbot_model_cost_usd_total",
			Help: "Model API cost of finished attempts in US dollars, as the model relay measured it.",
		}),
	}
}

func (m *metrics) register(reg *prometheus.Registry) error {
	if reg == nil {
		return nil
	}
	for _, c := range []prometheus.Collector{m.started, m.finished, m.queueDepth, m.running, m.duration, m.timeToStart, m.launcherErrors, m.requeued, m.panics, m.egressBlocked, m.modelCost} {
		if err := reg.Register(c); err != nil {
			return fmt.Errorf("dispatch: register metrics: %w", err)
		}
	}
	return nil
}
