// Package fakeanthropic is a small fake of the Anthropic Messages API for
// tests that run the real Claude Code CLI hermetically (ANTHROPIC_BASE_URL
// pointing here). It answers POST /v1/messages, streamed as server-sent
// events (message_start, content_block_start, content_block_delta with
// text_delta or input_json_delta, content_block_stop, message_delta,
// message_stop) or as one JSON message, with scripted turns, and records
// every request it gets.
//
// The main conversation is the one whose requests offer tools: its n-th
// request (n = the assistant messages already in it) gets Turns[n], and
// every request past the script gets a plain end_turn. Requests without
// tools (Claude Code's helper calls, such as titles or quota checks) get a
// short text answer; POST /v1/messages/count_tokens gets a count. Anything
// else is answered 404 and recorded, so a test can see what was asked.
package fakeanthropic

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
)

// Turn is one scripted answer of the main conversation: optional text, then
// tool uses. StopReason defaults to "tool_use" when there are tool uses,
// else "end_turn".
type Turn struct {
	Text       string
	ToolUses   []ToolUse
	StopReason string
}

// ToolUse asks Claude Code to run one of its tools (Write, Edit, Read,
// Bash, …) with Input, which is JSON-encoded.
type ToolUse struct {
	Name  string
	Input any
}

// Request is what the fake recorded of one request.
type Request struct {
	Method string
	Path   string
	Query  string
	// APIKey is the x-api-key header (or the bearer token) it came with.
	APIKey string
	Model  string
	Stream bool
	// Tools is how many tools the request offered; Main is true for the
	// main conversation (Tools > 0).
	Tools    int
	Main     bool
	Messages int
	// ToolResults are the tool_result blocks of the last user message, as
	// text, so a test can see what Claude Code's tools answered.
	ToolResults []string
	// Results are the same tool_result blocks in full: which tool use each
	// answers (and the tool's name, when the fake scripted that use) and
	// whether Claude Code marked it an error (a failed command, a refused
	// permission).
	Results []ToolResult
	// UserText is the text of the last user message (for the first request
	// of a conversation: the prompt, with whatever Claude Code adds).
	UserText string
	// Answer is "turn N", "final", "helper", "count_tokens" or "404".
	Answer string
}

// ToolResult is one tool_result block a request carried.
type ToolResult struct {
	ToolUseID string
	// Tool is the name of the scripted tool use it answers ("" when the
	// fake did not hand out ToolUseID).
	Tool    string
	Text    string
	IsError bool
}

// The usage the fake reports for every message it answers; Claude Code
// computes its cost from it.
const (
	InputTokens  = 1200
	OutputTokens = 80
)

// FinalText is the answer past the end of the script.
const FinalText = "Done."

// Server is the fake API.
type Server struct {
	URL string

	srv   *httptest.Server
	turns []Turn

	mu       sync.Mutex
	requests []Request
	nextID   int
	// tools names the tool uses the fake handed out, by id.
	tools map[string]string
}

// New starts the fake on loopback with the main conversation's turns.
func New(t testing.TB, turns ...Turn) *Server {
	t.Helper()
	return NewAt(t, "127.0.0.1", turns...)
}

// NewAt starts the fake listening on ip (on a free port): a real node's
// pods reach the host on its bridge address, not on loopback.
func NewAt(t testing.TB, ip string, turns ...Turn) *Server {
	t.Helper()
	s := &Server{turns: turns}
	s.srv = httptest.NewUnstartedServer(http.HandlerFunc(s.serve))
	l, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatalf("fakeanthropic: listen on %s: %v", ip, err)
	}
	s.srv.Listener.Close()
	s.srv.Listener = l
	s.srv.Start()
	t.Cleanup(s.srv.Close)
	s.URL = s.srv.URL
	return s
}

// Requests lists the requests so far.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Request(nil), s.requests...)
}

// ToolResults lists the tool_result blocks, in order, that answered the
// fake's scripted uses of tool (every one when tool is "").
func (s *Server) ToolResults(tool string) []ToolResult {
	var out []ToolResult
	for _, r := range s.Requests() {
		for _, tr := range r.Results {
			if tool == "" || tr.Tool == tool {
				out = append(out, tr)
			}
		}
	}
	return out
}

