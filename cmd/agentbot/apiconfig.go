package main

import (
	"fmt"
	"strings"

	"github.com/agentbot/agentbot/api"
)

// validateAPI reads the task API's tokens: the pages token (every
// repository) and AGENTBOT_API_TOKEN_FILE, whose lines are
// "<name> <token> <repos>" — repos "*" or a comma-separated list of
// owner/name — or a lone token, for every repository. No token: no API.
func (o DispatchOptions) validateAPI(c *DispatchConfig, add func(error)) {
	if c.Pages.BearerToken != "" {
		c.APITokens = append(c.APITokens, api.Token{Name: "pages", Value: c.Pages.BearerToken, Repos: []string{"*"}})
	}
	if o.APITokenFile == "" {
		return
	}
	b, err := readSecret(o.APITokenFile)
	if err != nil {
		add(dispatchProblem("api-token-file", "%v", err))
		return
	}
	c.SecretFiles = append(c.SecretFiles, o.APITokenFile)
	for i, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		tok, problem := apiToken(line)
		if problem != "" {
			// The line holds a secret: name it by number only.
			add(dispatchProblem("api-token-file", "%s line %d: %s", o.APITokenFile, i+1, problem))
			continue
		}
		c.APITokens = append(c.APITokens, tok)
	}
}

func apiToken(line string) (api.Token, string) {
	f := strings.Fields(line)
	switch len(f) {
	case 1:
		f = []string{"api", f[0], "*"}
	case 3:
	default:
		return api.Token{}, `want "<name> <token> <repos>" or a lone token`
	}
	if len(f[1]) < 16 {
		return api.Token{}, "the token is shorter than 16 characters"
	}
	var repos []string
	for _, r := range strings.Split(f[2], ",") {
		if r = strings.TrimSpace(r); r != "*" && strings.Count(r, "/") != 1 {
			return api.Token{}, fmt.Sprintf("%q is not * or owner/name", r)
		}
		repos = append(repos, r)
	}
	return api.Token{Name: f[0], Value: f[1], Repos: repos}, ""
}
