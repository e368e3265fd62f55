package kubernetes_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/rest"

	"github.com/agentbot/agentbot/internal/gitserver"
	"github.com/agentbot/agentbot/internal/kubetest"
	"github.com/agentbot/agentbot/runner"
	"github.com/agentbot/agentbot/runner/kubernetes"
)

// suite is the control plane all tests of this package share.
var suite kubetest.Suite

// binDir holds agent-runner, built once for the package.
var (
	binDir      string
	buildOnce   sync.Once
	agentRunner string
	buildErr    error
)

func TestMain(m *testing.M) {
	var err error
	binDir, err = os.MkdirTemp("", "agentbot-kube-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := suite.Main(m)
	os.RemoveAll(binDir)
	os.Exit(code)
}

// agentRunnerBinary builds cmd/agent-runner once.
func agentRunnerBinary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		agentRunner = filepath.Join(binDir, "agent-runner")
		cmd := exec.Command("go", "build", "-o", agentRunner, "github.com/agentbot/agentbot/cmd/agent-runner")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build cmd/agent-runner: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return agentRunner
}

var (
	templateGVR = schema.GroupVersionResource{Group: "extensions.agents.x-k8s.io", Version: "v1beta1", Resource: "sandboxtemplates"}
	warmPoolGVR = schema.GroupVersionResource{Group: "extensions.agents.x-k8s.io", Version: "v1beta1", Resource: "sandboxwarmpools"}
	sandboxGVR  = schema.GroupVersionResource{Group: "agents.x-k8s.io", Version: "v1beta1", Resource: "sandboxes"}
)

const (
	testToken = "ghs_readonlyKUBE0123456789abcdef"
	owner     = "acme"
	repoName  = "widgets"
	// agentRunnerInImage is where the image has agent-runner (the
	// launcher's default), mapped to the built binary by the executor.
	agentRunnerInImage = kubernetes.DefaultAgentRunner
)

// fixture is one test's namespace with the runner's SandboxTemplate and
// SandboxWarmPool from manifests/base, a git server with acme/widgets and a
// launcher whose exec runs agent-runner locally.
type fixture struct {
	podExec bool
	env     *kubetest.Env
	ns      string
	exec    *kubetest.LocalExecutor
	git     *gitserver.Server
	base    string
	dir     string
}

type fixtureOptions struct {
	// warmReplicas is the warm pool's size; -1 creates no warm pool.
	warmReplicas int
	// podExec makes launchers exec through the API server's pods/exec
	// (the production PodExecutor, served by the stand-in kubelet) instead
	// of calling the LocalExecutor directly.
	podExec bool
}

// eachExecutor runs test twice: with the LocalExecutor called directly,
// and with the real pods/exec path through kube-apiserver.
func eachExecutor(t *testing.T, test func(t *testing.T, podExec bool)) {
	t.Run("local", func(t *testing.T) { test(t, false) })
	t.Run("pods-exec", func(t *testing.T) { test(t, true) })
}

func newFixture(t testing.TB, o fixtureOptions) *fixture {
	t.Helper()
	env := suite.Env(t)
	bin := agentRunnerBinary(t)
	f := &fixture{podExec: o.podExec, env: env, ns: env.Namespace(t), dir: t.TempDir()}
	f.exec = env.NewExecutor(t, f.ns, kubernetes.DefaultWorkspace, map[string]string{agentRunnerInImage: bin})
	f.git = gitserver.New(t, func(repo, user, pass string, write bool) bool {
		return repo == owner+"/"+repoName && user == "x-access-token" && pass == testToken && !write
	})
	f.base = f.git.CreateRepo(owner, repoName, "main", map[string]string{"README.md": "# widgets\n"})
	f.applyRunnerManifests(t, o.warmReplicas)
	return f
}

// applyRunnerManifests creates the SandboxTemplate and (unless replicas is
// -1) the SandboxWarmPool of manifests/base in the fixture's namespace.
func (f *fixture) applyRunnerManifests(t testing.TB, replicas int) {
	t.Helper()
	objs, err := kubetest.RenderKustomization("../../manifests/base")
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, o := range objs {
		var gvr schema.GroupVersionResource
		switch o.GetKind() {
		case "SandboxTemplate":
			gvr = templateGVR
		case "SandboxWarmPool":
			if replicas < 0 {
				continue
			}
			gvr = warmPoolGVR
			if err := unstructured.SetNestedField(o.Object, int64(replicas), "spec", "replicas"); err != nil {
				t.Fatal(err)
			}
		default:
			continue
		}
		o.SetNamespace(f.ns)
		if _, err := f.env.Dynamic.Resource(gvr).Namespace(f.ns).Create(ctx, o, metav1.CreateOptions{}); err != nil {
			t.Fatalf("create %s %s: %v", o.GetKind(), o.GetName(), err)
		}
	}
}

