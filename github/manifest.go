package github

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"time"

	gh "github.com/google/go-github/v66/github"
)

// NewApp is what GitHub hands back for an App registered from a manifest.
// PrivateKeyPEM and WebhookSecret are secrets: String never shows them.
type NewApp struct {
	ID            int64
	Slug, HTMLURL string
	PrivateKeyPEM []byte
	WebhookSecret string
}

func (a NewApp) String() string { return fmt.Sprintf("App %s (%d)", a.Slug, a.ID) }

// manifestCode is what GitHub's redirect carries; anything else never
// reaches a URL path.
var manifestCode = regexp.MustCompile(`^[A-Za-z0-9_-]{1,200}$`)

// ConvertManifest exchanges the code GitHub's manifest flow redirected
// with for the new App's credentials (POST /app-manifests/{code}/
// conversions, which needs no authentication; a code works once, within
// an hour). apiURL is the REST base ("" = api.github.com).
func ConvertManifest(ctx context.Context, apiURL, code string) (NewApp, error) {
	const ep = "POST /app-manifests/{code}/conversions"
	if !manifestCode.MatchString(code) {
		return NewApp{}, fmt.Errorf("github: manifest code %q is not one GitHub issues", code)
	}
	if apiURL == "" {
		apiURL = DefaultBaseURL
	}
	base, err := url.Parse(strings.TrimSuffix(apiURL, "/") + "/")
	if err != nil {
		return NewApp{}, fmt.Errorf("github: API URL: %w", err)
	}
	c := gh.NewClient(&http.Client{Timeout: 30 * time.Second})
	c.BaseURL, c.UserAgent = base, "agentbot"
	cfg, _, err := c.Apps.CompleteAppManifest(ctx, code)
	if err != nil {
		return NewApp{}, fmt.Errorf("github: convert manifest: %w", toAPIError(ep, err))
	}
	app := NewApp{ID: cfg.GetID(), Slug: cfg.GetSlug(), HTMLURL: cfg.GetHTMLURL(),
		PrivateKeyPEM: []byte(cfg.GetPEM()), WebhookSecret: cfg.GetWebhookSecret()}
	if app.ID <= 0 || len(app.PrivateKeyPEM) == 0 || app.WebhookSecret == "" {
		return NewApp{}, fmt.Errorf("github: convert manifest: GitHub's answer lacks the App id, key or webhook secret")
	}
	return app, nil
}
