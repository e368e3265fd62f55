// Package webhook is agentbot's HTTP intake for GitHub webhook deliveries.
// The Handler verifies the X-Hub-Signature-256 HMAC in constant time, caps
// the body, decides what the delivery asks for with the pure Parse, and
// stores the resulting task through its Store before answering 202: a
// delivery is acknowledged only once its task is durable. Redeliveries (same
// X-GitHub-Delivery) are answered 200 and create nothing. The handler never
// calls GitHub or starts work; it tells the dispatcher about each new task
// through the non-blocking Enqueued callback.
//
// Answers: 202 task stored, 200 duplicate delivery or ping ("pong"), 204
// ignored, 400 missing headers or malformed JSON, 401 missing or wrong
// signature, 405 not POST, 413 body over the cap, 500 store failure. Only a
// 202 changes anything stored.
package webhook

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/agentbot/agentbot"
)

// DefaultMaxBody caps a delivery's body. The events agentbot acts on carry
// at most an issue body and a comment body (65,536 characters each on
// GitHub), well under this; larger deliveries are events it ignores anyway.
const DefaultMaxBody int64 = 2 << 20

// maxDeliveryIDLen matches the store's bound (GitHub sends 36-byte GUIDs).
const maxDeliveryIDLen = 256

// Store is what the handler needs of the task store (state.Store).
type Store interface {
	CreateTask(ctx context.Context, deliveryID string, t *agentbot.Task) (created bool, err error)
	Get(ctx context.Context, id string) (*agentbot.Task, error)
}

// Config configures New.
type Config struct {
	// Secret is the webhook secret; an empty secret is refused, since it
	// would let unsigned deliveries through.
	Secret []byte
	Store  Store
	// TriggerLabels default to [DefaultTriggerLabel].
	TriggerLabels []string
	// Mentions are the names ("@name" at a line start) that act like
	// /agent: the App's slug and the operator's aliases.
	Mentions []string
	// Learned, if set, is the book of repositories' own trigger labels
	// (the dispatcher fills it as it reads their settings).
	Learned *Labels
	// MaxBody defaults to DefaultMaxBody.
	MaxBody int64
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// Registry receives the intake metrics; nil registers nothing.
	Registry *prometheus.Registry
	// Enqueued, if set, is called after commit with every newly created
	// task (a copy). It must not block.
	Enqueued func(*agentbot.Task)
}

// Handler is the webhook intake http.Handler.
type Handler struct {
	secret   []byte
	store    Store
	opts     ParseOptions
	maxBody  int64
	log      *slog.Logger
	enqueued func(*agentbot.Task)
	metrics  *metrics
	// bufs holds request-body buffers; nothing read from a body outlives
	// its request (decoding copies), so buffers are reused.
	bufs sync.Pool
}

// maxPooledBuffer keeps an occasional large body from pinning memory.
const maxPooledBuffer = 256 << 10

func (h *Handler) putBuffer(b *bytes.Buffer) {
	if b.Cap() > maxPooledBuffer {
		return
	}
	b.Reset()
	h.bufs.Put(b)
}

// New builds the handler once; it fails on an empty secret or missing store.
func New(cfg Config) (*Handler, error) {
	if len(cfg.Secret) == 0 {
		return nil, errors.New("webhook: empty secret: refusing to accept unsigned deliveries")
	}
	if cfg.Store == nil {
		return nil, errors.New("webhook: no store")
	}
	h := &Handler{
		secret:   cfg.Secret,
		store:    cfg.Store,
		opts:     ParseOptions{TriggerLabels: cfg.TriggerLabels, Mentions: cfg.Mentions, Learned: cfg.Learned},
		maxBody:  cfg.MaxBody,
		log:      cfg.Logger,
		enqueued: cfg.Enqueued,
		metrics:  newMetrics(),
	}
	h.bufs.New = func() any { return new(bytes.Buffer) }
	if h.maxBody <= 0 {
		h.maxBody = DefaultMaxBody
	}
	if h.log == nil {
		h.log = slog.Default()
	}
	if cfg.Registry != nil {
		if err := h.metrics.register(cfg.Registry); err != nil {
			return nil, fmt.Errorf("webhook: register metrics: %w", err)
		}
	}
	return h, nil
}

// Outcomes, as logged and counted.
const (
	outcomeQueued     = "queued"
	outcomeDuplicate  = "duplicate"
	outcomeIgnored    = "ignored"
	outcomePong       = "pong"
	outcomeBadSig     = "unauthorized"
	outcomeBadRequest = "bad_request"
	outcomeTooLarge   = "too_large"
	outcomeBadMethod  = "method_not_allowed"
	outcomeError      = "error"
)

