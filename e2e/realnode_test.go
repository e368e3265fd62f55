package e2e

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/agentbot/agentbot"
	"github.com/agentbot/agentbot/internal/fakeanthropic"
	"github.com/agentbot/agentbot/internal/kubetest"
	"github.com/agentbot/agentbot/runner"
	"github.com/agentbot/agentbot/runner/kubernetes"
)

// nodeSuite is a real one-node Kubernetes (containerd, runc and gVisor, the
// kubelet) running the images built from the Dockerfile; its tests run only
// with AGENTBOT_REAL_NODE=1, which scripts/test.sh sets.
var nodeSuite = kubetest.Suite{RealNode: true}

var (
	templateGVR = schema.GroupVersionResource{Group: "extensions.agents.x-k8s.io", Version: "v1beta1", Resource: "sandboxtemplates"}
	warmPoolGVR = schema.GroupVersionResource{Group: "extensions.agents.x-k8s.io", Version: "v1beta1", Resource: "sandboxwarmpools"}
)

const modelKey = "sk-ant-e2e-node-key-5678"

// kubeWorld is a world whose bot runs tasks with the Kubernetes launcher in
// a namespace of the real node, with the runner's SandboxTemplate and a warm
// pool of one from a test overlay of manifests/.
type kubeWorld struct {
	*world
	env *kubetest.Env
	ns  string
}

func newKubeWorld(t *testing.T, overlay string) *kubeWorld {
	t.Helper()
	env := nodeSuite.Env(t)
	kw := &kubeWorld{world: newWorldAt(t, nil, kubetest.BridgeIP), env: env, ns: env.Namespace(t)}
	ctx := context.Background()
	secret := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "agentbot-model", Namespace: kw.ns},
		StringData: map[string]string{"anthropic-api-key": modelKey},
	}
	if _, err := env.Client.CoreV1().Secrets(kw.ns).Create(ctx, secret, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	objs, err := kubetest.RenderKustomization(overlay)
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range objs {
		gvr, ok := map[string]schema.GroupVersionResource{"SandboxTemplate": templateGVR, "SandboxWarmPool": warmPoolGVR}[o.GetKind()]
		if !ok {
			continue
		}
		if o.GetKind() == "SandboxWarmPool" {
			must(t, unstructured.SetNestedField(o.Object, int64(1), "spec", "replicas"))
		}
		o.SetNamespace(kw.ns)
		if _, err := env.Dynamic.Resource(gvr).Namespace(kw.ns).Create(ctx, o, metav1.CreateOptions{}); err != nil {
			t.Fatalf("create %s: %v", o.GetKind(), err)
		}
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("pods:\n%s", kw.describePods())
		}
	})
	return kw
}

// start runs the bot with the Kubernetes launcher in the world's namespace.
func (kw *kubeWorld) start(extra ...string) *bot {
	kw.t.Helper()
	return kw.world.start(append([]string{
		"AGENTBOT_LAUNCHER=kubernetes",
		"AGENTBOT_NAMESPACE=" + kw.ns,
		"KUBECONFIG=" + kw.env.Kubeconfig(),
	}, extra...)...)
}

// warmPod waits until the warm pool has a ready pod and returns it.
func (kw *kubeWorld) warmPod(t *testing.T) *corev1.Pod {
	t.Helper()
	var pod *corev1.Pod
	eventually(t, 3*time.Minute, "a ready pod in the warm pool", func() bool {
		pods, err := kw.env.Client.CoreV1().Pods(kw.ns).List(context.Background(), metav1.ListOptions{})
		if err != nil {
			return false
		}
		for i := range pods.Items {
			if podReady(&pods.Items[i]) {
				pod = &pods.Items[i]
				return true
			}
		}
		return false
	})
	return pod
}

