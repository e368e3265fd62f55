// Package api is agentbot's task API (the PRD's FR-1 and FR-2): create a
// task for any repository of an installation without an issue or a label,
// follow it, cancel it and retry it. Like the webhook it is durable first:
// a request is stored before it is answered 201, and everything that needs
// GitHub (the installation, the settings, the run) happens in the
// dispatcher. A bearer token names the repositories it may act on.
package api

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"

	"github.com/agentbot/agentbot"
)

// Store is what the API needs of state.Store.
type Store interface {
	Get(ctx context.Context, id string) (*agentbot.Task, error)
	List(ctx context.Context, limit int) ([]*agentbot.Task, error)
	CreateTask(ctx context.Context, deliveryID string, t *agentbot.Task) (bool, error)
}

// Token is one API credential and what it may do.
type Token struct {
	// Name identifies the token in tasks and logs (never its value).
	Name  string
	Value string
	// Repos are the "owner/name" repositories the token may act on; "*"
	// is every repository of every installation.
	Repos []string
}

func (t Token) allows(repo string) bool {
	for _, r := range t.Repos {
		if r == "*" || strings.EqualFold(r, repo) {
			return true
		}
	}
	return false
}

// Options configures the Handler.
type Options struct {
	Store  Store
	Tokens []Token
	// PublicURL is where task pages are (a task's "url").
	PublicURL string
	// Notify wakes the dispatcher for a new task (non-blocking).
	Notify func(*agentbot.Task)
	Logger *slog.Logger
}

// Handler serves /api/v1.
type Handler struct {
	opts Options
	mux  *http.ServeMux
}

// New builds the handler; it refuses to serve without a token.
func New(opts Options) (*Handler, error) {
	if opts.Store == nil {
		return nil, errors.New("api: no store")
	}
	if len(opts.Tokens) == 0 {
		return nil, errors.New("api: no token: the task API is never open")
	}
	for _, t := range opts.Tokens {
		if len(t.Value) < 16 {
			return nil, fmt.Errorf("api: token %q is shorter than 16 characters", t.Name)
		}
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Notify == nil {
		opts.Notify = func(*agentbot.Task) {}
	}
	h := &Handler{opts: opts, mux: http.NewServeMux()}
	h.mux.HandleFunc("GET /api/v1/openapi.json", h.openAPI)
	h.mux.HandleFunc("POST /api/v1/tasks", h.authed(h.create))
	h.mux.HandleFunc("GET /api/v1/tasks", h.authed(h.list))
	h.mux.HandleFunc("GET /api/v1/tasks/{id}", h.authed(h.get))
	h.mux.HandleFunc("POST /api/v1/tasks/{id}/cancel", h.authed(h.control(agentbot.ControlCancel)))
	h.mux.HandleFunc("POST /api/v1/tasks/{id}/retry", h.authed(h.control(agentbot.ControlRetry)))
	return h, nil
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) { h.mux.ServeHTTP(w, r) }

// authed runs next with the request's token, or answers 401.
func (h *Handler) authed(next func(http.ResponseWriter, *http.Request, Token)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		tok, ok := h.token(r)
		if !ok {
			w.Header().Set("WWW-Authenticate", `Bearer realm="agentbot"`)
			writeError(w, http.StatusUnauthorized, "a valid bearer token is required")
			return
		}
		next(w, r, tok)
	}
}

// token is the configured token the request presents, compared in
// constant time against every one (no early exit reveals which matched).
func (h *Handler) token(r *http.Request) (Token, bool) {
	got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || got == "" {
		return Token{}, false
	}
	sum := sha256.Sum256([]byte(got))
	var found Token
	matched := 0
	for _, t := range h.opts.Tokens {
		want := sha256.Sum256([]byte(t.Value))
		if subtle.ConstantTimeCompare(sum[:], want[:]) == 1 {
			found, matched = t, 1
		}
	}
	return found, matched == 1
}

// tokenID is a stable, non-secret name of a token for delivery ids.
func tokenID(t Token) string {
	sum := sha256.Sum256([]byte(t.Value))
	return hex.EncodeToString(sum[:6])
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v) // the client went away; nothing to tell it
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]string{"error": msg})
}