// delivery is what one request's log line and metrics report.
type delivery struct {
	id, event, action, repo string
	outcome, reason, taskID string
	issue                   int
	status                  int
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	d := h.serve(w, r)
	elapsed := time.Since(start)
	h.metrics.deliveries.WithLabelValues(eventLabel(d.event), d.outcome).Inc()
	h.metrics.latency.WithLabelValues(d.outcome).Observe(elapsed.Seconds())

	level := slog.LevelInfo
	if d.status >= 400 {
		level = slog.LevelWarn
	}
	if d.status >= 500 {
		level = slog.LevelError
	}
	attrs := []slog.Attr{
		slog.String("delivery_id", clip(d.id)),
		slog.String("event", clip(d.event)),
		slog.String("action", clip(d.action)),
		slog.String("repo", clip(d.repo)),
		slog.String("outcome", d.outcome),
		slog.Int("status", d.status),
		slog.Duration("duration", elapsed),
	}
	if d.issue != 0 {
		attrs = append(attrs, slog.Int("issue", d.issue))
	}
	if d.taskID != "" {
		attrs = append(attrs, slog.String("task_id", d.taskID))
	}
	if d.reason != "" {
		attrs = append(attrs, slog.String("reason", clip(d.reason)))
	}
	h.log.LogAttrs(r.Context(), level, "delivery", attrs...)
}

// refusal is a delivery turned away before anything is stored.
type refusal struct {
	status  int
	outcome string
	msg     string
}

// serve handles one delivery and reports what happened. Every refusal
// returns before anything is stored.
func (h *Handler) serve(w http.ResponseWriter, r *http.Request) delivery {
	// Header values are recorded for the log line even when the signature
	// fails; ServeHTTP clips them.
	d := delivery{
		id:    r.Header.Get("X-GitHub-Delivery"),
		event: r.Header.Get("X-GitHub-Event"),
	}
	refuse := func(rf *refusal) delivery {
		d.status, d.outcome, d.reason = rf.status, rf.outcome, rf.msg
		http.Error(w, rf.msg, rf.status)
		return d
	}
	buf := h.bufs.Get().(*bytes.Buffer)
	defer h.putBuffer(buf)
	body, rf := h.readBody(w, r, buf)
	if rf != nil {
		return refuse(rf)
	}
	if rf := h.checkDelivery(r, d, body); rf != nil {
		return refuse(rf)
	}
	payload, err := formPayload(r.Header.Get("Content-Type"), body)
	if err != nil {
		return refuse(&refusal{http.StatusBadRequest, outcomeBadRequest, err.Error()})
	}
	if d.event == "ping" {
		if !valid(payload) {
			return refuse(&refusal{http.StatusBadRequest, outcomeBadRequest, "malformed JSON payload"})
		}
		d.status, d.outcome = http.StatusOK, outcomePong
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(http.StatusOK)
		io.WriteString(w, "pong\n")
		return d
	}
	dec, err := parse(d.event, payload, h.opts)
	if err != nil {
		return refuse(&refusal{http.StatusBadRequest, outcomeBadRequest, "malformed JSON payload"})
	}
	d.action, d.repo, d.issue = dec.Action, dec.Repo, dec.Issue.Number
	if dec.Forget != "" && h.opts.Learned != nil {
		h.opts.Learned.Forget(dec.Forget)
	}
	if dec.Ignored() {
		d.status, d.outcome, d.reason = http.StatusNoContent, outcomeIgnored, dec.Reason
		w.WriteHeader(http.StatusNoContent)
		return d
	}
	d.reason = dec.Reason
	return h.record(w, r, d, dec.Trigger, refuse)
}

// readBody reads the POSTed body into buf, within the size limit.
func (h *Handler) readBody(w http.ResponseWriter, r *http.Request, buf *bytes.Buffer) ([]byte, *refusal) {
	tooLarge := &refusal{http.StatusRequestEntityTooLarge, outcomeTooLarge, fmt.Sprintf("body over %d bytes", h.maxBody)}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		return nil, &refusal{http.StatusMethodNotAllowed, outcomeBadMethod, "webhook deliveries are POSTed"}
	}
	if r.ContentLength > h.maxBody {
		return nil, tooLarge
	}
	if r.ContentLength > 0 {
		// One allocation of the right size (ReadFrom wants MinRead spare to
		// see EOF without growing).
		buf.Grow(int(r.ContentLength) + bytes.MinRead)
	}
	if _, err := buf.ReadFrom(http.MaxBytesReader(w, r.Body, h.maxBody)); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, tooLarge
		}
		return nil, &refusal{http.StatusBadRequest, outcomeBadRequest, "could not read body"}
	}
	return buf.Bytes(), nil
}

