package github

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// endpointKey carries the endpoint template of a request ("GET
// /repos/{owner}/{repo}") from the method that makes it down to the
// transports, which use it as a metric label and in log lines; a real path
// would put repository names into labels.
type endpointKey struct{}

func withEndpoint(ctx context.Context, endpoint string) context.Context {
	return context.WithValue(ctx, endpointKey{}, endpoint)
}

func endpointOf(ctx context.Context) string {
	if e, ok := ctx.Value(endpointKey{}).(string); ok {
		return e
	}
	return "other"
}

// retryPolicy is the part of Config that decides about retries.
type retryPolicy struct {
	maxAttempts      int
	base, cap        time.Duration
	maxRateLimitWait time.Duration
	sleep            func(ctx context.Context, d time.Duration) error
	now              func() time.Time
	logger           *slog.Logger
	metrics          *metrics
}

// retryTransport retries one logical request: 5xx and network errors with
// capped exponential backoff and full jitter, a primary rate limit by waiting
// until its reset, a secondary one by honouring Retry-After — each within
// maxAttempts and maxRateLimitWait. It sits outermost so that every attempt
// is authenticated afresh (a JWT lives two minutes).
type retryTransport struct {
	next   http.RoundTripper
	policy *retryPolicy
}

func (t *retryTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx := req.Context()
	p := t.policy
	// rateLimited adds up the waits for rate limits: maxRateLimitWait bounds
	// their total for one request, not only each wait.
	var rateLimited time.Duration
	for attempt := 1; ; attempt++ {
		r := req.Clone(ctx)
		if attempt > 1 {
			if req.Body != nil && req.GetBody == nil {
				// Cannot replay the body; the previous answer stands.
				return nil, errors.New("github: request body cannot be replayed for a retry")
			}
			if req.GetBody != nil {
				body, err := req.GetBody()
				if err != nil {
					return nil, err
				}
				r.Body = body
			}
		}
		resp, err := t.next.RoundTrip(r)
		if ctx.Err() != nil {
			if resp != nil {
				resp.Body.Close()
			}
			return nil, ctx.Err()
		}
		wait, reason, retry := p.decide(attempt, resp, err)
		if retry && isCreate(ctx) && (reason == "server_error" || (reason == "network" && !isDialError(err))) {
			// GitHub may have created it; create decides (see create.go).
			return resp, err
		}
		if !retry || attempt >= p.maxAttempts {
			return resp, err
		}
		if deadline, ok := ctx.Deadline(); ok && time.Until(deadline) < wait {
			return resp, err
		}
		if strings.HasSuffix(reason, "rate_limit") {
			if rateLimited+wait > p.maxRateLimitWait {
				return resp, err
			}
			rateLimited += wait
		}
		status := 0
		if resp != nil {
			status = resp.StatusCode
			drain(resp)
		}
		p.metrics.retries.WithLabelValues(reason).Inc()
		p.logger.LogAttrs(ctx, slog.LevelWarn, "github request retried",
			slog.String("endpoint", endpointOf(ctx)), slog.Int("status", status),
			slog.String("reason", reason), slog.Int("attempt", attempt), slog.Duration("wait", wait),
			slog.Any("err", err))
		if err := p.sleep(ctx, wait); err != nil {
			return nil, err
		}
	}
}

