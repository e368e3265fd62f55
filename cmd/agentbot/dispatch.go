package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/agentbot/agentbot"
	"github.com/agentbot/agentbot/api"
	"github.com/agentbot/agentbot/dispatch"
	"github.com/agentbot/agentbot/github"
	"github.com/agentbot/agentbot/runner"
	"github.com/agentbot/agentbot/runner/kubernetes"
	"github.com/agentbot/agentbot/runner/local"
	"github.com/agentbot/agentbot/tasklog"
	"github.com/agentbot/agentbot/web"
)

// findAgentRunner resolves the agent-runner binary: the setting, else next
// to this executable, else PATH.
func findAgentRunner(setting string) (string, error) {
	if setting != "" {
		return setting, nil
	}
	if exe, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(exe), "agent-runner")
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() {
			return p, nil
		}
	}
	if p, err := lookPath("agent-runner"); err == nil {
		return p, nil
	}
	return "", errors.New("agent-runner not found next to agentbot or on PATH; build it (go build -o bin/ ./cmd/...) or set AGENTBOT_AGENT_RUNNER")
}

// serviceAccountNamespace holds the namespace of a pod's service account.
const serviceAccountNamespace = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"

// newLauncher builds the configured launcher. readiness is its line for
// /readyz: the local launcher's isolation and how it enforces limits.
//
// The local sandbox shows the agent only its mount plan (system
// directories, a curated /etc, the agent CLIs, its workspace), so the App
// key, the webhook secret and the pages' secrets, which live elsewhere,
// need no hiding of their own.
func newLauncher(dataDir string, c DispatchConfig, reg *prometheus.Registry, logger *slog.Logger) (l runner.Launcher, closeL func() error, readiness string, err error) {
	if c.Launcher == "kubernetes" {
		var rc *rest.Config
		var err error
		if c.Kubeconfig != "" {
			rc, err = clientcmd.BuildConfigFromFlags("", c.Kubeconfig)
		} else {
			rc, err = rest.InClusterConfig()
		}
		if err != nil {
			return nil, nil, "", fmt.Errorf("kubernetes launcher: API server configuration (in-cluster, or KUBECONFIG): %w", err)
		}
		kl, err := kubernetes.New(c.Kubernetes, rc, reg, logger)
		if err != nil {
			return nil, nil, "", err
		}
		return kl, kl.Close, "", nil
	}
	bin, err := findAgentRunner(c.AgentRunner)
	if err != nil {
		return nil, nil, "", err
	}
	ll, err := local.New(local.Options{
		DataDir:     dataDir,
		AgentRunner: bin,
		Isolation:   c.LocalIsolation,
		SandboxUID:  c.SandboxUID,
		Limits:      c.SandboxLimits,
		KeepFailed:  c.KeepFailed,
		Logger:      logger,
	})
	if err != nil {
		return nil, nil, "", err
	}
	return ll, ll.Close, ll.Readiness(), nil
}

// dispatchHook runs tasks: with GitHub App credentials it starts the
// dispatcher, the launcher and the task pages; without them serve only
// stores tasks (intake), and says so.
func dispatchHook(ctx context.Context, m *Main) (Plugin, error) {
	if m.Config.AppID == 0 || m.Config.PrivateKey == nil {
		m.Logger.Warn("no GitHub App id and private key: tasks are stored but not run (set AGENTBOT_APP_ID and AGENTBOT_PRIVATE_KEY_FILE)")
		return Plugin{}, nil
	}
	p, err := newDispatchParts(m)
	if err != nil {
		return Plugin{}, err
	}
	plugin := p.start(ctx, m)
	plugin.Mentions = append(p.appMention(ctx, m.Logger), m.DispatchConfig.Mentions...)
	return plugin, nil
}

// appMention is the App's slug, which people mention it by; none (with a
// warning) when GitHub cannot say at start, so the aliases and /agent
// still work.
func (p *dispatchParts) appMention(ctx context.Context, log *slog.Logger) []string {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	slug, err := p.gh.AppSlug(ctx)
	if err != nil {
		log.Warn("cannot learn the App's slug; @mentions of it will not trigger", "err", err)
		return nil
	}
	return []string{slug}
}

// dispatchParts are what serve runs tasks with; close releases the ones
// made so far.
type dispatchParts struct {
	gh            *github.Client
	launcher      runner.Launcher
	closeLauncher func() error
	egress        *dispatch.Egress // the local launcher's gateway
	closeEgress   func() error
	readiness     string // the launcher's line for /readyz
	d             *dispatch.Dispatcher
	pages         http.Handler
	api           http.Handler // nil without a token
}

