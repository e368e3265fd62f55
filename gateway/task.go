package gateway

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"

	"github.com/agentbot/agentbot/runner"
)

// Task is one task's door out of its sandbox, open from Gateway.Open until
// Close.
type Task struct {
	ID string
	// Socket is the unix socket to bind into the sandbox.
	Socket string

	key    string
	g      *Gateway
	spec   TaskSpec
	budget float64
	srv    *http.Server
	done   chan struct{}
	wg     sync.WaitGroup // requests and tunnels in flight

	mu     sync.Mutex
	closed bool
	conns  map[net.Conn]struct{} // hijacked tunnels, closed with the task
	spent  float64
	usage  runner.Usage

	exhausted       chan struct{}
	exhaustedClosed bool
}

// Key is the task's capability: the placeholder model key the sandbox
// sends (which the model relay swaps for the operator's) and, on the shared
// listener, its proxy password. It is a secret of the task's lifetime:
// redact it like a token.
func (t *Task) Key() string { return t.key }

// String names the task without its key, so a %v never prints it.
func (t *Task) String() string { return "gateway task " + t.ID }

// CloneURL is where the sandbox clones the task's repository from: the git
// relay, through the proxy.
func (t *Task) CloneURL() string { return "http://" + GitHost + "/" + t.spec.Repo + ".git" }

// Env is the sandbox's environment for a gateway reached at proxy, a URL
// such as http://127.0.0.1:3128 (the local sandbox's forwarder to Socket).
// Every common tool finds the proxy in it; ssh is refused with a message,
// since the gateway carries HTTP only. The model clients go straight to
// proxy (NO_PROXY), where the model relay answers.
func (t *Task) Env(proxy string) map[string]string {
	env := map[string]string{
		"NO_PROXY":           "localhost,127.0.0.1",
		"NODE_USE_ENV_PROXY": "1",
		"GIT_SSH_COMMAND":    `echo "agentbot: ssh is not available in the sandbox; use https" >&2; false`,
		"ANTHROPIC_BASE_URL": strings.TrimSuffix(proxy, "/") + "/anthropic",
		"ANTHROPIC_API_KEY":  t.key,
		"OPENAI_BASE_URL":    strings.TrimSuffix(proxy, "/") + "/openai/v1",
		"OPENAI_API_KEY":     t.key,
	}
	for _, k := range []string{"HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "npm_config_proxy",
		"npm_config_https_proxy", "YARN_HTTPS_PROXY", "YARN_HTTP_PROXY", "PIP_PROXY"} {
		env[k] = proxy
	}
	for _, k := range []string{"HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "NO_PROXY"} {
		env[strings.ToLower(k)] = env[k] // curl reads only http_proxy in lower case
	}
	return env
}

// Budget is the task's model budget in US dollars (0: none).
func (t *Task) Budget() float64 { return t.budget }

// Spent is the task's model cost so far, and the tokens behind it, as the
// model relay measured them.
func (t *Task) Spent() (costUSD float64, usage runner.Usage) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.spent, t.usage
}

// ServeHTTP serves one request on the task's listener.
func (t *Task) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !t.enter() {
		http.Error(w, "agentbot: this task has ended", http.StatusGone)
		return
	}
	defer t.wg.Done()
	switch {
	case r.Method == http.MethodConnect:
		t.connect(w, r)
	case r.URL.IsAbs() && normalHost(r.URL.Hostname()) == GitHost:
		t.git(w, r)
	case r.URL.IsAbs():
		t.forward(w, r)
	default:
		t.model(w, r)
	}
}

func (t *Task) enter() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return false
	}
	t.wg.Add(1)
	return true
}

// track keeps a hijacked connection so Close can end it; false when the
// task has closed meanwhile.
func (t *Task) track(c net.Conn, on bool) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if on && t.closed {
		return false
	}
	if on {
		t.conns[c] = struct{}{}
	} else {
		delete(t.conns, c)
	}
	return true
}

func (t *Task) record(e runner.Egress) {
	if t.spec.Record != nil {
		t.spec.Record(e)
	}
}

// Close stops the task's listener, ends its tunnels and requests, and
// returns once none is left; the capability is void from its first line.
func (t *Task) Close() error {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return nil
	}
	t.closed = true
	for c := range t.conns {
		_ = c.Close() // ending the tunnel is the point; its error says nothing
	}
	t.mu.Unlock()
	t.g.forget(t)
	err := t.srv.Close()
	t.wg.Wait()
	<-t.done
	if rmErr := os.Remove(t.Socket); rmErr != nil && !errors.Is(rmErr, os.ErrNotExist) {
		err = errors.Join(err, rmErr)
	}
	if err != nil {
		return fmt.Errorf("gateway: close task %s: %w", t.ID, err)
	}
	return nil
}

func (g *Gateway) forget(t *Task) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.tasks[t.ID] == t {
		delete(g.tasks, t.ID)
	}
	delete(g.byKey, t.key)
}