// claimedPod waits until the task's claim has a pod and returns it.
func (kw *kubeWorld) claimedPod(t *testing.T, taskID string) *corev1.Pod {
	t.Helper()
	var pod *corev1.Pod
	claims := kw.env.Sandbox.ExtensionsV1beta1().SandboxClaims(kw.ns)
	eventually(t, 2*time.Minute, "the task's claim to have a ready pod", func() bool {
		claim, err := claims.Get(context.Background(), kubernetes.ClaimName(taskID), metav1.GetOptions{})
		if err != nil || claim.Status.SandboxStatus.Name == "" {
			return false
		}
		p, err := kw.env.Client.CoreV1().Pods(kw.ns).Get(context.Background(), claim.Status.SandboxStatus.Name, metav1.GetOptions{})
		if err != nil || !podReady(p) {
			return false
		}
		pod = p
		return true
	})
	return pod
}

func podReady(p *corev1.Pod) bool {
	if p.DeletionTimestamp != nil || p.Status.Phase != corev1.PodRunning {
		return false
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
			return true
		}
	}
	return false
}

// exec runs a command in the pod's runner container through the API
// server's pods/exec and the real kubelet, and returns its exit code and
// output.
func (kw *kubeWorld) exec(t *testing.T, pod string, command ...string) (int, string) {
	t.Helper()
	pe, err := kubernetes.NewPodExecutor(kw.env.Config)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var out bytes.Buffer
	code, err := pe.Exec(ctx, kubernetes.ExecRequest{
		Namespace: kw.ns, Pod: pod, Container: kubernetes.DefaultContainer,
		Command: command, Stdout: &out, Stderr: &out,
	})
	if err != nil {
		t.Fatalf("exec %v in %s: %v", command, pod, err)
	}
	return code, out.String()
}

func (kw *kubeWorld) describePods() string {
	pods, err := kw.env.Client.CoreV1().Pods(kw.ns).List(context.Background(), metav1.ListOptions{})
	if err != nil {
		return err.Error()
	}
	var b strings.Builder
	for _, p := range pods.Items {
		fmt.Fprintf(&b, "%s: %s %s %+v\n", p.Name, p.Status.Phase, p.Status.Reason, p.Status.ContainerStatuses)
	}
	return b.String()
}

// TestRealNodeClaudeTask runs the main path on the real node, once with
// runc and once with gVisor: the warm pool's pod (the runner image from
// the Dockerfile: non-root, read-only root filesystem) is claimed, the real
// Claude Code CLI in it writes a file as the fake Messages API says, the
// bot fetches the bundle over pods/exec, pushes the branch and opens the
// draft pull request. The runc pod reaches the fake API and the git server
// directly through the bridge, with the model key and a read token in its
// job; the gVisor pod only through agentbot's gateway (its TCP port on the
// bridge, the task's capability in the job): it clones through the git
// relay and talks to the model relay, and holds neither credential.
func TestRealNodeClaudeTask(t *testing.T) {
	for _, c := range []struct {
		name, overlay      string
		gvisor, viaGateway bool
	}{
		{"runc", "testdata/kube/runc", false, false},
		{"gvisor-gateway", "testdata/kube/gvisor", true, true},
	} {
		t.Run(c.name, func(t *testing.T) { testRealNodeClaudeTask(t, c.overlay, c.gvisor, c.viaGateway) })
	}
}

