package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/agentbot/agentbot"
	"github.com/agentbot/agentbot/internal/kubetest"
	"github.com/agentbot/agentbot/runner"
	"github.com/agentbot/agentbot/runner/kubernetes"
	"github.com/agentbot/agentbot/web"
)

// BenchmarkKube100 is one bot driving a hundred sandboxes: the real
// `agentbot serve` with the Kubernetes launcher and AGENTBOT_MAX_CONCURRENT
// at the number of tasks, against internal/kubetest's control plane (etcd,
// kube-apiserver, the agent-sandbox controller, the stand-in kubelet, whose
// streaming server runs agent-runner for real pods/exec streams). Tasks come
// in as labeled-issue webhooks from the fake GitHub, all at once; each
// agent prints a line a second for AGENTBOT_BENCH_AGENT_SECONDS (default
// 60), then writes a file, so every task ends in a draft PR.
//
// It reports the bot process's peak RSS (VmHWM from /proc) and CPU, the
// launcher's claim → Ready (p50, p99, from its "sandbox ready" log), the
// exec stream errors and re-attaches, the peak goroutines, the peak watches
// on claims the API server holds for the bot, and the time from the last
// agent's exit to the last PR. BENCH_KUBE_TASKS (default 100) and
// BENCH_KUBE_WARM (the warm pool's replicas, default 0: cold starts) change
// the load; BENCH_KUBE_BOT_LOG names a file for the bot's log (at
// BENCH_KUBE_LOG_LEVEL, default info). scripts/bench-kube100.sh (make bench-kube100) runs it.
func BenchmarkKube100(b *testing.B) {
	tasks := envInt("BENCH_KUBE_TASKS", 100)
	seconds := envInt("AGENTBOT_BENCH_AGENT_SECONDS", 60)
	warm := envInt("BENCH_KUBE_WARM", 0)
	env := startStandIn(b)
	ns := env.Namespace(b)
	env.NewExecutor(b, ns, kubernetes.DefaultWorkspace, map[string]string{kubernetes.DefaultAgentRunner: bins.agentRunner})
	applyRunnerManifests(b, env, ns, warm)

	w := newWorld(b)
	script := filepath.Join(b.TempDir(), "agent.sh")
	must(b, os.WriteFile(script, []byte(fmt.Sprintf(`#!/bin/sh
set -e
i=0
while [ $i -lt %d ]; do i=$((i+1)); echo "still working: line $i"; sleep 1; done
echo "done by $AGENTBOT_TASK_ID" > kube100-$$.txt
`, seconds)), 0o755))
	bot := w.start(
		"AGENTBOT_LAUNCHER=kubernetes",
		"AGENTBOT_NAMESPACE="+ns,
		"KUBECONFIG="+env.Kubeconfig(),
		"AGENTBOT_MAX_CONCURRENT="+strconv.Itoa(tasks),
		"AGENTBOT_AGENT_COMMAND=/bin/sh "+script,
		"AGENTBOT_LOG_LEVEL="+orDefault(os.Getenv("BENCH_KUBE_LOG_LEVEL"), "info"),
	)
	if path := os.Getenv("BENCH_KUBE_BOT_LOG"); path != "" {
		b.Cleanup(func() { _ = os.WriteFile(path, []byte(bot.log()), 0o644) })
	}
	if warm > 0 {
		waitWarm(b, env, ns, warm)
	}

	for i := 0; i < b.N; i++ {
		r := kube100Round(b, env, w, bot, i, tasks)
		r.print(tasks, seconds, warm)
		if i == b.N-1 {
			b.ReportMetric(r.peakRSSMB, "bot-peak-RSS-MB")
			b.ReportMetric(r.cpuSeconds, "bot-CPU-s")
			b.ReportMetric(r.readyP50*1000, "ms-ready-p50")
			b.ReportMetric(r.readyP99*1000, "ms-ready-p99")
			b.ReportMetric(r.execErrors, "exec-errors")
			b.ReportMetric(r.lastExitToPR.Seconds(), "s-last-exit-to-last-PR")
		}
	}
}

