package state

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"runtime"
	"sync/atomic"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// BenchmarkCreateTask measures a durable create (delivery record, task and
// both indexes, fsynced) with the three ways of committing that were tried:
//
//   - group: the store's group committer (what CreateTask uses);
//   - update: one db.Update, so one fsync, per create;
//   - batch: bbolt's db.Batch with its default 10ms MaxBatchDelay.
//
// Each runs with 1 and with 64 concurrent callers (-cpu does not matter:
// callers are goroutines blocked on fsync).
func BenchmarkCreateTask(b *testing.B) {
	modes := []struct {
		name   string
		commit func(s *Store, fn func(*bolt.Tx) error) error
	}{
		{"group", func(s *Store, fn func(*bolt.Tx) error) error { return s.write(context.Background(), fn) }},
		{"update", func(s *Store, fn func(*bolt.Tx) error) error { return s.db.Update(fn) }},
		{"batch", func(s *Store, fn func(*bolt.Tx) error) error { return s.db.Batch(fn) }},
	}
	for _, mode := range modes {
		for _, callers := range []int{1, 64} {
			b.Run(fmt.Sprintf("%s/callers=%d", mode.name, callers), func(b *testing.B) {
				s := openStore(b, filepath.Join(b.TempDir(), "bench.db"), Options{})
				var seq atomic.Int64
				b.ReportAllocs()
				b.ResetTimer()
				run := func() error {
					n := seq.Add(1)
					task := newTask(ref("octo", "hello", int(n%1000)))
					now := s.now()
					task.ID = s.ids.next(now)
					task.State = "queued"
					val, err := json.Marshal(task)
					if err != nil {
						return err
					}
					var created bool
					if err := mode.commit(s, s.createFn(fmt.Sprintf("bench-%d", n), task, val, now, &created)); err != nil {
						return err
					}
					if !created {
						return fmt.Errorf("delivery %d not created", n)
					}
					return nil
				}
				if callers == 1 {
					for b.Loop() {
						if err := run(); err != nil {
							b.Fatal(err)
						}
					}
					return
				}
				// RunParallel starts parallelism × GOMAXPROCS goroutines.
				b.SetParallelism(max(1, callers/runtime.GOMAXPROCS(0)))
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						if err := run(); err != nil {
							b.Error(err)
							return
						}
					}
				})
			})
		}
	}
}
