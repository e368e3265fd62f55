// Command agentbot is the agentbot GitHub App service and its CLI.
//
//	agentbot serve   receive webhooks, store tasks (and, with the dispatcher, run them)
//	agentbot tasks   list stored tasks (table or --json); works while serve is stopped
//	agentbot run     run one task on a local repository or git URL, no GitHub needed
//
// Every flag has an environment variable (agentbot serve -h lists them).
// main is thin: Main parses flags, runs, and closes, so tests run the whole
// program in-process on 127.0.0.1:0 with a temporary data directory.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/agentbot/agentbot"
	"github.com/agentbot/agentbot/github"
	"github.com/agentbot/agentbot/state"
	"github.com/agentbot/agentbot/web"
	"github.com/agentbot/agentbot/webhook"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	m := NewMain()
	if err := m.ParseFlags(os.Args[1:], os.Getenv); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		printError(err)
		os.Exit(2)
	}
	if err := m.Run(ctx); err != nil {
		printError(err)
		m.Close()
		os.Exit(1)
	}
	if err := m.Wait(ctx); err != nil {
		printError(err)
		m.Close()
		os.Exit(1)
	}
	stop() // a second signal kills at once
	if err := m.Close(); err != nil {
		printError(err)
		os.Exit(1)
	}
}

// printError writes one "agentbot: ..." line per problem.
func printError(err error) {
	var joined interface{ Unwrap() []error }
	if errors.As(err, &joined) {
		for _, e := range joined.Unwrap() {
			fmt.Fprintln(os.Stderr, "agentbot:", e)
		}
		return
	}
	fmt.Fprintln(os.Stderr, "agentbot:", err)
}

// Hook plugs a component into serve. Hooks run in order after the store,
// registry and logger are ready and before the webhook handler is built and
// the listener accepts; what they return is wired in then.
type Hook func(ctx context.Context, m *Main) (Plugin, error)

// Plugin is what a Hook plugs into serve. Every field may be nil.
type Plugin struct {
	// Enqueued is given every task the webhook stores, after commit; it
	// must not block (the dispatcher passes its non-blocking notify).
	Enqueued func(*agentbot.Task)
	// Mentions are names the webhook takes "@name" at a line start for
	// as /agent (the App's slug, the operator's aliases).
	Mentions []string
	// Routes adds handlers to the router after the built-in ones.
	Routes func(chi.Router)
	// Stop runs after HTTP has stopped and before the store closes, in
	// reverse order of the hooks.
	Stop func(context.Context) error
	// Readiness is a line /readyz adds under "ready" (the sandbox's
	// isolation and limits, say); "" adds none.
	Readiness string
	// Background runs in a goroutine serve owns once the listener accepts
	// (work that makes GitHub call back, like redeliveries); it must return
	// when ctx ends, which is before the Stops run.
	Background func(ctx context.Context)
}

// Option configures a Main at construction.
type Option func(*Main)

// WithHooks replaces serve's hooks (by default the dispatcher's, see
// dispatchHook): tests plug in their own, or the dispatcher's and theirs.
func WithHooks(hooks ...Hook) Option {
	return func(m *Main) { m.hooks = append([]Hook(nil), hooks...) }
}

// Main is the program: parsed settings, the open store and the HTTP server.
type Main struct {
	Stdout, Stderr io.Writer

	// Command is the subcommand ParseFlags found: "serve" or "tasks".
	Command string
	Options Options
	Config  Config
	Tasks   TasksOptions
	// Dispatch and DispatchConfig are serve's settings for running tasks
	// (dispatch.go); RunOptions are `agentbot run`'s (run.go).
	Dispatch       DispatchOptions
	DispatchConfig DispatchConfig
	RunOptions     RunOptions

	Logger   *slog.Logger
	Registry *prometheus.Registry
	Store    *state.Store
	Router   chi.Router
	// Ops are the operations settings (ops.go).
	Ops OpsOptions
	// Backup are `agentbot backup`'s settings (backup.go).
	Backup BackupOptions
	// Setup are `agentbot setup`'s settings (setup.go).
	Setup SetupOptions

	ghClient *github.Client
	checks   startupChecks

	// hooks start and stop components around serve; plugins is what they
	// returned.
	hooks []Hook
	// labels is intake's book of the repositories' own trigger labels,
	// filled by the dispatcher as it reads their settings.
	labels  *webhook.Labels
	plugins []Plugin

	server   *http.Server
	listener net.Listener
	// pages is what the task pages and /metrics require (pagesAuth).
	pages web.Auth
	// metricsServer serves /metrics alone on Config.MetricsListen.
	metricsServer   *http.Server
	metricsListener net.Listener
	ready           atomic.Bool
	serveErr        chan error
	stops           []func(context.Context) error
	stopBG          context.CancelFunc
	bg              sync.WaitGroup
	closed          bool
}

// NewMain returns a Main writing to the process's stdout and stderr.
func NewMain(opts ...Option) *Main {
	m := &Main{Stdout: os.Stdout, Stderr: os.Stderr, serveErr: make(chan error, 1), hooks: []Hook{dispatchHook, redeliverHook, retentionHook, adminHook, doctorHook}, labels: webhook.NewLabels()}
	for _, o := range opts {
		o(m)
	}
	return m
}

const usage = `usage: agentbot <command> [flags]

commands:
  serve   receive GitHub webhooks and store tasks durably
  tasks   list stored tasks (--json for JSON); run while serve is stopped
  run     run one task on a local repository or git URL, no GitHub needed
  backup  write a consistent copy of the store to FILE (while serve runs, too)
  setup   register the GitHub App from its manifest, through a page on 127.0.0.1
  doctor  check serve's settings, GitHub and the launcher; each problem with its fix
          (agentbot run --demo tries it on a sample repository, no model key needed)

"agentbot <command> -h" lists the command's flags and their environment variables.
`