func (p *dispatchParts) close() error {
	var err error
	if p.closeLauncher != nil {
		err = p.closeLauncher()
	}
	if p.closeEgress != nil {
		err = errors.Join(err, p.closeEgress())
	}
	if p.gh != nil {
		p.gh.Close()
	}
	return err
}

func newDispatchParts(m *Main) (_ *dispatchParts, err error) {
	cfg, dc, log := m.Config, m.DispatchConfig, m.Logger
	p := &dispatchParts{}
	defer func() {
		if err != nil {
			err = errors.Join(err, p.close())
		}
	}()
	if p.gh, err = m.gitHub(); err != nil {
		return nil, err
	}
	if p.launcher, p.closeLauncher, p.readiness, err = newLauncher(cfg.DataDir, dc, m.Registry, log); err != nil {
		return nil, err
	}
	if dc.Launcher != "kubernetes" {
		if p.egress, p.closeEgress, err = newEgress(cfg.DataDir, os.Getenv, log); err != nil {
			return nil, err
		}
	} else if addr := os.Getenv("AGENTBOT_GATEWAY_LISTEN"); addr != "" {
		if p.egress, p.closeEgress, err = newPodEgress(cfg.DataDir, addr, os.Getenv, log); err != nil {
			return nil, err
		}
	}
	logs, err := tasklog.Open(filepath.Join(cfg.DataDir, "logs"), 0)
	if err != nil {
		return nil, err
	}
	tmp := filepath.Join(cfg.DataDir, "tmp")
	if err := os.MkdirAll(tmp, 0o700); err != nil {
		return nil, fmt.Errorf("create %s: %w", tmp, err)
	}
	mirrors, err := newMirrors(cfg.DataDir, dc)
	if err != nil {
		return nil, err
	}
	if p.d, err = dispatch.New(dispatch.Options{
		Mirrors: mirrors, MirrorPushOnly: dc.MirrorPushOnly,
		Store: m.Store, GitHub: p.gh, Launcher: p.launcher, Logs: logs,
		MaxConcurrent: dc.MaxConcurrent, PublicURL: dc.PublicURL,
		TimeLimit: dc.TimeLimit, MaxTimeLimit: dc.MaxTimeLimit,
		// A run past its agent may finish delivering within most of the
		// shutdown timeout; the rest is for reporting and closing.
		ShutdownGrace: cfg.ShutdownTimeout * 2 / 3,
		Agent:         dc.Agent, AgentEnv: dc.AgentEnv, TempDir: tmp, Egress: p.egress,
		KeepFailedWorkspaces: dc.KeepFailed > 0,
		ProtectedPaths:       dc.ProtectedPaths,
		OnSettings:           func(r agentbot.Repo, s github.Settings) { m.labels.Learn(r, s.TriggerLabel) },
		Registry:             m.Registry, Logger: log,
	}); err != nil {
		return nil, err
	}
	if p.pages, err = web.New(web.Options{
		Store: m.Store, Logs: logs, Counter: m.Store, Auth: m.pages, Logger: log,
	}); err != nil {
		return nil, err
	}
	if len(dc.APITokens) > 0 {
		if p.api, err = api.New(api.Options{Store: m.Store, Tokens: dc.APITokens, PublicURL: dc.PublicURL, Notify: p.d.Notify, Logger: log}); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// start runs the dispatcher until the plugin is stopped.
func (p *dispatchParts) start(ctx context.Context, m *Main) Plugin {
	dc, log := m.DispatchConfig, m.Logger
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan error, 1)
	go func() { done <- p.d.Run(runCtx) }()
	log.Info("dispatcher started", "launcher", p.launcher.Name(), "max_concurrent", dc.MaxConcurrent,
		"agent", dc.Agent.Name, "public_url", dc.PublicURL)
	stop := func(ctx context.Context) error {
		cancel()
		// The dispatcher stops the runs it owns and re-queues their tasks
		// (a graceful stop is not a crash), or detaches the runs the
		// launcher keeps; closing the launcher after it stops following
		// whatever is left (killing local children, so an in-process stop
		// leaves no agents) and waits for the launcher's goroutines.
		var errs []error
		select {
		case err := <-done:
			errs = append(errs, err)
		case <-ctx.Done():
			errs = append(errs, fmt.Errorf("dispatcher did not stop: %w", ctx.Err()))
		}
		errs = append(errs, p.close())
		return errors.Join(errs...)
	}
	routes := func(r chi.Router) {
		r.Handle("/", p.pages) // the dashboard
		r.Handle("/tasks", p.pages)
		r.Handle("/tasks/*", p.pages)
		if p.api != nil {
			r.Handle("/api/v1/*", p.api)
		}
	}
	return Plugin{Enqueued: p.d.Notify, Routes: routes, Stop: stop, Readiness: p.readiness}
}
