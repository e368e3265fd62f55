package main

import (
	"flag"
	"io"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestDispatchOptions(t *testing.T) {
	dir := t.TempDir()
	token := writeFile(t, dir, "token", "tok\n")
	basic := writeFile(t, dir, "basic", "ops:pw\n")
	badBasic := writeFile(t, dir, "badbasic", "nocolon\n")
	cases := []struct {
		name    string
		env     map[string]string
		wantErr []string
		check   func(t *testing.T, c DispatchConfig)
	}{
		{"defaults", nil, nil, func(t *testing.T, c DispatchConfig) {
			if c.Launcher != "local" || c.MaxConcurrent != 10 || c.LocalIsolation != "auto" || c.Agent.Name != "claude" || c.KeepFailed.Hours() != 24 ||
				c.TimeLimit != 30*time.Minute || c.MaxTimeLimit != 2*time.Hour {
				t.Errorf("defaults: %+v", c)
			}
		}},
		{"mirror on by default", nil, nil, func(t *testing.T, c DispatchConfig) {
			if !c.Mirror || c.MirrorPushOnly || c.MirrorDir != "" || c.MirrorMax != 20<<30 {
				t.Errorf("mirror %v push-only %v %q %d", c.Mirror, c.MirrorPushOnly, c.MirrorDir, c.MirrorMax)
			}
		}},
		{"kubernetes: the mirror verifies pushes only", map[string]string{"AGENTBOT_LAUNCHER": "kubernetes", "AGENTBOT_NAMESPACE": "agents"}, nil, func(t *testing.T, c DispatchConfig) {
			if !c.Mirror || !c.MirrorPushOnly {
				t.Errorf("mirror %v push-only %v; want a mirror kept out of the pods", c.Mirror, c.MirrorPushOnly)
			}
		}},
		{"mirror settings", map[string]string{"AGENTBOT_MIRROR": "off", "AGENTBOT_MIRROR_DIR": "/srv/mirrors", "AGENTBOT_MIRROR_MAX": "500MiB"}, nil, func(t *testing.T, c DispatchConfig) {
			if c.Mirror || c.MirrorDir != "/srv/mirrors" || c.MirrorMax != 500<<20 {
				t.Errorf("mirror %v %q %d", c.Mirror, c.MirrorDir, c.MirrorMax)
			}
		}},
		{"bad mirror settings", map[string]string{"AGENTBOT_MIRROR": "maybe", "AGENTBOT_MIRROR_MAX": "-1"}, []string{"AGENTBOT_MIRROR)", "AGENTBOT_MIRROR_MAX"}, nil},
		{"agent env picks only set variables", map[string]string{"ANTHROPIC_API_KEY": "k", "AGENTBOT_AGENT_ENV": "ANTHROPIC_API_KEY,UNSET_ONE"}, nil, func(t *testing.T, c DispatchConfig) {
			if len(c.AgentEnv) != 1 || c.AgentEnv["ANTHROPIC_API_KEY"] != "k" {
				t.Errorf("agent env %v", c.AgentEnv)
			}
		}},
		{"pages auth from files", map[string]string{"AGENTBOT_PAGES_TOKEN_FILE": token, "AGENTBOT_PAGES_BASIC_AUTH_FILE": basic}, nil, func(t *testing.T, c DispatchConfig) {
			if c.Pages.BearerToken != "tok" || c.Pages.BasicUser != "ops" || c.Pages.BasicPassword != "pw" || len(c.SecretFiles) != 2 {
				t.Errorf("pages %+v secret files %v", c.Pages, c.SecretFiles)
			}
		}},
		{"time limits", map[string]string{"AGENTBOT_TIME_LIMIT": "45m", "AGENTBOT_MAX_TIME_LIMIT": "3h"}, nil, func(t *testing.T, c DispatchConfig) {
			if c.TimeLimit != 45*time.Minute || c.MaxTimeLimit != 3*time.Hour {
				t.Errorf("time limit %s, max %s", c.TimeLimit, c.MaxTimeLimit)
			}
		}},
		{"bad time limits", map[string]string{"AGENTBOT_TIME_LIMIT": "10s", "AGENTBOT_MAX_TIME_LIMIT": "forever"}, []string{"--time-limit", "--max-time-limit"}, nil},
		{"default above the ceiling", map[string]string{"AGENTBOT_TIME_LIMIT": "3h"}, []string{"--time-limit ($AGENTBOT_TIME_LIMIT): 3h0m0s is above --max-time-limit 2h0m0s"}, nil},
		{"every problem named", map[string]string{
			"AGENTBOT_LAUNCHER": "docker", "AGENTBOT_MAX_CONCURRENT": "0", "AGENTBOT_LOCAL_ISOLATION": "jail",
			"AGENTBOT_AGENT": "command", "AGENTBOT_PUBLIC_URL": "ftp://x", "AGENTBOT_KEEP_FAILED": "soon",
			"AGENTBOT_PAGES_BASIC_AUTH_FILE": badBasic, "AGENTBOT_PAGES_TOKEN_FILE": filepath.Join(dir, "missing"),
		}, []string{"--launcher", "--max-concurrent", "--local-isolation", "--agent-command", "--public-url", "--keep-failed", "--pages-basic-auth-file", "--pages-token-file"}, nil},
		{"kubernetes rate limit", map[string]string{"AGENTBOT_LAUNCHER": "kubernetes", "AGENTBOT_NAMESPACE": "bots", "AGENTBOT_KUBE_QPS": "20.5"}, nil, func(t *testing.T, c DispatchConfig) {
			if c.Kubernetes.QPS != 20.5 || c.Kubernetes.Burst != 300 {
				t.Errorf("qps %g, burst %d; want 20.5 and the default 300", c.Kubernetes.QPS, c.Kubernetes.Burst)
			}
		}},
		{"bad kubernetes rate limit", map[string]string{"AGENTBOT_LAUNCHER": "kubernetes", "AGENTBOT_NAMESPACE": "bots", "AGENTBOT_KUBE_QPS": "0", "AGENTBOT_KUBE_BURST": "lots"}, []string{"--kube-qps", "--kube-burst"}, nil},
		{"kubernetes needs a namespace outside a pod", map[string]string{"AGENTBOT_LAUNCHER": "kubernetes"}, []string{"namespace is required"}, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			getenv := func(k string) string { return tc.env[k] }
			var o DispatchOptions
			fs := flag.NewFlagSet("x", flag.ContinueOnError)
			fs.SetOutput(io.Discard)
			if err := bind(fs, getenv, &o, dispatchSettings); err != nil {
				t.Fatal(err)
			}
			c, err := o.validate(getenv)
			if len(tc.wantErr) == 0 {
				if err != nil {
					t.Fatal(err)
				}
				tc.check(t, c)
				return
			}
			if err == nil {
				t.Fatal("no error")
			}
			for _, want := range tc.wantErr {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error lacks %q:\n%v", want, err)
				}
			}
			if strings.Contains(err.Error(), "tok") && tc.env["AGENTBOT_PAGES_TOKEN_FILE"] == token {
				t.Error("a secret shows in the error")
			}
		})
	}
}
