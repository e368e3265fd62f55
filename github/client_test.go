package github

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/agentbot/agentbot"
)

func TestTokenForIsScopedToOneRepositoryAndItsPermissions(t *testing.T) {
	h := newHarness(t)
	other := agentbot.Repo{Owner: "acme", Name: "gadgets"}
	h.gh.AddRepo(other, h.git, "main")
	h.gh.AddInstallation(instID, h.repo, other)

	tok, err := h.client.TokenFor(context.Background(), instID, h.repo, Permissions{"contents": "read"})
	if err != nil {
		t.Fatalf("TokenFor: %v", err)
	}
	if tok.Value == "" || time.Until(tok.ExpiresAt) < 50*time.Minute {
		t.Fatalf("token = %v, want a value expiring in about an hour", tok)
	}
	toks := h.gh.Tokens()
	if len(toks) != 1 {
		t.Fatalf("minted %d tokens, want 1", len(toks))
	}
	got := toks[0]
	if strings.Join(got.Repos, ",") != "acme/widgets" || got.Permissions["contents"] != "read" || len(got.Permissions) != 2 {
		t.Fatalf("minted scope = %v %v, want acme/widgets contents:read (+metadata:read)", got.Repos, got.Permissions)
	}
	if calls := h.gh.CallsTo("POST", "/app/installations/*/access_tokens"); len(calls) != 1 || calls[0].Auth != "app" ||
		!strings.Contains(calls[0].Body, `"repositories":["widgets"]`) {
		t.Fatalf("mint calls = %v", calls)
	}

	// The token works for git over HTTP on its repository, read only.
	dir := t.TempDir()
	withToken := func(repo string) string {
		u, _ := url.Parse(h.git.URL + "/" + repo + ".git")
		u.User = url.UserPassword("x-access-token", tok.Value)
		return u.String()
	}
	if out, err := exec.Command("git", "clone", "-q", withToken("acme/widgets"), dir+"/ok").CombinedOutput(); err != nil {
		t.Fatalf("clone with the read token: %v\n%s", err, out)
	}
	if out, err := exec.Command("git", "clone", "-q", withToken("acme/gadgets"), dir+"/other").CombinedOutput(); err == nil {
		t.Fatalf("clone of another repository with the scoped token succeeded: %s", out)
	}
	cmd := exec.Command("git", "push", "-q", withToken("acme/widgets"), "HEAD:refs/heads/sneaky")
	cmd.Dir = dir + "/ok"
	if out, err := cmd.CombinedOutput(); err == nil {
		t.Fatalf("push with a read token succeeded: %s", out)
	}
	if len(h.git.Branches("acme", "widgets")) != 1 {
		t.Fatalf("branches = %v", h.git.Branches("acme", "widgets"))
	}
}

func TestTokenForRefusals(t *testing.T) {
	h := newHarness(t)
	h.gh.SetInstallationPermissions(instID, map[string]string{"contents": "read", "metadata": "read"})
	tests := []struct {
		name      string
		inst      int64
		repo      agentbot.Repo
		perms     Permissions
		wantCalls int
		wantIs    error
	}{
		{"no permissions named", instID, h.repo, nil, 0, nil},
		{"bad level", instID, h.repo, Permissions{"contents": "all"}, 0, nil},
		{"bad name", instID, h.repo, Permissions{"Contents!": "read"}, 0, nil},
		{"beyond the installation", instID, h.repo, Permissions{"contents": "write"}, 1, ErrValidation},
		{"repository outside the installation", instID, agentbot.Repo{Owner: "acme", Name: "secret"}, Permissions{"contents": "read"}, 1, ErrValidation},
		{"unknown installation", 999, h.repo, Permissions{"contents": "read"}, 1, ErrNotFound},
		{"empty repository", instID, agentbot.Repo{}, Permissions{"contents": "read"}, 0, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := len(h.gh.Calls())
			_, err := h.client.TokenFor(context.Background(), tc.inst, tc.repo, tc.perms)
			if err == nil {
				t.Fatal("TokenFor succeeded")
			}
			h.logErr(err)
			if tc.wantIs != nil && !errors.Is(err, tc.wantIs) {
				t.Fatalf("err = %v, want %v", err, tc.wantIs)
			}
			if n := len(h.gh.Calls()) - before; n != tc.wantCalls {
				t.Fatalf("%d calls, want %d", n, tc.wantCalls)
			}
		})
	}
	if n := len(h.gh.Tokens()); n != 0 {
		t.Fatalf("%d tokens minted by refusals", n)
	}
}