// kube100Result is one round's figures.
type kube100Result struct {
	peakRSSMB, endRSSMB float64
	cpuSeconds          float64
	readyP50, readyP99  float64
	readyMax            float64
	readyN              int
	execErrors          float64
	reattaches          float64
	claimFailures       float64
	failed              int
	peakGoroutines      float64
	peakWatches         float64
	lastExitToPR        time.Duration
	firstDeliveryToLast time.Duration
	wall                time.Duration
	// lastPhases is the timeline of the task that ended last.
	lastPhases string
}

func (r kube100Result) print(tasks, seconds, warm int) {
	fmt.Printf("BENCH-KUBE100 tasks=%d agent_s=%d warm=%d failed=%d peak_rss_mb=%.1f end_rss_mb=%.1f cpu_s=%.2f "+
		"ready_n=%d ready_p50_ms=%.0f ready_p99_ms=%.0f ready_max_ms=%.0f exec_errors=%.0f reattaches=%.0f claim_failures=%.0f "+
		"peak_goroutines=%.0f peak_claim_watches=%.0f last_exit_to_last_pr_s=%.2f first_delivery_to_last_pr_s=%.1f\n",
		tasks, seconds, warm, r.failed, r.peakRSSMB, r.endRSSMB, r.cpuSeconds,
		r.readyN, r.readyP50*1000, r.readyP99*1000, r.readyMax*1000, r.execErrors, r.reattaches, r.claimFailures,
		r.peakGoroutines, r.peakWatches, r.lastExitToPR.Seconds(), r.firstDeliveryToLast.Seconds())
	fmt.Printf("BENCH-KUBE100-LAST-TASK %s\n", r.lastPhases)
}

// phaseList is "name:seconds,..." of a timeline.
func phaseList(tl []web.Phase) string {
	var parts []string
	for _, ph := range tl {
		parts = append(parts, fmt.Sprintf("%s:%.2f", strings.ReplaceAll(ph.Name, " ", "_"), ph.Seconds))
	}
	return strings.Join(parts, ",")
}