// messagesRequest is the part of a Messages API request the fake reads.
type messagesRequest struct {
	Model    string            `json:"model"`
	Stream   bool              `json:"stream"`
	Tools    []json.RawMessage `json:"tools"`
	Messages []struct {
		Role    string          `json:"role"`
		Content json.RawMessage `json:"content"`
	} `json:"messages"`
}

func (s *Server) record(r Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.requests = append(s.requests, r)
}

func (s *Server) id(prefix string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.nextID++
	return fmt.Sprintf("%s_fake%04d", prefix, s.nextID)
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	rec := Request{Method: r.Method, Path: r.URL.Path, Query: r.URL.RawQuery, APIKey: r.Header.Get("x-api-key")}
	if rec.APIKey == "" {
		rec.APIKey = strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
	}
	body, _ := io.ReadAll(io.LimitReader(r.Body, 64<<20))
	switch {
	case r.Method == http.MethodPost && r.URL.Path == "/v1/messages/count_tokens":
		rec.Answer = "count_tokens"
		s.record(rec)
		writeJSON(w, map[string]any{"input_tokens": InputTokens})
		return
	case r.Method == http.MethodPost && r.URL.Path == "/v1/messages":
	default:
		rec.Answer = "404"
		s.record(rec)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusNotFound)
		writeJSONBody(w, apiError("not_found_error", "fakeanthropic: no "+r.Method+" "+r.URL.Path))
		return
	}
	var req messagesRequest
	if err := json.Unmarshal(body, &req); err != nil {
		rec.Answer = "400"
		s.record(rec)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		writeJSONBody(w, apiError("invalid_request_error", "fakeanthropic: "+err.Error()))
		return
	}
	rec.Model, rec.Stream, rec.Tools, rec.Messages = req.Model, req.Stream, len(req.Tools), len(req.Messages)
	rec.Main = rec.Tools > 0
	if n := len(req.Messages); n > 0 && req.Messages[n-1].Role == "user" {
		rec.Results = s.toolResults(req.Messages[n-1].Content)
		for _, tr := range rec.Results {
			rec.ToolResults = append(rec.ToolResults, tr.Text)
		}
		rec.UserText = userText(req.Messages[n-1].Content)
	}

	var turn Turn
	switch {
	case rec.Main:
		n := 0
		for _, m := range req.Messages {
			if m.Role == "assistant" {
				n++
			}
		}
		if n < len(s.turns) {
			turn, rec.Answer = s.turns[n], fmt.Sprintf("turn %d", n)
		} else {
			turn, rec.Answer = Turn{Text: FinalText}, "final"
		}
	default:
		turn, rec.Answer = Turn{Text: "agentbot task"}, "helper"
	}
	s.record(rec)
	if turn.StopReason == "" {
		turn.StopReason = "end_turn"
		if len(turn.ToolUses) > 0 {
			turn.StopReason = "tool_use"
		}
	}
	blocks := s.blocks(turn)
	if req.Stream {
		s.stream(w, req.Model, turn.StopReason, blocks)
		return
	}
	writeJSON(w, map[string]any{
		"id": s.id("msg"), "type": "message", "role": "assistant", "model": req.Model,
		"content": blocks, "stop_reason": turn.StopReason, "stop_sequence": nil,
		"usage": map[string]any{"input_tokens": InputTokens, "output_tokens": OutputTokens},
	})
}

// block is a content block of an answer.
type block struct {
	Type  string          `json:"type"`
	Text  string          `json:"text,omitempty"`
	ID    string          `json:"id,omitempty"`
	Name  string          `json:"name,omitempty"`
	Input json.RawMessage `json:"input,omitempty"`
}

func (s *Server) blocks(turn Turn) []block {
	var bs []block
	if turn.Text != "" {
		bs = append(bs, block{Type: "text", Text: turn.Text})
	}
	for _, tu := range turn.ToolUses {
		in, err := json.Marshal(tu.Input)
		if err != nil || string(in) == "null" {
			in = []byte("{}")
		}
		id := s.id("toolu")
		s.mu.Lock()
		if s.tools == nil {
			s.tools = map[string]string{}
		}
		s.tools[id] = tu.Name
		s.mu.Unlock()
		bs = append(bs, block{Type: "tool_use", ID: id, Name: tu.Name, Input: in})
	}
	return bs
}

