package kname

import (
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/util/validation"
)

func TestClaimName(t *testing.T) {
	cases := []struct {
		name, taskID, wantPrefix string
	}{
		{"ulid", "01JABCDEF0123456789XYZ", "agentbot-01jabcdef0123456789xyz-"},
		{"punctuation", "acme/widgets#7_try.2", "agentbot-acme-widgets-7-try-2-"},
		{"only symbols", "///", "agentbot-"},
		{"long", strings.Repeat("a", 300), "agentbot-" + strings.Repeat("a", 40) + "-"},
		{"unicode", "tâche-ü", "agentbot-t-che-"},
	}
	seen := map[string]string{}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := ClaimName(c.taskID)
			if !strings.HasPrefix(got, c.wantPrefix) {
				t.Errorf("ClaimName(%q) = %q; want prefix %q", c.taskID, got, c.wantPrefix)
			}
			// Pods and Services take the name on a cold start: it must be
			// a DNS-1035 label.
			if msgs := validation.IsDNS1035Label(got); len(msgs) > 0 {
				t.Errorf("ClaimName(%q) = %q is not a DNS-1035 label: %v", c.taskID, got, msgs)
			}
			if ClaimName(c.taskID) != got {
				t.Error("ClaimName is not deterministic")
			}
			if other, ok := seen[got]; ok {
				t.Errorf("%q and %q share the claim name %q", c.taskID, other, got)
			}
			seen[got] = c.taskID
		})
	}
	// Ids that slug alike stay apart.
	if ClaimName("Task-1") == ClaimName("task_1") {
		t.Error("task ids that differ only in case and punctuation share a claim name")
	}
}

func TestLabelValue(t *testing.T) {
	cases := []struct{ name, in, want string }{
		{"repo", "acme/widgets", "acme_widgets"},
		{"dots and dashes", "my-org/my.repo_x", "my-org_my.repo_x"},
		{"edges trimmed", "/-x-/", "x"},
		{"empty", "", ""},
		{"too long", strings.Repeat("b", 70), strings.Repeat("b", 63)},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := LabelValue(c.in)
			if got != c.want {
				t.Errorf("LabelValue(%q) = %q; want %q", c.in, got, c.want)
			}
			if msgs := validation.IsValidLabelValue(got); len(msgs) > 0 {
				t.Errorf("LabelValue(%q) = %q is not a label value: %v", c.in, got, msgs)
			}
		})
	}
}

// FuzzClaimName: whatever the task id, the claim name is a DNS-1035 label
// (it becomes a Pod and a Service name) and label values stay valid.
func FuzzClaimName(f *testing.F) {
	for _, s := range []string{"01JABCDEF", "", "-", "a/b#c", strings.Repeat("z", 100), "ÄÖÜ"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, taskID string) {
		name := ClaimName(taskID)
		if msgs := validation.IsDNS1035Label(name); len(msgs) > 0 {
			t.Fatalf("ClaimName(%q) = %q: %v", taskID, name, msgs)
		}
		if v := LabelValue(taskID); len(validation.IsValidLabelValue(v)) > 0 {
			t.Fatalf("LabelValue(%q) = %q is not a label value", taskID, v)
		}
	})
}
