package dispatch

import (
	"context"
	"fmt"
	"sort"
	"testing"
	"time"

	"github.com/agentbot/agentbot"
	"github.com/agentbot/agentbot/runner"
)

// burstLauncher starts real runs whose event stream it salts with a burst
// of phase and progress events, every few milliseconds, while the agent
// works: each would be a report.
type burstLauncher struct {
	runner.Launcher
	burst time.Duration
}

func (l burstLauncher) Start(ctx context.Context, job runner.Job) (runner.Run, error) {
	r, err := l.Launcher.Start(ctx, job)
	if err != nil {
		return nil, err
	}
	out := make(chan runner.Event)
	go func() {
		defer close(out)
		in := r.Events()
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		end := time.After(l.burst)
		for i := 0; in != nil; i++ {
			select {
			case ev, ok := <-in:
				if !ok {
					in = nil
					continue
				}
				out <- ev
			case <-tick.C:
				if end == nil {
					continue
				}
				out <- runner.Event{Time: time.Now(), Type: runner.EventPhase, Phase: runner.PhaseAgent}
				out <- runner.Event{Time: time.Now(), Type: runner.EventProgress, Message: fmt.Sprintf("step %d", i)}
			case <-end:
				end = nil
			}
		}
	}()
	return burstRun{Run: r, events: out}, nil
}

type burstRun struct {
	runner.Run
	events chan runner.Event
}

func (r burstRun) Events() <-chan runner.Event { return r.events }

// TestEditsAreNeverWithinASecond runs a follow-up (comment and check run)
// whose run reports hundreds of phases and progress lines in a few seconds:
// GitHub sees the comment and the check run edited several times — the
// progress shows — but never two edits of one object within a second.
func TestEditsAreNeverWithinASecond(t *testing.T) {
	h := newHarness(t)
	h.store.Close()
	h.wrap = func(l runner.Launcher) runner.Launcher {
		return burstLauncher{Launcher: l, burst: 3500 * time.Millisecond}
	}
	h.tweak = func(o *Options) { o.ProgressInterval = time.Millisecond }
	h.open()
	h.start()
	first := h.enqueue(h.issue(1, "Add a greeting", "scripted: sleep 4; write greeting.txt hello"))
	done := h.waitState(first.ID, agentbot.StateSucceeded)

	prRef := agentbot.IssueRef{Repo: testRepo, Number: done.Result.PRNumber}
	fu := h.enqueue(agentbot.Trigger{
		Kind: agentbot.KindFollowUp, Issue: prRef, IsPullRequest: true, CommentID: 9001,
		Prompt: agentbot.Prompt{Instructions: "scripted: sleep 4; append greeting.txt again"},
	})
	fdone := h.waitState(fu.ID, agentbot.StateSucceeded)
	// The follow-up's progress showed on the check run it opened on the
	// pull request's head (superseded at the end by one on its commit).
	var progressRun int64
	for _, r := range h.gh.CheckRuns(testRepo) {
		if r.HeadSHA == done.Result.Commit && r.ID != done.CheckRunID {
			progressRun = r.ID
		}
	}

	for _, obj := range []struct {
		name, method, path string
		min                int
	}{
		{"first comment", "PATCH", fmt.Sprintf("/repos/octo/demo/issues/comments/%d", done.CommentID), 3},
		{"follow-up comment", "PATCH", fmt.Sprintf("/repos/octo/demo/issues/comments/%d", fdone.CommentID), 3},
		{"follow-up check run", "PATCH", fmt.Sprintf("/repos/octo/demo/check-runs/%d", progressRun), 3},
	} {
		calls := h.gh.CallsTo(obj.method, obj.path)
		if len(calls) < obj.min {
			t.Errorf("%s: %d edits, want at least %d (progress must still show)", obj.name, len(calls), obj.min)
		}
		sort.Slice(calls, func(i, j int) bool { return calls[i].Time.Before(calls[j].Time) })
		for i := 1; i < len(calls); i++ {
			if gap := calls[i].Time.Sub(calls[i-1].Time); gap < minEditInterval {
				t.Errorf("%s: edits %d and %d only %s apart", obj.name, i, i+1, gap)
			}
		}
	}
}