func TestTokenNeverPrintsItsValue(t *testing.T) {
	tok := Token{Value: "ghs_supersecretvalue", ExpiresAt: time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)}
	var logs bytes.Buffer
	slog.New(slog.NewJSONHandler(&logs, nil)).Info("x", slog.Any("token", tok), "t2", tok)
	slog.New(slog.NewTextHandler(&logs, nil)).Info("x", slog.Any("token", tok), "t2", tok)
	js, err := json.Marshal(struct {
		T Token
		P *Token
		M map[string]Token
	}{tok, &tok, map[string]Token{"a": tok}})
	if err != nil {
		t.Fatal(err)
	}
	outputs := map[string]string{
		"%v":   fmt.Sprintf("%v", tok),
		"%+v":  fmt.Sprintf("%+v", tok),
		"%#v":  fmt.Sprintf("%#v", tok),
		"%s":   fmt.Sprintf("%s", tok),
		"%q":   fmt.Sprintf("%q", tok),
		"%x":   fmt.Sprintf("%x", tok),
		"ptr":  fmt.Sprintf("%v", &tok),
		"in":   fmt.Sprintf("%+v", struct{ T Token }{tok}),
		"err":  fmt.Errorf("wrapped %v", tok).Error(),
		"json": string(js),
		"slog": logs.String(),
	}
	for name, out := range outputs {
		if strings.Contains(out, "supersecret") {
			t.Errorf("%s reveals the token: %s", name, out)
		}
		if !strings.Contains(out, "REDACTED") {
			t.Errorf("%s does not say it redacted: %s", name, out)
		}
	}
}

func TestInstallationTokenIsCachedAndRefreshedBeforeExpiry(t *testing.T) {
	tests := []struct {
		name      string
		lifetime  time.Duration
		wantMints int
	}{
		{"hour-long token is reused", time.Hour, 1},
		{"token inside the refresh margin is replaced", 4 * time.Minute, 3},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			h.gh.SetTokenLifetime(tc.lifetime)
			for i := 0; i < 3; i++ {
				if _, err := h.client.Repository(context.Background(), instID, h.repo); err != nil {
					t.Fatalf("Repository: %v", err)
				}
			}
			if n := len(h.gh.CallsTo("POST", "/app/installations/*/access_tokens")); n != tc.wantMints {
				t.Fatalf("%d mints, want %d", n, tc.wantMints)
			}
			for _, c := range h.gh.CallsTo("GET", "/repos/acme/widgets") {
				if c.Auth != "installation" || c.Status != 200 {
					t.Fatalf("call %v", c)
				}
			}
		})
	}
}

func TestRevokedTokenIsReplaced(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	if _, err := h.client.Repository(ctx, instID, h.repo); err != nil {
		t.Fatal(err)
	}
	// Revoke the cached token behind the client's back.
	h.client.revoke(ctx, h.client.installation(instID).token, h.repo)
	if _, err := h.client.Repository(ctx, instID, h.repo); !errors.Is(err, ErrUnauthorized) {
		t.Fatalf("with a revoked token: err = %v, want ErrUnauthorized", err)
	}
	if _, err := h.client.Repository(ctx, instID, h.repo); err != nil {
		t.Fatalf("after the 401 the client should mint again: %v", err)
	}
}

