package kubernetes

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/agentbot/agentbot/runner"
	"github.com/prometheus/client_golang/prometheus"
)

func TestConfigValidate(t *testing.T) {
	cases := []struct {
		name  string
		cfg   Config
		wants []string // substrings of the error; none means valid
	}{
		{"defaults", Config{Namespace: "agentbot"}, nil},
		{"no namespace", Config{}, []string{"AGENTBOT_NAMESPACE"}},
		{"bad names", Config{Namespace: "Agent_Bot", WarmPool: "Pool!", Container: "x/y"}, []string{`namespace "Agent_Bot"`, `warm pool "Pool!"`, `container "x/y"`}},
		{"relative paths", Config{Namespace: "a", Workspace: "workspace", AgentRunner: "agent-runner"}, []string{"workspace", "agent-runner path"}},
		{"negative durations", Config{Namespace: "a", GracePeriod: -time.Second, ReadyTimeout: -time.Second}, []string{"grace period", "ready timeout"}},
		{"a gateway address", Config{Namespace: "a", GatewayAddr: "agentbot.a.svc:8444"}, nil},
		{"a gateway address without a port", Config{Namespace: "a", GatewayAddr: "agentbot.a.svc"}, []string{"AGENTBOT_GATEWAY_ADDR"}},
		{"a gateway port out of range", Config{Namespace: "a", GatewayAddr: "agentbot:84440"}, []string{"AGENTBOT_GATEWAY_ADDR"}},
		{"negative rate limit", Config{Namespace: "a", QPS: -1, Burst: -1}, []string{"AGENTBOT_KUBE_QPS", "AGENTBOT_KUBE_BURST"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := c.cfg.Validate()
			if len(c.wants) == 0 {
				if err != nil {
					t.Fatalf("Validate = %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("Validate = nil")
			}
			for _, w := range c.wants {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
			if lines := strings.Count(err.Error(), "\n") + 1; lines != len(c.wants) {
				t.Errorf("%d lines for %d problems: %q", lines, len(c.wants), err)
			}
		})
	}
}

// TestEventWriter: output arrives in arbitrary chunks; events already seen
// (a resumed stream) are dropped; lines that are not events are skipped.
func TestEventWriter(t *testing.T) {
	cases := []struct {
		name    string
		lastSeq int
		chunks  []string
		want    []int
	}{
		{"whole lines", 0, []string{"{\"seq\":1,\"type\":\"phase\"}\n{\"seq\":2,\"type\":\"log\"}\n"}, []int{1, 2}},
		{"split mid-line", 0, []string{"{\"seq\":1,\"ty", "pe\":\"phase\"}\n{\"seq\"", ":2,\"type\":\"log\"}\n"}, []int{1, 2}},
		{"resume drops seen", 2, []string{"{\"seq\":1,\"type\":\"phase\"}\n{\"seq\":2,\"type\":\"log\"}\n{\"seq\":3,\"type\":\"log\"}\n"}, []int{3}},
		{"noise skipped", 0, []string{"warning: something\n\n{\"seq\":1,\"type\":\"log\"}\n{}\n"}, []int{1}},
		{"last line without newline", 0, []string{"{\"seq\":1,\"type\":\"log\"}"}, []int{1}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ch := make(chan runner.Event, 10)
			w := &eventWriter{ctx: context.Background(), events: ch, lastSeq: c.lastSeq, log: slog.New(slog.DiscardHandler)}
			for _, chunk := range c.chunks {
				if n, err := w.Write([]byte(chunk)); err != nil || n != len(chunk) {
					t.Fatalf("Write = %d, %v", n, err)
				}
			}
			w.flush()
			close(ch)
			var got []int
			for ev := range ch {
				got = append(got, ev.Seq)
			}
			if len(got) != len(c.want) {
				t.Fatalf("seqs %v; want %v", got, c.want)
			}
			for i := range got {
				if got[i] != c.want[i] {
					t.Fatalf("seqs %v; want %v", got, c.want)
				}
			}
		})
	}
}

func TestEventWriterDropsOverlongLine(t *testing.T) {
	ch := make(chan runner.Event, 10)
	w := &eventWriter{ctx: context.Background(), events: ch, log: slog.New(slog.DiscardHandler)}
	big := `{"seq":1,"type":"log","message":"` + strings.Repeat("x", maxEventLine) + `"}` + "\n"
	for i := 0; i < len(big); i += 1 << 16 {
		end := min(i+1<<16, len(big))
		if _, err := w.Write([]byte(big[i:end])); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := w.Write([]byte(`{"seq":2,"type":"log"}` + "\n")); err != nil {
		t.Fatal(err)
	}
	close(ch)
	var got []int
	for ev := range ch {
		got = append(got, ev.Seq)
	}
	if len(got) != 1 || got[0] != 2 {
		t.Fatalf("seqs %v; want [2]", got)
	}
}

func TestPodState(t *testing.T) {
	pod := &corev1.Pod{Status: corev1.PodStatus{
		Phase:   corev1.PodFailed,
		Reason:  "Evicted",
		Message: "The node was low on resource: memory.",
		ContainerStatuses: []corev1.ContainerStatus{{
			Name:  "runner",
			State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{Reason: "OOMKilled", ExitCode: 137}},
		}},
	}}
	want := "Failed (Evicted: The node was low on resource: memory.; container runner terminated: OOMKilled, exit code 137)"
	if got := podState(pod); got != want {
		t.Errorf("podState = %q; want %q", got, want)
	}
	if got := podState(&corev1.Pod{Status: corev1.PodStatus{Phase: corev1.PodRunning}}); got != "Running" {
		t.Errorf("podState(running) = %q", got)
	}
}

func TestErrorsNameTheObject(t *testing.T) {
	ce := &ConfigError{Claim: "ns/agentbot-x", Reason: "TemplateNotFound", Object: `the SandboxTemplate named by SandboxWarmPool "p" in namespace "ns"`, Message: `SandboxTemplate "t" not found`}
	for _, want := range []string{`SandboxWarmPool "p"`, "ns/agentbot-x", "TemplateNotFound", `SandboxTemplate "t" not found`} {
		if !strings.Contains(ce.Error(), want) {
			t.Errorf("%q does not mention %q", ce.Error(), want)
		}
	}
	var err error = ce
	var target *ConfigError
	if !errors.As(err, &target) {
		t.Error("ConfigError is not found by errors.As")
	}
}

// TestWithGateway: the launcher completes a job's gateway with its own
// address and refuses one it cannot complete; a job without a gateway is
// left alone.
func TestWithGateway(t *testing.T) {
	l := &Launcher{cfg: Config{GatewayAddr: "agentbot.ns.svc:8444"}}
	bare := &Launcher{}
	cases := []struct {
		name     string
		l        *Launcher
		gw       *runner.JobGateway
		wantAddr string
		wantErr  string
	}{
		{"no gateway", l, nil, "", ""},
		{"the launcher's address", l, &runner.JobGateway{Capability: "k"}, "agentbot.ns.svc:8444", ""},
		{"the job's own address", l, &runner.JobGateway{Addr: "gw:1", Capability: "k"}, "gw:1", ""},
		{"no address anywhere", bare, &runner.JobGateway{Capability: "k"}, "", "AGENTBOT_GATEWAY_ADDR"},
		{"no capability", l, &runner.JobGateway{}, "", "capability"},
		{"a bad address", l, &runner.JobGateway{Addr: "gw", Capability: "k"}, "", "not host:port"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			job, err := c.l.withGateway(runner.Job{TaskID: "t", Gateway: c.gw})
			switch {
			case c.wantErr != "":
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("err = %v; want it to say %q", err, c.wantErr)
				}
			case err != nil:
				t.Fatal(err)
			case c.gw == nil && job.Gateway != nil:
				t.Errorf("gateway = %+v; want none", job.Gateway)
			case c.gw != nil && (job.Gateway.Addr != c.wantAddr || job.Gateway.Capability != c.gw.Capability):
				t.Errorf("gateway = %+v; want addr %s", job.Gateway, c.wantAddr)
			}
			if c.wantAddr != "" && c.wantAddr != c.gw.Addr && c.gw.Addr != "" {
				t.Errorf("the caller's gateway was changed to %+v", c.gw)
			}
		})
	}
}

