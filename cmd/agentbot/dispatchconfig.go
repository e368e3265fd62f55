package main

// The dispatcher's settings: what serve reads to run tasks, and their
// checks (one line per problem).

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/agentbot/agentbot/api"
	"github.com/agentbot/agentbot/bundle"
	"github.com/agentbot/agentbot/runner"
	"github.com/agentbot/agentbot/runner/kubernetes"
	"github.com/agentbot/agentbot/runner/local"
	"github.com/agentbot/agentbot/runner/sandbox"
	"github.com/agentbot/agentbot/web"
)

// DispatchOptions are serve's settings for running tasks: the launcher, the
// agent, the task pages. Like Options, each has a flag and an environment
// variable.
type DispatchOptions struct {
	Launcher       string
	PublicURL      string
	MaxConcurrent  string
	TimeLimit      string
	MaxTimeLimit   string
	LocalIsolation string
	AgentRunner    string
	Agent          string
	AgentCommand   string
	AgentEnv       string
	KeepFailed     string
	PagesTokenFile string
	PagesBasicFile string
	Namespace      string
	WarmPool       string
	Kubeconfig     string
	KubeQPS        string
	KubeBurst      string
	GatewayAddr    string
	SandboxMemory  string
	SandboxPIDs    string
	SandboxCPUs    string
	SandboxDisk    string
	SandboxUID     string
	ClaudeMode     string
	ClaudeTools    string
	ProtectedPaths string
	Mentions       string
	APITokenFile   string
	Mirror         string
	MirrorDir      string
	MirrorMax      string
}

// defaultAgentEnv names the environment variables an agent gets by
// default: model API keys and endpoints.
const defaultAgentEnv = "ANTHROPIC_API_KEY,ANTHROPIC_AUTH_TOKEN,ANTHROPIC_BASE_URL,CLAUDE_CODE_OAUTH_TOKEN,OPENAI_API_KEY,OPENAI_BASE_URL"

