package github

import (
	"context"
	"fmt"
	"net/http"

	gh "github.com/google/go-github/v66/github"
)

const epApp = "GET /app"

// AppSlug is the App's own slug (its bot login without "[bot]"), asked of
// GitHub with the App's JWT: the name people mention it by.
func (c *Client) AppSlug(ctx context.Context) (string, error) {
	req, err := c.app.NewRequest(http.MethodGet, "app", nil)
	if err != nil {
		return "", fmt.Errorf("github: the App: %w", err)
	}
	var out gh.App
	if _, err := c.app.Do(withEndpoint(ctx, epApp), req, &out); err != nil {
		return "", fmt.Errorf("github: the App: %w", toAPIError(epApp, err))
	}
	if out.GetSlug() == "" {
		return "", fmt.Errorf("github: the App: GitHub returned no slug")
	}
	return out.GetSlug(), nil
}
