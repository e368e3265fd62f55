package gateway

import (
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"os"
	"strconv"
	"strings"
)

// Config is the operator's gateway configuration, read from agentbot's
// environment: the Options (without Dir, Resolver, Self and Upstream, which
// the caller sets) and the allow-list rules tasks start from.
type Config struct {
	Options Options
	// Allow is every task's allow-list before the repository's additions
	// (AGENTBOT_EGRESS_ALLOW; default: none). Not the model API and git
	// hosts: the relays reach those for the sandbox, and a direct tunnel
	// to github.com would let an agent push, with a token planted in the
	// issue, to a repository of the attacker's (docs/security.md).
	Allow []Rule
	// Ceiling bounds what a repository's egress: may add
	// (AGENTBOT_EGRESS_CEILING; default "*:*", anything).
	Ceiling []Rule
}

// ConfigFromEnv reads the gateway's variables through getenv (os.Getenv).
// The error lists every problem, one a line.
func ConfigFromEnv(getenv func(string) string) (Config, error) {
	var c Config
	var problems []error
	bad := func(name string, err error) { problems = append(problems, fmt.Errorf("%s: %w", name, err)) }
	m := &c.Options.Model
	for _, u := range []struct {
		name string
		dst  **url.URL
	}{{"AGENTBOT_ANTHROPIC_URL", &m.AnthropicURL}, {"AGENTBOT_OPENAI_URL", &m.OpenAIURL}, {"AGENTBOT_GIT_URL", &c.Options.GitURL}} {
		if v := getenv(u.name); v != "" {
			parsed, err := url.Parse(v)
			if err != nil || (parsed.Scheme != "https" && parsed.Scheme != "http") || parsed.Host == "" || parsed.User != nil {
				// The value is not repeated: it may hold credentials.
				bad(u.name, errors.New("not an http(s) URL without credentials"))
				continue
			}
			*u.dst = parsed
		}
	}
	if err := c.readKeys(getenv); err != nil {
		bad("AGENTBOT_MODEL_KEY_FILE", err)
	}
	if v := getenv("AGENTBOT_MAX_COST_USD"); v != "" {
		f, err := strconv.ParseFloat(v, 64)
		if err != nil || f < 0 {
			bad("AGENTBOT_MAX_COST_USD", fmt.Errorf("%q is not a dollar figure", v))
		} else {
			m.MaxCostUSD = f
		}
	}
	m.Prices = DefaultPrices
	if v := getenv("AGENTBOT_MODEL_PRICES"); v != "" {
		p, err := ParsePrices(v, DefaultPrices)
		if err != nil {
			bad("AGENTBOT_MODEL_PRICES", err)
		}
		m.Prices = p
	}
	for _, p := range strings.FieldsFunc(getenv("AGENTBOT_EGRESS_ALLOW_CIDRS"), isListSep) {
		prefix, err := netip.ParsePrefix(p)
		if err != nil {
			bad("AGENTBOT_EGRESS_ALLOW_CIDRS", err)
			continue
		}
		c.Options.AllowCIDRs = append(c.Options.AllowCIDRs, prefix.Masked())
	}
	if err := m.validate(); err != nil {
		problems = append(problems, err)
	}
	if err := c.readRules(getenv); err != nil {
		problems = append(problems, err)
	}
	return c, errors.Join(problems...)
}

func isListSep(r rune) bool { return r == ',' || r == ' ' || r == '\n' || r == '\t' }

func (c *Config) readRules(getenv func(string) string) error {
	var errs []error
	allow, _ := lookup(getenv, "AGENTBOT_EGRESS_ALLOW")
	rules, err := ParseRules(allow)
	if err != nil {
		errs = append(errs, fmt.Errorf("AGENTBOT_EGRESS_ALLOW: %w", err))
	}
	c.Allow = rules
	ceiling, ok := lookup(getenv, "AGENTBOT_EGRESS_CEILING")
	if !ok {
		ceiling = "*:*"
	}
	if c.Ceiling, err = ParseRules(ceiling); err != nil {
		errs = append(errs, fmt.Errorf("AGENTBOT_EGRESS_CEILING: %w", err))
	}
	return errors.Join(errs...)
}

// lookup treats "none" as an explicit empty list, so an operator can forbid
// every repository addition.
func lookup(getenv func(string) string, name string) (string, bool) {
	v := getenv(name)
	if strings.EqualFold(strings.TrimSpace(v), "none") {
		return "", true
	}
	return v, v != ""
}

// readKeys takes the model keys from ANTHROPIC_API_KEY and OPENAI_API_KEY,
// or from AGENTBOT_MODEL_KEY_FILE: NAME=key lines of those two names, or a
// single bare key, taken as Anthropic's.
func (c *Config) readKeys(getenv func(string) string) error {
	m := &c.Options.Model
	m.AnthropicKey, m.OpenAIKey = getenv("ANTHROPIC_API_KEY"), getenv("OPENAI_API_KEY")
	path := getenv("AGENTBOT_MODEL_KEY_FILE")
	if path == "" {
		return nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return err // names the file, not its content
	}
	lines := strings.Fields(string(b))
	if len(lines) == 1 && !strings.Contains(lines[0], "=") {
		m.AnthropicKey = lines[0]
		return nil
	}
	for i, l := range lines {
		name, key, _ := strings.Cut(l, "=")
		switch name {
		case "ANTHROPIC_API_KEY":
			m.AnthropicKey = key
		case "OPENAI_API_KEY":
			m.OpenAIKey = key
		default:
			return fmt.Errorf("%s: line %d is neither ANTHROPIC_API_KEY= nor OPENAI_API_KEY=", path, i+1)
		}
	}
	return nil
}
