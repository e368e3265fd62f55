package webhook

import (
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"

	"github.com/agentbot/agentbot"
	"github.com/agentbot/agentbot/state"
)

func TestLearnedTriggerLabels(t *testing.T) {
	labeled := func(label string) []byte {
		return []byte(`{"action":"labeled","repository":{"name":"demo","full_name":"octo/demo","owner":{"login":"octo"}},
			"installation":{"id":7},"sender":{"login":"alice","type":"User"},"issue":{"number":4,"title":"T"},"label":{"name":"` + label + `"}}`)
	}
	push := func(ref, path string) []byte {
		return []byte(`{"ref":"` + ref + `","repository":{"name":"demo","full_name":"octo/demo","default_branch":"main","owner":{"login":"octo"}},
			"installation":{"id":7},"sender":{"login":"alice","type":"User"},"commits":[{"added":[],"removed":[],"modified":["` + path + `"]}]}`)
	}
	book := NewLabels()
	opts := ParseOptions{Learned: book}
	taken := func(label string) bool {
		t.Helper()
		tr, err := Parse("issues", labeled(label), opts)
		if err != nil {
			t.Fatal(err)
		}
		return tr.Kind == agentbot.KindNew
	}
	steps := []struct {
		name string
		do   func()
		want map[string]bool // label → taken in
	}{
		{"at first sight every label is taken in", nil, map[string]bool{"robot": true, "bug": true, "agent-task": true}},
		{"once learned, the repository's own label and the operator's", func() { book.Learn(agentbot.Repo{Owner: "Octo", Name: "Demo"}, "robot") },
			map[string]bool{"robot": true, "ROBOT": true, "bug": false, "agent-task": true}},
		{"a push elsewhere changes nothing", func() { mustParse(t, "push", push("refs/heads/feature", ".github/agentbot.yml"), opts) },
			map[string]bool{"bug": false}},
		{"a push of other files changes nothing", func() { mustParse(t, "push", push("refs/heads/main", "README.md"), opts) },
			map[string]bool{"bug": false}},
		{"a push of the settings file forgets", func() { mustParse(t, "push", push("refs/heads/main", ".github/agentbot.yml"), opts) },
			map[string]bool{"bug": true}},
	}
	for _, st := range steps {
		if st.do != nil {
			st.do()
		}
		for label, want := range st.want {
			if got := taken(label); got != want {
				t.Errorf("%s: label %q taken in = %v, want %v", st.name, label, got, want)
			}
		}
	}
	if tr, _ := Parse("issues", labeled("bug"), ParseOptions{}); !tr.Ignored() {
		t.Errorf("without a book, only the operator's labels: %+v", tr)
	}
}

func mustParse(t *testing.T, event string, payload []byte, opts ParseOptions) {
	t.Helper()
	d, err := parse(event, payload, opts)
	if err != nil {
		t.Fatal(err)
	}
	if d.Forget != "" {
		opts.Learned.Forget(d.Forget)
	}
}

// Through the handler: a push of the settings file makes intake forget
// the learned label, so the next label event is taken in.
func TestHandlerForgetsOnSettingsPush(t *testing.T) {
	st, err := state.Open(filepath.Join(t.TempDir(), "agentbot.db"), state.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	book := NewLabels()
	book.Learn(agentbot.Repo{Owner: "octo", Name: "demo"}, "robot")
	h, err := New(Config{Secret: secret, Store: st, Learned: book})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	defer srv.Close()
	in := &intake{srv: srv}
	body := []byte(`{"ref":"refs/heads/main","repository":{"name":"demo","full_name":"octo/demo","default_branch":"main","owner":{"login":"octo"}},
		"installation":{"id":7},"sender":{"login":"alice","type":"User"},"commits":[{"added":[".github/agentbot.yml"]}]}`)
	if !book.accepts("octo/demo", "robot") || book.accepts("octo/demo", "bug") {
		t.Fatal("the book did not learn")
	}
	if status, _ := in.send(t, testDelivery{event: "push", id: "push-1", body: body}); status != http.StatusNoContent {
		t.Fatalf("push: %d", status)
	}
	if !book.accepts("octo/demo", "bug") {
		t.Fatal("a push of the settings file left the learned label")
	}
}
