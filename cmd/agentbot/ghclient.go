package main

import (
	"fmt"
	"os"

	"github.com/agentbot/agentbot/github"
)

// gitHub is serve's one GitHub client, made on first use: its metrics are
// registered once, so the dispatcher and missed-delivery recovery share it.
func (m *Main) gitHub() (*github.Client, error) {
	if m.ghClient != nil {
		return m.ghClient, nil
	}
	keyPEM, err := os.ReadFile(m.Config.PrivateKeyFile)
	if err != nil {
		return nil, fmt.Errorf("read private key: %w", err)
	}
	c, err := github.New(github.Config{
		BaseURL: m.Config.GitHubURL.String(), AppID: m.Config.AppID, PrivateKey: keyPEM,
		Registry: m.Registry, Logger: m.Logger,
	})
	if err != nil {
		return nil, err
	}
	m.ghClient = c
	return c, nil
}
