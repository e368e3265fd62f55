package gateway

import (
	"fmt"
	"net/http"
	"net/http/httputil"
	"path"
	"strings"
	"time"

	"github.com/agentbot/agentbot/runner"
)

// git relays a fetch of the task's repository to Options.GitURL with the
// task's read-only token, added here and never seen by the sandbox. Only
// the two requests of a smart-HTTP fetch pass (the ref advertisement of
// upload-pack and upload-pack itself): a push, the dumb protocol and every
// other repository are refused.
func (t *Task) git(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	ev := runner.Egress{Kind: runner.EgressGit, Host: GitHost, Port: 80}
	suffix, err := t.gitRequest(r)
	if err != nil {
		t.refuse(w, ev, start, &blockedError{"git relay: " + err.Error()})
		return
	}
	token, err := t.spec.GitToken(r.Context())
	if err != nil {
		t.refuse(w, ev, start, fmt.Errorf("git relay: no token for %s: %w", t.spec.Repo, err))
		return
	}
	target := *t.g.opts.GitURL
	target.Path = path.Join("/", target.Path, t.spec.Repo+".git", suffix)
	if remote := t.spec.GitRemote; remote != nil {
		target = *remote
		target.Path = path.Join("/", remote.Path, suffix)
	}
	target.RawPath, target.RawQuery = "", r.URL.RawQuery
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL, pr.Out.Host = &target, target.Host
			pr.Out.Header.Del("Authorization")
			pr.Out.Header.Del("Cookie")
			pr.Out.SetBasicAuth("x-access-token", token)
		},
		Transport: t.g.upstream,
		// Progress lines of a long fetch reach git as they come.
		FlushInterval: -1,
		ModifyResponse: func(resp *http.Response) error {
			// A 401 must not make git ask the sandbox for credentials, and
			// the host's cookies are agentbot's business.
			resp.Header.Del("WWW-Authenticate")
			resp.Header.Del("Set-Cookie")
			return nil
		},
	}
	t.relay(w, r, &ev, rp)
	t.finish(ev, start)
}

// gitRequest checks r is one of the two requests of a fetch of the task's
// repository and returns the path after <owner>/<repo>.git.
func (t *Task) gitRequest(r *http.Request) (string, error) {
	if t.spec.GitToken == nil || t.spec.Repo == "" {
		return "", fmt.Errorf("this task has no repository to fetch")
	}
	repo, suffix, ok := strings.Cut(strings.TrimPrefix(r.URL.Path, "/"), ".git/")
	if !ok || !strings.EqualFold(repo, t.spec.Repo) {
		return "", fmt.Errorf("only %s is served to this task, not %q", t.spec.Repo, r.URL.Path)
	}
	switch {
	case r.Method == http.MethodGet && suffix == "info/refs" && r.URL.RawQuery == "service=git-upload-pack":
		return suffix, nil
	case r.Method == http.MethodPost && suffix == "git-upload-pack":
		return suffix, nil
	case strings.Contains(suffix, "receive-pack") || strings.Contains(r.URL.RawQuery, "receive-pack"):
		return "", fmt.Errorf("pushing is not allowed (agentbot pushes the result itself)")
	default:
		return "", fmt.Errorf("%s %s?%s is not part of a fetch", r.Method, r.URL.Path, r.URL.RawQuery)
	}
}