// launcher returns a launcher for the fixture's namespace with its own
// metrics registry, talking to the API server as cfg (admin when nil).
func (f *fixture) launcher(t testing.TB, cfg *rest.Config, exec kubernetes.Executor) (*kubernetes.Launcher, *prometheus.Registry) {
	t.Helper()
	if cfg == nil {
		cfg = f.env.Config
	}
	if exec == nil {
		exec = f.executor(t, cfg)
	}
	reg := prometheus.NewRegistry()
	l, err := kubernetes.New(kubernetes.Config{
		Namespace:    f.ns,
		ReadyTimeout: time.Minute,
	}, cfg, reg, slog.New(slog.NewTextHandler(newTestLog(t), &slog.HandlerOptions{Level: slog.LevelDebug})), kubernetes.WithExecutor(exec))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := l.Close(); err != nil {
			t.Errorf("close launcher: %v", err)
		}
	})
	return l, reg
}

// executor is the fixture's way of running commands in pods: the real
// PodExecutor as cfg (admin when nil), or the LocalExecutor.
func (f *fixture) executor(t testing.TB, cfg *rest.Config) kubernetes.Executor {
	t.Helper()
	if !f.podExec {
		return f.exec
	}
	if cfg == nil {
		cfg = f.env.Config
	}
	pe, err := kubernetes.NewPodExecutor(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return pe
}

// script writes a shell script for the "command" agent and returns the
// agent command. The script runs in the clone.
func (f *fixture) script(t *testing.T, name, body string) string {
	t.Helper()
	path := filepath.Join(f.dir, name)
	if err := os.WriteFile(path, []byte("#!/bin/sh\nset -e\n"+body), 0o755); err != nil {
		t.Fatal(err)
	}
	return "/bin/sh " + path
}

// gate is a file an agent script waits for, so a test can act while the
// agent runs.
type gate string

func (f *fixture) gate(name string) gate { return gate(filepath.Join(f.dir, name)) }

// wait is the shell that blocks until the gate opens.
func (g gate) wait() string {
	return fmt.Sprintf("while [ ! -e %q ]; do sleep 0.02; done\n", string(g))
}

func (g gate) open(t *testing.T) {
	t.Helper()
	if err := os.WriteFile(string(g), nil, 0o644); err != nil {
		t.Fatal(err)
	}
}

func (f *fixture) job(taskID, agentCommand string) runner.Job {
	return runner.Job{
		Version:     runner.ProtocolVersion,
		TaskID:      taskID,
		Repo:        owner + "/" + repoName,
		CloneURL:    f.git.CloneURL(owner, repoName),
		Token:       testToken,
		BaseBranch:  "main",
		Branch:      "agentbot/issue-7-add-hello",
		Prompt:      runner.JobPrompt{Title: "Add hello", Body: "Please add hello.txt"},
		Agent:       runner.AgentSpec{Name: "command", Command: agentCommand},
		TimeLimit:   runner.Duration(10 * time.Minute),
		AuthorName:  "agentbot[bot]",
		AuthorEmail: "agentbot@example.com",
		IssueNumber: 7,
	}
}

// collect reads events until the channel closes.
func collect(ctx context.Context, t *testing.T, r runner.Run) []runner.Event {
	t.Helper()
	var evs []runner.Event
	for {
		select {
		case ev, ok := <-r.Events():
			if !ok {
				return evs
			}
			evs = append(evs, ev)
		case <-ctx.Done():
			t.Fatalf("events did not end: %v (got %d)", ctx.Err(), len(evs))
		}
	}
}

// until reads events until one matches, and returns those read.
func until(ctx context.Context, t *testing.T, r runner.Run, match func(runner.Event) bool) []runner.Event {
	t.Helper()
	var evs []runner.Event
	for {
		select {
		case ev, ok := <-r.Events():
			if !ok {
				t.Fatalf("events ended before the awaited one; got %+v", evs)
			}
			evs = append(evs, ev)
			if match(ev) {
				return evs
			}
		case <-ctx.Done():
			t.Fatalf("awaited event did not come: %v; got %+v", ctx.Err(), evs)
		}
	}
}

func isPhase(p string) func(runner.Event) bool {
	return func(ev runner.Event) bool { return ev.Type == runner.EventPhase && ev.Phase == p }
}

func resultOf(evs []runner.Event) *runner.RunResult {
	for _, ev := range evs {
		if ev.Type == runner.EventResult {
			return ev.Result
		}
	}
	return nil
}

// checkSeqs asserts that events are numbered 1, 2, 3, ... without gaps or
// repeats.
func checkSeqs(t *testing.T, evs []runner.Event) {
	t.Helper()
	for i, ev := range evs {
		if ev.Seq != i+1 {
			t.Fatalf("event %d has seq %d; want %d (events %+v)", i, ev.Seq, i+1, evs)
		}
	}
}

// waitFor polls cond until it holds or the deadline passes; used for the
// garbage collector and controllers, which act asynchronously.
func waitFor(t testing.TB, what string, timeout time.Duration, cond func(ctx context.Context) (bool, error)) {
	t.Helper()
	err := wait.PollUntilContextTimeout(context.Background(), 20*time.Millisecond, timeout, true, cond)
	if err != nil {
		t.Fatalf("waiting for %s: %v", what, err)
	}
}

// gone is a condition that holds once get reports NotFound.
func gone(get func(ctx context.Context) error) func(ctx context.Context) (bool, error) {
	return func(ctx context.Context) (bool, error) {
		err := get(ctx)
		if apierrors.IsNotFound(err) {
			return true, nil
		}
		return false, nil
	}
}

// waitWarmPoolReady waits until the fixture's warm pool has n ready
// sandboxes whose pod IPs the claim controller can see: a claim adopts only
// such a sandbox (otherwise it retries for up to 2 s, then cold-starts).
func (f *fixture) waitWarmPoolReady(t testing.TB, n int64) {
	t.Helper()
	waitFor(t, fmt.Sprintf("warm pool with %d ready sandboxes", n), time.Minute, func(ctx context.Context) (bool, error) {
		p, err := f.env.Sandbox.ExtensionsV1beta1().SandboxWarmPools(f.ns).Get(ctx, kubernetes.DefaultWarmPool, metav1.GetOptions{})
		if err != nil || int64(p.Status.ReadyReplicas) != n {
			return false, err
		}
		sandboxes, err := f.env.Dynamic.Resource(sandboxGVR).Namespace(f.ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, err
		}
		var warm int64
		for _, sb := range sandboxes.Items {
			owners := sb.GetOwnerReferences()
			ips, _, _ := unstructured.NestedStringSlice(sb.Object, "status", "podIPs")
			if len(owners) == 1 && owners[0].Kind == "SandboxWarmPool" && len(ips) > 0 {
				warm++
			}
		}
		return warm == n, nil
	})
}

// histogramCount is the sample count of a histogram with the given label.
func histogramCount(t testing.TB, reg *prometheus.Registry, name, label, value string) uint64 {
	t.Helper()
	var n uint64
	for _, m := range gather(t, reg, name) {
		if hasLabel(m, label, value) && m.GetHistogram() != nil {
			n += m.GetHistogram().GetSampleCount()
		}
	}
	return n
}

// counterValue is the value of a counter with the given label ("" for none).
func counterValue(t testing.TB, reg *prometheus.Registry, name, label, value string) float64 {
	t.Helper()
	var v float64
	for _, m := range gather(t, reg, name) {
		if (label == "" || hasLabel(m, label, value)) && m.GetCounter() != nil {
			v += m.GetCounter().GetValue()
		}
	}
	return v
}

func gather(t testing.TB, reg *prometheus.Registry, name string) []*dto.Metric {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()
		}
	}
	return nil
}