func TestAppJWTMustVerifyAgainstTheAppKey(t *testing.T) {
	other, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	otherPEM := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(other)})
	tests := []struct {
		name   string
		cfg    func(*Config)
		wantOK bool
	}{
		{"the App's key", func(*Config) {}, true},
		{"another key", func(c *Config) { c.PrivateKey = otherPEM }, false},
		{"another App id", func(c *Config) { c.AppID++ }, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, tc.cfg)
			_, err := h.client.TokenFor(context.Background(), instID, h.repo, Permissions{"contents": "read"})
			if tc.wantOK != (err == nil) {
				t.Fatalf("err = %v, want ok=%v", err, tc.wantOK)
			}
			if err != nil && !errors.Is(err, ErrUnauthorized) {
				t.Fatalf("err = %v, want ErrUnauthorized", err)
			}
		})
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{"no app id", Config{PrivateKey: []byte("x")}, "AppID"},
		{"no key", Config{AppID: 1}, "PrivateKey"},
		{"not a key", Config{AppID: 1, PrivateKey: []byte("not pem")}, "private key"},
		{"bad url", Config{AppID: 1, PrivateKey: []byte("x"), BaseURL: "ftp://x"}, "BaseURL"},
		{"negative timeout", Config{AppID: 1, PrivateKey: []byte("x"), Timeout: -1}, "Timeout"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(tc.cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want one naming %s", err, tc.want)
			}
		})
	}
}

