package main

import (
	"fmt"
	"maps"
	"net/url"
	"strconv"

	"github.com/agentbot/agentbot/dispatch"
	"github.com/agentbot/agentbot/gateway"
	"github.com/agentbot/agentbot/runner"
)

// openOneGateway opens the one-shot run's task on the egress gateway and
// points job at it, as the dispatcher does for serve: the sandbox reaches
// the model through the model relay (the operator's key stays here, the
// sandbox gets a placeholder) and nothing else but the allow-list. A local
// repository is cloned as before, from its file:// URL bound into the
// sandbox, so the git relay serves nothing; a URL repository is fetched
// directly through the proxy, its host being added to the allow-list (the
// operator named it, and it needs no token: agentbot run has none).
func openOneGateway(eg *dispatch.Egress, job *runner.Job, src *source) (*gateway.Task, error) {
	allow := gateway.AllowList(append([]gateway.Rule(nil), eg.Allow...))
	if src.gitDir == "" {
		u, err := url.Parse(job.CloneURL)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Hostname() == "" {
			return nil, fmt.Errorf("agentbot run: the repository URL is not an http(s) URL the egress gateway can let through")
		}
		port := 443
		if u.Scheme == "http" {
			port = 80
		}
		if p := u.Port(); p != "" {
			if port, err = strconv.Atoi(p); err != nil {
				return nil, fmt.Errorf("agentbot run: the repository URL's port %q is not a number", p)
			}
		}
		allow = append(allow, gateway.Rule{Host: u.Hostname(), Port: port})
	}
	task, err := eg.Gateway.Open(gateway.TaskSpec{TaskID: job.TaskID, Repo: src.name, Allow: allow})
	if err != nil {
		return nil, fmt.Errorf("agentbot run: cannot open the egress gateway: %w", err)
	}
	env := map[string]string{}
	for k, v := range job.Env {
		if !dispatch.IsModelCredential(k) {
			env[k] = v
		}
	}
	maps.Copy(env, task.Env("http://"+dispatch.GatewayListen))
	job.Env = env
	job.Gateway = &runner.JobGateway{Listen: dispatch.GatewayListen, HostSocket: task.Socket}
	return task, nil
}
