package state

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/agentbot/agentbot"
)

// finish moves a new task through running to st, optionally reported.
func finish(t *testing.T, s *Store, task *agentbot.Task, st agentbot.TaskState, reported bool) {
	t.Helper()
	ctx := context.Background()
	if _, err := s.Transition(ctx, task.ID, agentbot.StateQueued, agentbot.StateRunning, nil); err != nil {
		t.Fatal(err)
	}
	if st == agentbot.StateRunning {
		return
	}
	if _, err := s.Transition(ctx, task.ID, agentbot.StateRunning, st, nil); err != nil {
		t.Fatal(err)
	}
	if reported {
		if _, err := s.Update(ctx, task.ID, func(x *agentbot.Task) error { x.Reported = true; return nil }); err != nil {
			t.Fatal(err)
		}
	}
}

func TestPruneFinishedKeepsWhatIsYoungOrUnfinished(t *testing.T) {
	ctx := context.Background()
	clk := newClock()
	s := openStore(t, filepath.Join(t.TempDir(), "a.db"), Options{Now: clk.Now})
	day := 24 * time.Hour

	oldOK := mustCreate(t, s, "old-ok", newTask(ref("o", "r", 1)))
	finish(t, s, oldOK, agentbot.StateSucceeded, true)
	oldFailed := mustCreate(t, s, "old-failed", newTask(ref("o", "r", 2)))
	finish(t, s, oldFailed, agentbot.StateFailed, true)
	oldCancelled := mustCreate(t, s, "old-cancelled", newTask(ref("o", "r", 3)))
	finish(t, s, oldCancelled, agentbot.StateCancelled, true)
	oldUnreported := mustCreate(t, s, "old-unreported", newTask(ref("o", "r", 4)))
	finish(t, s, oldUnreported, agentbot.StateFailed, false)
	oldRunning := mustCreate(t, s, "old-running", newTask(ref("o", "r", 5)))
	finish(t, s, oldRunning, agentbot.StateRunning, false)
	oldQueued := mustCreate(t, s, "old-queued", newTask(ref("o", "r", 6)))
	longRun := mustCreate(t, s, "long-run", newTask(ref("o", "r", 7)))
	if _, err := s.Transition(ctx, longRun.ID, agentbot.StateQueued, agentbot.StateRunning, nil); err != nil {
		t.Fatal(err)
	}
	clk.Advance(20 * day)
	// Created before the cutoff, finished after it.
	if _, err := s.Transition(ctx, longRun.ID, agentbot.StateRunning, agentbot.StateSucceeded, func(x *agentbot.Task) error { x.Reported = true; return nil }); err != nil {
		t.Fatal(err)
	}
	clk.Advance(80 * day)
	young := mustCreate(t, s, "young", newTask(ref("o", "r", 8)))
	finish(t, s, young, agentbot.StateSucceeded, true)

	cutoff := clk.Now().Add(-90 * day)
	var pruned []string
	for i := 0; ; i++ {
		ids, err := s.PruneFinished(ctx, cutoff, 2)
		if err != nil {
			t.Fatal(err)
		}
		if len(ids) > 2 {
			t.Fatalf("batch of 2 pruned %d", len(ids))
		}
		pruned = append(pruned, ids...)
		if len(ids) < 2 || i > 10 {
			break
		}
	}
	slices.Sort(pruned)
	want := []string{oldOK.ID, oldFailed.ID, oldCancelled.ID}
	slices.Sort(want)
	if !slices.Equal(pruned, want) {
		t.Errorf("pruned %v, want the old reported finished tasks %v", pruned, want)
	}
	for _, id := range want {
		if _, err := s.Get(ctx, id); !errors.Is(err, ErrNotFound) {
			t.Errorf("pruned task %s: Get = %v", id, err)
		}
	}
	for name, task := range map[string]*agentbot.Task{"unreported": oldUnreported, "running": oldRunning, "queued": oldQueued, "long run": longRun, "young": young} {
		if _, err := s.Get(ctx, task.ID); err != nil {
			t.Errorf("%s task pruned: %v", name, err)
		}
	}
	if got, _ := s.ListByIssue(ctx, oldOK.Ref()); len(got) != 0 {
		t.Errorf("issue index still names a pruned task: %v", got)
	}
	if n, _ := s.ListByState(ctx, agentbot.StateSucceeded); len(n) != 2 {
		t.Errorf("%d succeeded tasks left, want 2 (long run, young)", len(n))
	}
	if g := gaugeValue(t, s.metrics.tasks.WithLabelValues("succeeded")); g != 2 {
		t.Errorf("succeeded gauge %v, want 2", g)
	}
	if seen, _ := s.SeenDelivery(ctx, "old-ok"); !seen {
		t.Error("pruning a task forgot its delivery id early (a redelivery would run it again)")
	}
}