func TestRetriesAndRateLimits(t *testing.T) {
	const path = "/repos/acme/widgets"
	type failure struct {
		n       int
		status  int
		headers func() map[string]string
	}
	tests := []struct {
		name      string
		failures  []failure
		wantErr   error // nil: success
		wantCalls int
		// wantWaits checks the waits taken.
		wantWaits func([]time.Duration) bool
		wantRetry string // reason label expected in the retry metric
	}{
		{
			name:      "502 twice then success",
			failures:  []failure{{2, 502, nil}},
			wantCalls: 3,
			wantWaits: func(w []time.Duration) bool {
				return len(w) == 2 && w[0] <= time.Millisecond && w[1] <= 2*time.Millisecond
			},
			wantRetry: "server_error",
		},
		{
			name:      "5xx beyond the attempt budget fails",
			failures:  []failure{{10, 503, nil}},
			wantErr:   &APIError{Status: 503},
			wantCalls: 4,
			wantWaits: func(w []time.Duration) bool { return len(w) == 3 },
		},
		{
			name:      "secondary rate limit honours Retry-After",
			failures:  []failure{{1, 403, func() map[string]string { return map[string]string{"Retry-After": "7"} }}},
			wantCalls: 2,
			wantWaits: func(w []time.Duration) bool { return len(w) == 1 && w[0] == 7*time.Second },
			wantRetry: "secondary_rate_limit",
		},
		{
			name:      "429 with Retry-After",
			failures:  []failure{{1, 429, func() map[string]string { return map[string]string{"Retry-After": "3"} }}},
			wantCalls: 2,
			wantWaits: func(w []time.Duration) bool { return len(w) == 1 && w[0] == 3*time.Second },
		},
		{
			name: "primary rate limit waits until reset",
			failures: []failure{{1, 403, func() map[string]string {
				return map[string]string{"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": strconv.FormatInt(time.Now().Add(30*time.Second).Unix(), 10)}
			}}},
			wantCalls: 2,
			wantWaits: func(w []time.Duration) bool { return len(w) == 1 && w[0] > 28*time.Second && w[0] <= 32*time.Second },
			wantRetry: "primary_rate_limit",
		},
		{
			name: "primary rate limit beyond the bound fails at once",
			failures: []failure{{1, 403, func() map[string]string {
				return map[string]string{"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": strconv.FormatInt(time.Now().Add(2*time.Hour).Unix(), 10)}
			}}},
			wantErr:   ErrRateLimited,
			wantCalls: 1,
			wantWaits: func(w []time.Duration) bool { return len(w) == 0 },
		},
		{
			name:      "secondary rate limit beyond the bound fails at once",
			failures:  []failure{{1, 403, func() map[string]string { return map[string]string{"Retry-After": "3600"} }}},
			wantErr:   ErrRateLimited,
			wantCalls: 1,
			wantWaits: func(w []time.Duration) bool { return len(w) == 0 },
		},
		{
			name:      "rate-limit waits stop once their total passes the bound",
			failures:  []failure{{3, 403, func() map[string]string { return map[string]string{"Retry-After": "200"} }}},
			wantErr:   ErrRateLimited,
			wantCalls: 2,
			wantWaits: func(w []time.Duration) bool { return len(w) == 1 && w[0] == 200*time.Second },
		},
		{
			name:      "403 that is no rate limit is not retried",
			failures:  []failure{{1, 403, nil}},
			wantErr:   ErrForbidden,
			wantCalls: 1,
			wantWaits: func(w []time.Duration) bool { return len(w) == 0 },
		},
		{
			name:      "404 is not retried",
			failures:  []failure{{1, 404, nil}},
			wantErr:   ErrNotFound,
			wantCalls: 1,
			wantWaits: func(w []time.Duration) bool { return len(w) == 0 },
		},
		{
			name:      "422 is not retried",
			failures:  []failure{{1, 422, nil}},
			wantErr:   ErrValidation,
			wantCalls: 1,
			wantWaits: func(w []time.Duration) bool { return len(w) == 0 },
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			// Mint the installation token first so failures hit the API call.
			if _, err := h.client.BranchHead(context.Background(), instID, h.repo, "main"); err != nil {
				t.Fatal(err)
			}
			for _, f := range tc.failures {
				var hd map[string]string
				if f.headers != nil {
					hd = f.headers()
				}
				h.gh.FailNext("GET", path, f.n, f.status, hd)
			}
			info, err := h.client.Repository(context.Background(), instID, h.repo)
			if tc.wantErr == nil {
				if err != nil || info.DefaultBranch != "main" {
					t.Fatalf("Repository = %+v, %v", info, err)
				}
			} else {
				h.logErr(err)
				var want *APIError
				if errors.As(tc.wantErr, &want) {
					var got *APIError
					if !errors.As(err, &got) || got.Status != want.Status || got.Endpoint != "GET /repos/{owner}/{repo}" {
						t.Fatalf("err = %#v, want APIError %d", err, want.Status)
					}
				} else if !errors.Is(err, tc.wantErr) {
					t.Fatalf("err = %v, want %v", err, tc.wantErr)
				}
			}
			if n := len(h.gh.CallsTo("GET", path)); n != tc.wantCalls {
				t.Fatalf("%d calls, want %d", n, tc.wantCalls)
			}
			if w := h.waits(); !tc.wantWaits(w) {
				t.Fatalf("waits = %v", w)
			}
			if tc.wantRetry != "" && metricValue(t, h, "agentbot_github_retries_total", map[string]string{"reason": tc.wantRetry}) == 0 {
				t.Fatalf("no retry counted for %s", tc.wantRetry)
			}
		})
	}
}

func TestBackoffIsExponentialCappedAndJittered(t *testing.T) {
	p := &retryPolicy{base: time.Second, cap: 5 * time.Second}
	for attempt := 1; attempt <= 70; attempt++ {
		d := time.Second << (attempt - 1)
		if attempt > 3 {
			d = 5 * time.Second
		}
		for i := 0; i < 20; i++ {
			got := p.backoff(attempt)
			if got < d/2 || got > d {
				t.Fatalf("attempt %d: backoff %v outside [%v, %v]", attempt, got, d/2, d)
			}
		}
	}
}

// flaky fails the first n round trips with a network error.
type flaky struct {
	n    int
	next http.RoundTripper
}

func (f *flaky) RoundTrip(r *http.Request) (*http.Response, error) {
	if f.n > 0 {
		f.n--
		return nil, errors.New("connection reset by peer")
	}
	return f.next.RoundTrip(r)
}

