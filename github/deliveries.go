package github

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	gh "github.com/google/go-github/v66/github"
)

// HookDelivery is one attempt in the App's webhook delivery log. A
// redelivery is a new attempt (a new ID) of the same GUID, which is the
// X-GitHub-Delivery header agentbot deduplicates by.
type HookDelivery struct {
	ID          int64
	GUID        string
	DeliveredAt time.Time
	Redelivery  bool
	// StatusCode is what agentbot (or whatever answered) said; 0 when
	// GitHub got no answer (connection refused, timeout).
	StatusCode     int
	Event, Action  string
	InstallationID int64
}

// Failed reports whether the attempt got no 2xx answer.
func (d HookDelivery) Failed() bool { return d.StatusCode < 200 || d.StatusCode > 299 }

const (
	epListDeliveries = "GET /app/hook/deliveries"
	epRedeliver      = "POST /app/hook/deliveries/{id}/attempts"
	epGetApp         = "GET /app"
	epInstallations  = "GET /app/installations"
)

// ListHookDeliveries returns the App's delivery attempts made at or after
// since, newest first, reading at most maxPages pages of 100 (GitHub
// pages this log by cursor, newest first). truncated reports that the
// page bound stopped the walk before since was reached.
func (c *Client) ListHookDeliveries(ctx context.Context, since time.Time, maxPages int) (out []HookDelivery, truncated bool, err error) {
	opts := &gh.ListCursorOptions{PerPage: 100}
	for page := 0; ; page++ {
		if page >= maxPages {
			return out, true, nil
		}
		list, resp, err := c.app.Apps.ListHookDeliveries(withEndpoint(ctx, epListDeliveries), opts)
		if err != nil {
			return out, false, fmt.Errorf("github: list hook deliveries: %w", toAPIError(epListDeliveries, err))
		}
		for _, d := range list {
			at := d.GetDeliveredAt().Time
			if at.Before(since) {
				return out, false, nil
			}
			out = append(out, HookDelivery{
				ID: d.GetID(), GUID: d.GetGUID(), DeliveredAt: at, Redelivery: d.GetRedelivery(),
				StatusCode: d.GetStatusCode(), Event: d.GetEvent(), Action: d.GetAction(),
				InstallationID: d.GetInstallationID(),
			})
		}
		if resp.Cursor == "" || len(list) == 0 {
			return out, false, nil
		}
		opts.Cursor = resp.Cursor
	}
}

// Redeliver asks GitHub to deliver attempt id again. Asking twice is
// harmless: agentbot deduplicates by GUID.
func (c *Client) Redeliver(ctx context.Context, id int64) error {
	req, err := c.app.NewRequest(http.MethodPost, fmt.Sprintf("app/hook/deliveries/%d/attempts", id), nil)
	if err != nil {
		return fmt.Errorf("github: redeliver hook delivery %d: %w", id, err)
	}
	_, err = c.app.Do(withEndpoint(ctx, epRedeliver), req, nil)
	var accepted *gh.AcceptedError
	if err != nil && !errors.As(err, &accepted) { // 202 is GitHub's answer: redelivery scheduled
		return fmt.Errorf("github: redeliver hook delivery %d: %w", id, toAPIError(epRedeliver, err))
	}
	return nil
}

// App is what GitHub says of the App itself (GET /app, which also proves
// the App JWT is accepted).
type App struct {
	Slug, Name, HTMLURL string
	Permissions         map[string]string
	Events              []string
}

// GetApp reads the App as its JWT authenticates it.
func (c *Client) GetApp(ctx context.Context) (App, error) {
	a, _, err := c.app.Apps.Get(withEndpoint(ctx, epGetApp), "")
	if err != nil {
		return App{}, fmt.Errorf("github: get app: %w", toAPIError(epGetApp, err))
	}
	perms, err := permissionMap(a.GetPermissions())
	if err != nil {
		return App{}, fmt.Errorf("github: get app: %w", err)
	}
	return App{Slug: a.GetSlug(), Name: a.GetName(), HTMLURL: a.GetHTMLURL(), Permissions: perms, Events: a.Events}, nil
}

// Installation is one installation of the App with what it grants.
type Installation struct {
	ID          int64
	Account     string
	Permissions map[string]string
	Events      []string
}

// ListInstallations lists the App's installations (at most maxPages pages
// of 100).
func (c *Client) ListInstallations(ctx context.Context, maxPages int) ([]Installation, error) {
	var out []Installation
	opts := &gh.ListOptions{PerPage: 100}
	for page := 0; page < maxPages; page++ {
		list, resp, err := c.app.Apps.ListInstallations(withEndpoint(ctx, epInstallations), opts)
		if err != nil {
			return out, fmt.Errorf("github: list installations: %w", toAPIError(epInstallations, err))
		}
		for _, in := range list {
			perms, err := permissionMap(in.GetPermissions())
			if err != nil {
				return out, fmt.Errorf("github: installation %d: %w", in.GetID(), err)
			}
			out = append(out, Installation{ID: in.GetID(), Account: in.GetAccount().GetLogin(), Permissions: perms, Events: in.Events})
		}
		if resp.NextPage == 0 {
			break
		}
		opts.Page = resp.NextPage
	}
	return out, nil
}

// permissionMap turns go-github's struct of optional levels into
// name → level, through its JSON form, so every permission GitHub knows is
// kept without listing them here.
func permissionMap(p *gh.InstallationPermissions) (map[string]string, error) {
	out := map[string]string{}
	if p == nil {
		return out, nil
	}
	raw, err := json.Marshal(p)
	if err != nil {
		return nil, fmt.Errorf("encode permissions: %w", err)
	}
	if err := json.Unmarshal(raw, &out); err != nil {
		return nil, fmt.Errorf("decode permissions: %w", err)
	}
	return out, nil
}
