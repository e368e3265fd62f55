// Package web serves agentbot's task pages: GET /tasks lists recent tasks,
// GET /tasks/{id} shows one (HTML, or JSON when the client asks for it with
// Accept) with its state, the timeline of its phases, its result links and
// a live tail of its log, streamed as server-sent events from
// GET /tasks/{id}/events or polled from GET /tasks/{id}/log. The pages hold
// no secrets (agent-runner redacts them from every event) and are always
// protected, with a bearer token or basic auth: a page open to whoever
// reaches the port (another local process, a sandbox that can reach the
// host's loopback) would list every repository's tasks and logs.
package web

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/agentbot/agentbot"
	"github.com/agentbot/agentbot/runner"
)

// Store is what the pages read of state.Store.
type Store interface {
	Get(ctx context.Context, id string) (*agentbot.Task, error)
	List(ctx context.Context, limit int) ([]*agentbot.Task, error)
}

// Logs is what the pages read of tasklog.Store.
type Logs interface {
	Read(taskID string, from, max int) ([]runner.Event, int, error)
	Watch(taskID string) (<-chan struct{}, func())
}

// Auth protects the pages. With neither a token nor a user set it lets no
// request through: there is no open mode.
type Auth struct {
	// BearerToken is accepted as "Authorization: Bearer <token>".
	BearerToken string
	// BasicUser and BasicPassword are accepted as HTTP basic auth (what a
	// browser following a link from GitHub can send).
	BasicUser, BasicPassword string
}

// Configured reports whether a token or a user is set.
func (a Auth) Configured() bool { return a.BearerToken != "" || a.BasicUser != "" }

// Protect serves next only to requests that carry a.'s credentials
// (compared in constant time); others get 401, or 403 when a holds none.
func (a Auth) Protect(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if a.authorized(w, r) {
			next.ServeHTTP(w, r)
		}
	})
}

func (a Auth) authorized(w http.ResponseWriter, r *http.Request) bool {
	if !a.Configured() {
		http.Error(w, "forbidden: no credentials are configured for this page (AGENTBOT_PAGES_TOKEN_FILE or AGENTBOT_PAGES_BASIC_AUTH_FILE)", http.StatusForbidden)
		return false
	}
	if a.BearerToken != "" {
		if tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok && equal(tok, a.BearerToken) {
			return true
		}
	}
	if a.BasicUser != "" {
		if u, p, ok := r.BasicAuth(); ok && equal(u, a.BasicUser) && equal(p, a.BasicPassword) {
			return true
		}
		w.Header().Set("WWW-Authenticate", `Basic realm="agentbot", charset="UTF-8"`)
	}
	http.Error(w, "unauthorized", http.StatusUnauthorized)
	return false
}

// Options configures the pages.
type Options struct {
	Store Store
	Logs  Logs
	// Counter, when set, gives the dashboard its counts per state.
	Counter Counter
	// Auth is required of every request; without credentials in it every
	// page answers 403.
	Auth Auth
	// MaxStreams bounds concurrent live-log streams (default 64).
	MaxStreams int
	// Heartbeat is the interval of keep-alive comments on a stream and of
	// state checks (default 15s).
	Heartbeat time.Duration
	Logger    *slog.Logger
	Now       func() time.Time
}

// Handler serves the task pages.
type Handler struct {
	opts    Options
	mux     *http.ServeMux
	streams chan struct{}
	log     *slog.Logger
	now     func() time.Time
}

