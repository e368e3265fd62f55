package github

import (
	"context"
	"fmt"
	"net/http"

	gh "github.com/google/go-github/v66/github"

	"github.com/agentbot/agentbot"
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

const epRepoInstallation = "GET /repos/{owner}/{repo}/installation"

// InstallationOf is the id of the App's installation on repo, asked with
// the App's JWT: a task made through the task API names only a repository.
func (c *Client) InstallationOf(ctx context.Context, repo agentbot.Repo) (int64, error) {
	if err := checkRepo(repo); err != nil {
		return 0, err
	}
	req, err := c.app.NewRequest(http.MethodGet, repoPath(repo)+"/installation", nil)
	if err != nil {
		return 0, fmt.Errorf("github: installation of %s: %w", repo, err)
	}
	var out gh.Installation
	if _, err := c.app.Do(withEndpoint(ctx, epRepoInstallation), req, &out); err != nil {
		return 0, fmt.Errorf("github: installation of %s: %w", repo, toAPIError(epRepoInstallation, err))
	}
	if out.GetID() <= 0 {
		return 0, fmt.Errorf("github: installation of %s: GitHub returned no id", repo)
	}
	return out.GetID(), nil
}
