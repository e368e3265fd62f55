package main

import (
	"context"
	"encoding/json"
	"html"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/agentbot/agentbot/github/githubtest"
	"github.com/agentbot/agentbot/internal/testtool"
)

// startSetup runs `agentbot setup` in the background and returns the
// page's address and the command's outcome.
func startSetup(t *testing.T, gh *githubtest.Server, dataDir string, args ...string) (string, *testtool.Buffer, <-chan error) {
	t.Helper()
	m := NewMain()
	out := &testtool.Buffer{}
	m.Stdout, m.Stderr = out, out
	args = append([]string{"setup", "--api-url", gh.URL, "--webhook-url", "https://bot.example.com/webhook", "--timeout", "20s"}, args...)
	if err := m.ParseFlags(args, envFunc(map[string]string{"AGENTBOT_DATA_DIR": dataDir})); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- m.Run(context.Background()) }()
	addr := regexp.MustCompile(`http://127\.0\.0\.1:\d+/`)
	deadline := time.Now().Add(10 * time.Second)
	for {
		if u := addr.FindString(out.String()); u != "" {
			return u, out, done
		}
		select {
		case err := <-done:
			t.Fatalf("setup ended at once: %v\n%s", err, out.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("setup printed no address:\n%s", out.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func getBody(t *testing.T, u string) (int, string) {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestSetupFlow: the page's form posts the manifest to the organization's
// create-from-manifest page with a random state; a redirect with another
// state is refused; GitHub's redirect is exchanged and the App's id, key
// and secret land in the data dir, 0600; a second redirect and a second
// setup are refused.
func TestSetupFlow(t *testing.T) {
	gh := githubtest.New(t)
	dataDir := t.TempDir()
	page, out, done := startSetup(t, gh, dataDir, "--org", "acme", "--github-url", "https://ghe.example.com")

	status, body := getBody(t, page)
	if status != 200 {
		t.Fatalf("page: %d", status)
	}
	form := regexp.MustCompile(`action="([^"]+)"`).FindStringSubmatch(body)
	if form == nil || !strings.HasPrefix(html.UnescapeString(form[1]), "https://ghe.example.com/organizations/acme/settings/apps/new?state=") {
		t.Fatalf("form action %v, want GHES's organization page", form)
	}
	state := strings.SplitN(html.UnescapeString(form[1]), "state=", 2)[1]
	if len(state) < 32 {
		t.Errorf("state %q is too short to be unguessable", state)
	}
	raw := regexp.MustCompile(`name="manifest" value="([^"]+)"`).FindStringSubmatch(body)
	if raw == nil {
		t.Fatal("no manifest in the form")
	}
	var manifest struct {
		Hook struct {
			URL string `json:"url"`
		} `json:"hook_attributes"`
		Redirect string `json:"redirect_url"`
	}
	if err := json.Unmarshal([]byte(html.UnescapeString(raw[1])), &manifest); err != nil {
		t.Fatal(err)
	}
	if manifest.Hook.URL != "https://bot.example.com/webhook" || manifest.Redirect != page+"callback" {
		t.Errorf("manifest %+v", manifest)
	}

	code := gh.IssueManifestCode(json.RawMessage(html.UnescapeString(raw[1])))
	if status, _ := getBody(t, page+"callback?code="+code+"&state=forged"); status != http.StatusBadRequest {
		t.Errorf("redirect with a forged state answered %d", status)
	}
	if status, body := getBody(t, page+"callback?code="+code+"&state="+state); status != 200 || !strings.Contains(body, "installations/new") {
		t.Fatalf("redirect: %d %s", status, body)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("setup did not end after the redirect")
	}
	for name, want := range map[string]string{appIDFile: strconv.FormatInt(gh.AppID, 10) + "\n", privateKeyFile: string(gh.PrivateKeyPEM), webhookSecretFile: githubtest.WebhookSecret + "\n"} {
		p := filepath.Join(dataDir, name)
		b, err := os.ReadFile(p)
		if err != nil || string(b) != want {
			t.Errorf("%s = %q, %v", name, b, err)
		}
		if fi, err := os.Stat(p); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s mode %v", name, fi.Mode())
		}
	}
	if s := out.String(); !strings.Contains(s, "agentbot serve --data-dir "+dataDir+" --app-id "+strconv.FormatInt(gh.AppID, 10)) || strings.Contains(s, githubtest.WebhookSecret) {
		t.Errorf("setup's output:\n%s", s)
	}

	// A second setup on the same data dir would lose the key: refused.
	m := NewMain()
	m.Stdout, m.Stderr = io.Discard, io.Discard
	if err := m.ParseFlags([]string{"setup", "--api-url", gh.URL, "--webhook-url", "https://bot.example.com/webhook"}, envFunc(map[string]string{"AGENTBOT_DATA_DIR": dataDir})); err != nil {
		t.Fatal(err)
	}
	if err := m.Run(context.Background()); err == nil || !strings.Contains(err.Error(), "already holds") {
		t.Errorf("second setup = %v, want a refusal", err)
	}
}

// TestSetupTimesOut: with no redirect the page closes and setup fails.
func TestSetupTimesOut(t *testing.T) {
	gh := githubtest.New(t)
	_, _, done := startSetup(t, gh, t.TempDir(), "--timeout", "300ms")
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "no answer from GitHub") {
			t.Errorf("setup = %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("setup did not time out")
	}
}

// TestSetupManifestMatchesFile keeps setup's manifest and app-manifest.yml
// the same but for the URLs each fills in.
func TestSetupManifestMatchesFile(t *testing.T) {
	raw, err := os.ReadFile("../../app-manifest.yml")
	if err != nil {
		t.Fatal(err)
	}
	var file map[string]any
	if err := yaml.Unmarshal(raw, &file); err != nil {
		t.Fatal(err)
	}
	o := SetupOptions{Name: "agentbot", WebhookURL: file["hook_attributes"].(map[string]any)["url"].(string)}
	b, _ := json.Marshal(o.manifest(file["redirect_url"].(string)))
	var ours map[string]any
	json.Unmarshal(b, &ours)
	fb, _ := json.Marshal(file)
	ob, _ := json.Marshal(ours)
	if string(fb) != string(ob) {
		t.Errorf("setup's manifest differs from app-manifest.yml:\n file %s\n ours %s", fb, ob)
	}
}
