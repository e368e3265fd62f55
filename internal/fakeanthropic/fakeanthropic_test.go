package fakeanthropic

import (
	"bufio"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
)

func post(t *testing.T, url, body string) *http.Response {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("x-api-key", "k")
	req.Header.Set("content-type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

// sse reads a server-sent event stream into (event, data) pairs.
func sse(t *testing.T, r io.Reader) [][2]string {
	t.Helper()
	var out [][2]string
	var event string
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "event: "):
			event = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			out = append(out, [2]string{event, strings.TrimPrefix(line, "data: ")})
		}
	}
	return out
}

const tools = `"tools":[{"name":"Write","input_schema":{"type":"object"}}]`

func TestStreamsScriptedTurns(t *testing.T) {
	s := New(t,
		Turn{Text: "Writing.", ToolUses: []ToolUse{{Name: "Write", Input: map[string]string{"file_path": "/r/a.txt", "content": "x"}}}},
		Turn{Text: "All done."},
	)
	first := post(t, s.URL+"/v1/messages?beta=true", `{"model":"m","stream":true,`+tools+`,"messages":[{"role":"user","content":"go"}]}`)
	if ct := first.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("content type %q", ct)
	}
	evs := sse(t, first.Body)
	var names []string
	var text, input string
	for _, e := range evs {
		names = append(names, e[0])
		var d struct {
			Delta struct {
				Type        string `json:"type"`
				Text        string `json:"text"`
				PartialJSON string `json:"partial_json"`
				StopReason  string `json:"stop_reason"`
			} `json:"delta"`
		}
		if err := json.Unmarshal([]byte(e[1]), &d); err != nil {
			t.Fatalf("%s: %v", e[0], err)
		}
		switch {
		case d.Delta.Type == "text_delta":
			text += d.Delta.Text
		case d.Delta.Type == "input_json_delta":
			input += d.Delta.PartialJSON
		case e[0] == "message_delta" && d.Delta.StopReason != "tool_use":
			t.Errorf("stop_reason = %q, want tool_use", d.Delta.StopReason)
		}
	}
	want := "message_start ping content_block_start content_block_delta content_block_delta content_block_stop " +
		"content_block_start content_block_delta content_block_delta content_block_stop message_delta message_stop"
	if got := strings.Join(names, " "); got != want {
		t.Errorf("events:\n%s\nwant\n%s", got, want)
	}
	if text != "Writing." || input != `{"content":"x","file_path":"/r/a.txt"}` {
		t.Errorf("text %q, input %q", text, input)
	}

	// The second request of the conversation (one assistant message in it)
	// gets the second turn; one past the script gets FinalText.
	second := post(t, s.URL+"/v1/messages", `{"model":"m",`+tools+`,"messages":[{"role":"user","content":"go"},{"role":"assistant","content":[]},{"role":"user","content":[{"type":"tool_result","tool_use_id":"t","content":"ok"}]}]}`)
	var msg struct {
		Content []struct {
			Text string `json:"text"`
		} `json:"content"`
		StopReason string `json:"stop_reason"`
	}
	if err := json.NewDecoder(second.Body).Decode(&msg); err != nil {
		t.Fatal(err)
	}
	if len(msg.Content) != 1 || msg.Content[0].Text != "All done." || msg.StopReason != "end_turn" {
		t.Errorf("second answer = %+v", msg)
	}
	post(t, s.URL+"/v1/messages", `{"model":"m",`+tools+`,"messages":[{"role":"user","content":"a"},{"role":"assistant","content":[]},{"role":"user","content":"b"},{"role":"assistant","content":[]},{"role":"user","content":"c"}]}`)
	post(t, s.URL+"/v1/messages", `{"model":"haiku","max_tokens":1,"messages":[{"role":"user","content":"title?"}]}`)
	post(t, s.URL+"/v1/messages/count_tokens", `{}`)
	if resp := post(t, s.URL+"/v1/files", `{}`); resp.StatusCode != http.StatusNotFound {
		t.Errorf("unknown path answered %d", resp.StatusCode)
	}

	var answers []string
	for _, r := range s.Requests() {
		answers = append(answers, r.Answer)
		if r.APIKey != "k" {
			t.Errorf("api key %q", r.APIKey)
		}
	}
	if got := strings.Join(answers, ","); got != "turn 0,turn 1,final,helper,count_tokens,404" {
		t.Errorf("answers = %s", got)
	}
	if r := s.Requests()[1]; len(r.ToolResults) != 1 || r.ToolResults[0] != "ok" || r.Query != "" {
		t.Errorf("second request = %+v", r)
	}
	if r := s.Requests()[0]; r.UserText != "go" || r.Query != "beta=true" || !r.Stream || !r.Main {
		t.Errorf("first request = %+v", r)
	}
}

// TestToolResultsNameTheScriptedUse: a tool_result answering a tool use the
// fake handed out is recorded with that tool's name and its error flag.
func TestToolResultsNameTheScriptedUse(t *testing.T) {
	s := New(t, Turn{ToolUses: []ToolUse{{Name: "Bash", Input: map[string]string{"command": "sh test.sh"}}}})
	var msg struct {
		Content []struct {
			ID string `json:"id"`
		} `json:"content"`
	}
	if err := json.NewDecoder(post(t, s.URL+"/v1/messages", `{"model":"m",`+tools+`,"messages":[{"role":"user","content":"go"}]}`).Body).Decode(&msg); err != nil {
		t.Fatal(err)
	}
	if len(msg.Content) != 1 || msg.Content[0].ID == "" {
		t.Fatalf("answer = %+v", msg)
	}
	id := msg.Content[0].ID
	post(t, s.URL+"/v1/messages", `{"model":"m",`+tools+`,"messages":[{"role":"user","content":"go"},{"role":"assistant","content":[]},`+
		`{"role":"user","content":[{"type":"tool_result","tool_use_id":"`+id+`","is_error":true,"content":[{"type":"text","text":"denied"}]},`+
		`{"type":"tool_result","tool_use_id":"other","content":"x"}]}]}`)
	got := s.ToolResults("Bash")
	if len(got) != 1 || got[0] != (ToolResult{ToolUseID: id, Tool: "Bash", Text: "denied", IsError: true}) {
		t.Errorf("Bash results = %+v", got)
	}
	if all := s.ToolResults(""); len(all) != 2 || all[1].Tool != "" || all[1].IsError {
		t.Errorf("all results = %+v", all)
	}
}