// New builds the handler.
func New(opts Options) (*Handler, error) {
	if opts.Store == nil || opts.Logs == nil {
		return nil, errors.New("web: Store and Logs are required")
	}
	if opts.MaxStreams <= 0 {
		opts.MaxStreams = 64
	}
	if opts.Heartbeat <= 0 {
		opts.Heartbeat = 15 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	h := &Handler{opts: opts, mux: http.NewServeMux(), streams: make(chan struct{}, opts.MaxStreams), log: opts.Logger, now: opts.Now}
	h.mux.HandleFunc("GET /{$}", h.dashboard)
	h.mux.HandleFunc("GET /tasks", h.list)
	h.mux.HandleFunc("GET /tasks/{$}", h.list)
	h.mux.HandleFunc("GET /tasks/{id}", h.task)
	h.mux.HandleFunc("GET /tasks/{id}/log", h.logPoll)
	h.mux.HandleFunc("GET /tasks/{id}/events", h.events)
	return h, nil
}

// ServeHTTP checks authorisation and routes.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Referrer-Policy", "no-referrer")
	if !h.opts.Auth.authorized(w, r) {
		return
	}
	h.mux.ServeHTTP(w, r)
}

func equal(a, b string) bool { return subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1 }

func wantsJSON(r *http.Request) bool {
	if r.URL.Query().Get("format") == "json" {
		return true
	}
	acc := r.Header.Get("Accept")
	return strings.Contains(acc, "application/json") && !strings.Contains(acc, "text/html")
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	// The header is sent: an error now means the client went away, and
	// there is no one left to tell.
	_ = enc.Encode(v)
}

// TaskSummary is one row of GET /tasks.
type TaskSummary struct {
	ID        string             `json:"id"`
	Repo      string             `json:"repo"`
	Issue     int                `json:"issue"`
	Kind      agentbot.TaskKind  `json:"kind"`
	Control   agentbot.Control   `json:"control,omitempty"`
	State     agentbot.TaskState `json:"state"`
	Phase     string             `json:"phase,omitempty"`
	Sender    string             `json:"sender,omitempty"`
	CreatedAt time.Time          `json:"created_at"`
	Elapsed   string             `json:"elapsed,omitempty"`
	PRURL     string             `json:"pr_url,omitempty"`
	Error     string             `json:"error,omitempty"`
}

func (h *Handler) summary(t *agentbot.Task) TaskSummary {
	return TaskSummary{
		ID: t.ID, Repo: t.Ref().Repo.FullName(), Issue: t.Ref().Number,
		Kind: t.Trigger.Kind, Control: t.Trigger.Control, State: t.State, Phase: t.Phase,
		Sender: t.Trigger.Sender.Login, CreatedAt: t.CreatedAt, Elapsed: h.elapsed(t),
		PRURL: t.Result.PRURL, Error: t.Result.Error,
	}
}

func (h *Handler) elapsed(t *agentbot.Task) string {
	switch {
	case t.StartedAt.IsZero():
		return ""
	case t.FinishedAt.IsZero():
		return h.now().Sub(t.StartedAt).Round(time.Second).String()
	default:
		return t.FinishedAt.Sub(t.StartedAt).Round(time.Second).String()
	}
}

func (h *Handler) list(w http.ResponseWriter, r *http.Request) {
	limit := 100
	if n, err := strconv.Atoi(r.URL.Query().Get("limit")); err == nil && n > 0 && n <= 1000 {
		limit = n
	}
	tasks, err := h.opts.Store.List(r.Context(), limit)
	if err != nil {
		h.log.Error("web: list tasks", "err", err)
		http.Error(w, "cannot list tasks", http.StatusInternalServerError)
		return
	}
	rows := make([]TaskSummary, 0, len(tasks))
	for _, t := range tasks {
		rows = append(rows, h.summary(t))
	}
	if wantsJSON(r) {
		writeJSON(w, http.StatusOK, map[string]any{"tasks": rows})
		return
	}
	h.render(w, "list", listPage{Tasks: rows})
}

// Phase is one entry of a task's timeline.
type Phase struct {
	Name    string    `json:"name"`
	Started time.Time `json:"started"`
	// Seconds is how long the phase lasted (until the next one, or until
	// now for the current phase of a running task).
	Seconds float64 `json:"seconds"`
}

