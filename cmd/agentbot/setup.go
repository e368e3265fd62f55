package main

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/agentbot/agentbot/github"
)

// `agentbot setup` registers the GitHub App from its manifest: a page on
// 127.0.0.1 posts the manifest (app-manifest.yml's, with the webhook URL
// filled in) to GitHub's "create from manifest" page; GitHub redirects
// back with a code, exchanged for the App id, key and webhook secret,
// which go into the data dir (0600).

// SetupOptions are `agentbot setup`'s settings.
type SetupOptions struct {
	GitHubURL  string
	APIURL     string
	Org        string
	WebhookURL string
	Name       string
	Timeout    time.Duration
}

var setupSettings = []setting[SetupOptions]{
	{"github-url", "", "https://github.com", "GitHub's web address (GitHub Enterprise Server: https://HOST)", func(o *SetupOptions) any { return &o.GitHubURL }},
	{"api-url", "", "", "GitHub's REST API (default: derived from --github-url)", func(o *SetupOptions) any { return &o.APIURL }},
	{"org", "", "", "register the App for this organization (default: your user account)", func(o *SetupOptions) any { return &o.Org }},
	{"webhook-url", "", "", "public URL of this agentbot's /webhook (required)", func(o *SetupOptions) any { return &o.WebhookURL }},
	{"name", "", "agentbot", "the App's name (unique on GitHub)", func(o *SetupOptions) any { return &o.Name }},
	{"timeout", "", "15m", "how long the setup page waits for GitHub", func(o *SetupOptions) any { return &o.Timeout }},
}

// Files setup writes into the data dir.
const (
	appIDFile         = "app-id"
	privateKeyFile    = "private-key.pem"
	webhookSecretFile = "webhook-secret"
)

func (o *SetupOptions) validate() error {
	var errs []error
	web, err := url.Parse(o.GitHubURL)
	if err != nil || (web.Scheme != "https" && web.Scheme != "http") || web.Host == "" {
		errs = append(errs, fmt.Errorf("--github-url: %q is not an http(s) URL", o.GitHubURL))
	} else if o.APIURL == "" {
		o.APIURL = "https://api.github.com/"
		if web.Host != "github.com" {
			o.APIURL = strings.TrimSuffix(o.GitHubURL, "/") + "/api/v3/"
		}
	}
	hook, err := url.Parse(o.WebhookURL)
	if o.WebhookURL == "" || err != nil || (hook.Scheme != "https" && hook.Scheme != "http") || hook.Host == "" {
		errs = append(errs, fmt.Errorf("--webhook-url: %q is not the URL of agentbot's /webhook", o.WebhookURL))
	}
	if strings.TrimSpace(o.Name) == "" || len(o.Name) > 34 {
		errs = append(errs, fmt.Errorf("--name: %q must be 1 to 34 characters", o.Name))
	}
	if o.Org != "" && strings.ContainsAny(o.Org, "/?#") {
		errs = append(errs, fmt.Errorf("--org: %q is not an organization login", o.Org))
	}
	if o.Timeout <= 0 {
		errs = append(errs, errors.New("--timeout: must be positive"))
	}
	return errors.Join(errs...)
}

// manifest is app-manifest.yml's content with this setup's URLs
// (TestSetupManifestMatchesFile keeps them the same).
func (o *SetupOptions) manifest(redirect string) map[string]any {
	return map[string]any{
		"name":            o.Name,
		"url":             "https://github.com/agentbot/agentbot",
		"description":     "Turns a labelled issue or an /agent comment into a branch and a draft pull request written by a coding agent in a sandbox.",
		"hook_attributes": map[string]any{"url": o.WebhookURL, "active": true},
		"redirect_url":    redirect,
		"public":          false,
		"default_permissions": map[string]string{
			"contents": "write", "issues": "write", "pull_requests": "write", "checks": "write", "metadata": "read",
		},
		"default_events": []string{"issues", "issue_comment", "check_run", "pull_request", "pull_request_review", "pull_request_review_comment"},
	}
}

