package api

import (
	"net/http"
	"sort"
	"strconv"

	"github.com/agentbot/agentbot"
)

// maxListed bounds GET /api/v1/tasks.
const maxListed = 1000

// get answers one task the token may see; another repository's is 404,
// as if it did not exist.
func (h *Handler) get(w http.ResponseWriter, r *http.Request, tok Token) {
	t, ok := h.visible(w, r, tok)
	if ok {
		writeJSON(w, http.StatusOK, h.view(t))
	}
}

func (h *Handler) visible(w http.ResponseWriter, r *http.Request, tok Token) (*agentbot.Task, bool) {
	id := r.PathValue("id")
	if agentbot.CheckTaskID(id) != nil {
		writeError(w, http.StatusNotFound, "no such task")
		return nil, false
	}
	t, err := h.opts.Store.Get(r.Context(), id)
	if err != nil || !tok.allows(t.Ref().Repo.FullName()) {
		writeError(w, http.StatusNotFound, "no such task")
		return nil, false
	}
	return t, true
}

// list answers the newest tasks the token may see, filtered by ?repo= and
// ?state=, newest first; ?limit= (default 50) at most 1000.
func (h *Handler) list(w http.ResponseWriter, r *http.Request, tok Token) {
	q := r.URL.Query()
	repo, state := q.Get("repo"), agentbot.TaskState(q.Get("state"))
	if state != "" && !state.Valid() {
		writeError(w, http.StatusBadRequest, "state must be queued, running, succeeded, failed or cancelled")
		return
	}
	limit := 50
	if l := q.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 || n > maxListed {
			writeError(w, http.StatusBadRequest, "limit must be a number from 1 to 1000")
			return
		}
		limit = n
	}
	if repo != "" && !tok.allows(repo) {
		writeError(w, http.StatusForbidden, "this token may not see tasks of "+repo)
		return
	}
	tasks, err := h.opts.Store.List(r.Context(), maxListed)
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, "agentbot could not list its tasks; try again")
		return
	}
	sort.Slice(tasks, func(i, j int) bool { return tasks[i].ID > tasks[j].ID })
	out := []TaskView{}
	for _, t := range tasks {
		full := t.Ref().Repo.FullName()
		if t.Trigger.Kind == agentbot.KindControl || !tok.allows(full) || (repo != "" && full != repo) || (state != "" && t.State != state) {
			continue
		}
		if out = append(out, h.view(t)); len(out) >= limit {
			break
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"tasks": out})
}

// control queues a cancel or retry of a task, carried out by the
// dispatcher like the check-run buttons, and answers 202.
func (h *Handler) control(c agentbot.Control) func(http.ResponseWriter, *http.Request, Token) {
	return func(w http.ResponseWriter, r *http.Request, tok Token) {
		t, ok := h.visible(w, r, tok)
		if !ok {
			return
		}
		if t.Trigger.Kind == agentbot.KindControl {
			writeError(w, http.StatusUnprocessableEntity, "a control command cannot be cancelled or retried")
			return
		}
		deliveryID, err := deliveryID(tok, r.Header.Get("Idempotency-Key"))
		if err != nil {
			writeError(w, http.StatusBadRequest, err.Error())
			return
		}
		ctl := &agentbot.Task{Event: "api", Trigger: agentbot.Trigger{
			Kind: agentbot.KindControl, Control: c, ExternalID: t.ID,
			InstallationID: t.Trigger.InstallationID, Issue: t.Ref(),
			Sender: agentbot.Sender{Login: tok.Name}, API: &agentbot.APIRequest{Token: tok.Name},
			Reason: "task API " + string(c),
		}}
		created, err := h.opts.Store.CreateTask(r.Context(), deliveryID+"-"+string(c), ctl)
		switch {
		case err != nil:
			writeError(w, http.StatusServiceUnavailable, "agentbot could not store the request; try again")
			return
		case created:
			h.opts.Notify(ctl)
		}
		writeJSON(w, http.StatusAccepted, map[string]any{"task": h.view(t), "accepted": string(c)})
	}
}