var dispatchSettings = []setting[DispatchOptions]{
	{"launcher", "AGENTBOT_LAUNCHER", "local", "where agents run: local (child processes, bubblewrap where present) or kubernetes", func(o *DispatchOptions) any { return &o.Launcher }},
	{"public-url", "AGENTBOT_PUBLIC_URL", "", "URL where this agentbot is reachable; comments and check runs link to its task pages", func(o *DispatchOptions) any { return &o.PublicURL }},
	{"max-concurrent", "AGENTBOT_MAX_CONCURRENT", "10", "agent runs at once", func(o *DispatchOptions) any { return &o.MaxConcurrent }},
	{"time-limit", "AGENTBOT_TIME_LIMIT", "30m", "a task's time limit when its repository's settings set none", func(o *DispatchOptions) any { return &o.TimeLimit }},
	{"max-time-limit", "AGENTBOT_MAX_TIME_LIMIT", "2h", "the longest time limit a repository's settings may give a task (a longer one is cut down to it)", func(o *DispatchOptions) any { return &o.MaxTimeLimit }},
	{"local-isolation", "AGENTBOT_LOCAL_ISOLATION", "auto", "local launcher isolation: auto (gvisor when runsc works here, else bwrap), gvisor, bwrap or none", func(o *DispatchOptions) any { return &o.LocalIsolation }},
	{"sandbox-memory", sandbox.EnvMemory, "4GiB", "local launcher: memory per task (RAM, and RAM+swap where accounted)", func(o *DispatchOptions) any { return &o.SandboxMemory }},
	{"sandbox-pids", sandbox.EnvPIDs, "1024", "local launcher: processes and threads per task", func(o *DispatchOptions) any { return &o.SandboxPIDs }},
	{"sandbox-cpus", sandbox.EnvCPUs, "2", "local launcher: CPU cores per task", func(o *DispatchOptions) any { return &o.SandboxCPUs }},
	{"sandbox-disk", sandbox.EnvDisk, "10GiB", "local launcher: bytes a task's workspace may hold", func(o *DispatchOptions) any { return &o.SandboxDisk }},
	{"claude-permission-mode", "AGENTBOT_CLAUDE_PERMISSION_MODE", "", "narrows Claude Code's permission mode (acceptEdits, plan, ...); empty is bypassPermissions, the sandbox being the boundary", func(o *DispatchOptions) any { return &o.ClaudeMode }},
	{"claude-allowed-tools", "AGENTBOT_CLAUDE_ALLOWED_TOOLS", "", "comma-separated tools Claude Code may use (empty: all)", func(o *DispatchOptions) any { return &o.ClaudeTools }},
	{"sandbox-uid", "AGENTBOT_SANDBOX_UID", strconv.Itoa(local.DefaultSandboxUID), "local launcher: the unprivileged host uid (and gid) sandboxes run as; not in /etc/passwd, never 0", func(o *DispatchOptions) any { return &o.SandboxUID }},
	{"agent-runner", "AGENTBOT_AGENT_RUNNER", "", "agent-runner binary (default: next to agentbot, then PATH)", func(o *DispatchOptions) any { return &o.AgentRunner }},
	{"agent", "AGENTBOT_AGENT", "claude", "agent used when a repository's settings name none: claude, codex or command", func(o *DispatchOptions) any { return &o.Agent }},
	{"agent-command", "AGENTBOT_AGENT_COMMAND", "", "the command agent's command line (split on spaces, no shell)", func(o *DispatchOptions) any { return &o.AgentCommand }},
	{"agent-env", "AGENTBOT_AGENT_ENV", defaultAgentEnv, "comma-separated environment variables handed to the agent (redacted from its output)", func(o *DispatchOptions) any { return &o.AgentEnv }},
	{"keep-failed", "AGENTBOT_KEEP_FAILED", "24h", "how long a failed task's workspace is kept for debugging (0 = not kept)", func(o *DispatchOptions) any { return &o.KeepFailed }},
	{"pages-token-file", "AGENTBOT_PAGES_TOKEN_FILE", "", "file holding a bearer token for the task pages", func(o *DispatchOptions) any { return &o.PagesTokenFile }},
	{"namespace", "AGENTBOT_NAMESPACE", "", "kubernetes launcher: namespace of the sandboxes (default: the pod's own)", func(o *DispatchOptions) any { return &o.Namespace }},
	{"warm-pool", "AGENTBOT_WARM_POOL", kubernetes.DefaultWarmPool, "kubernetes launcher: the SandboxWarmPool every claim names", func(o *DispatchOptions) any { return &o.WarmPool }},
	{"kube-qps", "AGENTBOT_KUBE_QPS", strconv.Itoa(kubernetes.DefaultQPS), "kubernetes launcher: API requests per second, on average (exec streams not counted)", func(o *DispatchOptions) any { return &o.KubeQPS }},
	{"kube-burst", "AGENTBOT_KUBE_BURST", strconv.Itoa(kubernetes.DefaultBurst), "kubernetes launcher: API requests at once above that rate", func(o *DispatchOptions) any { return &o.KubeBurst }},
	{"gateway-addr", "AGENTBOT_GATEWAY_ADDR", "", "kubernetes launcher: host:port at which sandbox pods reach agentbot's egress gateway (the Service's gateway port; the bot serves it on AGENTBOT_GATEWAY_LISTEN)", func(o *DispatchOptions) any { return &o.GatewayAddr }},
	{"kubeconfig", "KUBECONFIG", "", "kubernetes launcher: kubeconfig file when not running in a cluster", func(o *DispatchOptions) any { return &o.Kubeconfig }},
	{"protected-paths", "AGENTBOT_PROTECTED_PATHS", ".github/**", "comma-separated path patterns no pushed bundle may touch, whatever a repository's protected_paths say (a repository can only add to them)", func(o *DispatchOptions) any { return &o.ProtectedPaths }},
	{"mentions", "AGENTBOT_MENTIONS", "", "comma-separated names that, as @name at the start of a comment line, act like /agent (the App's own slug is always one)", func(o *DispatchOptions) any { return &o.Mentions }},
	{"api-token-file", "AGENTBOT_API_TOKEN_FILE", "", "file of task API tokens, one \"<name> <token> <repos>\" a line (repos: * or owner/name,...); the pages token is one too", func(o *DispatchOptions) any { return &o.APITokenFile }},
	{"mirror", "AGENTBOT_MIRROR", "on", "keep a git mirror per repository that bundles are verified against and, with the local launcher, sandboxes clone from (on or off)", func(o *DispatchOptions) any { return &o.Mirror }},
	{"mirror-dir", "AGENTBOT_MIRROR_DIR", "", "directory of the repository mirrors (default: <data-dir>/mirrors)", func(o *DispatchOptions) any { return &o.MirrorDir }},
	{"mirror-max", "AGENTBOT_MIRROR_MAX", "20GiB", "total size of the repository mirrors; the least recently used ones no task holds are removed past it", func(o *DispatchOptions) any { return &o.MirrorMax }},
	{"pages-basic-auth-file", "AGENTBOT_PAGES_BASIC_AUTH_FILE", "", "file holding user:password for the task pages (basic auth)", func(o *DispatchOptions) any { return &o.PagesBasicFile }},
}

