package webhook

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/agentbot/agentbot"
	"github.com/agentbot/agentbot/state"
)

var seedFiles = []struct{ event, file string }{
	{"issues", "issues.labeled.json"},
	{"issue_comment", "issue_comment.created.issue.json"},
	{"issue_comment", "issue_comment.created.pr.json"},
	{"check_run", "check_run.requested_action.json"},
	{"check_run", "check_run.rerequested.json"},
	{"ping", "ping.json"},
}

// FuzzParse checks that no payload makes the trigger parser panic, and that
// every decision it takes is one the rest of agentbot can act on.
func FuzzParse(f *testing.F) {
	for _, s := range seedFiles {
		f.Add(s.event, payload(f, s.file))
	}
	f.Add("issue_comment", []byte(`{"action":"created","issue":{"number":1,"pull_request":null},"comment":{"body":"/agent cancel"},"repository":{"name":"r","owner":{"login":"o"}},"installation":{"id":1},"sender":{"login":"u"}}`))
	f.Add("issues", []byte(`{"action":"labeled","label":{"name":"AGENT-TASK"},"issue":{"number":-1}}`))
	f.Add("check_run", []byte(`{"action":"requested_action","requested_action":{"identifier":"retry"},"check_run":{"pull_requests":[{"number":0}]}}`))
	f.Add("push", []byte(`[]`))
	f.Add("issues", []byte(`{"action":null}`))
	f.Fuzz(func(t *testing.T, event string, body []byte) {
		tr, err := Parse(event, body, ParseOptions{})
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v does not wrap ErrMalformed", err)
			}
			return
		}
		if tr.Ignored() {
			if tr.Reason == "" {
				t.Fatal("ignored without a reason")
			}
			return
		}
		if !json.Valid(body) {
			t.Fatal("acted on invalid JSON")
		}
		switch {
		case tr.Kind != agentbot.KindNew && tr.Kind != agentbot.KindFollowUp && tr.Kind != agentbot.KindControl:
			t.Fatalf("unknown kind %q", tr.Kind)
		case tr.Issue.Repo.Owner == "" || tr.Issue.Repo.Name == "" || tr.InstallationID == 0:
			t.Fatalf("acted without repository or installation: %+v", tr)
		case agentbot.IsBot(tr.Sender.Login, ""):
			t.Fatalf("acted for a bot: %+v", tr)
		case tr.Kind == agentbot.KindControl && !slices.Contains(controls, tr.Control):
			t.Fatalf("unknown control %q", tr.Control)
		case tr.Kind != agentbot.KindControl && (tr.Control != "" || tr.Issue.Number <= 0):
			t.Fatalf("bad run trigger %+v", tr)
		case tr.Kind == agentbot.KindFollowUp && !tr.IsPullRequest:
			t.Fatalf("follow-up not on a pull request: %+v", tr)
		}
	})
}

// FuzzParseComment checks the comment parser never panics and keeps its
// promises: a control carries no instructions, quoted or indented lines
// never match.
func FuzzParseComment(f *testing.F) {
	for _, s := range []string{
		"/agent", "/agent fix it\nmore", "/agent cancel", "> /agent x", "```\n/agent\n```",
		"<!--\n/agent\n-->", "   /agent go", "\t/agent", "/agents", "/AGENT HELP", "~~~~\n~~~\n/agent\n~~~~\n/agent y",
		"\r\n/agent\r\n", "<!--", "```", "/agent \u00a0cancel",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, body string) {
		cmd := ParseComment(body)
		if !cmd.Found && cmd != (Command{}) {
			t.Fatalf("not found but %+v", cmd)
		}
		if cmd.Control != "" && cmd.Instructions != "" {
			t.Fatalf("control with instructions: %+v", cmd)
		}
		if !strings.Contains(strings.ToLower(body), "/agent") && cmd.Found {
			t.Fatalf("found a command in %q", body)
		}
		// Quoting every line never leaves a command.
		quoted := "> " + strings.ReplaceAll(strings.ReplaceAll(body, "\r", ""), "\n", "\n> ")
		if c := ParseComment(quoted); c.Found {
			t.Fatalf("quoted body %q matched %+v", quoted, c)
		}
	})
}

// FuzzIntake drives the whole handler (signature, headers, body cap, parse,
// durable store) with arbitrary deliveries and checks that only a 202
// changes what is stored, and that a 202's task is really there.
func FuzzIntake(f *testing.F) {
	store, err := state.Open(filepath.Join(f.TempDir(), "fuzz.db"), state.Options{})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { store.Close() })
	h, err := New(Config{Secret: secret, Store: store, MaxBody: 32 << 10, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		f.Fatal(err)
	}
	for _, s := range seedFiles {
		f.Add(s.event, "seed-"+s.file, payload(f, s.file), true)
		f.Add(s.event, "unsigned-"+s.file, payload(f, s.file), false)
	}
	f.Add("issues", "x", []byte(`{`), true)
	f.Add("", "", []byte(`{}`), true)
	f.Fuzz(func(t *testing.T, event, deliveryID string, body []byte, sign bool) {
		req := httptest.NewRequest(http.MethodPost, "/webhook", bytes.NewReader(body))
		req.Header.Set("X-GitHub-Event", event)
		req.Header.Set("X-GitHub-Delivery", deliveryID)
		if sign {
			req.Header.Set("X-Hub-Signature-256", Signature(secret, body))
		}
		seenBefore := seen(t, store, deliveryID)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)

		switch rec.Code {
		case http.StatusAccepted:
			var resp struct {
				TaskID string `json:"task_id"`
			}
			if err := json.Unmarshal(rec.Body.Bytes(), &resp); err != nil {
				t.Fatalf("202 body %q: %v", rec.Body, err)
			}
			task, err := store.Get(context.Background(), resp.TaskID)
			if err != nil || task.DeliveryID != deliveryID || seenBefore {
				t.Fatalf("202 for delivery %q (seen before: %v) but task %v, %v", deliveryID, seenBefore, task, err)
			}
			return
		case http.StatusOK:
			if event != "ping" && !seenBefore {
				t.Fatalf("200 for an unseen delivery %q: %q", deliveryID, rec.Body)
			}
		case http.StatusNoContent, http.StatusBadRequest, http.StatusRequestEntityTooLarge:
		case http.StatusUnauthorized:
			if sign {
				t.Fatalf("signed delivery refused with 401")
			}
		default:
			t.Fatalf("unexpected status %d: %q", rec.Code, rec.Body)
		}
		if !sign && rec.Code != http.StatusUnauthorized && rec.Code != http.StatusRequestEntityTooLarge {
			t.Fatalf("unsigned delivery answered %d", rec.Code)
		}
		if seen(t, store, deliveryID) != seenBefore {
			t.Fatalf("status %d recorded delivery %q", rec.Code, deliveryID)
		}
	})
}

func seen(t *testing.T, s *state.Store, id string) bool {
	if id == "" || len(id) > state.MaxDeliveryIDLen {
		return false
	}
	ok, err := s.SeenDelivery(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return ok
}
