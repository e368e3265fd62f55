package gateway

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/agentbot/agentbot/runner"
)

// Price is what a model's tokens cost, in US dollars per million tokens.
type Price struct {
	Input      float64 `json:"input"`
	Output     float64 `json:"output"`
	CacheWrite float64 `json:"cache_write"`
	CacheRead  float64 `json:"cache_read"`
}

// Prices maps model name patterns to prices: a name, or a prefix ending in
// "*" ("claude-sonnet-4*"); the longest pattern that matches wins, and "*"
// prices every model no other pattern names.
type Prices map[string]Price

// DefaultPrices are list prices at the time of writing. A model nobody
// listed is priced as the dearest, so an unknown model can only stop a
// budget early, never late; operators override them with
// AGENTBOT_MODEL_PRICES.
var DefaultPrices = Prices{
	"claude-opus-4*":     {Input: 15, Output: 75, CacheWrite: 18.75, CacheRead: 1.5},
	"claude-opus-4-5*":   {Input: 5, Output: 25, CacheWrite: 6.25, CacheRead: 0.5},
	"claude-sonnet-4*":   {Input: 3, Output: 15, CacheWrite: 3.75, CacheRead: 0.3},
	"claude-3-7-sonnet*": {Input: 3, Output: 15, CacheWrite: 3.75, CacheRead: 0.3},
	"claude-haiku-4*":    {Input: 1, Output: 5, CacheWrite: 1.25, CacheRead: 0.1},
	"claude-3-5-haiku*":  {Input: 0.8, Output: 4, CacheWrite: 1, CacheRead: 0.08},
	"gpt-5*":             {Input: 1.25, Output: 10, CacheRead: 0.125},
	"*":                  {Input: 15, Output: 75, CacheWrite: 18.75, CacheRead: 1.5},
}

// ParsePrices reads an operator's price table, a JSON object of pattern →
// {"input", "output", "cache_write", "cache_read"}, laid over base: a
// pattern it names replaces base's.
func ParsePrices(s string, base Prices) (Prices, error) {
	var extra Prices
	dec := json.NewDecoder(strings.NewReader(s))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&extra); err != nil {
		return nil, fmt.Errorf("model prices: %w", err)
	}
	out := Prices{}
	for k, v := range base {
		out[k] = v
	}
	for k, v := range extra {
		if v.Input < 0 || v.Output < 0 || v.CacheWrite < 0 || v.CacheRead < 0 {
			return nil, fmt.Errorf("model prices: %q: a price is negative", k)
		}
		out[k] = v
	}
	return out, nil
}

// For returns the price of model.
func (p Prices) For(model string) Price {
	keys := make([]string, 0, len(p))
	for k := range p {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return len(keys[i]) > len(keys[j]) })
	for _, k := range keys {
		if k == model || strings.HasSuffix(k, "*") && strings.HasPrefix(model, strings.TrimSuffix(k, "*")) {
			return p[k]
		}
	}
	return Price{}
}

// Cost is what u cost at price p.
func (p Price) Cost(u runner.Usage) float64 {
	return (float64(u.InputTokens)*p.Input + float64(u.OutputTokens)*p.Output +
		float64(u.CacheCreationInputTokens)*p.CacheWrite + float64(u.CacheReadInputTokens)*p.CacheRead) / 1e6
}

// maxMeterLine bounds one line (or one JSON answer) the meter keeps to read
// usage from; a larger one passes through unread.
const maxMeterLine = 4 << 20

// meter reads the usage of a model API answer as it streams past, without
// holding it up: server-sent events line by line, a JSON answer whole (up
// to maxMeterLine). The Messages API reports input tokens in message_start
// and the running output count in message_delta, OpenAI's APIs in a final
// chunk; each figure is the largest seen.
type meter struct {
	body   io.ReadCloser
	stream bool
	buf    []byte
	over   bool
	model  string
	usage  runner.Usage
}

func (m *meter) Read(p []byte) (int, error) {
	n, err := m.body.Read(p)
	m.take(p[:n])
	if err == io.EOF && !m.stream {
		m.parse(m.buf)
	}
	return n, err
}

func (m *meter) Close() error { return m.body.Close() }

func (m *meter) take(b []byte) {
	if !m.stream {
		if len(m.buf)+len(b) <= maxMeterLine {
			m.buf = append(m.buf, b...)
		}
		return
	}
	for len(b) > 0 {
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			m.keep(b)
			return
		}
		m.keep(b[:i])
		if !m.over {
			line := bytes.TrimSpace(m.buf)
			if data, ok := bytes.CutPrefix(line, []byte("data:")); ok {
				m.parse(data)
			}
		}
		m.buf, m.over, b = m.buf[:0], false, b[i+1:]
	}
}

func (m *meter) keep(b []byte) {
	if m.over || len(m.buf)+len(b) > maxMeterLine {
		m.over = true
		return
	}
	m.buf = append(m.buf, b...)
}

type usageFields struct {
	InputTokens      int `json:"input_tokens"`
	OutputTokens     int `json:"output_tokens"`
	CacheCreation    int `json:"cache_creation_input_tokens"`
	CacheRead        int `json:"cache_read_input_tokens"`
	PromptTokens     int `json:"prompt_tokens"`
	CompletionTokens int `json:"completion_tokens"`
}

type usageHolder struct {
	Model string       `json:"model"`
	Usage *usageFields `json:"usage"`
}

// parse takes the model and usage from one JSON document, wherever the
// APIs put them: at the top, in message (message_start) or in response
// (OpenAI's response.completed).
func (m *meter) parse(doc []byte) {
	var d struct {
		usageHolder
		Message  *usageHolder `json:"message"`
		Response *usageHolder `json:"response"`
	}
	if json.Unmarshal(bytes.TrimSpace(doc), &d) != nil {
		return
	}
	for _, h := range []*usageHolder{&d.usageHolder, d.Message, d.Response} {
		if h == nil {
			continue
		}
		if h.Model != "" && m.model == "" {
			m.model = h.Model
		}
		if u := h.Usage; u != nil {
			m.usage.InputTokens = max(m.usage.InputTokens, u.InputTokens, u.PromptTokens)
			m.usage.OutputTokens = max(m.usage.OutputTokens, u.OutputTokens, u.CompletionTokens)
			m.usage.CacheCreationInputTokens = max(m.usage.CacheCreationInputTokens, u.CacheCreation)
			m.usage.CacheReadInputTokens = max(m.usage.CacheReadInputTokens, u.CacheRead)
		}
	}
}
