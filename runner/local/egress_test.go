package local

import (
	"context"
	"encoding/pem"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agentbot/agentbot/gateway"
	"github.com/agentbot/agentbot/internal/gitserver"
	"github.com/agentbot/agentbot/internal/scriptedagent"
	"github.com/agentbot/agentbot/runner"
)

// hostileNet is an agent that tries every way out of its network
// namespace and prints one "NET <what> <outcome>" line for each.
const hostileNet = `#!/bin/sh
say() { echo "NET $*"; }
if curl -s --noproxy '*' -m 5 -o /dev/null "http://127.0.0.1:$HOST_PORT/"; then say direct reached; else say direct refused; fi
b=$(curl -sS -m 20 --cacert "$CA" "https://example.com:$TLS_PORT/hello" 2>&1); say allowed "$b"
for h in evil.example lo.example meta.example; do
  c=$(curl -s -m 20 -o /dev/null -w '%{http_connect}' --cacert "$CA" "https://$h:$TLS_PORT/" 2>/dev/null); say "$h" "$c"
done
git fetch -q origin && say fetch ok || say fetch failed
git log --oneline -1 origin/main | grep -q seed && say log ok
git clone -q http://git.agentbot.internal/octo/secret.git /tmp/other 2>/dev/null && say other cloned || say other refused
git push -q origin HEAD:refs/heads/pushed 2>/dev/null && say push ok || say push refused
ssh_out=$(git clone -q git@github.com:octo/app.git /tmp/ssh 2>&1); say ssh "$ssh_out"
# [n] and [r]: grep's own command line must not match.
leak=no
for f in /proc/[0-9]*/environ /proc/[0-9]*/cmdline; do grep -qa -e 'ghs_relaytoke[n]' -e 'sk-operato[r]' "$f" 2>/dev/null && leak="$f"; done
f=$(grep -rla -e 'ghs_relaytoke[n]' -e 'sk-operato[r]' /workspace /tmp /run 2>/dev/null | head -3); [ -n "$f" ] && leak="files $f"
env | grep -q -e 'ghs_relaytoke[n]' -e 'sk-operato[r]' && leak=env
say leak "$leak"
echo changed > net-ran.txt
`

// hostTable resolves the test's names: example.com to the allowed HTTPS
// server on 127.0.0.2, the others to addresses the gateway must refuse.
type hostTable map[string]string

func (h hostTable) LookupNetIP(_ context.Context, _, host string) ([]netip.Addr, error) {
	a, ok := h[host]
	if !ok {
		return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
	}
	return []netip.Addr{netip.MustParseAddr(a)}, nil
}

