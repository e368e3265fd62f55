package dispatch

import (
	"context"
	"path/filepath"
	"sync"
	"testing"

	"github.com/agentbot/agentbot"
	"github.com/agentbot/agentbot/bundle"
	"github.com/agentbot/agentbot/mirror"
	"github.com/agentbot/agentbot/runner"
)

// pushRecorder keeps the checks the dispatcher pushes with.
type pushRecorder struct {
	GitHub
	mu     sync.Mutex
	checks []bundle.Check
}

func (p *pushRecorder) PushBundle(ctx context.Context, inst int64, repo agentbot.Repo, cloneURL, bundlePath string, check bundle.Check, readToken string) (string, error) {
	p.mu.Lock()
	p.checks = append(p.checks, check)
	p.mu.Unlock()
	return p.GitHub.PushBundle(ctx, inst, repo, cloneURL, bundlePath, check, readToken)
}

// TestMirrorForPushesOnly: with MirrorPushOnly (the Kubernetes launcher,
// whose pods cannot see the bot's disk) the job names no mirror, and the
// push still verifies against the bot's mirror instead of fetching the base
// from GitHub; the task ends in its pull request. Without it the job gets
// the mirror too.
func TestMirrorForPushesOnly(t *testing.T) {
	for _, pushOnly := range []bool{true, false} {
		name := map[bool]string{true: "push only", false: "sandbox too"}[pushOnly]
		t.Run(name, func(t *testing.T) {
			h := newHarness(t)
			h.store.Close()
			jobs := &jobRecorder{}
			pushes := &pushRecorder{}
			h.wrap = func(l runner.Launcher) runner.Launcher { jobs.Launcher = l; return jobs }
			h.wrapGH = func(g GitHub) GitHub { pushes.GitHub = g; return pushes }
			mirrors, err := mirror.New(mirror.Options{Dir: filepath.Join(t.TempDir(), "mirrors"), MaxBytes: 1 << 30})
			if err != nil {
				t.Fatal(err)
			}
			h.tweak = func(o *Options) { o.Mirrors, o.MirrorPushOnly = mirrors, pushOnly }
			h.open()
			h.start()
			task := h.enqueue(h.issue(90, "Mirror", "scripted: write m.txt x"))
			done := h.waitState(task.ID, agentbot.StateSucceeded)
			if done.Result.PRNumber == 0 {
				t.Fatalf("no pull request: %+v", done.Result)
			}
			jobs.mu.Lock()
			defer jobs.mu.Unlock()
			pushes.mu.Lock()
			defer pushes.mu.Unlock()
			if len(jobs.jobs) != 1 || len(pushes.checks) != 1 {
				t.Fatalf("%d jobs, %d pushes; want one each", len(jobs.jobs), len(pushes.checks))
			}
			if got := jobs.jobs[0].Mirror != nil; got == pushOnly {
				t.Errorf("the job names a mirror: %v; want %v", got, !pushOnly)
			}
			if pushes.checks[0].ObjectsFrom == "" {
				t.Error("the push did not verify against the mirror")
			}
		})
	}
}