// bridgePort is a free TCP port on the node's bridge address, for the
// bot's gateway listener the pods reach.
func bridgePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(kubetest.BridgeIP, "0"))
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func testRealNodeClaudeTask(t *testing.T, overlay string, gvisor, viaGateway bool) {
	kw := newKubeWorld(t, overlay)
	warm := kw.warmPod(t)
	checkRunnerPod(t, kw, warm.Name, gvisor)

	const summary = "Added NOTES.md with a greeting from Claude."
	api := fakeanthropic.NewAt(t, kubetest.BridgeIP,
		fakeanthropic.Turn{Text: "I'll add the notes file.", ToolUses: []fakeanthropic.ToolUse{{
			Name:  "Write",
			Input: map[string]string{"file_path": "NOTES.md", "content": "hello from claude in a pod\n"},
		}}},
		fakeanthropic.Turn{Text: summary},
	)
	kw.settings("agent: claude\nmodel: claude-sonnet-4-5\nmax_turns: 5\n")
	env := []string{
		"AGENTBOT_AGENT=claude",
		"ANTHROPIC_API_KEY=" + modelKey,
		"ANTHROPIC_BASE_URL=" + api.URL,
		"CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1",
		"DISABLE_AUTOUPDATER=1",
		// Without the gateway the key goes to the pod in the job (the
		// SandboxTemplate holds none); with it, the dispatcher keeps the
		// key and the model's URL out of the job and the relay uses them.
		"AGENTBOT_AGENT_ENV=ANTHROPIC_API_KEY,ANTHROPIC_BASE_URL,CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC,DISABLE_AUTOUPDATER",
	}
	if viaGateway {
		gw := bridgePort(t)
		env = append(env, "AGENTBOT_GATEWAY_LISTEN="+gw, "AGENTBOT_GATEWAY_ADDR="+gw)
	}
	b := kw.start(env...)
	b.deliver("issues", kw.issue(8, "Add notes", "Please add NOTES.md with a greeting."))
	task := b.taskFor(8, agentbot.KindNew)
	page := b.waitDone(task.ID, 4*time.Minute)
	if page.Task.State != agentbot.StateSucceeded {
		t.Fatalf("task ended %s: %+v\nlog: %+v", page.Task.State, page.Result, page.Log)
	}
	if got, err := kw.git.Show(repo.Owner, repo.Name, page.Result.Branch, "NOTES.md"); err != nil || got != "hello from claude in a pod\n" {
		t.Fatalf("NOTES.md on %s = %q, %v", page.Result.Branch, got, err)
	}
	prs := kw.gh.PullRequests(repo)
	if len(prs) != 1 || !prs[0].Draft || !strings.Contains(prs[0].Body, summary) {
		t.Fatalf("pull requests: %+v", prs)
	}
	if !strings.Contains(b.log(), `"start":"warm"`) || !strings.Contains(b.log(), warm.Name) {
		t.Errorf("the task did not run in the warm pool's pod %s:\n%s", warm.Name, b.log())
	}
	if strings.Contains(b.log(), modelKey) {
		t.Error("the model key leaked into the bot's log")
	}
	reqs := api.Requests()
	if len(reqs) == 0 {
		t.Fatal("the fake API saw no request")
	}
	for _, r := range reqs {
		if r.APIKey != modelKey {
			t.Errorf("the fake API got key %q on %s, not the operator's", r.APIKey, r.Path)
		}
	}
	if viaGateway && !strings.Contains(b.log(), "egress gateway for sandbox pods") {
		t.Errorf("the bot did not serve the gateway to pods:\n%s", b.log())
	}
}

// checkRunnerPod checks the runner image as the SandboxTemplate runs it:
// the tools are there, the user is not root, the root filesystem cannot be
// written, the workspace can; and the pod's kernel is gVisor's exactly
// when it should be.
func checkRunnerPod(t *testing.T, kw *kubeWorld, pod string, gvisor bool) {
	t.Helper()
	for _, c := range []struct {
		name    string
		command []string
		code    int
		want    string
	}{
		{"agent-runner", []string{kubernetes.DefaultAgentRunner, "help"}, 0, "usage: agent-runner"},
		{"git", []string{"git", "--version"}, 0, "git version"},
		{"node", []string{"node", "--version"}, 0, "v"},
		{"claude", []string{"claude", "--version"}, 0, "Claude Code"},
		{"non-root", []string{"id", "-u"}, 0, "1000"},
		// The user's own home in the image: only the read-only root
		// filesystem keeps it from being written.
		{"read-only root", []string{"sh", "-c", "touch /home/node/x"}, 1, "Read-only file system"},
		{"writable workspace", []string{"sh", "-c", "touch /workspace/x && rm /workspace/x && echo ok"}, 0, "ok"},
	} {
		code, out := kw.exec(t, pod, c.command...)
		if code != c.code || !strings.Contains(out, c.want) {
			t.Errorf("%s: %v exited %d with %q; want %d with %q", c.name, c.command, code, out, c.code, c.want)
		}
	}
	_, kernel := kw.exec(t, pod, "uname", "-r")
	host, err := os.ReadFile("/proc/sys/kernel/osrelease")
	if err != nil {
		t.Fatal(err)
	}
	inGVisor := strings.TrimSpace(kernel) != strings.TrimSpace(string(host))
	if inGVisor != gvisor {
		t.Errorf("pod kernel %q, host kernel %q: gVisor = %v; want %v", strings.TrimSpace(kernel), strings.TrimSpace(string(host)), inGVisor, gvisor)
	}
}

