package dispatch

import (
	"context"
	"fmt"
	"maps"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/agentbot/agentbot/gateway"
	"github.com/agentbot/agentbot/runner"
)

// GatewayListen is where agent-runner serves the gateway inside the
// sandbox: the proxy address in the job's environment.
const GatewayListen = "127.0.0.1:3128"

// Egress is the sandboxes' way out: every attempt opens a task on the
// gateway for its repository, so the sandbox clones through the git relay
// and calls the model through the model relay, and reaches nothing else
// but its allow-list.
type Egress struct {
	Gateway interface {
		Open(gateway.TaskSpec) (*gateway.Task, error)
	}
	// Allow is the operator's allow-list (AGENTBOT_EGRESS_ALLOW; empty by
	// default: see docs/security.md), Ceiling what a repository's egress:
	// may add to it (AGENTBOT_EGRESS_CEILING).
	Allow, Ceiling []gateway.Rule
	// Pods says the sandboxes are Kubernetes pods that reach the gateway
	// over TCP (gateway.TCPServer): the job carries the task's capability
	// and the launcher adds the gateway's address, instead of a socket.
	Pods bool
}

// egressLog is what an attempt keeps of its sandbox's egress for its
// reports: blocked attempts by host.
type egressLog struct {
	mu      sync.Mutex
	blocked map[string]int
}

func (e *egressLog) add(ev runner.Egress) {
	if ev.Allowed {
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.blocked == nil {
		e.blocked = map[string]int{}
	}
	e.blocked[ev.Host]++
}

// note is the sentence the final comment adds about blocked egress, or "".
func (e *egressLog) note() string {
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.blocked) == 0 {
		return ""
	}
	hosts := slices.Sorted(maps.Keys(e.blocked))
	parts := make([]string, 0, len(hosts))
	for i, h := range hosts {
		if i == 5 {
			parts = append(parts, fmt.Sprintf("and %d more hosts", len(hosts)-5))
			break
		}
		n := e.blocked[h]
		if len(h) > 100 {
			h = h[:100] + "…"
		}
		parts = append(parts, fmt.Sprintf("%d connection%s to `%s`", n, plural(n), inlineLabel(h)))
	}
	return "The sandbox's egress gateway blocked: " + strings.Join(parts, ", ") + "."
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}

// openGateway opens the attempt's gateway task and points the job at it:
// the relay's clone URL instead of the repository's, no token, the proxy
// and the placeholder model key in the environment. token is the read
// token; with a gateway the sandbox gets none and the git relay adds
// relayToken's on agentbot's side.
func (a *attempt) openGateway(ctx context.Context, p *plan, token string) *failure {
	eg := a.d.opts.Egress
	if eg == nil {
		p.job.Token = token
		return nil
	}
	repoRules, err := gateway.ParseRules(strings.Join(p.settings.Egress, ","))
	if err != nil {
		return failf("preparing", "the repository's egress: %v", err)
	}
	allow, refused := gateway.Merge(eg.Allow, eg.Ceiling, repoRules)
	if len(refused) > 0 {
		names := make([]string, len(refused))
		for i, r := range refused {
			names[i] = "`" + inlineLabel(r.String()) + "`"
		}
		a.addNote("The repository's egress: asks for " + strings.Join(names, ", ") + ", beyond what this agentbot allows; the sandbox may not reach it.")
	}
	remote, err := url.Parse(p.job.CloneURL)
	if err != nil || (remote.Scheme != "https" && remote.Scheme != "http") || remote.User != nil {
		return failf("preparing", "the repository's clone URL is not an http(s) URL the git relay can fetch")
	}
	t := a.task
	task, err := eg.Gateway.Open(gateway.TaskSpec{
		TaskID: t.ID, Repo: t.Ref().Repo.FullName(), Allow: allow,
		GitToken:   a.relayToken,
		GitRemote:  remote,
		MaxCostUSD: p.settings.MaxCostUSD,
		Record:     a.recordEgress,
	})
	if err != nil {
		return failf("preparing", "cannot open the egress gateway: %v", err)
	}
	a.mu.Lock()
	a.gw = task
	a.mu.Unlock()
	env := map[string]string{}
	for k, v := range a.d.opts.AgentEnv {
		if !IsModelCredential(k) {
			env[k] = v
		}
	}
	maps.Copy(env, task.Env("http://"+GatewayListen))
	p.job.Env = env
	p.job.CloneURL = task.CloneURL()
	p.job.Token = ""
	if eg.Pods {
		p.job.Gateway = task.JobGateway("")
	} else {
		p.job.Gateway = &runner.JobGateway{Listen: GatewayListen, HostSocket: task.Socket}
	}
	logFrom(ctx).Info("egress gateway open", "allow", len(allow))
	return nil
}

// modelCredentials are AgentEnv's names the sandbox no longer gets with a
// gateway: the model relay holds the key and the sandbox a placeholder.
var modelCredentials = map[string]bool{
	"ANTHROPIC_API_KEY": true, "ANTHROPIC_AUTH_TOKEN": true, "CLAUDE_CODE_OAUTH_TOKEN": true,
	"OPENAI_API_KEY": true, "ANTHROPIC_BASE_URL": true, "OPENAI_BASE_URL": true,
}

// IsModelCredential reports whether an agent environment variable is a
// model key or model URL, which a sandbox behind the gateway does not get.
func IsModelCredential(name string) bool { return modelCredentials[name] }

// recordEgress keeps one of the sandbox's egress attempts as a task event;
// the gateway calls it from the connection's goroutine.
func (a *attempt) recordEgress(ev runner.Egress) {
	a.egress.add(ev)
	e := ev
	if err := a.d.logs.Append(a.task.ID, runner.Event{Time: a.d.now(), Type: runner.EventEgress, Egress: &e}); err != nil {
		a.d.log.Warn("cannot record an egress event", "task_id", a.task.ID, "err", err)
	}
	if !ev.Allowed {
		a.d.metrics.egressBlocked.Inc()
	}
}

// closeGateway ends the attempt's gateway task: the sandbox's way out, and
// its placeholder key, are void from here. It returns what the model relay
// measured, ok false without a gateway.
func (a *attempt) closeGateway() (costUSD float64, ok bool) {
	a.mu.Lock()
	task := a.gw
	a.mu.Unlock()
	if task == nil {
		return 0, false
	}
	if err := task.Close(); err != nil {
		a.d.log.Warn("cannot close the egress gateway task", "task_id", a.task.ID, "err", err)
	}
	cost, _ := task.Spent()
	return cost, true
}

// budgetSpent is closed when the attempt's model budget is spent (nil
// without a gateway: never).
func (a *attempt) budgetSpent() <-chan struct{} {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.gw == nil {
		return nil
	}
	return a.gw.Exhausted()
}

// budgetMessage says why the run was stopped at its budget.
func (a *attempt) budgetMessage() string {
	a.mu.Lock()
	task := a.gw
	a.mu.Unlock()
	spent, _ := task.Spent()
	return fmt.Sprintf("the agent was stopped: the task's model budget of $%s is spent ($%.4f measured by agentbot's model relay)", strconv.FormatFloat(task.Budget(), 'f', -1, 64), spent)
}

// gatewayKey is the attempt's placeholder model key, a secret to redact.
func (a *attempt) gatewayKey() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.gw == nil {
		return ""
	}
	return a.gw.Key()
}
