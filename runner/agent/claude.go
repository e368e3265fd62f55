package agent

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/agentbot/agentbot/runner"
)

// maxArgPrompt is the longest prompt passed as an argument; Linux refuses a
// single argument of 128 KiB or more, so longer prompts go on standard input.
const maxArgPrompt = 100 << 10

// Claude runs Claude Code in print mode:
//
//	claude -p PROMPT --output-format stream-json --verbose \
//	    --permission-mode bypassPermissions [--tools T,... --allowedTools T,...] [--max-turns N] [--model M]
//
// bypassPermissions lets it use every tool, Bash included, without asking:
// the sandbox, not Claude Code's prompts, is the boundary. Claude Code
// refuses that mode as root, which the sandbox user never is. The operator
// (and a repository, within the operator's choice) may narrow the mode and
// the tools in the job's AgentSpec.
//
// and reads its stream-json output: one JSON message a line — "system"
// (subtype "init"), "assistant" and "user" messages of the conversation, and
// a final "result" with the summary, cost and usage.
type Claude struct {
	Bin string
}

func (Claude) Name() string { return "claude" }

func (c Claude) Invocation(req Request) (Invocation, error) {
	prompt, err := os.ReadFile(req.PromptFile)
	if err != nil {
		return Invocation{}, fmt.Errorf("agent: claude: read prompt: %w", err)
	}
	inv := Invocation{Path: c.Bin}
	if len(prompt) <= maxArgPrompt {
		inv.Args = []string{"-p", string(prompt)}
	} else {
		inv.Args = []string{"-p"}
		inv.StdinPromptFile = true
	}
	mode := req.Spec.PermissionMode
	if mode == "" {
		mode = "bypassPermissions"
		if os.Geteuid() == 0 {
			// Only unsandboxed (isolation none, as root) is the agent root,
			// and there Claude Code refuses to skip permissions; without a
			// sandbox as the boundary its own prompts are the one left.
			mode = "acceptEdits"
		}
	}
	inv.Args = append(inv.Args, "--output-format", "stream-json", "--verbose", "--permission-mode", mode)
	if len(req.Spec.AllowedTools) > 0 {
		// --allowedTools only spares the listed tools a prompt; under
		// bypassPermissions it removes nothing. --tools is the fence: the
		// built-in tools the session has at all, by name (a specifier such
		// as Bash(go test:*) narrows only the prompt-free part).
		inv.Args = append(inv.Args, "--tools", strings.Join(toolNames(req.Spec.AllowedTools), ","),
			"--allowedTools", strings.Join(req.Spec.AllowedTools, ","))
	}
	if req.Spec.MaxTurns > 0 {
		inv.Args = append(inv.Args, "--max-turns", strconv.Itoa(req.Spec.MaxTurns))
	}
	if req.Spec.Model != "" {
		inv.Args = append(inv.Args, "--model", req.Spec.Model)
	}
	return inv, nil
}

func (Claude) NewParser(req Request) Parser {
	return &claudeParser{repoDir: req.RepoDir}
}

// streamMessage is the union of the stream-json message shapes agent-runner
// reads; unknown fields and types are ignored.
type streamMessage struct {
	Type    string `json:"type"`
	Subtype string `json:"subtype"`

	// system/init
	Model string   `json:"model"`
	Tools []string `json:"tools"`

	// assistant and user
	Message *struct {
		Content []contentBlock `json:"content"`
	} `json:"message"`

	// result
	IsError      bool          `json:"is_error"`
	Result       string        `json:"result"`
	NumTurns     int           `json:"num_turns"`
	TotalCostUSD float64       `json:"total_cost_usd"`
	Usage        *runner.Usage `json:"usage"`
	Errors       []string      `json:"errors"`
	// PermissionDenials are tool uses Claude Code refused to run in its
	// permission mode (Bash under acceptEdits, for instance).
	PermissionDenials []struct {
		ToolName  string    `json:"tool_name"`
		ToolInput toolInput `json:"tool_input"`
	} `json:"permission_denials"`
}

type contentBlock struct {
	Type  string          `json:"type"`
	Text  string          `json:"text"`
	Name  string          `json:"name"`
	Input json.RawMessage `json:"input"`
	// tool_result
	IsError bool            `json:"is_error"`
	Content json.RawMessage `json:"content"`
}

// toolInput holds the arguments of Claude Code's tools that say what a tool
// use is about.
type toolInput struct {
	FilePath     string `json:"file_path"`
	NotebookPath string `json:"notebook_path"`
	Path         string `json:"path"`
	Command      string `json:"command"`
	Pattern      string `json:"pattern"`
	URL          string `json:"url"`
	Description  string `json:"description"`
}

type claudeParser struct {
	repoDir string
	result  *streamMessage
}

