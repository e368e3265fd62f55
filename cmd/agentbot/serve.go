package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"runtime/debug"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/agentbot/agentbot"
	"github.com/agentbot/agentbot/state"
	"github.com/agentbot/agentbot/webhook"
)

// pruneInterval is how often serve forgets expired delivery IDs.
const pruneInterval = time.Hour

// serve opens the store, runs the hooks, builds the router and starts
// listening. It returns once the listener accepts.
func (m *Main) serve(ctx context.Context) error {
	cfg := m.Config
	if m.Logger == nil {
		m.Logger = slog.New(slog.NewJSONHandler(m.Stderr, &slog.HandlerOptions{Level: cfg.LogLevel}))
	}
	if m.Registry == nil {
		m.Registry = newRegistry()
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("create data dir: %w", err)
	}
	store, err := state.Open(m.DBPath(), state.Options{
		Timeout:           cfg.StoreTimeout,
		DeliveryRetention: cfg.DeliveryRetention,
		Registry:          m.Registry,
	})
	if err != nil {
		return err
	}
	m.Store = store
	// After the store's lock: a second serve on this data dir has stopped.
	if m.pages, err = pagesAuth(cfg.DataDir, m.DispatchConfig.Pages, m.Logger); err != nil {
		return err
	}

	for _, hook := range m.hooks {
		p, err := hook(ctx, m)
		if err != nil {
			return err
		}
		m.plugins = append(m.plugins, p)
		if p.Stop != nil {
			m.stops = append(m.stops, p.Stop)
		}
	}

	hook, err := webhook.New(webhook.Config{
		Secret:        cfg.WebhookSecret,
		Store:         m.Store,
		TriggerLabels: cfg.TriggerLabels,
		Mentions:      m.mentions(),
		Learned:       m.labels,
		MaxBody:       cfg.MaxBody,
		Logger:        m.Logger,
		Registry:      m.Registry,
		Enqueued:      m.enqueued(),
	})
	if err != nil {
		return err
	}
	m.Router = m.router(hook)

	return m.listen(ctx)
}

// listen starts the HTTP server and the goroutines serve owns: the
// store's pruning and each plugin's background work.
func (m *Main) listen(ctx context.Context) error {
	cfg := m.Config
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", cfg.Listen, err)
	}
	m.listener = ln
	m.server = m.httpServer(m.Router)
	if cfg.MetricsListen != "" {
		if m.metricsListener, err = net.Listen("tcp", cfg.MetricsListen); err != nil {
			ln.Close()
			return fmt.Errorf("listen on %s for /metrics: %w", cfg.MetricsListen, err)
		}
		mux := http.NewServeMux()
		mux.Handle("GET /metrics", m.metricsHandler())
		m.metricsServer = m.httpServer(mux)
	}
	bgCtx, stopBG := context.WithCancel(context.WithoutCancel(ctx))
	m.stopBG = stopBG
	m.serveOn(m.server, ln)
	if m.metricsServer != nil {
		m.serveOn(m.metricsServer, m.metricsListener)
		m.Logger.Info("serving /metrics without auth", slog.String("addr", m.metricsListener.Addr().String()))
	}
	m.bg.Add(1)
	go func() {
		defer m.bg.Done()
		m.pruneLoop(bgCtx)
	}()
	for _, p := range m.plugins {
		if p.Background != nil {
			m.bg.Add(1)
			go func() {
				defer m.bg.Done()
				p.Background(bgCtx)
			}()
		}
	}
	m.ready.Store(true)
	m.Logger.Info("listening", slog.String("addr", ln.Addr().String()), slog.String("db", m.DBPath()), slog.Any("config", cfg))
	return nil
}

func (m *Main) httpServer(h http.Handler) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(m.Logger.Handler(), slog.LevelWarn),
	}
}

// serveOn serves srv on ln in a goroutine serve owns; a failure ends Wait.
func (m *Main) serveOn(srv *http.Server, ln net.Listener) {
	m.bg.Add(1)
	go func() {
		defer m.bg.Done()
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			select {
			case m.serveErr <- err:
			default: // the other server's failure is being reported
			}
		}
	}()
}

func (m *Main) metricsHandler() http.Handler {
	return promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{Registry: m.Registry})
}

// router is the HTTP surface: the webhook, probes, metrics, then any
// extension routes.
func (m *Main) router(hook http.Handler) chi.Router {
	r := chi.NewRouter()
	r.Use(m.recoverPanics)
	r.Handle("/webhook", hook)
	r.Get("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		io.WriteString(w, "ok\n")
	})
	r.Get("/readyz", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Has("verbose") {
			m.readyVerbose(w)
			return
		}
		if !m.ready.Load() {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		io.WriteString(w, "ready\n")
		for _, p := range m.plugins {
			if p.Readiness != "" {
				io.WriteString(w, p.Readiness+"\n")
			}
		}
	})
	// /metrics names repositories' task counts and the host's process
	// figures: behind the pages' auth, unless the operator gave it a
	// listener of its own (where it is only).
	if m.Config.MetricsListen == "" {
		r.Handle("/metrics", m.pages.Protect(m.metricsHandler()))
	}
	for _, p := range m.plugins {
		if p.Routes != nil {
			p.Routes(r)
		}
	}
	return r
}

// recoverPanics turns a handler panic into a logged 500 instead of a
// dropped connection.
func (m *Main) recoverPanics(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v)
				}
				m.Logger.ErrorContext(r.Context(), "panic in handler", slog.String("path", r.URL.Path),
					slog.Any("panic", v), slog.String("stack", string(debug.Stack())))
				http.Error(w, "internal error", http.StatusInternalServerError)
			}
		}()
		next.ServeHTTP(w, r)
	})
}

// pruneLoop forgets expired delivery IDs at start and then hourly.
func (m *Main) pruneLoop(ctx context.Context) {
	t := time.NewTicker(pruneInterval)
	defer t.Stop()
	for {
		n, err := m.Store.PruneDeliveries(ctx)
		switch {
		case err != nil && ctx.Err() == nil:
			m.Logger.Error("prune deliveries", slog.Any("err", err))
		case n > 0:
			m.Logger.Info("pruned deliveries", slog.Int("count", n))
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// enqueued tells every plugin that wants it of a stored task (nil when none
// does).
// mentions are every plugin's mention names.
func (m *Main) mentions() []string {
	var names []string
	for _, p := range m.plugins {
		names = append(names, p.Mentions...)
	}
	return names
}

func (m *Main) enqueued() func(*agentbot.Task) {
	var fns []func(*agentbot.Task)
	for _, p := range m.plugins {
		if p.Enqueued != nil {
			fns = append(fns, p.Enqueued)
		}
	}
	if len(fns) == 0 {
		return nil
	}
	return func(t *agentbot.Task) {
		for _, f := range fns {
			f(t)
		}
	}
}
