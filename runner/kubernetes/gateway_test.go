package kubernetes_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/agentbot/agentbot/gateway"
	"github.com/agentbot/agentbot/runner"
	"github.com/agentbot/agentbot/runner/kubernetes"
)

// tableResolver maps names to loopback test servers; the gateway still
// checks every address it returns.
type tableResolver map[string]string

func (r tableResolver) LookupNetIP(_ context.Context, _, host string) ([]netip.Addr, error) {
	if a, ok := r[host]; ok {
		return []netip.Addr{netip.MustParseAddr(a)}, nil
	}
	return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
}

// TestTaskThroughGateway runs tasks through the Kubernetes launcher (real
// pods/exec through kube-apiserver and the stand-in kubelet) whose jobs
// name agentbot's gateway over TCP: agent-runner in the "pod" forwards its
// loopback proxy port to the gateway with the task's capability, which
// reached it only in the job on exec's stdin, and the agent's request
// through it is the task's (its allow-list, its egress record). A later
// task holding the first one's capability after it closed, and a wrong
// capability, are refused: the agent's request gets 407.
func TestTaskThroughGateway(t *testing.T) {
	f := newFixture(t, fixtureOptions{warmReplicas: 0, podExec: true})
	var served atomic.Int64
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		served.Add(1)
		fmt.Fprint(w, "hello from outside")
	}))
	defer upstream.Close()
	upPort := upstream.Listener.Addr().(*net.TCPAddr).Port

	g, err := gateway.New(gateway.Options{
		Dir:        shortTempDir(t),
		Resolver:   tableResolver{"allowed.test": "127.0.0.1"},
		AllowCIDRs: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")},
		Self:       []netip.AddrPort{},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	gwAddr := serveGatewayTCP(t, g)
	l := f.gatewayLauncher(t, gwAddr)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	var mu sync.Mutex
	var recorded []runner.Egress
	first, err := g.Open(gateway.TaskSpec{TaskID: "01JTASK-GW1", Repo: owner + "/" + repoName,
		Allow: gateway.AllowList{{Host: "allowed.test", Port: upPort}},
		Record: func(e runner.Egress) {
			mu.Lock()
			defer mu.Unlock()
			recorded = append(recorded, e)
		}})
	if err != nil {
		t.Fatal(err)
	}
	codes := filepath.Join(f.dir, "codes")
	// curl names the proxy itself: the point is the pod's path out, not
	// which environment variable a tool reads.
	script := fmt.Sprintf("code=$(curl -s -o fetched.txt -w '%%{http_code}' -x \"$HTTP_PROXY\" http://allowed.test:%d/ || true)\necho \"$code\" >> %s\n", upPort, codes)

	job := f.gatewayJob(t, first, "01JTASK-GW1", f.script(t, "fetch.sh", script))
	runToEnd(ctx, t, l, job)
	if got := readCodes(t, codes); got != "200" {
		t.Fatalf("the agent's request through the gateway answered %q; want 200", got)
	}
	if served.Load() != 1 {
		t.Errorf("the upstream served %d requests; want 1", served.Load())
	}
	mu.Lock()
	evs := append([]runner.Egress(nil), recorded...)
	mu.Unlock()
	if len(evs) != 1 || evs[0].Kind != runner.EgressHTTP || evs[0].Host != "allowed.test" || !evs[0].Allowed || evs[0].BytesIn == 0 {
		t.Errorf("the task's egress record = %+v; want one allowed request to allowed.test", evs)
	}
	checkNotStored(ctx, t, f, job.TaskID, first.Key())
	// agent-sandbox made the template's policy a NetworkPolicy for the
	// sandbox pods: DNS and the gateway port only.
	np, err := f.env.Client.NetworkingV1().NetworkPolicies(f.ns).Get(ctx, "agentbot-runner-network-policy", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("the sandboxes' NetworkPolicy: %v", err)
	}
	checkSandboxEgress(t, np.Spec.Egress)
	if err := l.Cleanup(ctx, job.TaskID, false); err != nil {
		t.Fatal(err)
	}

	// The task is over: its capability is void.
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, key string }{
		{"the closed task's capability", first.Key()},
		{"a wrong capability", "agentbot-task-" + strings.Repeat("ab", 32)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if status := upgradeStatus(t, gwAddr, tc.key); !strings.HasPrefix(status, "HTTP/1.1 407") {
				t.Errorf("upgrade: %q; want 407", status)
			}
		})
	}
	// A task started with the closed task's capability gets nothing: its
	// agent's request is answered 407 and never reaches the upstream.
	second, err := g.Open(gateway.TaskSpec{TaskID: "01JTASK-GW2", Repo: owner + "/" + repoName,
		Allow: gateway.AllowList{{Host: "allowed.test", Port: upPort}}})
	if err != nil {
		t.Fatal(err)
	}
	defer second.Close()
	job2 := f.gatewayJob(t, second, "01JTASK-GW2", f.script(t, "fetch2.sh", script))
	job2.Gateway.Capability = first.Key()
	job2.Env["ANTHROPIC_API_KEY"], job2.Env["OPENAI_API_KEY"] = first.Key(), first.Key()
	runToEnd(ctx, t, l, job2)
	if got := readCodes(t, codes); got != "200 407" {
		t.Errorf("answers %q; want the second task's request refused with 407", got)
	}
	if served.Load() != 1 {
		t.Errorf("the upstream served %d requests; want only the first task's", served.Load())
	}
	if err := l.Cleanup(ctx, job2.TaskID, false); err != nil {
		t.Fatal(err)
	}
}