// gatedAgent is a command agent (a script in the repository, since the
// command is split on spaces) that says gateMarker, waits for /tmp/release
// in its pod, then adds hello.txt: a task that is mid-run until the test
// lets it go.
const (
	gateMarker = "agent-waits-for-the-gate"
	gateScript = "echo " + gateMarker + "\nwhile [ ! -e /tmp/release ]; do sleep 0.1; done\necho hello > hello.txt\necho added hello.txt\n"
	gatedAgent = "AGENTBOT_AGENT_COMMAND=sh gate.sh"
)

// waitStarted waits until the task's log shows the gated agent running.
func waitStarted(t *testing.T, b *bot, id string) {
	t.Helper()
	eventually(t, 3*time.Minute, "the agent to start", func() bool {
		for _, ev := range b.task(id).Log {
			if strings.Contains(ev.Message, gateMarker) {
				return true
			}
		}
		return false
	})
}

// TestRealNodePodKilled: the container of a task's pod is killed mid-run
// (SIGKILL, as the OOM killer does); the kubelet marks the pod Failed and
// the task fails with the launcher's PodFailed, not a hang.
func TestRealNodePodKilled(t *testing.T) {
	kw := newKubeWorld(t, "testdata/kube/runc")
	kw.gh.SetFile(repo, "gate.sh", gateScript)
	b := kw.start(gatedAgent)
	b.deliver("issues", kw.issue(9, "Add hello", "Please add hello.txt"))
	task := b.taskFor(9, agentbot.KindNew)
	waitStarted(t, b, task.ID)
	pod := kw.claimedPod(t, task.ID)
	if len(pod.Status.ContainerStatuses) == 0 {
		t.Fatalf("pod %s has no container status", pod.Name)
	}
	if err := kw.env.KillContainer(context.Background(), pod.Status.ContainerStatuses[0].ContainerID); err != nil {
		t.Fatal(err)
	}
	page := b.waitDone(task.ID, 2*time.Minute)
	if page.Task.State != agentbot.StateFailed || !strings.Contains(page.Result.Error, "PodFailed") {
		t.Fatalf("task ended %s with %+v; want failed with PodFailed", page.Task.State, page.Result)
	}
	if prs := kw.gh.PullRequests(repo); len(prs) != 0 {
		t.Errorf("a pull request from a killed pod: %+v", prs)
	}
}

// TestRealNodeBotRestart: the bot crashes (SIGKILL) mid-task; the next bot
// re-attaches to the same pod, where agent-runner kept running, and the
// task finishes with a pull request.
func TestRealNodeBotRestart(t *testing.T) {
	kw := newKubeWorld(t, "testdata/kube/runc")
	kw.gh.SetFile(repo, "gate.sh", gateScript)
	b := kw.start(gatedAgent)
	b.deliver("issues", kw.issue(10, "Add hello", "Please add hello.txt"))
	task := b.taskFor(10, agentbot.KindNew)
	waitStarted(t, b, task.ID)
	pod := kw.claimedPod(t, task.ID)
	b.kill()

	b = kw.start(gatedAgent)
	if code, out := kw.exec(t, pod.Name, "touch", "/tmp/release"); code != 0 {
		t.Fatalf("open the gate: %d %s", code, out)
	}
	page := b.waitDone(task.ID, 3*time.Minute)
	if page.Task.State != agentbot.StateSucceeded {
		t.Fatalf("task ended %s: %+v\nlog: %+v", page.Task.State, page.Result, page.Log)
	}
	if !strings.Contains(b.log(), "re-attaching") || !strings.Contains(b.log(), pod.Name) {
		t.Errorf("the second bot did not re-attach to pod %s:\n%s", pod.Name, b.log())
	}
	if got, err := kw.git.Show(repo.Owner, repo.Name, page.Result.Branch, "hello.txt"); err != nil || got != "hello\n" {
		t.Fatalf("hello.txt on %s = %q, %v", page.Result.Branch, got, err)
	}
	if prs := kw.gh.PullRequests(repo); len(prs) != 1 {
		t.Fatalf("pull requests: %+v", prs)
	}
}