// kube100Round delivers tasks issues at once and waits for every task to
// end, sampling the bot while they run.
func kube100Round(b *testing.B, env *kubetest.Env, w *world, bot *bot, round, tasks int) kube100Result {
	var r kube100Result
	cpu0 := botMetric(b, bot, "process_cpu_seconds_total")
	readyLogs0 := len(readySeconds(bot))
	errs0 := botMetric(b, bot, "agentbot_kubernetes_exec_errors_total")
	re0 := botMetric(b, bot, "agentbot_kubernetes_reattaches_total")
	cf0 := botMetric(b, bot, "agentbot_kubernetes_claim_failures_total")

	stop := make(chan struct{})
	var sampler sync.WaitGroup
	sampler.Add(1)
	go func() {
		defer sampler.Done()
		sampleBot(env, bot, stop, &r)
	}()

	first := 100000 + 1000*round
	start := time.Now()
	// Every issue first: pull requests take the next free number.
	for i := 0; i < tasks; i++ {
		w.gh.AddIssue(repo, first+i, fmt.Sprintf("Kube100 %d", first+i), "", "alice")
	}
	for i := 0; i < tasks; i++ {
		num := first + i
		bot.deliver("issues", labeled(num, fmt.Sprintf("Kube100 %d", num), "print lines for a while, then write a file", "alice"))
	}
	ids := map[string]bool{}
	eventually(b, 30*time.Second, "every task stored", func() bool {
		for _, s := range bot.tasks() {
			if s.Issue >= first && s.Issue < first+tasks && s.Kind == agentbot.KindNew {
				ids[s.ID] = true
			}
		}
		return len(ids) == tasks
	})
	deadline := time.Now().Add(30 * time.Minute)
	for {
		done := 0
		for _, s := range bot.tasks() {
			if ids[s.ID] && s.State.Terminal() {
				done++
			}
		}
		if done == tasks {
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("only %d of %d tasks ended in 30 minutes", done, tasks)
		}
		time.Sleep(time.Second)
	}
	var lastExit, lastPR, lastEnd time.Time
	for id := range ids {
		page := bot.waitDone(id, 10*time.Minute)
		if page.Task.State != agentbot.StateSucceeded || page.Result.PRURL == "" {
			r.failed++
			b.Logf("task %s ended %s: %s", id, page.Task.State, page.Result.Error)
			continue
		}
		if t := agentExit(page.Timeline); t.After(lastExit) {
			lastExit = t
		}
		if _, end := startEnd(page.Timeline); end.After(lastEnd) {
			lastEnd, r.lastPhases = end, phaseList(page.Timeline)
		}
	}
	for _, c := range w.gh.CallsTo("POST", "/repos/"+repo.FullName()+"/pulls") {
		if c.Status == http.StatusCreated && c.Time.After(start) && c.Time.After(lastPR) {
			lastPR = c.Time
		}
	}
	r.wall = time.Since(start)
	close(stop)
	sampler.Wait()

	r.cpuSeconds = botMetric(b, bot, "process_cpu_seconds_total") - cpu0
	r.execErrors = botMetric(b, bot, "agentbot_kubernetes_exec_errors_total") - errs0
	r.reattaches = botMetric(b, bot, "agentbot_kubernetes_reattaches_total") - re0
	r.claimFailures = botMetric(b, bot, "agentbot_kubernetes_claim_failures_total") - cf0
	ready := readySeconds(bot)[readyLogs0:]
	sort.Float64s(ready)
	r.readyN = len(ready)
	if len(ready) > 0 {
		r.readyP50, r.readyP99, r.readyMax = percentile(ready, 0.50), percentile(ready, 0.99), ready[len(ready)-1]
	}
	if !lastExit.IsZero() && !lastPR.IsZero() {
		r.lastExitToPR = lastPR.Sub(lastExit)
		r.firstDeliveryToLast = lastPR.Sub(start)
	}
	if r.failed > 0 {
		b.Errorf("%d of %d tasks did not end in a PR", r.failed, tasks)
	}
	return r
}

// sampleBot records the bot's RSS, goroutines and the API server's watches
// on claims every 250 ms until stop closes.
func sampleBot(env *kubetest.Env, bot *bot, stop <-chan struct{}, r *kube100Result) {
	pid := bot.cmd.Process.Pid
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		if kb := procStatusKB(pid, "VmRSS"); kb > 0 {
			r.endRSSMB = float64(kb) / 1024
		}
		if kb := procStatusKB(pid, "VmHWM"); kb > 0 {
			r.peakRSSMB = float64(kb) / 1024
		}
		if g, err := metricOf(bot, "go_goroutines"); err == nil {
			r.peakGoroutines = math.Max(r.peakGoroutines, g)
		}
		if n, err := env.Watches(context.Background(), "sandboxclaims"); err == nil {
			r.peakWatches = math.Max(r.peakWatches, n)
		}
		select {
		case <-stop:
			return
		case <-tick.C:
		}
	}
}

// procStatusKB reads a "kB" field of /proc/<pid>/status.
func procStatusKB(pid int, field string) int {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return -1
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			n, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
			return n
		}
	}
	return -1
}

// readySeconds are the ready_seconds of the launcher's "sandbox ready" log
// lines so far: from before the claim's create request to its Ready.
func readySeconds(bot *bot) []float64 {
	bot.mu.Lock()
	defer bot.mu.Unlock()
	var out []float64
	for _, line := range bot.lines {
		if !strings.Contains(line, `"sandbox ready"`) {
			continue
		}
		var rec struct {
			Msg   string
			Ready *float64 `json:"ready_seconds"`
		}
		if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == "sandbox ready" && rec.Ready != nil {
			out = append(out, *rec.Ready)
		}
	}
	return out
}