// decide says whether and how long to wait before another attempt.
func (p *retryPolicy) decide(attempt int, resp *http.Response, err error) (time.Duration, string, bool) {
	if err != nil {
		return p.backoff(attempt), "network", true
	}
	switch resp.StatusCode {
	case http.StatusInternalServerError, http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return p.backoff(attempt), "server_error", true
	case http.StatusForbidden, http.StatusTooManyRequests:
	default:
		return 0, "", false
	}
	if ra := resp.Header.Get("Retry-After"); ra != "" {
		wait, ok := parseRetryAfter(ra, p.now())
		if !ok || wait > p.maxRateLimitWait {
			return 0, "", false
		}
		return wait, "secondary_rate_limit", true
	}
	if resp.Header.Get("X-RateLimit-Remaining") == "0" {
		reset, err := strconv.ParseInt(resp.Header.Get("X-RateLimit-Reset"), 10, 64)
		if err != nil {
			return 0, "", false
		}
		// A second of slack: GitHub's reset is rounded to whole seconds.
		wait := time.Unix(reset, 0).Sub(p.now()) + time.Second
		if wait < 0 {
			wait = 0
		}
		if wait > p.maxRateLimitWait {
			return 0, "", false
		}
		return wait, "primary_rate_limit", true
	}
	if resp.StatusCode == http.StatusTooManyRequests || mentionsSecondaryLimit(resp) {
		// GitHub asks for at least a minute when it gives no Retry-After.
		wait := max(time.Minute, p.backoff(attempt))
		if wait > p.maxRateLimitWait {
			return 0, "", false
		}
		return wait, "secondary_rate_limit", true
	}
	return 0, "", false
}

// backoff is capped exponential backoff with jitter over [d/2, d].
func (p *retryPolicy) backoff(attempt int) time.Duration {
	d := p.base
	for i := 1; i < attempt && d < p.cap; i++ {
		d *= 2
	}
	d = min(d, p.cap)
	half := d / 2
	return half + time.Duration(rand.Int64N(int64(half)+1))
}

func parseRetryAfter(v string, now time.Time) (time.Duration, bool) {
	if secs, err := strconv.Atoi(strings.TrimSpace(v)); err == nil && secs >= 0 {
		return time.Duration(secs) * time.Second, true
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(t.Sub(now), 0), true
	}
	return 0, false
}

// mentionsSecondaryLimit peeks at a 403 body for GitHub's wording, keeping
// the body readable for go-github's error parsing.
func mentionsSecondaryLimit(resp *http.Response) bool {
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	resp.Body = io.NopCloser(bytes.NewReader(data))
	if err != nil {
		return false
	}
	return bytes.Contains(bytes.ToLower(data), []byte("secondary rate limit"))
}

func drain(resp *http.Response) {
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-timer.C:
		return nil
	}
}

// timeoutTransport bounds each attempt; the deadline stays in force while
// the body is read and is released when it is closed.
type timeoutTransport struct {
	next    http.RoundTripper
	timeout time.Duration
}

func (t *timeoutTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx, cancel := context.WithTimeout(req.Context(), t.timeout)
	resp, err := t.next.RoundTrip(req.WithContext(ctx))
	if err != nil {
		cancel()
		return nil, err
	}
	resp.Body = &cancelOnClose{ReadCloser: resp.Body, cancel: cancel}
	return resp, nil
}

type cancelOnClose struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (c *cancelOnClose) Close() error {
	err := c.ReadCloser.Close()
	c.cancel()
	return err
}

// metricsTransport counts every attempt by endpoint template and status
// class and keeps the last rate-limit remaining figure GitHub reported.
type metricsTransport struct {
	next    http.RoundTripper
	metrics *metrics
}

func (t *metricsTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	endpoint := endpointOf(req.Context())
	start := time.Now()
	resp, err := t.next.RoundTrip(req)
	t.metrics.duration.WithLabelValues(endpoint).Observe(time.Since(start).Seconds())
	if err != nil {
		t.metrics.requests.WithLabelValues(endpoint, "error").Inc()
		return nil, err
	}
	t.metrics.requests.WithLabelValues(endpoint, statusClass(resp.StatusCode)).Inc()
	if v := resp.Header.Get("X-RateLimit-Remaining"); v != "" {
		if n, perr := strconv.ParseFloat(v, 64); perr == nil {
			t.metrics.rateRemaining.Set(n)
		}
	}
	return resp, nil
}

func statusClass(code int) string {
	switch {
	case code >= 200 && code < 300:
		return "2xx"
	case code >= 300 && code < 400:
		return "3xx"
	case code >= 400 && code < 500:
		return "4xx"
	case code >= 500 && code < 600:
		return "5xx"
	}
	return "other"
}
