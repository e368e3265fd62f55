package github

import (
	"context"
	"testing"

	"github.com/agentbot/agentbot/github/githubtest"
)

func TestAppSlug(t *testing.T) {
	fake := githubtest.New(t)
	fake.AppSlug = "my-agentbot"
	c, err := New(Config{BaseURL: fake.URL, AppID: fake.AppID, PrivateKey: fake.PrivateKeyPEM, MaxAttempts: 1})
	if err != nil {
		t.Fatal(err)
	}
	slug, err := c.AppSlug(context.Background())
	if err != nil || slug != "my-agentbot" {
		t.Fatalf("AppSlug = %q, %v", slug, err)
	}
	if calls := fake.CallsTo("GET", "/app"); len(calls) != 1 || calls[0].Auth != "app" {
		t.Fatalf("calls %+v", calls)
	}
}