// TestSandboxEgress runs a hostile agent in each sandbox with the task's
// gateway as its only way out: the host's loopback is out of reach, an
// allowed host is reached through CONNECT, every other is refused and
// recorded as blocked, names resolving to loopback or the metadata address
// are refused though allowed, git fetches the task's repository through
// the relay only, and no credential is anywhere the agent can look.
func TestSandboxEgress(t *testing.T) {
	sandboxes := sandboxIsolations(t)
	tools := walkableTempDir(t)
	agentRunner, err := scriptedagent.BuildAgentRunnerTo(tools)
	if err != nil {
		t.Fatal(err)
	}
	script := filepath.Join(tools, "net.sh")
	if err := os.WriteFile(script, []byte(hostileNet), 0o755); err != nil {
		t.Fatal(err)
	}
	// The host's own service, which the sandbox must not reach.
	hostSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t.Errorf("the sandbox reached the host's loopback: %s %s", r.Method, r.URL)
	}))
	defer hostSrv.Close()
	ln, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		t.Skipf("no 127.0.0.2 here: %v", err)
	}
	tlsSrv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, "hello from outside")
	}))
	tlsSrv.Listener = ln
	tlsSrv.StartTLS()
	defer tlsSrv.Close()
	ca := filepath.Join(tools, "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: tlsSrv.Certificate().Raw}), 0o644); err != nil {
		t.Fatal(err)
	}
	const token = "ghs_relaytokenNeverInTheSandbox0042"
	git := gitserver.New(t, func(repo, user, pass string, write bool) bool { return !write && pass == token })
	git.CreateRepo("octo", "app", "main", map[string]string{"README.md": "hello\n"})
	git.CreateRepo("octo", "secret", "main", map[string]string{"KEYS": "private\n"})
	gitURL, _ := url.Parse(git.URL)
	_, tlsPort, _ := net.SplitHostPort(ln.Addr().String())
	_, hostPort, _ := net.SplitHostPort(strings.TrimPrefix(hostSrv.URL, "http://"))

	gw, err := gateway.New(gateway.Options{Dir: walkableTempDir(t), GitURL: gitURL,
		Resolver:   hostTable{"example.com": "127.0.0.2", "lo.example": "127.0.0.1", "meta.example": "169.254.169.254"},
		AllowCIDRs: []netip.Prefix{netip.MustParsePrefix("127.0.0.2/32")},
		Model:      gateway.ModelOptions{AnthropicKey: "sk-operator-key-never-in-the-sandbox"}})
	if err != nil {
		t.Fatal(err)
	}
	defer gw.Close()
	allow, _ := gateway.Merge(nil, nil, nil)
	for _, s := range []string{"example.com:*", "lo.example:*", "meta.example:*"} {
		r, err := gateway.ParseRule(s)
		if err != nil {
			t.Fatal(err)
		}
		allow = append(allow, r)
	}
	for _, iso := range sandboxes {
		t.Run(iso, func(t *testing.T) {
			l, err := New(Options{DataDir: walkableTempDir(t), AgentRunner: agentRunner, Isolation: iso,
				Limits: escapeLimits, StopGrace: time.Second, ReadOnlyPaths: []string{ca}})
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			var mu sync.Mutex
			var evs []runner.Egress
			task, err := gw.Open(gateway.TaskSpec{TaskID: "net-" + iso, Repo: "octo/app", Allow: allow,
				GitToken: func(context.Context) (string, error) { return token, nil },
				Record:   func(e runner.Egress) { mu.Lock(); evs = append(evs, e); mu.Unlock() }})
			if err != nil {
				t.Fatal(err)
			}
			defer task.Close()
			env := task.Env("http://127.0.0.1:3128")
			env["HOST_PORT"], env["TLS_PORT"], env["CA"] = hostPort, tlsPort, ca
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			r, err := l.Start(ctx, runner.Job{
				Version: runner.ProtocolVersion, TaskID: task.ID, Repo: "octo/app", CloneURL: task.CloneURL(),
				BaseBranch: "main", Branch: "agentbot/issue-1-net",
				Gateway:   &runner.JobGateway{Listen: "127.0.0.1:3128", HostSocket: task.Socket},
				Prompt:    runner.JobPrompt{Title: "net", Body: "net"},
				Agent:     runner.AgentSpec{Name: "command", Command: "/bin/sh " + script},
				Env:       env,
				TimeLimit: runner.Duration(2 * time.Minute), AuthorName: "bot", AuthorEmail: "bot@example.com",
			})
			if err != nil {
				t.Fatal(err)
			}
			got := map[string]string{}
			var lines []string
			for ev := range r.Events() {
				lines = append(lines, ev.Type+": "+ev.Message)
				if rest, ok := strings.CutPrefix(ev.Message, "NET "); ok {
					k, v, _ := strings.Cut(rest, " ")
					got[k] = v
				}
			}
			exit, err := r.Wait(ctx)
			if err != nil || exit.Code != runner.ExitOK {
				t.Fatalf("exit %+v, %v; events:\n%s", exit, err, strings.Join(lines, "\n"))
			}
			want := map[string]string{
				"direct": "refused", "allowed": "hello from outside",
				"evil.example": "403", "lo.example": "403", "meta.example": "403",
				"fetch": "ok", "log": "ok", "other": "refused", "push": "refused", "leak": "no",
			}
			for k, v := range want {
				if got[k] != v {
					t.Errorf("%s: %q, want %q", k, got[k], v)
				}
			}
			if !strings.Contains(got["ssh"], "ssh is not available") {
				t.Errorf("ssh: %q, want agentbot's refusal", got["ssh"])
			}
			if t.Failed() {
				t.Logf("events:\n%s", strings.Join(lines, "\n"))
			}
			if err := task.Close(); err != nil {
				t.Fatal(err)
			}
			mu.Lock()
			defer mu.Unlock()
			blocked := map[string]bool{}
			for _, e := range evs {
				if !e.Allowed {
					blocked[e.Host] = true
				}
			}
			for _, h := range []string{"evil.example", "lo.example", "meta.example"} {
				if !blocked[h] {
					t.Errorf("%s is not recorded as blocked: %+v", h, evs)
				}
			}
		})
	}
}
