package state

import (
	"context"
	"fmt"
	"io"
	"slices"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/agentbot/agentbot"
)

// BackupSize is the size Backup will write.
func (s *Store) BackupSize() (int64, error) {
	var n int64
	err := s.db.View(func(tx *bolt.Tx) error {
		n = tx.Size()
		return nil
	})
	return n, err
}

// Backup writes a consistent copy of the whole file to w from one read
// transaction: every task committed before it began, nothing after.
// Writers go on meanwhile (bbolt readers never block the writer). The copy
// is a plain bbolt file: restore it by stopping serve and putting it in
// place of agentbot.db.
func (s *Store) Backup(ctx context.Context, w io.Writer) (int64, error) {
	defer s.observe("backup", time.Now())
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	var n int64
	err := s.db.View(func(tx *bolt.Tx) error {
		var err error
		n, err = tx.WriteTo(ctxWriter{ctx, w})
		return err
	})
	if err != nil {
		return n, fmt.Errorf("back up %s: %w", s.path, err)
	}
	return n, nil
}

// ctxWriter stops a long copy when its context ends (a client gone).
type ctxWriter struct {
	ctx context.Context
	w   io.Writer
}

func (c ctxWriter) Write(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.w.Write(p)
}

// Count is how many tasks the store holds (from the state index's keys).
func (s *Store) Count(ctx context.Context) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	n := 0
	err := s.db.View(func(tx *bolt.Tx) error {
		n = tx.Bucket(bucketTasks).Stats().KeyN
		return nil
	})
	return n, err
}

// Walk calls fn with each task, newest first, in states (all when none),
// at most limit of them (limit <= 0: all), decoding one at a time: a
// listing of every task holds one in memory, not all. An error from fn
// stops the walk and is returned.
func (s *Store) Walk(ctx context.Context, limit int, fn func(*agentbot.Task) error, states ...agentbot.TaskState) error {
	defer s.observe("walk", time.Now())
	return s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketTasks).Cursor()
		n := 0
		for k, v := c.Last(); k != nil && (limit <= 0 || n < limit); k, v = c.Prev() {
			if err := ctx.Err(); err != nil {
				return err
			}
			t, err := decodeTask(string(k), v)
			if err != nil {
				return err
			}
			if len(states) > 0 && !slices.Contains(states, t.State) {
				continue
			}
			n++
			if err := fn(t); err != nil {
				return err
			}
		}
		return nil
	})
}