// DispatchConfig is the validated form of DispatchOptions. Pages and
// AgentEnv hold secrets and are never logged.
type DispatchConfig struct {
	Launcher       string
	PublicURL      string
	MaxConcurrent  int
	TimeLimit      time.Duration
	MaxTimeLimit   time.Duration
	LocalIsolation string
	SandboxLimits  sandbox.Limits
	SandboxUID     int
	AgentRunner    string
	Agent          runner.AgentSpec
	AgentEnv       map[string]string
	KeepFailed     time.Duration
	Pages          web.Auth
	Kubernetes     kubernetes.Config
	Kubeconfig     string
	// ProtectedPaths is the operator's floor of protected path patterns.
	ProtectedPaths []string
	// Mentions are the operator's aliases for "@<app-slug>".
	Mentions []string
	// APITokens are the task API's credentials (none: no API).
	APITokens []api.Token
	// Mirror says whether repository mirrors are kept; MirrorDir "" is
	// <data-dir>/mirrors. MirrorPushOnly (the Kubernetes launcher) keeps
	// them out of the sandboxes, for the push's verification alone.
	Mirror         bool
	MirrorPushOnly bool
	MirrorDir      string
	MirrorMax      int64
	// SecretFiles are hidden from sandboxes.
	SecretFiles []string
}

func dispatchProblem(name, format string, args ...any) error {
	for _, s := range dispatchSettings {
		if s.flag == name {
			return fmt.Errorf("--%s ($%s): %s", s.flag, s.env, fmt.Sprintf(format, args...))
		}
	}
	return fmt.Errorf("--%s: %s", name, fmt.Sprintf(format, args...))
}

// validate checks the settings, one line per problem. getenv reads the
// agent's environment variables.
func (o DispatchOptions) validate(getenv func(string) string) (DispatchConfig, error) {
	var c DispatchConfig
	var errs []error
	add := func(err error) { errs = append(errs, err) }
	o.validateScheduling(&c, add)
	o.validateLauncher(&c, add)
	o.validateMirror(&c, add)
	o.validateAgent(&c, getenv, add)
	o.validatePages(&c, add)
	o.validateProtected(&c, add)
	o.validateAPI(&c, add)
	return c, errors.Join(errs...)
}

