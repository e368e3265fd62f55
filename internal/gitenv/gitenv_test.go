package gitenv

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/agentbot/agentbot/internal/gitserver"
	"github.com/agentbot/agentbot/internal/secret"
)

const token = "ghs_0123456789abcdefghijklmnopqrstuvwxyz"

func TestAuth(t *testing.T) {
	header := "GIT_CONFIG_VALUE_0=Authorization: Basic " + secret.Basic(token)
	tests := []struct {
		name, remote, token string
		want                []string
	}{
		{"https", "https://github.com/acme/widgets.git", token, []string{
			"GIT_CONFIG_COUNT=1", "GIT_CONFIG_KEY_0=http.https://github.com/.extraHeader", header}},
		{"origin keeps its port", "http://127.0.0.1:8080/acme/widgets.git", token, []string{
			"GIT_CONFIG_COUNT=1", "GIT_CONFIG_KEY_0=http.http://127.0.0.1:8080/.extraHeader", header}},
		{"no token", "https://github.com/acme/widgets.git", "", nil},
		{"file URL of a local run", "file:///srv/widgets.git", token, nil},
		{"ssh", "ssh://git@github.com/acme/widgets.git", token, nil},
		{"not a URL", "://", token, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Auth(tt.remote, tt.token); !slices.Equal(got, tt.want) {
				t.Errorf("Auth(%q) = %q, want %q", tt.remote, got, tt.want)
			}
		})
	}
	creds := Credentials(Auth("https://github.com/x/y.git", token))
	if !slices.Equal(creds, []string{secret.Basic(token), token}) {
		t.Errorf("Credentials = %q, want the Basic credential and the token", creds)
	}
}

func TestClean(t *testing.T) {
	in := []string{
		"PATH=/usr/bin", "HOME=/home/agent",
		"GIT_AUTHOR_NAME=agent", "GIT_COMMITTER_EMAIL=agent@example.com", "GIT_SSL_CAINFO=/etc/ca.pem",
		"GIT_DIR=/elsewhere", "GIT_WORK_TREE=/elsewhere", "GIT_OBJECT_DIRECTORY=/x", "GIT_NAMESPACE=n",
		"GIT_CONFIG_COUNT=1", "GIT_CONFIG_KEY_0=core.sshCommand", "GIT_CONFIG_VALUE_0=evil",
		"GIT_CONFIG_PARAMETERS='core.pager=evil'", "GIT_CONFIG_GLOBAL=/tmp/g", "GIT_SSH_COMMAND=evil",
		"GIT_ASKPASS=/bin/echo", "SSH_ASKPASS=/bin/echo", "GIT_TERMINAL_PROMPT=1",
		"GIT_TRACE=1", "GIT_TRACE_CURL=/tmp/t", "GIT_TRACE_REDACT=0", "GIT_TRACE2_EVENT=/tmp/e",
		"GIT_TRACE_PACKET=1", "GIT_CURL_VERBOSE=1", "GIT_REDACT_COOKIES=x",
	}
	want := []string{
		"PATH=/usr/bin", "HOME=/home/agent",
		"GIT_AUTHOR_NAME=agent", "GIT_COMMITTER_EMAIL=agent@example.com", "GIT_SSL_CAINFO=/etc/ca.pem",
		"GIT_TERMINAL_PROMPT=0",
	}
	if got := Clean(in); !slices.Equal(got, want) {
		t.Errorf("Clean =\n%q\nwant\n%q", got, want)
	}
}

// TestTraceNeverReachesAnAuthenticatedGit runs a real git against a real
// git server with every trace variable set, as an operator debugging
// would: the server must see the token (the auth environment works), git
// must write no trace (GIT_TRACE_CURL with GIT_TRACE_REDACT=0 would hold
// the Authorization header) and no error message may hold the token.
func TestTraceNeverReachesAnAuthenticatedGit(t *testing.T) {
	var sawToken atomic.Bool
	srv := gitserver.New(t, func(repo, user, pass string, write bool) bool {
		ok := pass == token
		sawToken.Store(sawToken.Load() || ok)
		return ok
	})
	srv.CreateRepo("acme", "widgets", "main", map[string]string{"README.md": "hi\n"})
	trace := filepath.Join(t.TempDir(), "trace")
	for k, ext := range map[string]string{"GIT_TRACE": ".cmd", "GIT_TRACE_CURL": ".curl", "GIT_TRACE2_EVENT": ".event",
		"GIT_TRACE_PACKET": ".packet", "GIT_TRACE2": ".trace2"} {
		t.Setenv(k, trace+ext)
	}
	t.Setenv("GIT_TRACE_REDACT", "0")

	remote := srv.CloneURL("acme", "widgets")
	out, err := Git{}.Run(context.Background(), Auth(remote, token), "ls-remote", remote, "refs/heads/main")
	if err != nil || !strings.Contains(out, "refs/heads/main") {
		t.Fatalf("ls-remote = %q, %v", out, err)
	}
	if !sawToken.Load() {
		t.Fatal("the server never saw the token; the check below would check nothing")
	}
	_, err = Git{}.Run(context.Background(), Auth(remote, token), "ls-remote", srv.CloneURL("acme", "missing"))
	if err == nil {
		t.Fatal("ls-remote of a missing repository succeeded")
	}
	for _, what := range []string{token, secret.Basic(token)} {
		if strings.Contains(err.Error(), what) {
			t.Errorf("the error holds a credential: %v", err)
		}
	}
	// Clean drops the trace variables, so git writes no trace at all.
	matches, _ := filepath.Glob(trace + "*")
	for _, m := range matches {
		data, err := os.ReadFile(m)
		if err != nil {
			t.Fatal(err)
		}
		leaked := strings.Contains(string(data), token) || strings.Contains(string(data), secret.Basic(token))
		t.Errorf("git wrote the trace %s (holds the token: %v)", filepath.Base(m), leaked)
	}
}

// TestFailedGitNeverEchoesTheCredential: git printing the header it was
// given, at any position of its message, leaves no piece of it in the error
// even where the message is cut short.
func TestFailedGitNeverEchoesTheCredential(t *testing.T) {
	for _, pad := range []int{0, 240, 262, 290} {
		t.Run(fmt.Sprintf("header after %d bytes", pad), func(t *testing.T) {
			fake := filepath.Join(t.TempDir(), "git")
			script := fmt.Sprintf("#!/bin/sh\nprintf '%%0%dd %%s\\n' 0 \"$GIT_CONFIG_VALUE_0\" >&2\nexit 1\n", pad)
			if err := os.WriteFile(fake, []byte(script), 0o755); err != nil {
				t.Fatal(err)
			}
			_, err := Git{Path: fake}.Run(context.Background(), Auth("https://github.com/x/y.git", token), "push")
			if err == nil {
				t.Fatal("the fake git did not fail")
			}
			msg := err.Error()
			// "x-access-token:" encodes to 20 characters; past them is the
			// secret.
			if strings.Contains(msg, secret.Basic(token)[:24]) || strings.Contains(msg, token[:8]) {
				t.Fatalf("the error carries part of the token: %s", msg)
			}
			if !strings.HasPrefix(msg, "git push: ") {
				t.Errorf("the error does not name the command: %s", msg)
			}
		})
	}
}

func TestRunStopsWithItsContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := Git{}.Run(ctx, nil, "version")
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Run with a cancelled context = %v, want context.Canceled", err)
	}
}
