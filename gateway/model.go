package gateway

import (
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httputil"
	"net/url"
	"path"
	"strings"
	"time"

	"github.com/agentbot/agentbot/runner"
)

// ModelOptions configure the model relay.
type ModelOptions struct {
	// AnthropicURL and OpenAIURL are the upstream APIs (defaults: the
	// public ones).
	AnthropicURL *url.URL
	OpenAIURL    *url.URL
	// AnthropicKey and OpenAIKey are the operator's keys; a relay without
	// its key answers 502.
	AnthropicKey string
	OpenAIKey    string
	// Prices price the answers (default DefaultPrices).
	Prices Prices
	// MaxCostUSD is every task's budget (0: none but the repository's).
	MaxCostUSD float64
}

func (m *ModelOptions) validate() error {
	if m.AnthropicURL == nil {
		m.AnthropicURL = &url.URL{Scheme: "https", Host: "api.anthropic.com"}
	}
	if m.OpenAIURL == nil {
		m.OpenAIURL = &url.URL{Scheme: "https", Host: "api.openai.com"}
	}
	if m.Prices == nil {
		m.Prices = DefaultPrices
	}
	if m.MaxCostUSD < 0 {
		return errors.New("gateway: the model budget is negative")
	}
	return nil
}

// budget is the task's budget: the repository's may lower the operator's,
// never raise it.
func (m ModelOptions) budget(repo float64) float64 {
	if m.MaxCostUSD > 0 && (repo <= 0 || repo > m.MaxCostUSD) {
		return m.MaxCostUSD
	}
	return max(repo, 0)
}

// modelAPI is one upstream the relay serves, with the calls it lets
// through: those that answer (and bill) at once, so the meter sees every
// token. Batches, files and the like are refused: they would spend the
// operator's money where the budget cannot see it.
type modelAPI struct {
	name  string
	base  *url.URL
	key   string
	calls []string // "METHOD /path"; a trailing "*" is a prefix
	// setKey puts the operator's key where the API reads it.
	setKey func(h http.Header, key string)
	// errorBody is an answer in the API's own error shape, so the agent
	// shows the message instead of a parse error.
	errorBody func(kind, msg string) any
}

func (g *Gateway) modelAPIs() map[string]modelAPI {
	m := g.opts.Model
	return map[string]modelAPI{
		"anthropic": {name: "anthropic", base: m.AnthropicURL, key: m.AnthropicKey,
			calls:  []string{"POST /v1/messages", "POST /v1/messages/count_tokens", "GET /v1/models*"},
			setKey: func(h http.Header, k string) { h.Set("X-Api-Key", k) },
			errorBody: func(kind, msg string) any {
				return map[string]any{"type": "error", "error": map[string]string{"type": kind, "message": msg}}
			}},
		"openai": {name: "openai", base: m.OpenAIURL, key: m.OpenAIKey,
			calls:  []string{"POST /v1/chat/completions", "POST /v1/responses", "GET /v1/models*"},
			setKey: func(h http.Header, k string) { h.Set("Authorization", "Bearer "+k) },
			errorBody: func(kind, msg string) any {
				return map[string]any{"error": map[string]string{"type": kind, "message": msg}}
			}},
	}
}

func (api modelAPI) allows(method, p string) bool {
	for _, c := range api.calls {
		m, cp, _ := strings.Cut(c, " ")
		if m == method && (cp == p || strings.HasSuffix(cp, "*") && strings.HasPrefix(p, strings.TrimSuffix(cp, "*"))) {
			return true
		}
	}
	return false
}

// sentKey is the key a model client sent: x-api-key or a bearer token.
func sentKey(r *http.Request) string {
	if k := r.Header.Get("X-Api-Key"); k != "" {
		return k
	}
	return strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
}