// validateProtected checks the operator's protected path patterns and
// mention aliases.
func (o DispatchOptions) validateProtected(c *DispatchConfig, add func(error)) {
	c.ProtectedPaths = []string{}
	for _, p := range strings.Split(o.ProtectedPaths, ",") {
		if p = strings.TrimSpace(p); p == "" {
			continue
		}
		if err := bundle.ValidPattern(p); err != nil {
			add(dispatchProblem("protected-paths", "%q: %v", p, err))
			continue
		}
		c.ProtectedPaths = append(c.ProtectedPaths, p)
	}
	for _, n := range strings.Split(o.Mentions, ",") {
		if n = strings.TrimPrefix(strings.TrimSpace(n), "@"); n == "" {
			continue
		}
		if !mentionName.MatchString(n) {
			add(dispatchProblem("mentions", "%q is not a GitHub login", n))
			continue
		}
		c.Mentions = append(c.Mentions, n)
	}
}

var mentionName = regexp.MustCompile(`^[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})$`)

// validateScheduling checks the page URL, concurrency and time limits.
func (o DispatchOptions) validateScheduling(c *DispatchConfig, add func(error)) {
	if o.PublicURL != "" {
		if u, err := url.Parse(o.PublicURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			add(dispatchProblem("public-url", "%q is not an http(s) URL", o.PublicURL))
		}
		c.PublicURL = strings.TrimRight(o.PublicURL, "/")
	}
	if n, err := strconv.Atoi(o.MaxConcurrent); err != nil || n < 1 || n > 1000 {
		add(dispatchProblem("max-concurrent", "%q is not a number from 1 to 1000", o.MaxConcurrent))
	} else {
		c.MaxConcurrent = n
	}
	timeLimit := func(name, v string) time.Duration {
		d, err := time.ParseDuration(v)
		if err != nil || d < time.Minute {
			add(dispatchProblem(name, "%q is not a duration of at least 1m (like 30m or 2h)", v))
			return 0
		}
		return d
	}
	c.TimeLimit = timeLimit("time-limit", o.TimeLimit)
	c.MaxTimeLimit = timeLimit("max-time-limit", o.MaxTimeLimit)
	if c.TimeLimit > 0 && c.MaxTimeLimit > 0 && c.TimeLimit > c.MaxTimeLimit {
		add(dispatchProblem("time-limit", "%s is above --max-time-limit %s", c.TimeLimit, c.MaxTimeLimit))
	}
	if d, err := time.ParseDuration(o.KeepFailed); err != nil || d < 0 {
		add(dispatchProblem("keep-failed", "%q is not a duration (like 24h, or 0)", o.KeepFailed))
	} else {
		c.KeepFailed = d
	}
}

// validateLauncher checks the launcher and what it needs.
func (o DispatchOptions) validateLauncher(c *DispatchConfig, add func(error)) {
	switch o.Launcher {
	case "local", "kubernetes":
		c.Launcher = o.Launcher
	default:
		add(dispatchProblem("launcher", "%q is not local or kubernetes", o.Launcher))
	}
	switch o.LocalIsolation {
	case local.IsolationAuto, local.IsolationGVisor, local.IsolationBwrap, local.IsolationNone:
		c.LocalIsolation = o.LocalIsolation
	default:
		add(dispatchProblem("local-isolation", "%q is not auto, gvisor, bwrap or none", o.LocalIsolation))
	}
	for _, err := range o.sandbox(c) {
		add(err)
	}
	c.AgentRunner = o.AgentRunner
	if c.Launcher == "kubernetes" {
		c.Kubernetes = kubernetes.Config{Namespace: o.Namespace, WarmPool: o.WarmPool, GatewayAddr: o.GatewayAddr}
		if v, err := strconv.ParseFloat(o.KubeQPS, 32); err != nil || v < 1 {
			add(dispatchProblem("kube-qps", "%q is not a number of at least 1", o.KubeQPS))
		} else {
			c.Kubernetes.QPS = float32(v)
		}
		if n, err := strconv.Atoi(o.KubeBurst); err != nil || n < 1 {
			add(dispatchProblem("kube-burst", "%q is not a whole number of at least 1", o.KubeBurst))
		} else {
			c.Kubernetes.Burst = n
		}
		if c.Kubernetes.Namespace == "" {
			if b, err := os.ReadFile(serviceAccountNamespace); err == nil {
				c.Kubernetes.Namespace = strings.TrimSpace(string(b))
			}
		}
		if err := c.Kubernetes.Validate(); err != nil {
			add(err)
		}
		c.Kubeconfig = o.Kubeconfig
	}
}