func TestUnreportedIndex(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "a.db")
	// A schema 2 file with an ended, unreported task: the migration to 3
	// indexes it.
	s2, err := Open(path, Options{schemaVersion: 2, migrations: migrations()[:1]})
	if err != nil {
		t.Fatal(err)
	}
	pre := mustCreate(t, s2, "pre", newTask(ref("o", "r", 1)))
	finish(t, s2, pre, agentbot.StateFailed, false)
	preReported := mustCreate(t, s2, "pre-reported", newTask(ref("o", "r", 2)))
	finish(t, s2, preReported, agentbot.StateSucceeded, true)
	if err := s2.db.Update(func(tx *bolt.Tx) error { return tx.DeleteBucket(bucketUnreported) }); err != nil {
		t.Fatal(err) // as a schema 2 file has it: no such index
	}
	s2.Close()

	s := openStore(t, path, Options{})
	ids := func() []string {
		t.Helper()
		got, err := s.ListUnreported(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, x := range got {
			out = append(out, x.ID)
		}
		return out
	}
	if got := ids(); !slices.Equal(got, []string{pre.ID}) {
		t.Errorf("after migration unreported = %v, want [%s]", got, pre.ID)
	}
	running := mustCreate(t, s, "running", newTask(ref("o", "r", 3)))
	finish(t, s, running, agentbot.StateRunning, false)
	if got := ids(); len(got) != 1 {
		t.Errorf("a running task is listed as unreported: %v", got)
	}
	if _, err := s.Transition(ctx, running.ID, agentbot.StateRunning, agentbot.StateSucceeded, nil); err != nil {
		t.Fatal(err)
	}
	if got := ids(); !slices.Equal(got, []string{pre.ID, running.ID}) {
		t.Errorf("unreported = %v, want both ended tasks", got)
	}
	if _, err := s.Update(ctx, pre.ID, func(x *agentbot.Task) error { x.Reported = true; return nil }); err != nil {
		t.Fatal(err)
	}
	if got := ids(); !slices.Equal(got, []string{running.ID}) {
		t.Errorf("after reporting, unreported = %v", got)
	}
}

// TestBackupWhileWriting takes a backup while deliveries keep arriving: the
// copy opens as a store and holds every task acknowledged before it began.
func TestBackupWhileWriting(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := openStore(t, filepath.Join(dir, "a.db"), Options{})
	var (
		mu    sync.Mutex
		acked []string
		stop  = make(chan struct{})
		wg    sync.WaitGroup
	)
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				task := newTask(ref("o", "r", i))
				if _, err := s.CreateTask(ctx, fmt.Sprintf("w%d-%d", w, i), task); err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				acked = append(acked, task.ID)
				mu.Unlock()
			}
		}()
	}
	waitFor(t, func() bool { mu.Lock(); defer mu.Unlock(); return len(acked) >= 200 })
	mu.Lock()
	before := slices.Clone(acked)
	mu.Unlock()
	backup := filepath.Join(dir, "backup.db")
	f, err := os.Create(backup)
	if err != nil {
		t.Fatal(err)
	}
	n, err := s.Backup(ctx, f)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	close(stop)
	wg.Wait()
	if size, _ := s.BackupSize(); n <= 0 || size <= 0 {
		t.Errorf("backup wrote %d bytes, size %d", n, size)
	}

	b, err := Open(backup, Options{ReadOnly: true})
	if err != nil {
		t.Fatalf("backup does not open: %v", err)
	}
	defer b.Close()
	for _, id := range before {
		if _, err := b.Get(ctx, id); err != nil {
			t.Fatalf("task %s acknowledged before the backup began is missing from it: %v", id, err)
		}
	}
	all, err := b.List(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d tasks acknowledged before the backup, %d in it, %d bytes", len(before), len(all), n)
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 20s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}