// TaskPage is the JSON of GET /tasks/{id}.
type TaskPage struct {
	Task     TaskSummary     `json:"task"`
	Attempt  int             `json:"attempt"`
	Requeues int             `json:"requeues,omitempty"`
	RetryOf  string          `json:"retry_of,omitempty"`
	Result   agentbot.Result `json:"result"`
	Timeline []Phase         `json:"timeline"`
	// Log is the last lines of output; LogNext is where /log and /events
	// continue from.
	Log     []runner.Event `json:"log"`
	LogNext int            `json:"log_next"`
	Title   string         `json:"title,omitempty"`
	// Reported is set once the task's final state is on GitHub (its
	// comment and check run).
	Reported bool `json:"reported,omitempty"`
	// Egress is the sandbox's attempts to leave, per host and outcome;
	// EgressMore counts the rows left off.
	Egress     []EgressRow `json:"egress"`
	EgressMore int         `json:"egress_more,omitempty"`
}

const pageLogLines = 200

func (h *Handler) load(ctx context.Context, id string) (*agentbot.Task, error) {
	if id == "" || len(id) > 128 {
		return nil, errNotFound
	}
	t, err := h.opts.Store.Get(ctx, id)
	if err != nil {
		return nil, errNotFound
	}
	return t, nil
}

var errNotFound = errors.New("no such task")

func (h *Handler) task(w http.ResponseWriter, r *http.Request) {
	t, err := h.load(r.Context(), r.PathValue("id"))
	if err != nil {
		http.Error(w, "no such task", http.StatusNotFound)
		return
	}
	evs, next, err := h.opts.Logs.Read(t.ID, 0, 0)
	if err != nil {
		h.log.Warn("web: read task log", "task_id", t.ID, "err", err)
	}
	page := TaskPage{
		Task: h.summary(t), Attempt: t.Attempt, Requeues: t.Requeues, RetryOf: t.RetryOf,
		Result: t.Result, Timeline: h.timeline(t, evs), LogNext: next, Title: t.Trigger.Prompt.Title,
		Reported: t.Reported,
	}
	var lines []runner.Event
	for _, ev := range evs {
		if ev.Type == runner.EventLog || ev.Type == runner.EventError || ev.Type == runner.EventProgress {
			lines = append(lines, ev)
		}
	}
	if len(lines) > pageLogLines {
		lines = lines[len(lines)-pageLogLines:]
	}
	page.Log = lines
	page.Egress, page.EgressMore = egressRows(evs)
	if page.Log == nil {
		page.Log = []runner.Event{}
	}
	if wantsJSON(r) {
		writeJSON(w, http.StatusOK, page)
		return
	}
	h.render(w, "task", taskPage{TaskPage: page, Live: !t.State.Terminal()})
}

// timeline turns the phase events of the last attempt into phases with
// durations.
func (h *Handler) timeline(t *agentbot.Task, evs []runner.Event) []Phase {
	var out []Phase
	for _, ev := range evs {
		if ev.Type == runner.EventLog && ev.Stream == "agentbot" && strings.HasPrefix(ev.Message, "agentbot: attempt ") {
			out = out[:0]
		}
		if ev.Type != runner.EventPhase || ev.Phase == "" {
			continue
		}
		if n := len(out); n > 0 && out[n-1].Name == ev.Phase {
			continue
		}
		out = append(out, Phase{Name: ev.Phase, Started: ev.Time})
	}
	for i := range out {
		var end time.Time
		switch {
		case i+1 < len(out):
			end = out[i+1].Started
		case !t.FinishedAt.IsZero():
			end = t.FinishedAt
		case t.State == agentbot.StateRunning:
			end = h.now()
		}
		if !end.IsZero() && end.After(out[i].Started) {
			out[i].Seconds = end.Sub(out[i].Started).Seconds()
		}
	}
	if out == nil {
		out = []Phase{}
	}
	return out
}

// LogChunk is the JSON of GET /tasks/{id}/log.
type LogChunk struct {
	State  agentbot.TaskState `json:"state"`
	Phase  string             `json:"phase,omitempty"`
	Events []runner.Event     `json:"events"`
	Next   int                `json:"next"`
}

