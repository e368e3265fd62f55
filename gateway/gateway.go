// Package gateway is the sandbox's only way out: a per-task egress proxy
// that answers CONNECT and plain-HTTP proxy requests for the hosts on the
// task's allow-list (resolving names itself and refusing internal
// addresses and agentbot's own), a git relay that serves the task's
// repository read-only with a token the sandbox never sees, and a model
// relay that swaps a per-task placeholder key for the operator's real one,
// measures the tokens each answer cost and stops the agent at its budget.
//
// Each task gets its own listener (a unix socket the local sandbox binds
// in), so a connection is that task's by where it arrives; on Kubernetes,
// where every sandbox reaches one Service port, the task's capability in
// Proxy-Authorization (or as the model key) says whose it is (Handler).
// Every attempt is reported to the task's Record callback as a
// runner.Egress, the figures agentbot measured rather than the sandbox's.
package gateway

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/agentbot/agentbot"
	"github.com/agentbot/agentbot/runner"
)

// GitHost is the name the sandbox clones through: a plain-HTTP URL
// http://GitHost/<owner>/<repo>.git, sent through the proxy, reaches the
// git relay and never the network.
const GitHost = "git.agentbot.internal"

// Options configure a Gateway. Upstream URLs are the operator's: requests
// the relays make on the sandbox's behalf go there without the sandbox's
// allow-list or address checks.
type Options struct {
	// Dir holds the per-task sockets; it is created 0700.
	Dir string
	// Resolver looks up the names the sandbox asks for (default
	// net.DefaultResolver). Every address it returns is checked.
	Resolver Resolver
	// AllowCIDRs are internal ranges the sandbox may reach all the same.
	AllowCIDRs []netip.Prefix
	// Self are agentbot's own addresses, refused whatever AllowCIDRs says;
	// port 0 means every port. Nil means every address of the host's
	// interfaces, the safe default for a gateway on the host itself.
	Self []netip.AddrPort
	// DialTimeout bounds each outbound connection (default 10s).
	DialTimeout time.Duration

	// GitURL is where repositories live (default https://github.com):
	// the relay fetches GitURL/<owner>/<repo>.git.
	GitURL *url.URL
	// Model configures the model relay.
	Model ModelOptions

	// Upstream carries the relays' requests (default: a transport of its
	// own without proxies). Tests point it at loopback servers.
	Upstream http.RoundTripper
	Logger   *slog.Logger
}

// Gateway serves every task's egress.
type Gateway struct {
	opts     Options
	addrs    addrPolicy
	resolver Resolver
	dialer   net.Dialer
	upstream http.RoundTripper
	proxied  *http.Transport // plain-HTTP proxy requests, dialled through the checks
	log      *slog.Logger
	errLog   *log.Logger // net/http's own complaints, into log

	mu     sync.Mutex
	tasks  map[string]*Task // by id
	byKey  map[string]*Task // by capability
	closed bool
}

// New checks opts and makes a Gateway; it listens on nothing until Open.
func New(opts Options) (*Gateway, error) {
	if opts.Dir == "" {
		return nil, errors.New("gateway: Options.Dir is required")
	}
	if err := os.MkdirAll(opts.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("gateway: socket dir: %w", err)
	}
	if err := opts.Model.validate(); err != nil {
		return nil, err
	}
	g := &Gateway{opts: opts, resolver: opts.Resolver, log: opts.Logger, upstream: opts.Upstream,
		tasks: map[string]*Task{}, byKey: map[string]*Task{}}
	if g.resolver == nil {
		g.resolver = net.DefaultResolver
	}
	if g.log == nil {
		g.log = slog.New(slog.DiscardHandler)
	}
	g.errLog = slog.NewLogLogger(g.log.Handler(), slog.LevelWarn)
	if g.opts.DialTimeout <= 0 {
		g.opts.DialTimeout = 10 * time.Second
	}
	if g.opts.GitURL == nil {
		g.opts.GitURL = &url.URL{Scheme: "https", Host: "github.com"}
	}
	g.addrs = addrPolicy{allowCIDRs: opts.AllowCIDRs, self: opts.Self}
	if g.addrs.self == nil {
		self, err := hostAddrs()
		if err != nil {
			return nil, err
		}
		g.addrs.self = self
	}
	g.dialer = net.Dialer{Timeout: g.opts.DialTimeout}
	if g.upstream == nil {
		g.upstream = &http.Transport{Proxy: nil, ForceAttemptHTTP2: true, MaxIdleConnsPerHost: 16,
			IdleConnTimeout: 90 * time.Second, TLSHandshakeTimeout: 10 * time.Second}
	}
	g.proxied = &http.Transport{Proxy: nil, DialContext: g.dialChecked, MaxIdleConnsPerHost: 4,
		IdleConnTimeout: 30 * time.Second, ResponseHeaderTimeout: 5 * time.Minute}
	return g, nil
}

