package gateway

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestConfigFromEnv(t *testing.T) {
	keyFile := filepath.Join(t.TempDir(), "keys")
	if err := os.WriteFile(keyFile, []byte("ANTHROPIC_API_KEY=sk-ant-file\nOPENAI_API_KEY=sk-openai-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		env     map[string]string
		check   func(t *testing.T, c Config)
		wantErr []string
	}{
		{name: "defaults", env: map[string]string{"ANTHROPIC_API_KEY": "sk-ant-env"}, check: func(t *testing.T, c Config) {
			// Empty: the relays reach the model API and the git host; a
			// direct github.com:443 would let an agent push elsewhere.
			if got := joinRules(c.Allow); got != "" {
				t.Errorf("allow = %s, want none", got)
			}
			if got := joinRules(c.Ceiling); got != "*:*" {
				t.Errorf("ceiling = %s", got)
			}
			if c.Options.Model.AnthropicKey != "sk-ant-env" || c.Options.Model.MaxCostUSD != 0 {
				t.Errorf("model = %+v", c.Options.Model)
			}
		}},
		{name: "everything set", env: map[string]string{
			"AGENTBOT_EGRESS_ALLOW": "proxy.golang.org", "AGENTBOT_EGRESS_CEILING": "none",
			"AGENTBOT_EGRESS_ALLOW_CIDRS": "10.1.0.0/16", "AGENTBOT_ANTHROPIC_URL": "https://llm.internal/anthropic",
			"AGENTBOT_MODEL_KEY_FILE": keyFile, "AGENTBOT_MAX_COST_USD": "2.5",
			"AGENTBOT_MODEL_PRICES": `{"*": {"input": 1, "output": 1}}`,
		}, check: func(t *testing.T, c Config) {
			m := c.Options.Model
			if joinRules(c.Allow) != "proxy.golang.org:443" || len(c.Ceiling) != 0 || len(c.Options.AllowCIDRs) != 1 {
				t.Errorf("rules: allow %s ceiling %s cidrs %v", joinRules(c.Allow), joinRules(c.Ceiling), c.Options.AllowCIDRs)
			}
			if m.AnthropicURL.String() != "https://llm.internal/anthropic" || m.AnthropicKey != "sk-ant-file" || m.OpenAIKey != "sk-openai-file" || m.MaxCostUSD != 2.5 || m.Prices.For("x").Input != 1 {
				t.Errorf("model = %+v", m)
			}
		}},
		{name: "one line per problem", env: map[string]string{
			"AGENTBOT_EGRESS_ALLOW": "10.0.0.1", "AGENTBOT_MAX_COST_USD": "lots", "AGENTBOT_ANTHROPIC_URL": "https://u:p@x",
			"AGENTBOT_EGRESS_ALLOW_CIDRS": "10.0.0.0", "AGENTBOT_MODEL_KEY_FILE": filepath.Join(t.TempDir(), "missing"),
		}, wantErr: []string{"AGENTBOT_EGRESS_ALLOW:", "AGENTBOT_MAX_COST_USD:", "AGENTBOT_ANTHROPIC_URL:", "AGENTBOT_EGRESS_ALLOW_CIDRS:", "AGENTBOT_MODEL_KEY_FILE:"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := ConfigFromEnv(func(k string) string { return tc.env[k] })
			if len(tc.wantErr) > 0 {
				if err == nil {
					t.Fatal("no error")
				}
				if n := strings.Count(err.Error(), "\n") + 1; n != len(tc.wantErr) {
					t.Errorf("%d problem lines, want %d:\n%v", n, len(tc.wantErr), err)
				}
				for _, w := range tc.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error does not name %s:\n%v", w, err)
					}
				}
				if strings.Contains(err.Error(), "u:p") {
					t.Errorf("the error repeats a URL's credentials")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, c)
		})
	}
}

func joinRules(rs []Rule) string {
	var s []string
	for _, r := range rs {
		s = append(s, r.String())
	}
	return strings.Join(s, " ")
}
