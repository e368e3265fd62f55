package kubernetes_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/agentbot/agentbot/runner"
	"github.com/agentbot/agentbot/runner/kubernetes"
)

// editScript is an agent that adds hello.txt.
const editScript = "echo hello > hello.txt\necho 'added hello.txt'\n"

// TestRunTaskInSandbox runs a whole task through the launcher: a cold claim
// becomes Ready through the real controller, agent-runner runs the job over
// (local) exec, the bundle comes back over exec, and Cleanup deletes the
// claim with its Sandbox and Pod garbage-collected.
func TestRunTaskInSandbox(t *testing.T) { eachExecutor(t, testRunTaskInSandbox) }

func testRunTaskInSandbox(t *testing.T, podExec bool) {
	f := newFixture(t, fixtureOptions{warmReplicas: 0, podExec: podExec})
	l, reg := f.launcher(t, nil, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	job := f.job("01JTASK-RUN", f.script(t, "agent.sh", editScript))
	before := time.Now()
	run, err := l.Start(ctx, job)
	if err != nil {
		t.Fatal(err)
	}
	evs := collect(ctx, t, run)
	exit, err := run.Wait(ctx)
	if err != nil || exit.Code != runner.ExitOK {
		t.Fatalf("Wait = %d, %v; events %+v", exit.Code, err, evs)
	}
	checkSeqs(t, evs)
	res := resultOf(evs)
	if res == nil || res.Status != runner.StatusSucceeded || res.Branch != job.Branch {
		t.Fatalf("result = %+v", res)
	}

	var bundle bytes.Buffer
	if err := run.Bundle(ctx, &bundle); err != nil {
		t.Fatal(err)
	}
	heads := bundleHeads(t, f.dir, bundle.Bytes())
	if !strings.Contains(heads, res.Commit+" refs/heads/"+job.Branch) {
		t.Fatalf("bundle heads %q do not have %s at %s", heads, job.Branch, res.Commit)
	}

	name := kubernetes.ClaimName(job.TaskID)
	claim, err := f.env.Sandbox.ExtensionsV1beta1().SandboxClaims(f.ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	wantLabels := map[string]string{
		kubernetes.LabelManagedBy: "agentbot",
		kubernetes.LabelTaskID:    "01JTASK-RUN",
		kubernetes.LabelRepo:      "acme_widgets",
	}
	for k, v := range wantLabels {
		if claim.Labels[k] != v {
			t.Errorf("label %s = %q; want %q", k, claim.Labels[k], v)
		}
	}
	if claim.Annotations[kubernetes.AnnotationRepo] != "acme/widgets" || claim.Annotations[kubernetes.AnnotationTaskID] != job.TaskID {
		t.Errorf("annotations = %v", claim.Annotations)
	}
	if claim.Spec.WarmPoolRef.Name != kubernetes.DefaultWarmPool {
		t.Errorf("warm pool = %q", claim.Spec.WarmPoolRef.Name)
	}
	lc := claim.Spec.Lifecycle
	if lc == nil || lc.ShutdownTime == nil || lc.ShutdownPolicy != "Delete" {
		t.Fatalf("lifecycle = %+v", lc)
	}
	// shutdownTime = start + time limit + grace, to the second.
	want := before.Add(time.Duration(job.TimeLimit) + kubernetes.DefaultGracePeriod)
	if d := lc.ShutdownTime.Sub(want); d < -2*time.Second || d > 2*time.Second {
		t.Errorf("shutdownTime %s; want about %s", lc.ShutdownTime.UTC(), want.UTC())
	}
	pod := claim.Status.SandboxStatus.Name
	if pod != name {
		t.Errorf("cold start: sandbox %q; want the claim's name %q", pod, name)
	}
	if n := histogramCount(t, reg, "agentbot_kubernetes_claim_ready_seconds", "start", "cold"); n != 1 {
		t.Errorf("cold time-to-ready samples = %d; want 1", n)
	}

	if err := l.Cleanup(ctx, job.TaskID, false); err != nil {
		t.Fatal(err)
	}
	claims := f.env.Sandbox.ExtensionsV1beta1().SandboxClaims(f.ns)
	waitFor(t, "claim deleted", 30*time.Second, gone(func(ctx context.Context) error {
		_, err := claims.Get(ctx, name, metav1.GetOptions{})
		return err
	}))
	waitFor(t, "sandbox garbage-collected", 30*time.Second, gone(func(ctx context.Context) error {
		_, err := f.env.Dynamic.Resource(sandboxGVR).Namespace(f.ns).Get(ctx, pod, metav1.GetOptions{})
		return err
	}))
	waitFor(t, "pod garbage-collected", 30*time.Second, gone(func(ctx context.Context) error {
		_, err := f.env.Client.CoreV1().Pods(f.ns).Get(ctx, pod, metav1.GetOptions{})
		return err
	}))
	// Cleanup of a claim that is gone is fine.
	if err := l.Cleanup(ctx, job.TaskID, false); err != nil {
		t.Fatalf("second Cleanup: %v", err)
	}
}

// bundleHeads lists a bundle's refs with git.
func bundleHeads(t *testing.T, dir string, bundle []byte) string {
	t.Helper()
	cmd := exec.Command("git", "bundle", "list-heads", "/dev/stdin")
	cmd.Dir = dir
	cmd.Stdin = bytes.NewReader(bundle)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("git bundle list-heads: %v\n%s", err, out)
	}
	return string(out)
}

// TestWarmPoolAdoption: with a warm pool of one ready sandbox, the claim
// adopts it instead of starting a pod of its own.
func TestWarmPoolAdoption(t *testing.T) { eachExecutor(t, testWarmPoolAdoption) }

func testWarmPoolAdoption(t *testing.T, podExec bool) {
	f := newFixture(t, fixtureOptions{warmReplicas: 1, podExec: podExec})
	f.waitWarmPoolReady(t, 1)
	l, reg := f.launcher(t, nil, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	pools, err := f.env.Client.CoreV1().Pods(f.ns).List(ctx, metav1.ListOptions{})
	if err != nil || len(pools.Items) != 1 {
		t.Fatalf("warm pods = %v, %v", pools, err)
	}
	warmPod := pools.Items[0].Name

	job := f.job("01JTASK-WARM", f.script(t, "agent.sh", editScript))
	run, err := l.Start(ctx, job)
	if err != nil {
		t.Fatal(err)
	}
	evs := collect(ctx, t, run)
	if exit, err := run.Wait(ctx); err != nil || exit.Code != runner.ExitOK {
		t.Fatalf("Wait = %d, %v; events %+v", exit.Code, err, evs)
	}
	claim, err := f.env.Sandbox.ExtensionsV1beta1().SandboxClaims(f.ns).Get(ctx, kubernetes.ClaimName(job.TaskID), metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got := claim.Status.SandboxStatus.Name; got != warmPod {
		t.Fatalf("claim's sandbox = %q; want the warm pod %q", got, warmPod)
	}
	if n := histogramCount(t, reg, "agentbot_kubernetes_claim_ready_seconds", "start", "warm"); n != 1 {
		t.Errorf("warm time-to-ready samples = %d; want 1", n)
	}
	if err := l.Cleanup(ctx, job.TaskID, false); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "adopted pod garbage-collected", 30*time.Second, gone(func(ctx context.Context) error {
		_, err := f.env.Client.CoreV1().Pods(f.ns).Get(ctx, warmPod, metav1.GetOptions{})
		return err
	}))
}

// TestConfigurationErrors: a claim naming a missing warm pool fails at once
// with an error that names the object to fix, and is removed.
func TestConfigurationErrors(t *testing.T) {
	f := newFixture(t, fixtureOptions{warmReplicas: -1})
	l, reg := f.launcher(t, nil, nil)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	job := f.job("01JTASK-NOPOOL", f.script(t, "agent.sh", editScript))
	_, err := l.Start(ctx, job)
	var cfgErr *kubernetes.ConfigError
	if !errors.As(err, &cfgErr) {
		t.Fatalf("Start error = %v; want a ConfigError", err)
	}
	if cfgErr.Reason != "WarmPoolNotFound" {
		t.Errorf("reason = %q", cfgErr.Reason)
	}
	for _, want := range []string{`SandboxWarmPool "agentbot-runner"`, `namespace "` + f.ns + `"`, "AGENTBOT_WARM_POOL"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %s", err, want)
		}
	}
	waitFor(t, "misconfigured claim deleted", 30*time.Second, gone(func(ctx context.Context) error {
		_, err := f.env.Sandbox.ExtensionsV1beta1().SandboxClaims(f.ns).Get(ctx, kubernetes.ClaimName(job.TaskID), metav1.GetOptions{})
		return err
	}))
	if v := counterValue(t, reg, "agentbot_kubernetes_claim_failures_total", "reason", "WarmPoolNotFound"); v != 1 {
		t.Errorf("claim failures{WarmPoolNotFound} = %v", v)
	}
}

// TestPodFailureFailsTask: a sandbox pod that fails mid-task (evicted, say)
// fails the run with the pod's reason; a new attempt of the task replaces
// the dead claim and runs.
func TestPodFailureFailsTask(t *testing.T) { eachExecutor(t, testPodFailureFailsTask) }

func testPodFailureFailsTask(t *testing.T, podExec bool) {
	f := newFixture(t, fixtureOptions{warmReplicas: 0, podExec: podExec})
	l, _ := f.launcher(t, nil, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	g := f.gate("never")
	job := f.job("01JTASK-EVICT", f.script(t, "agent.sh", g.wait()+editScript))
	run, err := l.Start(ctx, job)
	if err != nil {
		t.Fatal(err)
	}
	until(ctx, t, run, isPhase(runner.PhaseAgent))
	name := kubernetes.ClaimName(job.TaskID)
	claims := f.env.Sandbox.ExtensionsV1beta1().SandboxClaims(f.ns)
	first, err := claims.Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := f.env.Kubelet.FailPod(ctx, f.ns, first.Status.SandboxStatus.Name, "Evicted", "The node was low on resource: memory."); err != nil {
		t.Fatal(err)
	}
	collect(ctx, t, run)
	_, err = run.Wait(ctx)
	var sbErr *kubernetes.SandboxError
	if !errors.As(err, &sbErr) {
		t.Fatalf("Wait error = %v; want a SandboxError", err)
	}
	if sbErr.Reason != "PodFailed" || !strings.Contains(sbErr.Message, "Evicted") || !strings.Contains(sbErr.Message, "low on resource") {
		t.Fatalf("sandbox error = %+v", sbErr)
	}

	// Attach after the failure: the sandbox is gone.
	if _, err := l.Attach(ctx, job.TaskID, 3); !errors.Is(err, runner.ErrGone) {
		t.Fatalf("Attach after pod failure = %v; want ErrGone", err)
	}

	// A new attempt gets a new claim.
	job.Agent.Command = f.script(t, "agent2.sh", editScript)
	run, err = l.Start(ctx, job)
	if err != nil {
		t.Fatal(err)
	}
	collect(ctx, t, run)
	if exit, err := run.Wait(ctx); err != nil || exit.Code != runner.ExitOK {
		t.Fatalf("second attempt Wait = %d, %v", exit.Code, err)
	}
	second, err := claims.Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if second.UID == first.UID {
		t.Fatal("the second attempt reused the failed claim")
	}
	if err := l.Cleanup(ctx, job.TaskID, false); err != nil {
		t.Fatal(err)
	}
}

// TestRestartReattaches: the context Start was given ends as soon as Start
// returns, and the run goes on; then the bot stops (Detach), which ends the
// stream but leaves the claim, its pod and agent-runner running; a new
// launcher attaches from the last event it saw, no second claim is made, and
// the task finishes with every event exactly once.
func TestRestartReattaches(t *testing.T) { eachExecutor(t, testRestartReattaches) }

func testRestartReattaches(t *testing.T, podExec bool) {
	f := newFixture(t, fixtureOptions{warmReplicas: 0, podExec: podExec})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	before, release := f.gate("before"), f.gate("release")
	job := f.job("01JTASK-RESTART", f.script(t, "agent.sh", before.wait()+"echo before\n"+release.wait()+editScript))

	first, _ := f.launcher(t, nil, nil)
	startCtx, startDone := context.WithCancel(ctx)
	run, err := first.Start(startCtx, job)
	startDone()
	if err != nil {
		t.Fatal(err)
	}
	// The agent says "before" only once the starting context has ended.
	before.open(t)
	seen := until(ctx, t, run, func(ev runner.Event) bool {
		return ev.Type == runner.EventLog && strings.Contains(ev.Message, "before")
	})
	run.Detach()
	// Detach returns with the events closed: what is left is buffered.
	drained(t, run)
	if _, err := run.Wait(ctx); !errors.Is(err, runner.ErrDetached) {
		t.Fatalf("Wait after Detach = %v; want ErrDetached", err)
	}
	name := kubernetes.ClaimName(job.TaskID)
	claim, err := f.env.Sandbox.ExtensionsV1beta1().SandboxClaims(f.ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil || claim.DeletionTimestamp != nil {
		t.Fatalf("claim after Detach: %v (deleting: %v)", err, err == nil && claim.DeletionTimestamp != nil)
	}
	pod, err := f.env.Client.CoreV1().Pods(f.ns).Get(ctx, claim.Status.SandboxStatus.Name, metav1.GetOptions{})
	if err != nil || pod.Status.Phase != corev1.PodRunning || pod.DeletionTimestamp != nil {
		t.Fatalf("pod after Detach: %v, phase %v", err, podPhase(pod))
	}
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	lastSeq := seen[len(seen)-1].Seq

	second, _ := f.launcher(t, nil, nil)
	run, err = second.Attach(ctx, job.TaskID, lastSeq)
	if err != nil {
		t.Fatal(err)
	}
	release.open(t)
	rest := collect(ctx, t, run)
	if exit, err := run.Wait(ctx); err != nil || exit.Code != runner.ExitOK {
		t.Fatalf("attached Wait = %d, %v; events %+v", exit.Code, err, rest)
	}
	all := append(seen, rest...)
	checkSeqs(t, all)
	if res := resultOf(all); res == nil || res.Status != runner.StatusSucceeded {
		t.Fatalf("result = %+v", res)
	}
	var bundle bytes.Buffer
	if err := run.Bundle(ctx, &bundle); err != nil {
		t.Fatal(err)
	}
	claims, err := f.env.Sandbox.ExtensionsV1beta1().SandboxClaims(f.ns).List(ctx, metav1.ListOptions{
		LabelSelector: kubernetes.LabelTaskID + "=01JTASK-RESTART",
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(claims.Items) != 1 {
		t.Fatalf("%d claims for the task; want 1", len(claims.Items))
	}

	// Start after a crash that came between creating the claim and
	// recording the run: the existing claim is used, not a second one.
	again, err := second.Start(ctx, job)
	if err != nil {
		t.Fatal(err)
	}
	collect(ctx, t, again)
	if exit, err := again.Wait(ctx); err != nil || exit.Code != runner.ExitOK {
		t.Fatalf("restarted Wait = %d, %v", exit.Code, err)
	}
	after, err := f.env.Sandbox.ExtensionsV1beta1().SandboxClaims(f.ns).Get(ctx, kubernetes.ClaimName(job.TaskID), metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if after.UID != claims.Items[0].UID {
		t.Fatal("Start replaced a healthy claim")
	}
	if err := second.Cleanup(ctx, job.TaskID, false); err != nil {
		t.Fatal(err)
	}
	if _, err := second.Attach(ctx, job.TaskID, 0); !errors.Is(err, runner.ErrGone) {
		t.Fatalf("Attach after Cleanup = %v; want ErrGone", err)
	}
}

// TestStopDeletesClaim: Stop (cancel) ends the run as cancelled and deletes
// the claim, whose pod then goes, and the agent with it.
func TestStopDeletesClaim(t *testing.T) { eachExecutor(t, testStopDeletesClaim) }

func testStopDeletesClaim(t *testing.T, podExec bool) {
	f := newFixture(t, fixtureOptions{warmReplicas: 0, podExec: podExec})
	l, _ := f.launcher(t, nil, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	g := f.gate("never")
	job := f.job("01JTASK-STOP", f.script(t, "agent.sh", g.wait()))
	run, err := l.Start(ctx, job)
	if err != nil {
		t.Fatal(err)
	}
	until(ctx, t, run, isPhase(runner.PhaseAgent))
	if err := run.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	collect(ctx, t, run)
	if exit, err := run.Wait(ctx); err != nil || exit.Code != runner.ExitCancelled {
		t.Fatalf("Wait after Stop = %d, %v; want %d", exit.Code, err, runner.ExitCancelled)
	}
	name := kubernetes.ClaimName(job.TaskID)
	waitFor(t, "pod garbage-collected", 30*time.Second, gone(func(ctx context.Context) error {
		_, err := f.env.Client.CoreV1().Pods(f.ns).Get(ctx, name, metav1.GetOptions{})
		return err
	}))
}

// breakingExecutor breaks the first `agent-runner run` stream once the agent
// phase has started, as a dropped connection to the API server would.
type breakingExecutor struct {
	kubernetes.Executor
	broke bool
}

func (b *breakingExecutor) Exec(ctx context.Context, req kubernetes.ExecRequest) (int, error) {
	if b.broke || len(req.Command) < 2 || req.Command[1] != "run" {
		return b.Executor.Exec(ctx, req)
	}
	b.broke = true
	ctx, cut := context.WithCancel(ctx)
	defer cut()
	req.Stdout = &cutter{w: req.Stdout, after: []byte(`"phase":"agent"`), cut: cut}
	return b.Executor.Exec(ctx, req)
}

// cutter passes writes through and cancels the stream after the line that
// contains after.
type cutter struct {
	w     interface{ Write([]byte) (int, error) }
	after []byte
	cut   context.CancelFunc
}

func (c *cutter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	if bytes.Contains(p, c.after) {
		c.cut()
	}
	return n, err
}

// refusingExecutor fails the first `agent-runner run` before running it, as
// an API server hiccup would.
type refusingExecutor struct {
	kubernetes.Executor
	refused bool
}

func (e *refusingExecutor) Exec(ctx context.Context, req kubernetes.ExecRequest) (int, error) {
	if !e.refused && len(req.Command) > 1 && req.Command[1] == "run" {
		e.refused = true
		return 0, errors.New("upgrade request failed: 503 Service Unavailable")
	}
	return e.Executor.Exec(ctx, req)
}

// TestExecRefusedAtStart: when the first exec never reached agent-runner,
// the launcher finds nothing to attach to and starts agent-runner again.
func TestExecRefusedAtStart(t *testing.T) {
	f := newFixture(t, fixtureOptions{warmReplicas: 0})
	l, reg := f.launcher(t, nil, &refusingExecutor{Executor: f.exec})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	job := f.job("01JTASK-REFUSED", f.script(t, "agent.sh", editScript))
	run, err := l.Start(ctx, job)
	if err != nil {
		t.Fatal(err)
	}
	evs := collect(ctx, t, run)
	if exit, err := run.Wait(ctx); err != nil || exit.Code != runner.ExitOK {
		t.Fatalf("Wait = %d, %v; events %+v", exit.Code, err, evs)
	}
	checkSeqs(t, evs)
	if res := resultOf(evs); res == nil || res.Status != runner.StatusSucceeded {
		t.Fatalf("result = %+v", res)
	}
	if v := counterValue(t, reg, "agentbot_kubernetes_exec_errors_total", "command", "run"); v != 1 {
		t.Errorf("exec errors{run} = %v; want 1", v)
	}
	if err := l.Cleanup(ctx, job.TaskID, false); err != nil {
		t.Fatal(err)
	}
}

// TestBrokenStreamResumes: when the exec stream breaks while agent-runner
// runs, the launcher resumes it with attach from the last event, and the
// caller sees every event exactly once.
func TestBrokenStreamResumes(t *testing.T) { eachExecutor(t, testBrokenStreamResumes) }

func testBrokenStreamResumes(t *testing.T, podExec bool) {
	f := newFixture(t, fixtureOptions{warmReplicas: 0, podExec: podExec})
	l, reg := f.launcher(t, nil, &breakingExecutor{Executor: f.executor(t, nil)})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	job := f.job("01JTASK-BREAK", f.script(t, "agent.sh", "sleep 0.3\n"+editScript))
	run, err := l.Start(ctx, job)
	if err != nil {
		t.Fatal(err)
	}
	evs := collect(ctx, t, run)
	if exit, err := run.Wait(ctx); err != nil || exit.Code != runner.ExitOK {
		t.Fatalf("Wait = %d, %v; events %+v", exit.Code, err, evs)
	}
	checkSeqs(t, evs)
	if res := resultOf(evs); res == nil || res.Status != runner.StatusSucceeded {
		t.Fatalf("result = %+v", res)
	}
	if v := counterValue(t, reg, "agentbot_kubernetes_reattaches_total", "", ""); v != 1 {
		t.Errorf("reattaches = %v; want 1", v)
	}
	if v := counterValue(t, reg, "agentbot_kubernetes_exec_errors_total", "command", "run"); v != 1 {
		t.Errorf("exec errors{run} = %v; want 1", v)
	}
	if err := l.Cleanup(ctx, job.TaskID, false); err != nil {
		t.Fatal(err)
	}
}

// TestFailedJobKeepsExitCodeAndStderr: a job agent-runner refuses ends with
// its exit code (not a launcher error), an error event, and agent-runner's
// stderr for the failure report.
func TestFailedJobKeepsExitCodeAndStderr(t *testing.T) {
	eachExecutor(t, testFailedJobKeepsExitCodeAndStderr)
}

func testFailedJobKeepsExitCodeAndStderr(t *testing.T, podExec bool) {
	f := newFixture(t, fixtureOptions{warmReplicas: 0, podExec: podExec})
	l, _ := f.launcher(t, nil, nil)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	job := f.job("01JTASK-BADJOB", f.script(t, "agent.sh", editScript))
	job.Branch = "not a branch"
	run, err := l.Start(ctx, job)
	if err != nil {
		t.Fatal(err)
	}
	evs := collect(ctx, t, run)
	exit, err := run.Wait(ctx)
	if err != nil || exit.Code != runner.ExitBadJob {
		t.Fatalf("Wait = %d, %v; want %d", exit.Code, err, runner.ExitBadJob)
	}
	if len(evs) == 0 || evs[len(evs)-1].Type != runner.EventError {
		t.Errorf("events %+v; want an error event last", evs)
	}
	if tail := exit.StderrTail; len(tail) == 0 || !strings.Contains(strings.Join(tail, "\n"), "branch") {
		t.Errorf("stderr tail %q does not explain the failure", tail)
	}
	if err := l.Cleanup(ctx, job.TaskID, false); err != nil {
		t.Fatal(err)
	}
}

// TestLifecycleBackstop: when the bot is gone for good, the claim's
// shutdownTime (time limit + grace, policy Delete) makes the agent-sandbox
// controller delete the claim, and the garbage collector its pod.
func TestLifecycleBackstop(t *testing.T) {
	f := newFixture(t, fixtureOptions{warmReplicas: 0})
	reg := prometheus.NewRegistry()
	l, err := kubernetes.New(kubernetes.Config{Namespace: f.ns, GracePeriod: time.Second, ReadyTimeout: time.Minute},
		f.env.Config, reg, nil, kubernetes.WithExecutor(f.exec))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	job := f.job("01JTASK-BACKSTOP", f.script(t, "agent.sh", f.gate("never").wait()))
	job.TimeLimit = runner.Duration(time.Second)
	run, err := l.Start(ctx, job)
	if err != nil {
		t.Fatal(err)
	}
	// The bot goes: its launcher detaches and is never seen again.
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	drained(t, run)
	l, err = kubernetes.New(kubernetes.Config{Namespace: f.ns, GracePeriod: time.Second, ReadyTimeout: time.Minute},
		f.env.Config, prometheus.NewRegistry(), nil, kubernetes.WithExecutor(f.exec))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	name := kubernetes.ClaimName(job.TaskID)
	waitFor(t, "expired claim deleted by the controller", 30*time.Second, gone(func(ctx context.Context) error {
		_, err := f.env.Sandbox.ExtensionsV1beta1().SandboxClaims(f.ns).Get(ctx, name, metav1.GetOptions{})
		return err
	}))
	waitFor(t, "pod garbage-collected", 30*time.Second, gone(func(ctx context.Context) error {
		_, err := f.env.Client.CoreV1().Pods(f.ns).Get(ctx, name, metav1.GetOptions{})
		return err
	}))
	if _, err := l.Attach(ctx, job.TaskID, 0); !errors.Is(err, runner.ErrGone) {
		t.Fatalf("Attach after expiry = %v; want ErrGone", err)
	}
}

// TestCloseDetachesAndWaits: Close returns only once the loop and claim
// watcher of every run have returned, with their events closed and Wait
// answering ErrDetached, while the sandboxes go on for the next process to
// attach; the closed launcher starts nothing.
func TestCloseDetachesAndWaits(t *testing.T) {
	f := newFixture(t, fixtureOptions{warmReplicas: 0})
	l, _ := f.launcher(t, nil, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	release := f.gate("release")
	job := f.job("01JTASK-CLOSE", f.script(t, "agent.sh", release.wait()+editScript))
	run, err := l.Start(ctx, job)
	if err != nil {
		t.Fatal(err)
	}
	seen := until(ctx, t, run, isPhase(runner.PhaseAgent))
	if n, _ := runGoroutines(); n == 0 {
		t.Fatal("no goroutine of the run found while it streams; the count below would prove nothing")
	}
	closed := make(chan error, 1)
	go func() { closed <- l.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			t.Fatal(err)
		}
	case <-ctx.Done():
		t.Fatal("Close did not return")
	}
	if n, stacks := runGoroutines(); n != 0 {
		t.Fatalf("%d goroutines of runs outlived Close:\n%s", n, stacks)
	}
	drained(t, run)
	ended, end := context.WithCancel(ctx)
	end()
	if _, err := run.Wait(ended); !errors.Is(err, runner.ErrDetached) {
		t.Fatalf("Wait after Close = %v; want ErrDetached at once", err)
	}
	if _, err := l.Start(ctx, f.job("01JTASK-CLOSED", "true")); err == nil {
		t.Fatal("Start after Close succeeded")
	}

	next, _ := f.launcher(t, nil, nil)
	again, err := next.Attach(ctx, job.TaskID, seen[len(seen)-1].Seq)
	if err != nil {
		t.Fatalf("Attach after Close: %v", err)
	}
	release.open(t)
	rest := collect(ctx, t, again)
	if exit, err := again.Wait(ctx); err != nil || exit.Code != runner.ExitOK {
		t.Fatalf("attached Wait = %d, %v; events %+v", exit.Code, err, rest)
	}
	checkSeqs(t, append(seen, rest...))
	if err := next.Cleanup(ctx, job.TaskID, false); err != nil {
		t.Fatal(err)
	}
}

// TestTasksShareOneClaimWatch: however many tasks run, the launcher holds
// one watch on the API server (the shared watch of agentbot's claims), not
// one per task, and each task still sees its own claim become Ready and
// its sandbox fail.
func TestTasksShareOneClaimWatch(t *testing.T) {
	f := newFixture(t, fixtureOptions{warmReplicas: 0})
	l, _ := f.launcher(t, nil, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	release := f.gate("release")
	agent := f.script(t, "agent.sh", release.wait()+editScript)
	const tasks = 4
	runs := make([]runner.Run, tasks)
	errs := make(chan error, tasks)
	for i := range tasks {
		go func() {
			var err error
			runs[i], err = l.Start(ctx, f.job(fmt.Sprintf("01JTASK-SHARE-%d", i), agent))
			errs <- err
		}()
	}
	for range tasks {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	for _, r := range runs {
		until(ctx, t, r, isPhase(runner.PhaseAgent))
	}
	// Every run's sandbox watcher is waiting now.
	n, err := f.env.Watches(ctx, "sandboxclaims")
	if err != nil {
		t.Fatal(err)
	}
	if n != 1 {
		t.Fatalf("%v watches on sandboxclaims while %d tasks run; want the one shared watch", n, tasks)
	}

	// The shared watch still tells one run that its claim went away.
	victim := kubernetes.ClaimName("01JTASK-SHARE-0")
	if err := f.env.Sandbox.ExtensionsV1beta1().SandboxClaims(f.ns).Delete(ctx, victim, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	collect(ctx, t, runs[0])
	var serr *kubernetes.SandboxError
	if _, err := runs[0].Wait(ctx); !errors.As(err, &serr) || serr.Reason != "ClaimDeleted" {
		t.Fatalf("Wait of the run whose claim was deleted = %v; want a ClaimDeleted SandboxError", err)
	}
	release.open(t)
	for i, r := range runs[1:] {
		evs := collect(ctx, t, r)
		if exit, err := r.Wait(ctx); err != nil || exit.Code != runner.ExitOK {
			t.Fatalf("run %d: Wait = %d, %v; events %+v", i+1, exit.Code, err, evs)
		}
	}
}
