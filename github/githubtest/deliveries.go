package githubtest

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// redeliveryWindow is how far back GitHub lets a delivery be redelivered.
const redeliveryWindow = 3 * 24 * time.Hour

// Delivery is one attempt in the App's webhook delivery log, as GitHub
// lists it: a redelivery is a new attempt (new ID) of the same GUID.
type Delivery struct {
	ID          int64
	GUID        string
	DeliveredAt time.Time
	Redelivery  bool
	// StatusCode is the webhook's answer; 0 when there was none
	// (connection refused, timeout).
	StatusCode     int
	Event, Action  string
	InstallationID int64
	// Payload is the body a redelivery sends again.
	Payload []byte
}

// hookLog is the fake's side of the App's webhook: where it delivers, and
// the delivery log.
type hookLog struct {
	url, secret string
	deliveries  []*Delivery // oldest first
	// pending counts redeliveries not yet sent; done (on Server.mu) is
	// signalled as each is logged.
	pending int
	done    *sync.Cond
}

func (s *Server) hookDone() *sync.Cond {
	if s.hooks.done == nil {
		s.hooks.done = sync.NewCond(&s.mu)
	}
	return s.hooks.done
}

// SetWebhook makes Deliver and redeliveries POST to url, signed with secret.
func (s *Server) SetWebhook(url, secret string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.hooks.url, s.hooks.secret = url, secret
}

// AddDelivery puts an attempt in the delivery log as if GitHub had made it
// (nothing is sent) and returns it with its ID. A zero DeliveredAt means now, an
// empty GUID a fresh one.
func (s *Server) AddDelivery(d Delivery) Delivery {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.addDeliveryLocked(d)
}

func (s *Server) addDeliveryLocked(d Delivery) Delivery {
	d.ID = s.newID()
	if d.DeliveredAt.IsZero() {
		d.DeliveredAt = s.now()
	}
	if d.GUID == "" {
		d.GUID = newGUID()
	}
	d.Payload = bytes.Clone(d.Payload)
	// The log is in time order, as GitHub's is, whatever order tests add
	// attempts in.
	i, _ := slices.BinarySearchFunc(s.hooks.deliveries, d.DeliveredAt, func(e *Delivery, at time.Time) int {
		if e.DeliveredAt.After(at) {
			return 1
		}
		return -1
	})
	s.hooks.deliveries = slices.Insert(s.hooks.deliveries, i, &d)
	return d
}

// Deliver sends a webhook to the URL SetWebhook named, as GitHub would,
// logs the attempt with the answer's status (0 when nothing answered) and
// returns it.
func (s *Server) Deliver(event, action string, installationID int64, payload []byte) Delivery {
	s.mu.Lock()
	url, secret := s.hooks.url, s.hooks.secret
	s.mu.Unlock()
	guid := newGUID()
	status := post(url, secret, event, guid, payload)
	return s.AddDelivery(Delivery{GUID: guid, StatusCode: status, Event: event, Action: action, InstallationID: installationID, Payload: payload})
}

// Deliveries returns the delivery log, oldest first.
func (s *Server) Deliveries() []Delivery {
	s.WaitRedeliveries()
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Delivery, 0, len(s.hooks.deliveries))
	for _, d := range s.hooks.deliveries {
		out = append(out, *d)
	}
	return out
}

// WaitRedeliveries waits for the redeliveries requested so far to be sent
// and logged.
func (s *Server) WaitRedeliveries() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for s.hooks.pending > 0 {
		s.hookDone().Wait()
	}
}

func post(url, secret, event, guid string, payload []byte) int {
	if url == "" {
		return 0
	}
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(payload))
	if err != nil {
		return 0
	}
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write(payload)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-GitHub-Event", event)
	req.Header.Set("X-GitHub-Delivery", guid)
	req.Header.Set("X-Hub-Signature-256", "sha256="+hex.EncodeToString(mac.Sum(nil)))
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		return 0 // GitHub logs a failed attempt with no status
	}
	resp.Body.Close()
	return resp.StatusCode
}