// validateAgent checks the operator's agent and collects its environment.
func (o DispatchOptions) validateAgent(c *DispatchConfig, getenv func(string) string, add func(error)) {
	c.Agent = runner.AgentSpec{Name: o.Agent, Command: o.AgentCommand}
	switch o.ClaudeMode {
	case "", "bypassPermissions", "acceptEdits", "default", "plan", "dontAsk":
		c.Agent.PermissionMode = o.ClaudeMode
	default:
		add(dispatchProblem("claude-permission-mode", "%q is not bypassPermissions, acceptEdits, default, plan or dontAsk", o.ClaudeMode))
	}
	for _, tool := range strings.Split(o.ClaudeTools, ",") {
		if tool = strings.TrimSpace(tool); tool != "" {
			c.Agent.AllowedTools = append(c.Agent.AllowedTools, tool)
		}
	}
	switch o.Agent {
	case "claude", "codex":
	case "command":
		if strings.TrimSpace(o.AgentCommand) == "" {
			add(dispatchProblem("agent-command", "required with --agent command"))
		}
	default:
		add(dispatchProblem("agent", "%q is not claude, codex or command", o.Agent))
	}
	c.AgentEnv = map[string]string{}
	for _, k := range strings.Split(o.AgentEnv, ",") {
		if k = strings.TrimSpace(k); k != "" {
			if v := getenv(k); v != "" {
				c.AgentEnv[k] = v
			}
		}
	}
}

// validatePages reads the task pages' credentials.
func (o DispatchOptions) validatePages(c *DispatchConfig, add func(error)) {
	if o.PagesTokenFile != "" {
		tok, err := readSecret(o.PagesTokenFile)
		switch {
		case err != nil:
			add(dispatchProblem("pages-token-file", "%v", err))
		case len(tok) == 0:
			add(dispatchProblem("pages-token-file", "%s is empty", o.PagesTokenFile))
		}
		c.Pages.BearerToken = string(tok)
		c.SecretFiles = append(c.SecretFiles, o.PagesTokenFile)
	}
	if o.PagesBasicFile != "" {
		b, err := readSecret(o.PagesBasicFile)
		user, pass, ok := strings.Cut(string(b), ":")
		switch {
		case err != nil:
			add(dispatchProblem("pages-basic-auth-file", "%v", err))
		case !ok || user == "" || pass == "":
			add(dispatchProblem("pages-basic-auth-file", "%s must hold user:password", o.PagesBasicFile))
		}
		c.Pages.BasicUser, c.Pages.BasicPassword = user, pass
		c.SecretFiles = append(c.SecretFiles, o.PagesBasicFile)
	}
}

// sandbox validates the local sandbox's limits and uid.
func (o DispatchOptions) sandbox(c *DispatchConfig) []error {
	var errs []error
	values := map[string]string{sandbox.EnvMemory: o.SandboxMemory, sandbox.EnvPIDs: o.SandboxPIDs, sandbox.EnvCPUs: o.SandboxCPUs, sandbox.EnvDisk: o.SandboxDisk}
	limits, err := sandbox.LimitsFromEnv(func(k string) string { return values[k] })
	if err != nil {
		// One line each, already naming the variable; say the flag too.
		for _, line := range strings.Split(err.Error(), "\n") {
			errs = append(errs, fmt.Errorf("sandbox limit: %s", line))
		}
	}
	c.SandboxLimits = limits
	if n, err := strconv.Atoi(o.SandboxUID); err != nil || n <= 0 || n > 1<<32-2 {
		errs = append(errs, dispatchProblem("sandbox-uid", "%q is not a uid above 0", o.SandboxUID))
	} else {
		c.SandboxUID = n
	}
	return errs
}
