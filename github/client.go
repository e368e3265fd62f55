// Package github is everything agentbot says to or takes from GitHub: App
// and installation authentication, repository-scoped token minting,
// permission checks, per-repository settings, reactions, progress comments,
// check runs, draft pull requests, and the verified push of a result bundle
// produced in a sandbox. go-github is imported as gh throughout, because
// this package shadows its name.
//
// Every request goes through one RoundTripper stack: retries (5xx, network,
// rate limits; bounded) outermost so each attempt is authenticated afresh,
// then App JWT or installation-token authentication, then a per-attempt
// timeout, then metrics labelled by endpoint template. Token values never
// reach a log line, an error or a rendered comment.
package github

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/bradleyfalzon/ghinstallation/v2"
	gh "github.com/google/go-github/v66/github"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/agentbot/agentbot"
	"github.com/agentbot/agentbot/internal/secret"
)

// DefaultBaseURL is GitHub.com's REST API. GitHub Enterprise Server uses
// https://HOST/api/v3/.
const DefaultBaseURL = "https://api.github.com/"

// tokenRefreshMargin is how long before expiry a cached installation token
// is replaced; GitHub's tokens live an hour.
const tokenRefreshMargin = 5 * time.Minute

// Config configures a Client. Zero values pick the documented defaults.
type Config struct {
	// BaseURL is the REST API base (AGENTBOT_GITHUB_URL), with or without a
	// trailing slash; "" means DefaultBaseURL. Tests point it at githubtest.
	BaseURL string
	// AppID and PrivateKey (PEM, PKCS#1 or PKCS#8 RSA) identify the App.
	AppID      int64
	PrivateKey []byte
	// Timeout bounds each HTTP attempt (default 30s).
	Timeout time.Duration
	// Registry receives the metrics; nil keeps them private.
	Registry *prometheus.Registry
	// Logger defaults to discarding.
	Logger *slog.Logger
	// GitPath is the git executable for pushes ("" = "git" from PATH).
	GitPath string
	// GitTimeout bounds each git command of a push (default 10m).
	GitTimeout time.Duration

	// MaxAttempts bounds the attempts of one request, retries included
	// (default 4).
	MaxAttempts int
	// RetryBase and RetryCap shape the exponential backoff for 5xx and
	// network errors (defaults 500ms and 30s).
	RetryBase time.Duration
	RetryCap  time.Duration
	// MaxRateLimitWait is the longest wait for a rate limit to lift before
	// the request fails with ErrRateLimited instead (default 5m).
	MaxRateLimitWait time.Duration
	// Sleep waits between attempts; nil uses a timer. Tests inject one that
	// records the waits instead of taking them.
	Sleep func(ctx context.Context, d time.Duration) error
	// Transport is the innermost RoundTripper (default: a clone of
	// http.DefaultTransport).
	Transport http.RoundTripper
}

// Validate reports every problem with cfg, one line each.
func (cfg Config) Validate() error {
	var errs []error
	if cfg.AppID <= 0 {
		errs = append(errs, errors.New("github: AppID must be a positive GitHub App id"))
	}
	if len(cfg.PrivateKey) == 0 {
		errs = append(errs, errors.New("github: PrivateKey (the App's PEM key) is empty"))
	}
	if cfg.BaseURL != "" {
		u, err := url.Parse(cfg.BaseURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			errs = append(errs, fmt.Errorf("github: BaseURL %q is not an http(s) URL", cfg.BaseURL))
		}
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"Timeout", cfg.Timeout}, {"GitTimeout", cfg.GitTimeout}, {"RetryBase", cfg.RetryBase}, {"RetryCap", cfg.RetryCap}, {"MaxRateLimitWait", cfg.MaxRateLimitWait}} {
		if d.v < 0 {
			errs = append(errs, fmt.Errorf("github: %s must not be negative", d.name))
		}
	}
	if cfg.MaxAttempts < 0 {
		errs = append(errs, errors.New("github: MaxAttempts must not be negative"))
	}
	return errors.Join(errs...)
}

