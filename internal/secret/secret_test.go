package secret

import (
	"strings"
	"testing"
)

func TestRedactor(t *testing.T) {
	const tok = "ghs_0123456789abcdef0123456789abcdef0123"
	r := New(tok, "sk-model-key-123", "yes", "sk-model", "")
	tests := []struct {
		name, in, want string
	}{
		{"token", "clone with " + tok + " now", "clone with [REDACTED] now"},
		{"basic form", "Authorization: Basic " + Basic(tok), "Authorization: Basic [REDACTED]"},
		{"basic form of another token", "Basic " + Basic("ghs_someoneelse") + " end", "Basic [REDACTED] end"},
		{"value, longest first", "key=sk-model-key-123 prefix=sk-model", "key=[REDACTED] prefix=[REDACTED]"},
		{"short value kept", "yes it is", "yes it is"},
		{"unknown GitHub token", "old ghs_ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 token", "old [REDACTED] token"},
		{"user-to-server and OAuth tokens", "ghu_ABCDEFGHIJKLMNOPQRSTUVWXYZ gho_ABCDEFGHIJKLMNOPQRSTUVWXYZ", "[REDACTED] [REDACTED]"},
		{"secret that is not a token", "Authorization: token sk-model-key-123", "Authorization: token [REDACTED]"},
		{"nothing secret", "hello world", "hello world"},
		{"empty", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := r.String(tt.in); got != tt.want {
				t.Errorf("String(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

func TestZeroRedactorStillHidesTokens(t *testing.T) {
	var r Redactor
	in := "ghs_ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 and Basic " + Basic("anything")
	if got := r.String(in); strings.Contains(got, "ghs_") || strings.Contains(got, Basic("anything")) {
		t.Errorf("String(%q) = %q", in, got)
	}
}

func TestLines(t *testing.T) {
	r := New("hunter22")
	if got := r.Lines(nil); got != nil {
		t.Errorf("Lines(nil) = %#v, want nil", got)
	}
	in := []string{"pw hunter22", "fine"}
	got := r.Lines(in)
	if got[0] != "pw [REDACTED]" || got[1] != "fine" {
		t.Errorf("Lines = %q", got)
	}
	if in[0] != "pw hunter22" {
		t.Error("Lines changed its argument")
	}
}
