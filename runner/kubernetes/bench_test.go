package kubernetes_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/agentbot/agentbot/runner"
	"github.com/agentbot/agentbot/runner/kubernetes"
)

// noopExecutor stands in for an agent-runner that exits at once, so a
// benchmark times the claim alone.
type noopExecutor struct{}

func (noopExecutor) Exec(context.Context, kubernetes.ExecRequest) (int, error) { return 0, nil }

// BenchmarkClaimReady times Launcher.Start from creating the SandboxClaim to
// the claim being Ready through the real agent-sandbox controller (the exec
// that follows is a no-op): cold starts a pod per claim, warm adopts the warm
// pool's ready sandbox (the pool refills between iterations, untimed).
//
//	go test -run '^$' -bench ClaimReady -benchtime 20x ./runner/kubernetes/
func BenchmarkClaimReady(b *testing.B) {
	for _, c := range []struct {
		name     string
		replicas int
	}{
		{"cold", 0},
		{"warm", 1},
	} {
		b.Run(c.name, func(b *testing.B) {
			f := newFixture(b, fixtureOptions{warmReplicas: c.replicas})
			l, _ := f.launcher(b, nil, noopExecutor{})
			ctx := context.Background()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if c.replicas > 0 {
					b.StopTimer()
					f.waitWarmPoolReady(b, int64(c.replicas))
					b.StartTimer()
				}
				taskID := fmt.Sprintf("bench-%s-%d", c.name, i)
				run, err := l.Start(ctx, runner.Job{TaskID: taskID, Repo: "acme/widgets", TimeLimit: runner.Duration(time.Minute)})
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
		})
	}
}