// Client talks to GitHub as one App, on behalf of any of its installations.
// It is safe for concurrent use.
type Client struct {
	baseURL    *url.URL
	appID      int64
	logger     *slog.Logger
	metrics    *metrics
	gitPath    string
	gitTimeout time.Duration
	now        func() time.Time

	inner   http.RoundTripper // timeout → metrics → network, shared
	network http.RoundTripper
	policy  *retryPolicy
	app     *gh.Client

	mu       sync.Mutex
	installs map[int64]*installation
}

// installation holds one installation's API client and its cached token.
type installation struct {
	id     int64
	client *gh.Client

	mu    sync.Mutex // serialises refreshes of token
	token Token
}

// New builds a Client. It makes no request.
func New(cfg Config) (*Client, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	base := cfg.BaseURL
	if base == "" {
		base = DefaultBaseURL
	}
	if !strings.HasSuffix(base, "/") {
		base += "/"
	}
	baseURL, err := url.Parse(base)
	if err != nil {
		return nil, fmt.Errorf("github: BaseURL: %w", err)
	}
	reg := cfg.Registry
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	m, err := newMetrics(reg)
	if err != nil {
		return nil, err
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	transport := cfg.Transport
	if transport == nil {
		transport = http.DefaultTransport.(*http.Transport).Clone()
	}
	c := &Client{
		baseURL:    baseURL,
		appID:      cfg.AppID,
		logger:     logger.With(slog.String("component", "github")),
		metrics:    m,
		gitPath:    orDefault(cfg.GitPath, "git"),
		gitTimeout: orDefault(cfg.GitTimeout, 10*time.Minute),
		now:        time.Now,
		installs:   map[int64]*installation{},
		network:    transport,
	}
	c.policy = &retryPolicy{
		maxAttempts:      orDefault(cfg.MaxAttempts, 4),
		base:             orDefault(cfg.RetryBase, 500*time.Millisecond),
		cap:              orDefault(cfg.RetryCap, 30*time.Second),
		maxRateLimitWait: orDefault(cfg.MaxRateLimitWait, 5*time.Minute),
		sleep:            cfg.Sleep,
		now:              c.now,
		logger:           c.logger,
		metrics:          m,
	}
	if c.policy.sleep == nil {
		c.policy.sleep = sleepCtx
	}
	c.inner = &timeoutTransport{
		next:    &metricsTransport{next: transport, metrics: m},
		timeout: orDefault(cfg.Timeout, 30*time.Second),
	}
	appAuth, err := ghinstallation.NewAppsTransport(c.inner, cfg.AppID, cfg.PrivateKey)
	if err != nil {
		// ghinstallation's message names the key's format, never its bytes.
		return nil, fmt.Errorf("github: App private key: %w", err)
	}
	c.app = c.newAPIClient(&retryTransport{next: appAuth, policy: c.policy})
	return c, nil
}

func orDefault[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}

func (c *Client) newAPIClient(rt http.RoundTripper) *gh.Client {
	cl := gh.NewClient(&http.Client{Transport: rt})
	u := *c.baseURL
	cl.BaseURL = &u
	cl.UserAgent = "agentbot"
	return cl
}

// installation returns the cached per-installation client.
func (c *Client) installation(id int64) *installation {
	c.mu.Lock()
	defer c.mu.Unlock()
	if in, ok := c.installs[id]; ok {
		return in
	}
	in := &installation{id: id}
	in.client = c.newAPIClient(&retryTransport{
		next:   &installationAuth{client: c, inst: in, next: c.inner},
		policy: c.policy,
	})
	c.installs[id] = in
	return in
}

// installationAuth authenticates requests with the installation's cached
// token, minting a new one shortly before the old expires.
type installationAuth struct {
	client *Client
	inst   *installation
	next   http.RoundTripper
}

func (a *installationAuth) RoundTrip(req *http.Request) (*http.Response, error) {
	// Minting a token is safe to retry even when the request it is for
	// is a create.
	tok, err := a.client.installationToken(withCreate(req.Context(), false), a.inst)
	if err != nil {
		if req.Body != nil {
			req.Body.Close()
		}
		return nil, err
	}
	r := req.Clone(req.Context())
	r.Header.Set("Authorization", "token "+tok.Value)
	resp, err := a.next.RoundTrip(r)
	if err == nil && resp.StatusCode == http.StatusUnauthorized {
		// A revoked or rotated token: forget it so the next request mints.
		a.inst.mu.Lock()
		if a.inst.token.Value == tok.Value {
			a.inst.token = Token{}
		}
		a.inst.mu.Unlock()
	}
	return resp, err
}

func (c *Client) installationToken(ctx context.Context, in *installation) (Token, error) {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.token.Value != "" && in.token.ExpiresAt.Sub(c.now()) > tokenRefreshMargin {
		return in.token, nil
	}
	tok, err := c.mint(ctx, in.id, tokenRequest{})
	if err != nil {
		return Token{}, err
	}
	c.metrics.tokens.WithLabelValues("installation").Inc()
	in.token = tok
	return tok, nil
}

// Token is an installation access token. Its Value is a secret: String,
// Format, LogValue and MarshalJSON print a redacted form, so a Token can be
// logged or embedded in a struct without leaking. Pass Value explicitly
// where the secret is meant to go.
type Token struct {
	Value     string
	ExpiresAt time.Time
}

const redacted = secret.Mask

func (t Token) String() string {
	return "Token(" + redacted + ", expires " + t.ExpiresAt.UTC().Format(time.RFC3339) + ")"
}

// GoString covers %#v.
func (t Token) GoString() string { return t.String() }

// Format covers every fmt verb (%v, %+v, %s, %q, %x …).
func (t Token) Format(f fmt.State, verb rune) { _, _ = io.WriteString(f, t.String()) }

// LogValue keeps slog from reaching the Value field.
func (t Token) LogValue() slog.Value {
	return slog.GroupValue(slog.String("value", redacted), slog.Time("expires_at", t.ExpiresAt))
}

// MarshalJSON keeps encoding/json from reaching the Value field.
func (t Token) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		Value     string    `json:"value"`
		ExpiresAt time.Time `json:"expires_at"`
	}{redacted, t.ExpiresAt})
}