// stream writes the answer as the Messages API's server-sent events. Text
// and tool input arrive in two deltas each, as real streams split them.
func (s *Server) stream(w http.ResponseWriter, model, stopReason string, blocks []block) {
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	flusher, _ := w.(http.Flusher)
	send := func(event string, data any) {
		b, _ := json.Marshal(data)
		fmt.Fprintf(w, "event: %s\ndata: %s\n\n", event, b)
		if flusher != nil {
			flusher.Flush()
		}
	}
	send("message_start", map[string]any{"type": "message_start", "message": map[string]any{
		"id": s.id("msg"), "type": "message", "role": "assistant", "model": model, "content": []any{},
		"stop_reason": nil, "stop_sequence": nil,
		"usage": map[string]any{"input_tokens": InputTokens, "output_tokens": 1, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0},
	}})
	send("ping", map[string]any{"type": "ping"})
	for i, b := range blocks {
		switch b.Type {
		case "text":
			send("content_block_start", map[string]any{"type": "content_block_start", "index": i, "content_block": map[string]any{"type": "text", "text": ""}})
			for _, part := range halves(b.Text) {
				send("content_block_delta", map[string]any{"type": "content_block_delta", "index": i, "delta": map[string]any{"type": "text_delta", "text": part}})
			}
		case "tool_use":
			send("content_block_start", map[string]any{"type": "content_block_start", "index": i, "content_block": map[string]any{"type": "tool_use", "id": b.ID, "name": b.Name, "input": map[string]any{}}})
			for _, part := range halves(string(b.Input)) {
				send("content_block_delta", map[string]any{"type": "content_block_delta", "index": i, "delta": map[string]any{"type": "input_json_delta", "partial_json": part}})
			}
		}
		send("content_block_stop", map[string]any{"type": "content_block_stop", "index": i})
	}
	send("message_delta", map[string]any{"type": "message_delta",
		"delta": map[string]any{"stop_reason": stopReason, "stop_sequence": nil},
		"usage": map[string]any{"output_tokens": OutputTokens}})
	send("message_stop", map[string]any{"type": "message_stop"})
}

// halves splits s in two on a rune boundary.
func halves(s string) []string {
	r := []rune(s)
	if len(r) < 2 {
		return []string{s}
	}
	return []string{string(r[:len(r)/2]), string(r[len(r)/2:])}
}

func (s *Server) toolResults(content json.RawMessage) []ToolResult {
	var blocks []struct {
		Type      string          `json:"type"`
		ToolUseID string          `json:"tool_use_id"`
		IsError   bool            `json:"is_error"`
		Content   json.RawMessage `json:"content"`
	}
	if json.Unmarshal(content, &blocks) != nil {
		return nil
	}
	var out []ToolResult
	for _, b := range blocks {
		if b.Type != "tool_result" {
			continue
		}
		s.mu.Lock()
		tool := s.tools[b.ToolUseID]
		s.mu.Unlock()
		out = append(out, ToolResult{ToolUseID: b.ToolUseID, Tool: tool, Text: resultText(b.Content), IsError: b.IsError})
	}
	return out
}

// resultText is a tool_result's content as text: a string, or the text of
// its blocks joined by spaces.
func resultText(content json.RawMessage) string {
	var s string
	if json.Unmarshal(content, &s) == nil {
		return s
	}
	var parts []struct {
		Text string `json:"text"`
	}
	if json.Unmarshal(content, &parts) == nil {
		var texts []string
		for _, p := range parts {
			texts = append(texts, p.Text)
		}
		return strings.Join(texts, " ")
	}
	return string(content)
}

func userText(content json.RawMessage) string {
	var s string
	if json.Unmarshal(content, &s) == nil {
		return s
	}
	var blocks []struct {
		Type string `json:"type"`
		Text string `json:"text"`
	}
	if json.Unmarshal(content, &blocks) != nil {
		return ""
	}
	var texts []string
	for _, b := range blocks {
		if b.Type == "text" {
			texts = append(texts, b.Text)
		}
	}
	return strings.Join(texts, "\n")
}

func apiError(typ, msg string) map[string]any {
	return map[string]any{"type": "error", "error": map[string]any{"type": typ, "message": msg}}
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	writeJSONBody(w, v)
}

func writeJSONBody(w http.ResponseWriter, v any) {
	b, _ := json.Marshal(v)
	_, _ = w.Write(b)
}