func hasLabel(m *dto.Metric, name, value string) bool {
	for _, l := range m.GetLabel() {
		if l.GetName() == name && l.GetValue() == value {
			return true
		}
	}
	return false
}

// testLog sends log output to t.Log until t ends (a late line from a
// goroutine that outlives the test is dropped, not a panic).
type testLog struct {
	t    testing.TB
	mu   sync.Mutex
	done bool
}

func newTestLog(t testing.TB) *testLog {
	w := &testLog{t: t}
	t.Cleanup(func() {
		w.mu.Lock()
		w.done = true
		w.mu.Unlock()
	})
	return w
}

func (w *testLog) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

// drained fails unless r's events are closed: it reads what is buffered and
// must then find the channel closed, never empty and open.
func drained(t *testing.T, r runner.Run) {
	t.Helper()
	for {
		select {
		case _, ok := <-r.Events():
			if !ok {
				return
			}
		default:
			t.Fatal("events are still open")
		}
	}
}

// runGoroutines counts the goroutines in a run's methods (its loop, the
// claim watcher) and the launcher's shared claim watch, and returns their
// stacks. Tests in this package do not run
// in parallel, and every launcher is closed when its test ends.
func runGoroutines() (int, string) {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	var found []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "agentbot/runner/kubernetes.(*run).") || strings.Contains(g, "agentbot/runner/kubernetes.(*claimCache).") {
			found = append(found, g)
		}
	}
	return len(found), strings.Join(found, "\n\n")
}

// podPhase is p's phase, or "none" without a pod.
func podPhase(p *corev1.Pod) string {
	if p == nil {
		return "none"
	}
	return string(p.Status.Phase)
}
