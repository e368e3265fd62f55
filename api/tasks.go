package api

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"
	"time"

	"github.com/agentbot/agentbot"
)

// maxRequestBytes bounds a create request (the prompt is most of it).
const maxRequestBytes = 128 << 10

// CreateRequest is the body of POST /api/v1/tasks.
type CreateRequest struct {
	Repo       string `json:"repo"`
	Prompt     string `json:"prompt"`
	BaseBranch string `json:"base_branch,omitempty"`
	Template   string `json:"template,omitempty"`
	Agent      string `json:"agent,omitempty"`
	Model      string `json:"model,omitempty"`
	OpenPR     *bool  `json:"open_pr,omitempty"`
	Issue      int    `json:"issue,omitempty"`
}

// TaskView is a task as the API shows it.
type TaskView struct {
	ID         string     `json:"id"`
	URL        string     `json:"url,omitempty"`
	Repo       string     `json:"repo"`
	Issue      int        `json:"issue,omitempty"`
	Kind       string     `json:"kind"`
	State      string     `json:"state"`
	Phase      string     `json:"phase,omitempty"`
	CreatedAt  time.Time  `json:"created_at"`
	StartedAt  *time.Time `json:"started_at,omitempty"`
	FinishedAt *time.Time `json:"finished_at,omitempty"`
	Result     ResultView `json:"result"`
}

// ResultView is what a finished task produced.
type ResultView struct {
	Branch      string  `json:"branch,omitempty"`
	Commit      string  `json:"commit,omitempty"`
	PRNumber    int     `json:"pr_number,omitempty"`
	PRURL       string  `json:"pr_url,omitempty"`
	CostUSD     float64 `json:"cost_usd,omitempty"`
	Summary     string  `json:"summary,omitempty"`
	NoChanges   bool    `json:"no_changes,omitempty"`
	Error       string  `json:"error,omitempty"`
	FailedPhase string  `json:"failed_phase,omitempty"`
}

func (h *Handler) view(t *agentbot.Task) TaskView {
	v := TaskView{
		ID: t.ID, Repo: t.Ref().Repo.FullName(), Issue: t.Ref().Number, Kind: string(t.Trigger.Kind),
		State: string(t.State), Phase: t.Phase, CreatedAt: t.CreatedAt,
		Result: ResultView{
			Branch: t.Result.Branch, Commit: t.Result.Commit, PRNumber: t.Result.PRNumber, PRURL: t.Result.PRURL,
			CostUSD: t.Result.CostUSD, Summary: t.Result.Summary, NoChanges: t.Result.NoChanges,
			Error: t.Result.Error, FailedPhase: t.Result.FailedPhase,
		},
	}
	if h.opts.PublicURL != "" {
		v.URL = strings.TrimRight(h.opts.PublicURL, "/") + "/tasks/" + t.ID
	}
	if !t.StartedAt.IsZero() {
		s := t.FirstStartedAt
		if s.IsZero() {
			s = t.StartedAt
		}
		v.StartedAt = &s
	}
	if !t.FinishedAt.IsZero() {
		f := t.FinishedAt
		v.FinishedAt = &f
	}
	return v
}

var (
	repoPattern = regexp.MustCompile(`^[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})/[A-Za-z0-9._-]{1,100}$`)
	keyPattern  = regexp.MustCompile(`^[\x21-\x7e]{1,200}$`)
	refPattern  = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._/-]{0,199}$`)
)

// create stores a new task and answers 201 — or, for an Idempotency-Key
// this token used before, 200 with the task that request made.
func (h *Handler) create(w http.ResponseWriter, r *http.Request, tok Token) {
	var req CreateRequest
	dec := json.NewDecoder(io.LimitReader(r.Body, maxRequestBytes+1))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		writeError(w, http.StatusBadRequest, "the body must be a JSON task request: "+err.Error())
		return
	}
	trig, problem := triggerOf(req, tok)
	if problem != "" {
		writeError(w, http.StatusUnprocessableEntity, problem)
		return
	}
	if !tok.allows(req.Repo) {
		writeError(w, http.StatusForbidden, fmt.Sprintf("this token may not create tasks for %s", req.Repo))
		return
	}
	deliveryID, err := deliveryID(tok, r.Header.Get("Idempotency-Key"))
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	t := &agentbot.Task{Event: "api", Trigger: trig}
	created, err := h.opts.Store.CreateTask(r.Context(), deliveryID, t)
	if err != nil {
		h.opts.Logger.Error("cannot store API task", "repo", req.Repo, "err", err)
		writeError(w, http.StatusServiceUnavailable, "agentbot could not store the task; try again")
		return
	}
	if !created {
		h.replay(w, r, deliveryID)
		return
	}
	h.opts.Notify(t)
	h.opts.Logger.Info("task created through the API", "task_id", t.ID, "repo", req.Repo, "issue", trig.Issue.Number, "token", tok.Name)
	writeJSON(w, http.StatusCreated, h.view(t))
}

// replay answers a repeated Idempotency-Key with the task it created.
func (h *Handler) replay(w http.ResponseWriter, r *http.Request, deliveryID string) {
	tasks, err := h.opts.Store.List(r.Context(), 1000)
	if err == nil {
		for _, t := range tasks {
			if t.DeliveryID == deliveryID {
				writeJSON(w, http.StatusOK, h.view(t))
				return
			}
		}
	}
	writeError(w, http.StatusConflict, "this Idempotency-Key was used before, for a task agentbot no longer lists")
}

// deliveryID is the store's dedup key: the token and its Idempotency-Key,
// or a random one when none is given.
func deliveryID(tok Token, key string) (string, error) {
	if key == "" {
		b := make([]byte, 12)
		if _, err := rand.Read(b); err != nil {
			return "", fmt.Errorf("cannot make a request id: %w", err)
		}
		return "api-" + hex.EncodeToString(b), nil
	}
	if !keyPattern.MatchString(key) {
		return "", errors.New("Idempotency-Key must be 1 to 200 printable ASCII characters")
	}
	return "api-" + tokenID(tok) + "-" + key, nil
}