// MarshalText covers encoders that prefer text (maps keys, some loggers).
func (t Token) MarshalText() ([]byte, error) { return []byte(t.String()), nil }

// Permissions are installation-token permissions by name, e.g.
// {"contents": "read"}; levels are read, write or admin.
type Permissions map[string]string

var permissionName = regexp.MustCompile(`^[a-z][a-z_]*$`)

func (p Permissions) validate() error {
	if len(p) == 0 {
		return errors.New("no permissions named; a scoped token must name what it may do")
	}
	for name, level := range p {
		if !permissionName.MatchString(name) {
			return fmt.Errorf("permission name %q is not a GitHub permission", name)
		}
		switch level {
		case "read", "write", "admin":
		default:
			return fmt.Errorf("permission %s: level %q is not read, write or admin", name, level)
		}
	}
	return nil
}

func (p Permissions) String() string {
	names := make([]string, 0, len(p))
	for n := range p {
		names = append(names, n)
	}
	sort.Strings(names)
	parts := make([]string, len(names))
	for i, n := range names {
		parts[i] = n + ":" + p[n]
	}
	return strings.Join(parts, ",")
}

type tokenRequest struct {
	Repositories []string    `json:"repositories,omitempty"`
	Permissions  Permissions `json:"permissions,omitempty"`
}

const epMintToken = "POST /app/installations/{id}/access_tokens"

func (c *Client) mint(ctx context.Context, installationID int64, body tokenRequest) (Token, error) {
	if installationID <= 0 {
		return Token{}, fmt.Errorf("github: installation id %d is not valid", installationID)
	}
	req, err := c.app.NewRequest(http.MethodPost, fmt.Sprintf("app/installations/%d/access_tokens", installationID), body)
	if err != nil {
		return Token{}, fmt.Errorf("github: mint token for installation %d: %w", installationID, err)
	}
	var out gh.InstallationToken
	if _, err := c.app.Do(withEndpoint(ctx, epMintToken), req, &out); err != nil {
		return Token{}, fmt.Errorf("github: mint token for installation %d: %w", installationID, toAPIError(epMintToken, err))
	}
	if out.GetToken() == "" {
		return Token{}, fmt.Errorf("github: mint token for installation %d: GitHub returned no token", installationID)
	}
	if err := checkGranted(body, &out); err != nil {
		return Token{}, fmt.Errorf("github: mint token for installation %d: %w", installationID, err)
	}
	return Token{Value: out.GetToken(), ExpiresAt: out.GetExpiresAt().Time}, nil
}