// gatewayLauncher is the fixture's launcher (real pods/exec) with the
// gateway's address configured, as AGENTBOT_GATEWAY_ADDR sets it.
func (f *fixture) gatewayLauncher(t *testing.T, gwAddr string) *kubernetes.Launcher {
	t.Helper()
	l, err := kubernetes.New(kubernetes.Config{Namespace: f.ns, ReadyTimeout: time.Minute, GatewayAddr: gwAddr},
		f.env.Config, prometheus.NewRegistry(), slog.New(slog.NewTextHandler(newTestLog(t), nil)),
		kubernetes.WithExecutor(f.executor(t, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := l.Close(); err != nil {
			t.Errorf("close launcher: %v", err)
		}
	})
	return l
}

// gatewayJob is the fixture's job for task with the gateway's environment
// and, as the dispatcher gives it, the job's gateway without an address
// (the launcher adds its own). The "pod" is this machine, so agent-runner
// listens on a free loopback port rather than the pod's 3128.
func (f *fixture) gatewayJob(t *testing.T, task *gateway.Task, id, command string) runner.Job {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	listen := ln.Addr().String()
	ln.Close()
	job := f.job(id, command)
	job.Env = task.Env("http://" + listen)
	job.Gateway = task.JobGateway("")
	job.Gateway.Listen = listen
	return job
}

func runToEnd(ctx context.Context, t *testing.T, l *kubernetes.Launcher, job runner.Job) {
	t.Helper()
	run, err := l.Start(ctx, job)
	if err != nil {
		t.Fatal(err)
	}
	evs := collect(ctx, t, run)
	exit, err := run.Wait(ctx)
	if err != nil || exit.Code != runner.ExitOK {
		t.Fatalf("task %s: Wait = %d, %v; events %+v", job.TaskID, exit.Code, err, evs)
	}
}

// checkNotStored: the capability is in no object the cluster stores for
// the task (claim, sandbox, pod).
func checkNotStored(ctx context.Context, t *testing.T, f *fixture, taskID, key string) {
	t.Helper()
	name := kubernetes.ClaimName(taskID)
	claim, err := f.env.Sandbox.ExtensionsV1beta1().SandboxClaims(f.ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pod, err := f.env.Client.CoreV1().Pods(f.ns).Get(ctx, claim.Status.SandboxStatus.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	sandbox, err := f.env.Dynamic.Resource(sandboxGVR).Namespace(f.ns).Get(ctx, pod.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for what, obj := range map[string]any{"claim": claim, "pod": pod, "sandbox": sandbox.Object} {
		b, err := json.Marshal(obj)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(b), key) || strings.Contains(string(b), strings.TrimPrefix(key, "agentbot-task-")) {
			t.Errorf("the task's capability is stored in its %s", what)
		}
	}
}

func readCodes(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return strings.Join(strings.Fields(string(b)), " ")
}

func serveGatewayTCP(t *testing.T, g *gateway.Gateway) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := gateway.NewTCPServer(g)
	done := make(chan error, 1)
	go func() { done <- s.Serve(ln) }()
	t.Cleanup(func() {
		_ = s.Close()
		<-done
	})
	return ln.Addr().String()
}

// upgradeStatus is the status line the gateway answers ForwardTCP's
// upgrade with key.
func upgradeStatus(t *testing.T, addr, key string) string {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: %s\r\nProxy-Authorization: Bearer %s\r\n\r\n", gateway.UpgradeProtocol, key)
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(line)
}

// shortTempDir is a directory for unix sockets, whose paths must stay
// under 108 bytes (t.TempDir's can pass that).
func shortTempDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "gw")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	return dir
}