// noopExecutor stands in for an agent-runner that exits at once, so the
// benchmark times the claim alone.
type noopExecutor struct{}

func (noopExecutor) Exec(context.Context, kubernetes.ExecRequest) (int, error) { return 0, nil }

// BenchmarkRealNodeClaimReady is runner/kubernetes' BenchmarkClaimReady on
// the real node: Launcher.Start from creating the SandboxClaim to Ready,
// which now includes the kubelet starting the pod (runc or gVisor) for a
// cold claim; a warm claim adopts the warm pool's running pod (the pool
// refills between iterations, untimed).
//
//	AGENTBOT_REAL_NODE=1 go test -run '^$' -bench RealNodeClaimReady -benchtime 10x ./e2e/
func BenchmarkRealNodeClaimReady(b *testing.B) {
	for _, rt := range []struct{ name, overlay string }{{"runc", "testdata/kube/runc"}, {"gvisor", "testdata/kube/gvisor"}} {
		for _, c := range []struct {
			name     string
			replicas int64
		}{{"cold", 0}, {"warm", 1}} {
			b.Run(rt.name+"/"+c.name, func(b *testing.B) { benchClaimReady(b, rt.overlay, c.replicas) })
		}
	}
}

func benchClaimReady(b *testing.B, overlay string, replicas int64) {
	env := nodeSuite.Env(b)
	ns := env.Namespace(b)
	objs, err := kubetest.RenderKustomization(overlay)
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	for _, o := range objs {
		gvr, ok := map[string]schema.GroupVersionResource{"SandboxTemplate": templateGVR, "SandboxWarmPool": warmPoolGVR}[o.GetKind()]
		if !ok {
			continue
		}
		if o.GetKind() == "SandboxWarmPool" {
			must(b, unstructured.SetNestedField(o.Object, replicas, "spec", "replicas"))
		}
		o.SetNamespace(ns)
		if _, err := env.Dynamic.Resource(gvr).Namespace(ns).Create(ctx, o, metav1.CreateOptions{}); err != nil {
			b.Fatal(err)
		}
	}
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "agentbot-model"}, StringData: map[string]string{"anthropic-api-key": modelKey}}
	if _, err := env.Client.CoreV1().Secrets(ns).Create(ctx, secret, metav1.CreateOptions{}); err != nil {
		b.Fatal(err)
	}
	l, err := kubernetes.New(kubernetes.Config{Namespace: ns, ReadyTimeout: 2 * time.Minute}, env.Config, prometheus.NewRegistry(), nil, kubernetes.WithExecutor(noopExecutor{}))
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	pools := env.Sandbox.ExtensionsV1beta1().SandboxWarmPools(ns)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if replicas > 0 {
			b.StopTimer()
			eventually(b, 3*time.Minute, "a ready warm pool", func() bool {
				p, err := pools.Get(ctx, kubernetes.DefaultWarmPool, metav1.GetOptions{})
				return err == nil && int64(p.Status.ReadyReplicas) == replicas
			})
			b.StartTimer()
		}
		taskID := fmt.Sprintf("bench-%d", i)
		run, err := l.Start(ctx, runner.Job{TaskID: taskID, Repo: "octo/widgets", TimeLimit: runner.Duration(time.Minute)})
		if err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		for range run.Events() {
		}
		if _, err := run.Wait(ctx); err != nil {
			b.Fatal(err)
		}
		if err := l.Cleanup(ctx, taskID, false); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
}