// flakyExecutor fails its first failures calls, writing written bytes of
// output first, then writes "bundle" and exits 0.
type flakyExecutor struct {
	failures, written int
	calls             int
}

func (f *flakyExecutor) Exec(_ context.Context, req ExecRequest) (int, error) {
	f.calls++
	if f.calls <= f.failures {
		if f.written > 0 {
			_, _ = req.Stdout.Write([]byte(strings.Repeat("x", f.written)))
		}
		return 0, errors.New("Internal error occurred: Timeout")
	}
	_, _ = req.Stdout.Write([]byte("bundle"))
	return 0, nil
}

// TestBundleRetriesOnlyBeforeOutput: a bundle exec whose stream failed
// before any output is tried again (up to three streams); one that failed
// part-way is not, since the caller's writer holds a partial bundle.
func TestBundleRetriesOnlyBeforeOutput(t *testing.T) {
	cases := []struct {
		name              string
		failures, written int
		wantErr           bool
		wantCalls         int
		wantOut           string
	}{
		{"transient setup failure", 2, 0, false, 3, "bundle"},
		{"persistent failure", 5, 0, true, 3, ""},
		{"failure after output", 1, 4, true, 1, "xxxx"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m, err := newMetrics(prometheus.NewRegistry())
			if err != nil {
				t.Fatal(err)
			}
			x := &flakyExecutor{failures: c.failures, written: c.written}
			l := &Launcher{cfg: Config{Namespace: "a"}.withDefaults(), exec: x, metrics: m, log: slog.New(slog.DiscardHandler)}
			r := &run{l: l, claim: "c", pod: "p", log: l.log}
			var out strings.Builder
			err = r.Bundle(context.Background(), &out)
			if (err != nil) != c.wantErr || x.calls != c.wantCalls || out.String() != c.wantOut {
				t.Fatalf("Bundle = %v after %d execs, output %q; want error %v after %d, output %q", err, x.calls, out.String(), c.wantErr, c.wantCalls, c.wantOut)
			}
		})
	}
}