func (p *claudeParser) Line(line string) []Output {
	line = strings.TrimSpace(line)
	if line == "" {
		return nil
	}
	var m streamMessage
	if !strings.HasPrefix(line, "{") || json.Unmarshal([]byte(line), &m) != nil {
		return []Output{{Type: runner.EventLog, Message: line}}
	}
	switch m.Type {
	case "system":
		if m.Subtype == "init" {
			return []Output{{Type: runner.EventLog, Message: fmt.Sprintf("claude started: model %s, %d tools", m.Model, len(m.Tools))}}
		}
	case "assistant":
		return p.assistant(m)
	case "user":
		return p.toolErrors(m)
	case "result":
		r := m
		p.result = &r
		var out []Output
		for _, d := range m.PermissionDenials {
			detail := firstNonEmpty(oneLine(d.ToolInput.Command, 200), p.rel(d.ToolInput.FilePath))
			out = append(out, Output{Type: runner.EventLog, Message: strings.TrimSpace("claude was not permitted to use " + d.ToolName + " " + detail)})
		}
		return out
	}
	return nil
}

func (p *claudeParser) assistant(m streamMessage) []Output {
	if m.Message == nil {
		return nil
	}
	var out []Output
	for _, b := range m.Message.Content {
		switch b.Type {
		case "text":
			if t := strings.TrimSpace(b.Text); t != "" {
				out = append(out, Output{Type: runner.EventLog, Message: t})
			}
		case "tool_use":
			out = append(out, p.toolUse(b))
		}
	}
	return out
}

func (p *claudeParser) toolUse(b contentBlock) Output {
	var in toolInput
	_ = json.Unmarshal(b.Input, &in) // a tool without these fields is still progress
	o := Output{Type: runner.EventProgress, Tool: b.Name}
	if f := firstNonEmpty(in.FilePath, in.NotebookPath); f != "" {
		o.File = p.rel(f)
	}
	detail := firstNonEmpty(o.File, oneLine(in.Command, 200), in.Pattern, in.URL, oneLine(in.Description, 200), p.rel(in.Path))
	o.Message = strings.TrimSpace(b.Name + " " + detail)
	return o
}

// toolErrors reports tool results that failed, so a log shows why the agent
// changed course; successful results are not repeated.
func (p *claudeParser) toolErrors(m streamMessage) []Output {
	if m.Message == nil {
		return nil
	}
	var out []Output
	for _, b := range m.Message.Content {
		if b.Type != "tool_result" || !b.IsError {
			continue
		}
		out = append(out, Output{Type: runner.EventLog, Message: "tool error: " + oneLine(contentText(b.Content), 500)})
	}
	return out
}

func (p *claudeParser) Report() Report {
	if p.result == nil {
		return Report{Failed: true, Reason: "claude printed no result message"}
	}
	r := p.result
	rep := Report{Summary: strings.TrimSpace(r.Result), CostUSD: r.TotalCostUSD, Usage: r.Usage}
	if r.IsError || (r.Subtype != "" && r.Subtype != "success") {
		rep.Failed = true
		rep.Reason = "claude reported " + firstNonEmpty(r.Subtype, "an error")
		if len(r.Errors) > 0 {
			rep.Reason += ": " + strings.Join(r.Errors, "; ")
		} else if r.Subtype == "success" && r.Result != "" {
			rep.Reason += ": " + oneLine(r.Result, 500)
		}
	}
	return rep
}

// rel shows paths inside the repository relative to it.
func (p *claudeParser) rel(path string) string {
	if path == "" || p.repoDir == "" || !filepath.IsAbs(path) {
		return path
	}
	if r, err := filepath.Rel(p.repoDir, path); err == nil && r != ".." && !strings.HasPrefix(r, "../") {
		return r
	}
	return path
}

// contentText flattens a tool_result's content, a string or a list of text
// blocks.
func contentText(raw json.RawMessage) string {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	var blocks []contentBlock
	if json.Unmarshal(raw, &blocks) == nil {
		var parts []string
		for _, b := range blocks {
			if b.Text != "" {
				parts = append(parts, b.Text)
			}
		}
		return strings.Join(parts, " ")
	}
	return string(raw)
}

func firstNonEmpty(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
}

// oneLine keeps the first line of s, at most n bytes of it.
func oneLine(s string, n int) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i] + " …"
	}
	if len(s) > n {
		for n > 0 && !utf8.RuneStart(s[n]) {
			n--
		}
		s = s[:n] + "…"
	}
	return s
}

// toolNames are the built-in tools of an allowed-tools list without their
// specifiers ("Bash(go test:*)" is Bash), each once, in order; MCP tools
// (mcp__…) are not built-in and --tools does not take them.
func toolNames(allowed []string) []string {
	var names []string
	seen := map[string]bool{}
	for _, t := range allowed {
		if i := strings.IndexByte(t, '('); i >= 0 {
			t = t[:i]
		}
		if t = strings.TrimSpace(t); t != "" && !strings.HasPrefix(t, "mcp__") && !seen[t] {
			seen[t] = true
			names = append(names, t)
		}
	}
	return names
}
