// Package redeliver recovers webhook deliveries agentbot missed. GitHub
// keeps a log of every delivery attempt to the App's webhook; while
// agentbot was down (or answered 5xx) the attempts failed, and GitHub does
// not retry on its own. On start and every few minutes the Recoverer reads
// the log back over a bounded window and asks GitHub to redeliver each
// delivery that agentbot would act on and never recorded. Redelivery keeps
// the delivery's GUID, so the store's deduplication makes a redelivery of
// something agentbot did record harmless; the Recoverer still skips those,
// to spend no requests on them.
package redeliver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/agentbot/agentbot/github"
)

// Defaults for the zero Options fields.
const (
	DefaultWindow      = 24 * time.Hour
	DefaultInterval    = 5 * time.Minute
	DefaultMaxPerScan  = 50
	DefaultGap         = time.Second
	DefaultMaxPages    = 20
	DefaultMaxRequests = 3
)

// GitHub is the delivery log, as github.Client reads it.
type GitHub interface {
	ListHookDeliveries(ctx context.Context, since time.Time, maxPages int) ([]github.HookDelivery, bool, error)
	Redeliver(ctx context.Context, id int64) error
}

// Store says which deliveries agentbot recorded (state.Store).
type Store interface {
	SeenDelivery(ctx context.Context, deliveryID string) (bool, error)
}

// Options configures a Recoverer.
type Options struct {
	GitHub GitHub
	Store  Store
	// Handles says whether agentbot acts on an event and action
	// (webhook.Handles).
	Handles func(event, action string) bool
	// Window is how far back the log is read. It must stay below the
	// store's delivery retention, or a delivery whose id was pruned would
	// look unrecorded.
	Window time.Duration
	// Interval is the time between scans.
	Interval time.Duration
	// MaxPerScan bounds the redeliveries one scan asks for; Gap is the
	// pause between two of them (GitHub's secondary rate limits).
	MaxPerScan int
	Gap        time.Duration
	// MaxPages bounds the log pages (of 100) one scan reads.
	MaxPages int
	// MaxRequests bounds the redeliveries asked for one GUID, so a
	// delivery agentbot keeps refusing is not replayed forever.
	MaxRequests int
	Registry    *prometheus.Registry
	Logger      *slog.Logger
	Now         func() time.Time
}

// Recoverer scans the delivery log and asks for redeliveries.
type Recoverer struct {
	opts    Options
	metrics *metrics

	mu sync.Mutex
	// requested counts the redeliveries asked for per GUID, and when the
	// last was, until that falls out of the window; GitHub logs a
	// redelivery only once it was made, which may be after the next scan.
	requested map[string]request
}

type request struct {
	n    int
	last time.Time
}

// New checks opts and fills in the defaults.
func New(opts Options) (*Recoverer, error) {
	if opts.GitHub == nil || opts.Store == nil || opts.Handles == nil {
		return nil, errors.New("redeliver: GitHub, Store and Handles are required")
	}
	opts.Window = orDefault(opts.Window, DefaultWindow)
	opts.Interval = orDefault(opts.Interval, DefaultInterval)
	opts.MaxPerScan = orDefault(opts.MaxPerScan, DefaultMaxPerScan)
	opts.Gap = orDefault(opts.Gap, DefaultGap)
	opts.MaxPages = orDefault(opts.MaxPages, DefaultMaxPages)
	opts.MaxRequests = orDefault(opts.MaxRequests, DefaultMaxRequests)
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	m := newMetrics()
	if opts.Registry != nil {
		if err := m.register(opts.Registry); err != nil {
			return nil, err
		}
	}
	return &Recoverer{opts: opts, metrics: m, requested: map[string]request{}}, nil
}

func orDefault[T int | time.Duration](v, def T) T {
	if v <= 0 {
		return def
	}
	return v
}