// ParseFlags reads the subcommand and its flags; getenv supplies the
// environment variables that back every flag. Settings are validated here,
// one line per problem.
func (m *Main) ParseFlags(args []string, getenv func(string) string) error {
	if len(args) == 0 {
		fmt.Fprint(m.Stderr, usage)
		return errors.New("no command given")
	}
	m.Command, args = args[0], args[1:]
	fs := flag.NewFlagSet("agentbot "+m.Command, flag.ContinueOnError)
	fs.SetOutput(m.Stderr)
	var envErr error
	switch m.Command {
	case "serve", "doctor":
		envErr = errors.Join(
			bind(fs, getenv, &m.Options, settings, "listen", "metrics-listen", "data-dir", "app-id", "private-key-file", "webhook-secret-file",
				"github-url", "log-level", "trigger-labels", "max-body", "delivery-retention", "shutdown-timeout", "store-timeout"),
			bind(fs, getenv, &m.Dispatch, dispatchSettings),
			bind(fs, getenv, &m.Ops, opsSettings))
	case "run":
		envErr = bind(fs, getenv, &m.RunOptions, runSettings())
	case "demo-agent":
	case "tasks":
		envErr = errors.Join(
			bind(fs, getenv, &m.Options, settings, "data-dir", "store-timeout"),
			bind(fs, getenv, &m.Tasks, taskSettings))
	case "backup":
		envErr = errors.Join(
			bind(fs, getenv, &m.Options, settings, "data-dir", "listen"),
			bind(fs, getenv, &m.Backup, backupSettings))
	case "setup":
		envErr = errors.Join(
			bind(fs, getenv, &m.Options, settings, "data-dir"),
			bind(fs, getenv, &m.Setup, setupSettings))
	case "help", "-h", "--help":
		fmt.Fprint(m.Stderr, usage)
		return flag.ErrHelp
	default:
		fmt.Fprint(m.Stderr, usage)
		return fmt.Errorf("unknown command %q", m.Command)
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if envErr != nil {
		return envErr
	}
	if m.Command == "backup" {
		if fs.NArg() != 1 {
			return errors.New("backup: give one FILE to write the copy to")
		}
		m.Backup.File = fs.Arg(0)
		return nil
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%s: unexpected arguments %q", m.Command, fs.Args())
	}
	switch m.Command {
	case "serve", "doctor":
		cfg, err := m.Options.Validate()
		if err != nil {
			return err
		}
		m.Config = cfg
		if m.DispatchConfig, err = m.Dispatch.validate(getenv); err != nil {
			return err
		}
		if err := m.Ops.validate(m.Config); err != nil {
			return err
		}
	case "run":
		return m.RunOptions.validate()
	case "tasks":
		return m.Tasks.validate(&m.Options)
	case "setup":
		return m.Setup.validate()
	}
	return nil
}

// DBPath is the bbolt file in the data directory.
func (m *Main) DBPath() string { return filepath.Join(m.Options.DataDir, "agentbot.db") }

// Run runs the command. For serve it returns once the server is listening
// (Wait blocks until it should stop); tasks runs to completion.
func (m *Main) Run(ctx context.Context) error {
	switch m.Command {
	case "serve":
		return m.serve(ctx)
	case "tasks":
		return m.listTasks(ctx)
	case "run":
		return m.runOnce(ctx)
	case "backup":
		return m.backup(ctx)
	case "doctor":
		return m.runDoctor(ctx)
	case "setup":
		return m.setup(ctx)
	case "demo-agent":
		return demoAgent(m.Stdout)
	}
	return fmt.Errorf("unknown command %q", m.Command)
}

// Wait blocks until ctx is done or the HTTP server fails. It returns at once
// for commands other than serve.
func (m *Main) Wait(ctx context.Context) error {
	if m.server == nil {
		return nil
	}
	select {
	case <-ctx.Done():
		m.Logger.Info("stopping", slog.String("reason", context.Cause(ctx).Error()))
		return nil
	case err := <-m.serveErr:
		return fmt.Errorf("http server: %w", err)
	}
}

// Addr is the address serve listens on (useful with port 0).
func (m *Main) Addr() string {
	if m.listener == nil {
		return ""
	}
	return m.listener.Addr().String()
}

// MetricsAddr is the address of the /metrics listener ("" without one).
func (m *Main) MetricsAddr() string {
	if m.metricsListener == nil {
		return ""
	}
	return m.metricsListener.Addr().String()
}

// Close shuts serve down gracefully: readiness off, stop accepting and
// finish in-flight requests, stop hooks and background work, close the store.
// It is safe to call more than once and after a failed Run.
func (m *Main) Close() error {
	if m.closed {
		return nil
	}
	m.closed = true
	m.ready.Store(false)
	var errs []error
	timeout := m.Config.ShutdownTimeout
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if m.server != nil {
		if err := m.server.Shutdown(ctx); err != nil {
			errs = append(errs, fmt.Errorf("shut down http server: %w", err))
		}
	}
	if m.metricsServer != nil {
		if err := m.metricsServer.Shutdown(ctx); err != nil {
			errs = append(errs, fmt.Errorf("shut down the metrics server: %w", err))
		}
	}
	if m.stopBG != nil {
		m.stopBG()
	}
	m.bg.Wait()
	for i := len(m.stops) - 1; i >= 0; i-- {
		if err := m.stops[i](ctx); err != nil {
			errs = append(errs, err)
		}
	}
	if m.Store != nil {
		if err := m.Store.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	if m.Logger != nil && m.server != nil {
		m.Logger.Info("stopped")
	}
	return errors.Join(errs...)
}

// newRegistry is the registry every component registers on.
func newRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}