// agentExit is when the agent phase ended: the start of the phase after it.
func agentExit(tl []web.Phase) time.Time {
	for i, ph := range tl {
		if ph.Name == runner.PhaseAgent && i+1 < len(tl) {
			return tl[i+1].Started
		}
	}
	return time.Time{}
}

// percentile of sorted values, nearest rank.
func percentile(sorted []float64, p float64) float64 {
	i := int(math.Ceil(p*float64(len(sorted)))) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

// botMetric sums every series of name on the bot's /metrics.
func botMetric(tb testing.TB, bot *bot, name string) float64 {
	tb.Helper()
	v, err := metricOf(bot, name)
	if err != nil {
		tb.Fatal(err)
	}
	return v
}

func metricOf(bot *bot, name string) (float64, error) {
	req, err := http.NewRequest(http.MethodGet, bot.base+"/metrics", nil)
	if err != nil {
		return 0, err
	}
	// /metrics needs the pages' token; a refusal must not read as zeros.
	req.Header.Set("Authorization", "Bearer "+bot.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("GET /metrics: %s", resp.Status)
	}
	var sum float64
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		f := strings.Fields(line)
		series := f[0]
		if i := strings.IndexByte(series, '{'); i >= 0 {
			series = series[:i]
		}
		if series == name {
			v, _ := strconv.ParseFloat(f[len(f)-1], 64)
			sum += v
		}
	}
	return sum, sc.Err()
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// startStandIn starts a control plane with the stand-in kubelet for tb,
// skipping when its binaries are missing (unless AGENTBOT_KUBE_TESTS=1).
func startStandIn(tb testing.TB) *kubetest.Env {
	tb.Helper()
	env, err := kubetest.Start(context.Background())
	var missing *kubetest.MissingBinariesError
	if errors.As(err, &missing) && os.Getenv(kubetest.RequireEnv) != "1" {
		tb.Skipf("skipping: %v (set %s=1 to make this a failure)", err, kubetest.RequireEnv)
	}
	if err != nil {
		tb.Fatalf("kubernetes test environment: %v", err)
	}
	tb.Cleanup(func() {
		if tb.Failed() {
			tb.Logf("control plane logs:\n%s", env.Logs())
		}
		if err := env.Stop(); err != nil {
			tb.Errorf("stop the control plane: %v", err)
		}
	})
	return env
}

// applyRunnerManifests creates manifests/base's SandboxTemplate and its
// SandboxWarmPool with replicas in ns.
func applyRunnerManifests(tb testing.TB, env *kubetest.Env, ns string, replicas int) {
	tb.Helper()
	objs, err := kubetest.RenderKustomization("../manifests/base")
	must(tb, err)
	gvrs := map[string]schema.GroupVersionResource{"SandboxTemplate": templateGVR, "SandboxWarmPool": warmPoolGVR}
	for _, o := range objs {
		gvr, ok := gvrs[o.GetKind()]
		if !ok {
			continue
		}
		if o.GetKind() == "SandboxWarmPool" {
			must(tb, unstructured.SetNestedField(o.Object, int64(replicas), "spec", "replicas"))
		}
		o.SetNamespace(ns)
		if _, err := env.Dynamic.Resource(gvr).Namespace(ns).Create(context.Background(), o, metav1.CreateOptions{}); err != nil {
			tb.Fatalf("create %s: %v", o.GetKind(), err)
		}
	}
}

// waitWarm waits until the warm pool has n ready sandboxes.
func waitWarm(tb testing.TB, env *kubetest.Env, ns string, n int) {
	tb.Helper()
	eventually(tb, 5*time.Minute, fmt.Sprintf("a warm pool of %d ready sandboxes", n), func() bool {
		p, err := env.Sandbox.ExtensionsV1beta1().SandboxWarmPools(ns).Get(context.Background(), kubernetes.DefaultWarmPool, metav1.GetOptions{})
		return err == nil && int(p.Status.ReadyReplicas) == n
	})
}
