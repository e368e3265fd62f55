package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/agentbot/agentbot/doctor"
	"github.com/agentbot/agentbot/runner/kubernetes"
)

// checkTimeout bounds each doctor check.
const checkTimeout = 20 * time.Second

// doctorChecks are the checks for serve's settings: files, GitHub (with App
// credentials), and the configured launcher.
func (m *Main) doctorChecks() ([]doctor.Check, error) {
	checks := []doctor.Check{doctor.File("AGENTBOT_WEBHOOK_SECRET_FILE", m.Options.WebhookSecretFile)}
	if m.Config.AppID != 0 {
		checks = append(checks, doctor.File("AGENTBOT_PRIVATE_KEY_FILE", m.Config.PrivateKeyFile))
		gh, err := m.gitHub()
		if err != nil {
			return nil, err
		}
		checks = append(checks, doctor.GitHubChecks(gh, m.Config.AppID)...)
	}
	for _, f := range []struct{ setting, path string }{
		{"AGENTBOT_PAGES_TOKEN_FILE", m.Dispatch.PagesTokenFile}, {"AGENTBOT_PAGES_BASIC_AUTH_FILE", m.Dispatch.PagesBasicFile},
	} {
		if f.path != "" {
			checks = append(checks, doctor.File(f.setting, f.path))
		}
	}
	dc := m.DispatchConfig
	if dc.Launcher == "kubernetes" {
		rc, err := kubeConfig(dc.Kubeconfig)
		if err != nil {
			return nil, err
		}
		pool := dc.Kubernetes.WarmPool
		if pool == "" {
			pool = kubernetes.DefaultWarmPool
		}
		return append(checks, doctor.KubernetesChecks(rc, dc.Kubernetes.Namespace, pool)...), nil
	}
	runnerBin, _ := findAgentRunner(dc.AgentRunner) // "" is the check's problem to report
	return append(checks, doctor.LocalChecks(doctor.Local{
		Isolation: dc.LocalIsolation, AgentRunner: runnerBin, AgentCLI: agentCLI(dc.Agent.Name, dc.Agent.Command),
	})...), nil
}

func kubeConfig(kubeconfig string) (*rest.Config, error) {
	if kubeconfig != "" {
		return clientcmd.BuildConfigFromFlags("", kubeconfig)
	}
	rc, err := rest.InClusterConfig()
	if err != nil {
		return nil, fmt.Errorf("kubernetes launcher: API server configuration (in-cluster, or KUBECONFIG): %w", err)
	}
	return rc, nil
}

// agentCLI is the executable the configured agent runs.
func agentCLI(name, command string) string {
	if name == "command" {
		if f := strings.Fields(command); len(f) > 0 {
			return f[0]
		}
	}
	return name
}

// runDoctor runs every check, prints them and fails if any found a problem.
func (m *Main) runDoctor(ctx context.Context) error {
	checks, err := m.doctorChecks()
	if err != nil {
		return err
	}
	if bad := doctor.Print(m.Stdout, doctor.Run(ctx, checks, checkTimeout)); bad > 0 {
		return fmt.Errorf("doctor: %d problem(s)", bad)
	}
	return nil
}

// startupChecks holds the cheap checks' results for /readyz?verbose.
type startupChecks struct {
	results atomic.Pointer[[]doctor.Result]
}

// doctorHook runs the cheap checks once serve listens, logs each problem
// and publishes the results at /readyz?verbose.
func doctorHook(_ context.Context, m *Main) (Plugin, error) {
	checks, err := m.doctorChecks()
	if err != nil {
		return Plugin{}, err
	}
	run := func(ctx context.Context) {
		res := doctor.Run(ctx, doctor.Cheap(checks), checkTimeout)
		for _, r := range res {
			if !r.OK {
				m.Logger.Warn("start-up check found a problem", slog.String("check", r.Name), slog.String("problem", r.Detail), slog.String("fix", r.Fix))
			}
		}
		m.checks.results.Store(&res)
	}
	return Plugin{Background: run}, nil
}

// readyVerbose answers /readyz?verbose: readiness and the start-up checks.
func (m *Main) readyVerbose(w http.ResponseWriter) {
	out := struct {
		Ready  bool            `json:"ready"`
		Checks []doctor.Result `json:"checks"`
	}{Ready: m.ready.Load()}
	if p := m.checks.results.Load(); p != nil {
		out.Checks = *p
	}
	w.Header().Set("Content-Type", "application/json")
	if !out.Ready {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	_ = json.NewEncoder(w).Encode(out)
}