var setupPage = template.Must(template.New("setup").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>agentbot setup</title></head>
<body style="font-family:sans-serif;max-width:40em;margin:3em auto">
<h1>Register agentbot as a GitHub App</h1>
<p>GitHub will ask you to confirm the App {{.Name}}{{if .Org}} for the organization {{.Org}}{{end}},
with its webhook at <code>{{.Webhook}}</code>, then send you back here.</p>
<form method="post" action="{{.Action}}">
<input type="hidden" name="manifest" value="{{.Manifest}}">
<button type="submit">Create the App on GitHub</button>
</form></body></html>`))

// setupFlow is one run of the page: its state, and the outcome.
type setupFlow struct {
	m      *Main
	state  string
	action string
	page   []byte
	mu     sync.Mutex
	used   bool
	done   chan error
}

// setup runs the manifest flow to its end, or to the timeout.
func (m *Main) setup(ctx context.Context) error {
	dir := m.Options.DataDir
	if _, err := os.Stat(filepath.Join(dir, privateKeyFile)); err == nil {
		return fmt.Errorf("setup: %s already holds an App's key; remove %s, %s and %s to register another", dir, appIDFile, privateKeyFile, webhookSecretFile)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("setup: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("setup: create data dir: %w", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("setup: listen: %w", err)
	}
	f, err := m.newSetupFlow("http://" + ln.Addr().String())
	if err != nil {
		ln.Close()
		return err
	}
	srv := &http.Server{Handler: f, ReadHeaderTimeout: 10 * time.Second,
		ErrorLog: slog.NewLogLogger(slog.New(slog.DiscardHandler).Handler(), slog.LevelWarn)}
	go srv.Serve(ln)
	defer func() {
		// Gracefully: the callback that ended setup still owes its browser
		// the answer.
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(sctx); err != nil {
			srv.Close()
		}
	}()
	fmt.Fprintf(m.Stdout, "Open http://%s/ in a browser on this machine to register the App (the page closes in %s).\n", ln.Addr(), m.Setup.Timeout)
	ctx, cancel := context.WithTimeout(ctx, m.Setup.Timeout)
	defer cancel()
	select {
	case err := <-f.done:
		return err
	case <-ctx.Done():
		return fmt.Errorf("setup: no answer from GitHub within %s; run agentbot setup again", m.Setup.Timeout)
	}
}

func (m *Main) newSetupFlow(base string) (*setupFlow, error) {
	raw := make([]byte, 20)
	rand.Read(raw)
	f := &setupFlow{m: m, state: hex.EncodeToString(raw), done: make(chan error, 1)}
	web := strings.TrimSuffix(m.Setup.GitHubURL, "/")
	path := "/settings/apps/new"
	if m.Setup.Org != "" {
		path = "/organizations/" + url.PathEscape(m.Setup.Org) + "/settings/apps/new"
	}
	f.action = web + path + "?state=" + f.state
	manifest, err := json.Marshal(m.Setup.manifest(base + "/callback"))
	if err != nil {
		return nil, fmt.Errorf("setup: manifest: %w", err)
	}
	var page strings.Builder
	err = setupPage.Execute(&page, map[string]string{"Name": m.Setup.Name, "Org": m.Setup.Org, "Webhook": m.Setup.WebhookURL,
		"Action": f.action, "Manifest": string(manifest)})
	if err != nil {
		return nil, fmt.Errorf("setup: page: %w", err)
	}
	f.page = []byte(page.String())
	return f, nil
}

func (f *setupFlow) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch {
	case r.Method == http.MethodGet && r.URL.Path == "/":
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Content-Security-Policy", "default-src 'none'; form-action "+f.m.Setup.GitHubURL)
		_, _ = w.Write(f.page) // a browser gone is its own problem
	case r.Method == http.MethodGet && r.URL.Path == "/callback":
		f.callback(w, r)
	default:
		http.NotFound(w, r)
	}
}

// callback takes GitHub's redirect: the state must be this run's, and only
// the first good redirect is taken.
func (f *setupFlow) callback(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if subtle.ConstantTimeCompare([]byte(q.Get("state")), []byte(f.state)) != 1 {
		http.Error(w, "this redirect is not from the setup page agentbot opened (state does not match)", http.StatusBadRequest)
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.used {
		http.Error(w, "this setup already registered an App", http.StatusConflict)
		return
	}
	app, err := github.ConvertManifest(r.Context(), f.m.Setup.APIURL, q.Get("code"))
	if err == nil {
		err = f.m.writeApp(app)
	}
	if err != nil {
		http.Error(w, "registration failed: "+err.Error(), http.StatusBadGateway)
		f.finish(fmt.Errorf("setup: %w", err))
		return
	}
	f.used = true
	install := strings.TrimSuffix(app.HTMLURL, "/") + "/installations/new"
	fmt.Fprintf(w, "App %s registered. Install it: %s\nYou can close this page.\n", app.Slug, install)
	d := f.m.Options.DataDir
	fmt.Fprintf(f.m.Stdout, "Registered %s.\nInstall it on your repositories: %s\nThen run:\n  agentbot serve --data-dir %s --app-id %d --private-key-file %s --webhook-secret-file %s --github-url %s\n",
		app, install, d, app.ID, filepath.Join(d, privateKeyFile), filepath.Join(d, webhookSecretFile), f.m.Setup.APIURL)
	f.finish(nil)
}

// finish hands setup its outcome; only the first counts.
func (f *setupFlow) finish(err error) {
	select {
	case f.done <- err:
	default:
	}
}

// writeApp writes the App's id, key and secret, 0600, refusing to replace
// any (a second registration must not lose the first's key).
func (m *Main) writeApp(app github.NewApp) error {
	for _, f := range []struct {
		name string
		data []byte
	}{
		{appIDFile, fmt.Appendf(nil, "%d\n", app.ID)},
		{privateKeyFile, app.PrivateKeyPEM},
		{webhookSecretFile, []byte(app.WebhookSecret + "\n")},
	} {
		path := filepath.Join(m.Options.DataDir, f.name)
		fh, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return fmt.Errorf("write %s: %w", path, err)
		}
		_, err = fh.Write(f.data)
		if cerr := fh.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("write %s: %w", path, err)
		}
	}
	return nil
}