func (h *Handler) logPoll(w http.ResponseWriter, r *http.Request) {
	t, err := h.load(r.Context(), r.PathValue("id"))
	if err != nil {
		http.Error(w, "no such task", http.StatusNotFound)
		return
	}
	from, _ := strconv.Atoi(r.URL.Query().Get("from"))
	if from < 0 {
		from = 0
	}
	evs, next, err := h.opts.Logs.Read(t.ID, from, 1000)
	if err != nil {
		http.Error(w, "cannot read the task log", http.StatusInternalServerError)
		return
	}
	if evs == nil {
		evs = []runner.Event{}
	}
	writeJSON(w, http.StatusOK, LogChunk{State: t.State, Phase: t.Phase, Events: evs, Next: next})
}

// events streams the task's log as server-sent events: one "message" per
// event (id = the line index to resume after), a "state" event when the
// task's state or phase changes, and "end" once it is over.
// streamChunk is how many log events one read of a live stream sends.
const streamChunk = 500

// streamFrom is where a live stream starts: ?from=, or the Last-Event-ID
// of a reconnecting EventSource.
func streamFrom(r *http.Request) int {
	from, _ := strconv.Atoi(r.URL.Query().Get("from"))
	if id, err := strconv.Atoi(r.Header.Get("Last-Event-ID")); err == nil {
		from = id
	}
	return max(from, 0)
}

// writeEvents writes the task's log events after from as server-sent
// events and returns how many it wrote and where to go on from.
func (h *Handler) writeEvents(w io.Writer, taskID string, from int) (int, int, error) {
	evs, next, err := h.opts.Logs.Read(taskID, from, streamChunk)
	if err != nil {
		return 0, from, err
	}
	for i, ev := range evs {
		b, _ := json.Marshal(ev)
		fmt.Fprintf(w, "id: %d\ndata: %s\n\n", from+i+1, b)
	}
	return len(evs), next, nil
}

func (h *Handler) events(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	t, err := h.load(ctx, r.PathValue("id"))
	if err != nil {
		http.Error(w, "no such task", http.StatusNotFound)
		return
	}
	flusher, ok := w.(http.Flusher)
	if !ok {
		http.Error(w, "streaming unsupported", http.StatusInternalServerError)
		return
	}
	select {
	case h.streams <- struct{}{}:
		defer func() { <-h.streams }()
	default:
		w.Header().Set("Retry-After", "10")
		http.Error(w, "too many live logs open; use /log", http.StatusServiceUnavailable)
		return
	}
	from := streamFrom(r)
	changed, stop := h.opts.Logs.Watch(t.ID)
	defer stop()
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)

	tick := time.NewTicker(h.opts.Heartbeat)
	defer tick.Stop()
	// The server's write timeout is meant for ordinary responses; a stream
	// extends its own deadline as it goes.
	rc := http.NewResponseController(w)
	lastState, lastPhase := agentbot.TaskState(""), ""
	for {
		if err := rc.SetWriteDeadline(time.Now().Add(h.opts.Heartbeat + 30*time.Second)); err != nil {
			// The writer cannot extend its deadline: the server's write
			// timeout will end the stream, and the page reconnects.
			h.log.Debug("log stream: cannot extend the write deadline", "task_id", t.ID, "err", err)
		}
		n, next, err := h.writeEvents(w, t.ID, from)
		if err != nil {
			return
		}
		from = next
		if cur, err := h.opts.Store.Get(ctx, t.ID); err == nil {
			t = cur
		}
		if t.State != lastState || t.Phase != lastPhase {
			lastState, lastPhase = t.State, t.Phase
			b, _ := json.Marshal(h.summary(t))
			fmt.Fprintf(w, "event: state\ndata: %s\n\n", b)
		}
		if n == streamChunk {
			flusher.Flush()
			continue
		}
		if t.State.Terminal() {
			fmt.Fprint(w, "event: end\ndata: {}\n\n")
			flusher.Flush()
			return
		}
		flusher.Flush()
		select {
		case <-ctx.Done():
			return
		case <-changed:
		case <-tick.C:
			fmt.Fprint(w, ": keep-alive\n\n")
		}
	}
}