// checkDelivery checks the signature first, then the headers it names.
func (h *Handler) checkDelivery(r *http.Request, d delivery, body []byte) *refusal {
	bad := func(msg string) *refusal { return &refusal{http.StatusBadRequest, outcomeBadRequest, msg} }
	if !ValidSignature(h.secret, r.Header.Get("X-Hub-Signature-256"), body) {
		return &refusal{http.StatusUnauthorized, outcomeBadSig, "missing or invalid X-Hub-Signature-256"}
	}
	switch {
	case d.event == "":
		return bad("missing X-GitHub-Event")
	case d.id == "":
		return bad("missing X-GitHub-Delivery")
	case len(d.id) > maxDeliveryIDLen:
		return bad("X-GitHub-Delivery too long")
	case !printableASCII(d.id):
		// GitHub sends GUIDs; anything else would not survive the task's
		// JSON encoding unchanged.
		return bad("malformed X-GitHub-Delivery")
	}
	return nil
}

// record stores the task durably, then answers: 202 for a new task, 200
// for a delivery seen before.
func (h *Handler) record(w http.ResponseWriter, r *http.Request, d delivery, trig agentbot.Trigger, refuse func(*refusal) delivery) delivery {
	task := &agentbot.Task{Event: d.event, Trigger: trig}
	h.resolveCheckRunTask(r.Context(), task)
	d.issue = task.Trigger.Issue.Number
	created, err := h.store.CreateTask(r.Context(), d.id, task)
	if err != nil {
		h.log.ErrorContext(r.Context(), "store task", slog.String("delivery_id", d.id), slog.Any("err", err))
		return refuse(&refusal{http.StatusInternalServerError, outcomeError, "could not store the task"})
	}
	w.Header().Set("Content-Type", "application/json")
	if !created {
		d.status, d.outcome = http.StatusOK, outcomeDuplicate
		w.WriteHeader(http.StatusOK)
		io.WriteString(w, `{"outcome":"duplicate"}`+"\n")
		return d
	}
	d.status, d.outcome, d.taskID = http.StatusAccepted, outcomeQueued, task.ID
	if h.enqueued != nil {
		c := *task
		h.enqueued(&c)
	}
	w.WriteHeader(http.StatusAccepted)
	fmt.Fprintf(w, `{"outcome":"queued","task_id":%q}`+"\n", task.ID)
	return d
}

// resolveCheckRunTask fills the issue of a check-run control that GitHub
// listed no pull request for, from the task its external_id names, so the
// control is indexed under the right issue. A failed lookup leaves it to the
// dispatcher, which reports the unknown task.
func (h *Handler) resolveCheckRunTask(ctx context.Context, t *agentbot.Task) {
	tr := &t.Trigger
	if tr.Kind != agentbot.KindControl || tr.Issue.Number != 0 || tr.ExternalID == "" || len(tr.ExternalID) > 64 {
		return
	}
	target, err := h.store.Get(ctx, tr.ExternalID)
	if err != nil {
		return
	}
	if target.Ref().Repo.FullName() != tr.Issue.Repo.FullName() {
		return // a task of another repository: never trust a cross-repo reference
	}
	tr.Issue.Number = target.Ref().Number
	tr.IsPullRequest = target.Trigger.IsPullRequest
}

// ValidSignature reports whether header is "sha256=<hex HMAC-SHA256 of body
// under secret>", comparing in constant time. An empty secret never
// validates.
func ValidSignature(secret []byte, header string, body []byte) bool {
	if len(secret) == 0 {
		return false
	}
	hexSig, ok := strings.CutPrefix(header, "sha256=")
	if !ok || len(hexSig) != 2*sha256.Size {
		return false
	}
	got := make([]byte, sha256.Size)
	if _, err := hex.Decode(got, []byte(hexSig)); err != nil {
		return false
	}
	mac := hmac.New(sha256.New, secret)
	mac.Write(body)
	return hmac.Equal(got, mac.Sum(nil))
}

// Signature is the X-Hub-Signature-256 value GitHub sends for body.
func Signature(secret, body []byte) string {
	mac := hmac.New(sha256.New, secret)
	mac.Write(body)
	return "sha256=" + hex.EncodeToString(mac.Sum(nil))
}

// formPayload returns the JSON payload: the body itself, or the "payload"
// field when the hook was configured for form encoding (the signature covers
// the raw body either way).
func formPayload(contentType string, body []byte) ([]byte, error) {
	mt, _, _ := mime.ParseMediaType(contentType)
	if mt != "application/x-www-form-urlencoded" {
		return body, nil
	}
	form, err := url.ParseQuery(string(body))
	if err != nil {
		return nil, errors.New("malformed form body")
	}
	p := form.Get("payload")
	if p == "" {
		return nil, errors.New("form body has no payload field")
	}
	return []byte(p), nil
}

func printableASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x21 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// clip bounds a value from the request before it reaches a log line.
func clip(s string) string {
	const maxLen = 200
	if len(s) > maxLen {
		return s[:maxLen] + "…"
	}
	return s
}

// eventLabel keeps the metric's event label to a fixed set.
func eventLabel(event string) string {
	switch event {
	case "issues", "issue_comment", "check_run", "ping", "pull_request_review_comment", "pull_request_review":
		return event
	case "":
		return "none"
	}
	return "other"
}