// model relays a request of the sandbox's agent to the model API with the
// operator's key in place of the task's placeholder, metering the answer.
func (t *Task) model(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	ev := runner.Egress{Kind: runner.EgressModel, Host: "model relay"}
	name, rest, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/"), "/")
	api, ok := t.g.modelAPIs()[name]
	if !ok {
		t.refuse(w, ev, start, &blockedError{fmt.Sprintf("no relay at %s (the model relays are /anthropic and /openai)", r.URL.Path)})
		return
	}
	ev.Host = api.base.Host
	rest = path.Clean("/" + rest)
	if err := t.admitModelCall(r, api, rest); err != nil {
		var b *blockedError
		var budget *budgetError
		code, kind := http.StatusBadGateway, "api_error"
		switch {
		case errors.As(err, &budget):
			// What the API itself answers when the credit runs out: an
			// agent treats it as final, not as something to retry.
			code, kind = http.StatusBadRequest, "invalid_request_error"
		case errors.As(err, &b):
			code, kind = http.StatusForbidden, "permission_error"
		}
		ev.Allowed, ev.Reason = code == http.StatusBadGateway, err.Error()
		writeAPIError(w, code, api.errorBody(kind, "agentbot: "+err.Error()))
		t.finish(ev, start)
		return
	}
	m := &meter{}
	target := *api.base
	target.Path = path.Join("/", target.Path, rest)
	target.RawPath, target.RawQuery = "", r.URL.RawQuery
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL, pr.Out.Host = &target, target.Host
			pr.Out.Header.Del("X-Api-Key")
			pr.Out.Header.Del("Authorization")
			api.setKey(pr.Out.Header, api.key)
			// The meter reads the answer as it passes: no compression.
			pr.Out.Header.Set("Accept-Encoding", "identity")
		},
		Transport:     t.g.upstream,
		FlushInterval: -1,
		ModifyResponse: func(resp *http.Response) error {
			m.body = resp.Body
			m.stream = strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream")
			resp.Body = m
			return nil
		},
	}
	t.relay(w, r, &ev, rp)
	if m.usage != (runner.Usage{}) {
		u := m.usage
		ev.Model, ev.Usage = m.model, &u
		ev.CostUSD = t.g.opts.Model.Prices.For(m.model).Cost(u)
		t.charge(ev.CostUSD, u)
	}
	t.finish(ev, start)
}

// admitModelCall refuses a call with the wrong key, one the relay does not
// carry, or any call once the budget is spent.
func (t *Task) admitModelCall(r *http.Request, api modelAPI, p string) error {
	if subtle.ConstantTimeCompare([]byte(sentKey(r)), []byte(t.key)) != 1 {
		return &blockedError{"this is not the key of a running task"}
	}
	if !api.allows(r.Method, p) {
		return &blockedError{fmt.Sprintf("the model relay does not carry %s %s", r.Method, p)}
	}
	if spent, over := t.overBudget(); over {
		return &budgetError{fmt.Sprintf("this task's model budget of $%.6g is spent ($%.4f used); the agent has been stopped", t.budget, spent)}
	}
	if api.key == "" {
		return fmt.Errorf("agentbot has no %s API key", api.name)
	}
	return nil
}

// budgetError refuses a model call because the task's budget is spent.
type budgetError struct{ reason string }

func (e *budgetError) Error() string { return e.reason }

func writeAPIError(w http.ResponseWriter, code int, body any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(body) // the sandbox hanging up is its business
}

func (t *Task) overBudget() (float64, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.spent, t.budget > 0 && t.spent >= t.budget
}

// charge adds an answer's cost; the call that crosses the budget is the
// last one the relay carries, and Exhausted tells the dispatcher so.
func (t *Task) charge(cost float64, u runner.Usage) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.spent += cost
	t.usage.InputTokens += u.InputTokens
	t.usage.OutputTokens += u.OutputTokens
	t.usage.CacheCreationInputTokens += u.CacheCreationInputTokens
	t.usage.CacheReadInputTokens += u.CacheReadInputTokens
	if t.budget > 0 && t.spent >= t.budget && !t.exhaustedClosed {
		t.exhaustedClosed = true
		close(t.exhausted)
	}
}

// Exhausted is closed once the task's model budget is spent, so the
// dispatcher can stop the run instead of waiting for the agent to notice.
func (t *Task) Exhausted() <-chan struct{} { return t.exhausted }