// TokenSource gives the git relay the task's read-only installation token
// for the repository; it is called per request, so a token it refreshes is
// used at once.
type TokenSource func(ctx context.Context) (string, error)

// TaskSpec is what one task may do through the gateway.
type TaskSpec struct {
	TaskID string
	// Repo is "owner/name", the one repository the git relay serves.
	Repo string
	// Allow is the task's allow-list (Merge builds it).
	Allow AllowList
	// GitToken is the read-only token the git relay adds; nil serves no git.
	GitToken TokenSource
	// GitRemote is the repository's clone URL as the host reports it
	// (GitHub's clone_url); nil means Options.GitURL/<Repo>.git.
	GitRemote *url.URL
	// MaxCostUSD is the task's model budget; 0 leaves the operator's
	// (Model.MaxCostUSD), and a larger figure is lowered to it.
	MaxCostUSD float64
	// Record receives every attempt (nil: none are kept). It is called
	// from the connection's goroutine and must not block for long.
	Record func(runner.Egress)
}

// Open starts the task's listener, a unix socket at Task.Socket, serving
// spec until Close.
func (g *Gateway) Open(spec TaskSpec) (*Task, error) {
	if err := agentbot.CheckTaskID(spec.TaskID); err != nil {
		return nil, fmt.Errorf("gateway: %w", err)
	}
	key, err := newCapability()
	if err != nil {
		return nil, err
	}
	t := &Task{ID: spec.TaskID, key: key, g: g, spec: spec, budget: g.opts.Model.budget(spec.MaxCostUSD),
		conns: map[net.Conn]struct{}{}, exhausted: make(chan struct{})}
	t.Socket = filepath.Join(g.opts.Dir, spec.TaskID+".sock")
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return nil, errors.New("gateway: closed")
	}
	if _, dup := g.tasks[spec.TaskID]; dup {
		return nil, fmt.Errorf("gateway: task %s is open already", spec.TaskID)
	}
	if err := os.Remove(t.Socket); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("gateway: task %s: stale socket: %w", spec.TaskID, err)
	}
	ln, err := net.Listen("unix", t.Socket)
	if err != nil {
		return nil, fmt.Errorf("gateway: task %s: %w", spec.TaskID, err)
	}
	t.srv = &http.Server{Handler: t, ReadHeaderTimeout: 30 * time.Second, ErrorLog: g.errLog}
	t.done = make(chan struct{})
	go func() {
		defer close(t.done)
		_ = t.srv.Serve(ln) // ends with ErrServerClosed when the task closes
	}()
	g.tasks[spec.TaskID] = t
	g.byKey[key] = t
	return t, nil
}

// Close closes every task still open.
func (g *Gateway) Close() error {
	g.mu.Lock()
	g.closed = true
	tasks := make([]*Task, 0, len(g.tasks))
	for _, t := range g.tasks {
		tasks = append(tasks, t)
	}
	g.mu.Unlock()
	var errs []error
	for _, t := range tasks {
		errs = append(errs, t.Close())
	}
	g.proxied.CloseIdleConnections()
	return errors.Join(errs...)
}

// newCapability is 256 random bits, the task's key for the model relay and
// for the shared listener.
func newCapability() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("gateway: capability: %w", err)
	}
	return "agentbot-task-" + hex.EncodeToString(b), nil
}