// checkGranted makes sure a scoped token is no wider than asked for: the
// sandbox must never get more than it was meant to.
func checkGranted(asked tokenRequest, got *gh.InstallationToken) error {
	if len(asked.Repositories) > 0 {
		for _, r := range got.Repositories {
			if !slices.Contains(asked.Repositories, r.GetName()) {
				return fmt.Errorf("token covers repository %q that was not asked for", r.GetName())
			}
		}
	}
	if len(asked.Permissions) == 0 || got.Permissions == nil {
		return nil
	}
	raw, err := json.Marshal(got.Permissions)
	if err != nil {
		return err
	}
	var granted map[string]string
	if err := json.Unmarshal(raw, &granted); err != nil {
		return err
	}
	for name, level := range granted {
		want, ok := asked.Permissions[name]
		if name == "metadata" && level == "read" {
			continue // GitHub adds metadata:read to every token
		}
		if !ok || levelRank(level) > levelRank(want) {
			return fmt.Errorf("token grants %s:%s beyond what was asked for", name, level)
		}
	}
	return nil
}

func levelRank(l string) int {
	switch l {
	case "read":
		return 1
	case "write":
		return 2
	case "admin":
		return 3
	}
	return 4
}

// TokenFor mints an installation access token restricted to repo and to
// perms. The sandbox gets {"contents": "read"}; write tokens stay inside
// agentbot. The token lives about an hour; mint one per use.
func (c *Client) TokenFor(ctx context.Context, installationID int64, repo agentbot.Repo, perms Permissions) (Token, error) {
	if err := checkRepo(repo); err != nil {
		return Token{}, err
	}
	if err := perms.validate(); err != nil {
		return Token{}, fmt.Errorf("github: token for %s: %w", repo, err)
	}
	tok, err := c.mint(ctx, installationID, tokenRequest{Repositories: []string{repo.Name}, Permissions: perms})
	if err != nil {
		return Token{}, fmt.Errorf("github: token for %s: %w", repo, err)
	}
	c.metrics.tokens.WithLabelValues("scoped").Inc()
	c.logger.LogAttrs(ctx, slog.LevelDebug, "github token minted",
		slog.String("repo", repo.FullName()), slog.Int64("installation", installationID),
		slog.String("permissions", perms.String()), slog.Time("expires_at", tok.ExpiresAt))
	return tok, nil
}

func checkRepo(repo agentbot.Repo) error {
	if repo.Owner == "" || repo.Name == "" || strings.ContainsAny(repo.Owner+repo.Name, "/ ") {
		return fmt.Errorf("github: %q is not an owner/name repository", repo.FullName())
	}
	return nil
}

func repoPath(repo agentbot.Repo) string {
	return "repos/" + url.PathEscape(repo.Owner) + "/" + url.PathEscape(repo.Name)
}

// call makes one REST request as the installation. endpoint is the method
// and path template ("GET /repos/{owner}/{repo}"); path is the real path
// relative to the base URL; body and out are JSON (either may be nil).
func (c *Client) call(ctx context.Context, installationID int64, endpoint, path string, body, out any) (*gh.Response, error) {
	if installationID <= 0 {
		return nil, fmt.Errorf("github: installation id %d is not valid", installationID)
	}
	method, _, _ := strings.Cut(endpoint, " ")
	cl := c.installation(installationID).client
	req, err := cl.NewRequest(method, path, body)
	if err != nil {
		return nil, err
	}
	resp, err := cl.Do(withEndpoint(ctx, endpoint), req, out)
	return resp, toAPIError(endpoint, err)
}

// Close releases idle connections.
func (c *Client) Close() {
	if ic, ok := c.network.(interface{ CloseIdleConnections() }); ok {
		ic.CloseIdleConnections()
	}
}