// Run scans at once and then every Interval until ctx ends.
func (r *Recoverer) Run(ctx context.Context) {
	t := time.NewTicker(r.opts.Interval)
	defer t.Stop()
	for {
		res, err := r.Scan(ctx)
		switch {
		case err != nil && ctx.Err() == nil:
			r.opts.Logger.Error("missed-delivery scan", slog.Any("err", err))
		case res.Requested > 0 || res.Left > 0:
			r.opts.Logger.Info("asked GitHub to redeliver missed deliveries", slog.Int("count", res.Requested),
				slog.Int("left", res.Left), slog.Int("failed_attempts", res.FailedAttempts))
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Result is what one scan found and did.
type Result struct {
	// Read is how many attempts of the log were read; FailedAttempts how
	// many of them got no 2xx answer.
	Read, FailedAttempts int
	// Requested is how many redeliveries were asked for, Left how many
	// more were due but left for the next scan (MaxPerScan).
	Requested, Left int
	// Truncated says MaxPages stopped the read before the window's start.
	Truncated bool
}

// Scan reads the log over the window and asks for the redeliveries due.
func (r *Recoverer) Scan(ctx context.Context) (Result, error) {
	now := r.opts.Now()
	log, truncated, err := r.opts.GitHub.ListHookDeliveries(ctx, now.Add(-r.opts.Window), r.opts.MaxPages)
	res := Result{Read: len(log), Truncated: truncated}
	if err != nil {
		r.metrics.scans.WithLabelValues("error").Inc()
		return res, fmt.Errorf("redeliver: %w", err)
	}
	for _, d := range log {
		if d.Failed() {
			res.FailedAttempts++
		}
	}
	r.metrics.failedAttempts.Set(float64(res.FailedAttempts))
	r.forget(now)
	due, err := r.due(ctx, log)
	if err != nil {
		r.metrics.scans.WithLabelValues("error").Inc()
		return res, err
	}
	for i, d := range due {
		if i >= r.opts.MaxPerScan {
			res.Left = len(due) - i
			break
		}
		if i > 0 {
			if err := sleep(ctx, r.opts.Gap); err != nil {
				return res, err
			}
		}
		if err := r.opts.GitHub.Redeliver(ctx, d.ID); err != nil {
			r.metrics.redeliveries.WithLabelValues("failed").Inc()
			r.metrics.scans.WithLabelValues("error").Inc()
			return res, fmt.Errorf("redeliver %s (%s.%s): %w", d.GUID, d.Event, d.Action, err)
		}
		r.note(d.GUID, now)
		r.metrics.redeliveries.WithLabelValues("requested").Inc()
		r.opts.Logger.Info("asked GitHub to redeliver", slog.String("delivery_id", d.GUID),
			slog.String("event", d.Event), slog.String("action", d.Action), slog.Int("status", d.StatusCode))
		res.Requested++
	}
	r.metrics.backlog.Set(float64(res.Left))
	r.metrics.scans.WithLabelValues("ok").Inc()
	return res, nil
}

// due picks, oldest first, one attempt per GUID to redeliver: the GUID's
// latest attempt, when agentbot acts on its event, never recorded the GUID,
// and either the attempt failed or agentbot answered 200 or 202 (the store
// should hold it, so it was lost: a restored backup, a lost data dir). A 204
// is agentbot having looked and ignored it. Redeliveries already asked for
// (logged by GitHub or remembered here) count against MaxRequests.
func (r *Recoverer) due(ctx context.Context, log []github.HookDelivery) ([]github.HookDelivery, error) {
	latest := map[string]github.HookDelivery{}
	redelivered := map[string]int{}
	var order []string
	for _, d := range log { // newest first
		if d.GUID == "" || !r.opts.Handles(d.Event, d.Action) {
			continue
		}
		if _, ok := latest[d.GUID]; !ok {
			latest[d.GUID] = d
			order = append(order, d.GUID)
		}
		if d.Redelivery {
			redelivered[d.GUID]++
		}
	}
	var out []github.HookDelivery
	for i := len(order) - 1; i >= 0; i-- {
		d := latest[order[i]]
		if !d.Failed() && d.StatusCode != 200 && d.StatusCode != 202 {
			continue
		}
		if max(redelivered[d.GUID], r.asked(d.GUID)) >= r.opts.MaxRequests {
			continue
		}
		seen, err := r.opts.Store.SeenDelivery(ctx, d.GUID)
		if err != nil {
			return nil, fmt.Errorf("redeliver: look up delivery %s: %w", d.GUID, err)
		}
		if !seen {
			out = append(out, d)
		}
	}
	return out, nil
}

func (r *Recoverer) asked(guid string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.requested[guid].n
}

func (r *Recoverer) note(guid string, now time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	q := r.requested[guid]
	r.requested[guid] = request{n: q.n + 1, last: now}
}

// forget drops what is out of the window, so the map stays bounded.
func (r *Recoverer) forget(now time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for guid, q := range r.requested {
		if now.Sub(q.last) > r.opts.Window {
			delete(r.requested, guid)
		}
	}
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
