package state

import (
	"context"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// groupWrite is one call waiting for the group committer. fn may run twice
// (once in a group that rolled back because another call failed, then
// alone), so it must set its outputs afresh on each run and have no effects
// outside the transaction.
type groupWrite struct {
	fn   func(tx *bolt.Tx) error
	done chan error
}

// groupError marks which call of a group failed.
type groupError struct {
	index int
	err   error
}

func (e *groupError) Error() string { return e.err.Error() }
func (e *groupError) Unwrap() error { return e.err }

// write runs fn in a transaction shared with whatever other writes are
// waiting, and returns once that transaction is durably committed. A
// cancelled ctx abandons the call only before it is handed to the committer;
// after that the caller waits for the commit, so a call never returns an
// error for a write that then lands.
func (s *Store) write(ctx context.Context, fn func(tx *bolt.Tx) error) error {
	w := &groupWrite{fn: fn, done: make(chan error, 1)}
	s.closeMu.RLock()
	if s.closed {
		s.closeMu.RUnlock()
		if s.readOnly {
			return fmt.Errorf("store %s: opened read-only", s.path)
		}
		return ErrClosed
	}
	select {
	case s.writes <- w:
		s.closeMu.RUnlock()
	case <-ctx.Done():
		s.closeMu.RUnlock()
		return ctx.Err()
	}
	return <-w.done
}

// commitLoop is the single group committer. It takes the first waiting write,
// adds every write already queued behind it (without waiting for more: a
// lone write commits at once), and commits them in one transaction. Writes
// that arrive during that fsync form the next group.
func (s *Store) commitLoop() {
	defer close(s.committed)
	group := make([]*groupWrite, 0, maxGroup)
	for first := range s.writes {
		group = append(group[:0], first)
	gather:
		for len(group) < maxGroup {
			select {
			case w, ok := <-s.writes:
				if !ok {
					break gather
				}
				group = append(group, w)
			default:
				break gather
			}
		}
		s.commitGroup(group)
		clear(group)
	}
}

// commitGroup commits group in one transaction. If one call fails, the
// transaction rolls back, that call gets its error, and the others are
// committed again without it.
func (s *Store) commitGroup(group []*groupWrite) {
	for len(group) > 0 {
		start := time.Now()
		err := s.db.Update(func(tx *bolt.Tx) error {
			s.resetPending()
			for i, w := range group {
				if err := w.fn(tx); err != nil {
					return &groupError{index: i, err: err}
				}
			}
			return nil
		})
		s.metrics.commitDuration.Observe(time.Since(start).Seconds())
		s.metrics.groupSize.Observe(float64(len(group)))
		if err == nil {
			s.applyPending()
			for _, w := range group {
				w.done <- nil
			}
			return
		}
		s.resetPending()
		ge, ok := err.(*groupError)
		if !ok {
			// The commit itself failed (disk full, I/O error): every call
			// in the group shares the failure.
			for _, w := range group {
				w.done <- fmt.Errorf("commit %s: %w", s.path, err)
			}
			return
		}
		group[ge.index].done <- ge.err
		group = append(group[:ge.index:ge.index], group[ge.index+1:]...)
	}
}