func TestNetworkErrorsAreRetried(t *testing.T) {
	ft := &flaky{n: 2, next: http.DefaultTransport}
	h := newHarness(t, func(c *Config) { c.Transport = ft })
	if _, err := h.client.Repository(context.Background(), instID, h.repo); err != nil {
		t.Fatalf("Repository: %v", err)
	}
	if w := h.waits(); len(w) != 2 {
		t.Fatalf("waits = %v, want 2 (one per network error)", w)
	}
	if metricValue(t, h, "agentbot_github_retries_total", map[string]string{"reason": "network"}) != 2 {
		t.Fatal("network retries not counted")
	}
}

// stall makes the first round trip wait until its context ends.
type stall struct {
	stalled  bool
	deadline bool
	next     http.RoundTripper
}

func (s *stall) RoundTrip(r *http.Request) (*http.Response, error) {
	if !s.stalled {
		s.stalled = true
		_, s.deadline = r.Context().Deadline()
		<-r.Context().Done()
		return nil, r.Context().Err()
	}
	return s.next.RoundTrip(r)
}

func TestEachAttemptHasItsOwnTimeout(t *testing.T) {
	st := &stall{next: http.DefaultTransport}
	// The stalled attempt waits out the whole timeout; the others must fit
	// in it too, also on a loaded machine (50 ms failed there), so a second.
	h := newHarness(t, func(c *Config) { c.Transport = st; c.Timeout = time.Second })
	if _, err := h.client.Repository(context.Background(), instID, h.repo); err != nil {
		t.Fatalf("the attempt after the stalled one should succeed: %v", err)
	}
	if !st.deadline {
		t.Fatal("the attempt had no deadline")
	}
	if metricValue(t, h, "agentbot_github_requests_total", map[string]string{"status": "error"}) != 1 {
		t.Fatal("the timed-out attempt was not counted as an error")
	}
}

func TestMetricsByEndpointTemplate(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	if _, err := h.client.Repository(ctx, instID, h.repo); err != nil {
		t.Fatal(err)
	}
	if _, err := h.client.BranchHead(ctx, instID, h.repo, "nope"); !IsNotFound(err) {
		t.Fatalf("BranchHead(nope) = %v, want not found", err)
	}
	checks := []struct {
		labels map[string]string
		want   float64
	}{
		{map[string]string{"endpoint": "GET /repos/{owner}/{repo}", "status": "2xx"}, 1},
		{map[string]string{"endpoint": "GET /repos/{owner}/{repo}/branches/{branch}", "status": "4xx"}, 1},
		{map[string]string{"endpoint": epMintToken, "status": "2xx"}, 1},
	}
	for _, c := range checks {
		if got := metricValue(t, h, "agentbot_github_requests_total", c.labels); got != c.want {
			t.Errorf("requests%v = %v, want %v", c.labels, got, c.want)
		}
	}
	if got := metricValue(t, h, "agentbot_github_rate_limit_remaining", nil); got <= 0 || got >= 5000 {
		t.Errorf("rate limit remaining gauge = %v", got)
	}
	// No label may carry a repository or owner name.
	mfs, err := h.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if strings.Contains(l.GetValue(), "acme") || strings.Contains(l.GetValue(), "widgets") {
					t.Errorf("%s has label %s=%s", mf.GetName(), l.GetName(), l.GetValue())
				}
			}
		}
	}
}

// metricValue sums the samples of metric name whose labels include want.
func metricValue(t *testing.T, h *harness, name string, want map[string]string) float64 {
	t.Helper()
	mfs, err := h.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if !hasLabels(m, want) {
				continue
			}
			switch {
			case m.Counter != nil:
				sum += m.GetCounter().GetValue()
			case m.Gauge != nil:
				sum += m.GetGauge().GetValue()
			}
		}
	}
	return sum
}

func hasLabels(m *dto.Metric, want map[string]string) bool {
	for k, v := range want {
		found := false
		for _, l := range m.GetLabel() {
			if l.GetName() == k && l.GetValue() == v {
				found = true
			}
		}
		if !found {
			return false
		}
	}
	return true
}