func newGUID() string {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		panic(fmt.Sprintf("githubtest: random: %v", err))
	}
	h := hex.EncodeToString(b)
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

func deliveryJSON(d *Delivery) map[string]any {
	status := "OK"
	if d.StatusCode == 0 {
		status = "Invalid HTTP Response: 0"
	} else if d.StatusCode < 200 || d.StatusCode > 299 {
		status = "Invalid HTTP Response: " + strconv.Itoa(d.StatusCode)
	}
	var action any
	if d.Action != "" {
		action = d.Action
	}
	return map[string]any{
		"id": d.ID, "guid": d.GUID, "delivered_at": d.DeliveredAt.UTC().Format(time.RFC3339),
		"redelivery": d.Redelivery, "duration": 0.1, "status": status, "status_code": d.StatusCode,
		"event": d.Event, "action": action, "installation_id": d.InstallationID, "repository_id": nil,
		"throttled_at": nil,
	}
}

// listDeliveries answers GET /app/hook/deliveries: newest first, per_page
// at most 100, paged by an opaque cursor in the Link header (GitHub pages
// this log by cursor, not by page number).
func (s *Server) listDeliveries(q *req) {
	query := q.r.URL.Query()
	for k := range query {
		if k != "per_page" && k != "cursor" {
			validationError(q.w, "Invalid request.\n\n"+k+" is not a permitted key.")
			return
		}
	}
	perPage := 30
	if v := query.Get("per_page"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 || n > 100 {
			validationError(q.w, "per_page must be between 1 and 100")
			return
		}
		perPage = n
	}
	// The cursor is the ID of the last attempt of the previous page.
	after := int64(-1)
	if c := query.Get("cursor"); c != "" {
		n, err := strconv.ParseInt(strings.TrimPrefix(c, "v1_"), 10, 64)
		if !strings.HasPrefix(c, "v1_") || err != nil {
			validationError(q.w, "Invalid cursor")
			return
		}
		after = n
	}
	var page []any
	var last int64
	more := false
	started := after < 0
	for _, d := range slices.Backward(s.hooks.deliveries) {
		if !started {
			started = d.ID == after
			continue
		}
		if len(page) == perPage {
			more = true
			break
		}
		page = append(page, deliveryJSON(d))
		last = d.ID
	}
	if more {
		next := *q.r.URL
		query.Set("cursor", "v1_"+strconv.FormatInt(last, 10))
		next.RawQuery = query.Encode()
		q.w.Header().Set("Link", fmt.Sprintf("<%s%s>; rel=\"next\"", strings.TrimSuffix(s.URL, "/"), next.RequestURI()))
	}
	if page == nil {
		page = []any{}
	}
	writeJSON(q.w, http.StatusOK, page)
}

// redeliver answers POST /app/hook/deliveries/{id}/attempts: 202, and the
// payload is sent again (afterwards, as GitHub does) under the same GUID,
// logged as a new attempt. An attempt older than three days is refused.
func (s *Server) redeliver(q *req) {
	id, ok := q.intParam("id")
	if !ok {
		return
	}
	i := slices.IndexFunc(s.hooks.deliveries, func(d *Delivery) bool { return d.ID == id })
	if i < 0 {
		writeError(q.w, http.StatusNotFound, "Not Found")
		return
	}
	orig := *s.hooks.deliveries[i]
	if s.now().Sub(orig.DeliveredAt) > redeliveryWindow {
		validationError(q.w, "Validation Failed", map[string]string{"resource": "HookDelivery", "code": "invalid", "message": "This delivery is too old to be redelivered"})
		return
	}
	url, secret := s.hooks.url, s.hooks.secret
	s.hooks.pending++
	go func() {
		status := post(url, secret, orig.Event, orig.GUID, orig.Payload)
		redo := orig
		redo.DeliveredAt, redo.Redelivery, redo.StatusCode = time.Time{}, true, status
		s.mu.Lock()
		defer s.mu.Unlock()
		s.addDeliveryLocked(redo)
		s.hooks.pending--
		s.hookDone().Broadcast()
	}()
	writeJSON(q.w, http.StatusAccepted, map[string]any{})
}
