package state

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/agentbot/agentbot"
)

// TransitionError is returned by Transition when the move is illegal
// (agentbot.CanTransition says no) or stale (the task is no longer in From).
type TransitionError struct {
	ID       string
	From, To agentbot.TaskState
	// Actual is the state the task was in.
	Actual agentbot.TaskState
}

func (e *TransitionError) Error() string {
	if !agentbot.CanTransition(e.From, e.To) {
		return fmt.Sprintf("task %s: illegal transition %s -> %s (task is %s)", e.ID, e.From, e.To, e.Actual)
	}
	return fmt.Sprintf("task %s: stale transition %s -> %s: task is %s", e.ID, e.From, e.To, e.Actual)
}

// Stale reports whether the transition was legal but the task had already
// moved on from From (another writer won the compare-and-set).
func (e *TransitionError) Stale() bool {
	return agentbot.CanTransition(e.From, e.To) && e.Actual != e.From
}

// CreateTask records deliveryID and stores t in one transaction, and returns
// once both are durably committed. It assigns t.ID (sortable by creation),
// t.DeliveryID, t.CreatedAt, t.UpdatedAt, and t.State (queued when empty).
// If the delivery was seen before it returns created=false, writes nothing
// and leaves t untouched.
func (s *Store) CreateTask(ctx context.Context, deliveryID string, t *agentbot.Task) (created bool, err error) {
	defer s.observe("create_task", time.Now())
	if err := checkDeliveryID(deliveryID); err != nil {
		return false, err
	}
	if t == nil {
		return false, fmt.Errorf("create task for delivery %s: nil task", deliveryID)
	}
	st := t.State
	if st == "" {
		st = agentbot.StateQueued
	}
	if !st.Valid() {
		return false, fmt.Errorf("create task for delivery %s: invalid state %q", deliveryID, st)
	}
	if err := ctx.Err(); err != nil {
		return false, err
	}
	now := s.now()
	nt := *t
	nt.ID = s.ids.next(now)
	nt.DeliveryID = deliveryID
	nt.State = st
	nt.CreatedAt = now
	nt.UpdatedAt = now
	val, err := json.Marshal(&nt)
	if err != nil {
		return false, fmt.Errorf("encode task for delivery %s: %w", deliveryID, err)
	}
	err = s.write(ctx, s.createFn(deliveryID, &nt, val, now, &created))
	if err != nil {
		return false, fmt.Errorf("create task for delivery %s: %w", deliveryID, err)
	}
	if created {
		*t = nt
		s.metrics.tasks.WithLabelValues(string(nt.State)).Inc()
	}
	return created, nil
}

// createFn is CreateTask's transaction body. It sets *created afresh on
// every run, as group commit may run it twice.
func (s *Store) createFn(deliveryID string, nt *agentbot.Task, val []byte, now time.Time, created *bool) func(tx *bolt.Tx) error {
	return func(tx *bolt.Tx) error {
		*created = false
		isNew, err := s.putDelivery(tx, deliveryID, now)
		if err != nil || !isNew {
			return err
		}
		if err := appendBucket(tx, bucketTasks).Put([]byte(nt.ID), val); err != nil {
			return fmt.Errorf("put %s: %w", nt, err)
		}
		if err := appendBucket(tx, bucketByState).Put(stateKey(nt.State, nt.ID), nil); err != nil {
			return fmt.Errorf("index %s by state: %w", nt, err)
		}
		if err := tx.Bucket(bucketByIssue).Put(issueKey(nt.Ref(), nt.ID), nil); err != nil {
			return fmt.Errorf("index %s by issue: %w", nt, err)
		}
		if err := indexReport(tx, nil, nt); err != nil {
			return err
		}
		*created = true
		return nil
	}
}

// Get returns the task with id, or an error wrapping ErrNotFound.
func (s *Store) Get(ctx context.Context, id string) (*agentbot.Task, error) {
	defer s.observe("get", time.Now())
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var t *agentbot.Task
	err := s.db.View(func(tx *bolt.Tx) error {
		var err error
		t, err = getTask(tx, id)
		return err
	})
	return t, err
}

func getTask(tx *bolt.Tx, id string) (*agentbot.Task, error) {
	b := tx.Bucket(bucketTasks)
	if b == nil || id == "" {
		return nil, fmt.Errorf("task %s: %w", id, ErrNotFound)
	}
	v := b.Get([]byte(id))
	if v == nil {
		return nil, fmt.Errorf("task %s: %w", id, ErrNotFound)
	}
	return decodeTask(id, v)
}

// decodeTask decodes inside the transaction: v is only valid until it ends.
func decodeTask(id string, v []byte) (*agentbot.Task, error) {
	t := new(agentbot.Task)
	if err := json.Unmarshal(v, t); err != nil {
		return nil, fmt.Errorf("decode task %s: %w", id, err)
	}
	return t, nil
}

// List returns up to limit tasks, newest first; limit <= 0 means all.
func (s *Store) List(ctx context.Context, limit int) ([]*agentbot.Task, error) {
	defer s.observe("list", time.Now())
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var out []*agentbot.Task
	err := s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketTasks)
		if b == nil {
			return nil
		}
		c := b.Cursor()
		for k, v := c.Last(); k != nil; k, v = c.Prev() {
			if limit > 0 && len(out) >= limit {
				break
			}
			t, err := decodeTask(string(k), v)
			if err != nil {
				return err
			}
			out = append(out, t)
		}
		return nil
	})
	return out, err
}

// ListByState returns the tasks in any of states, oldest first. With no
// states it returns none.
func (s *Store) ListByState(ctx context.Context, states ...agentbot.TaskState) ([]*agentbot.Task, error) {
	defer s.observe("list_by_state", time.Now())
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var out []*agentbot.Task
	err := s.db.View(func(tx *bolt.Tx) error {
		idx := tx.Bucket(bucketByState)
		if idx == nil {
			return nil
		}
		var ids []string
		for _, st := range slices.Compact(slices.Sorted(slices.Values(states))) {
			prefix := stateKeyPrefix(st)
			c := idx.Cursor()
			for k, _ := c.Seek(prefix); k != nil && hasPrefix(k, prefix); k, _ = c.Next() {
				ids = append(ids, string(k[len(prefix):]))
			}
		}
		slices.Sort(ids)
		var err error
		out, err = getTasks(tx, ids)
		return err
	})
	return out, err
}

// ListByIssue returns the tasks on ref's issue or pull request, oldest
// first, through the (repo, issue) index. A caller finds a task still
// active on the issue by looking for a non-terminal state among them.
func (s *Store) ListByIssue(ctx context.Context, ref agentbot.IssueRef) ([]*agentbot.Task, error) {
	defer s.observe("list_by_issue", time.Now())
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var out []*agentbot.Task
	err := s.db.View(func(tx *bolt.Tx) error {
		idx := tx.Bucket(bucketByIssue)
		if idx == nil {
			return nil
		}
		prefix := issueKeyPrefix(ref)
		var ids []string
		c := idx.Cursor()
		for k, _ := c.Seek(prefix); k != nil && hasPrefix(k, prefix); k, _ = c.Next() {
			ids = append(ids, string(k[len(prefix):]))
		}
		var err error
		out, err = getTasks(tx, ids)
		return err
	})
	return out, err
}

func getTasks(tx *bolt.Tx, ids []string) ([]*agentbot.Task, error) {
	out := make([]*agentbot.Task, 0, len(ids))
	for _, id := range ids {
		t, err := getTask(tx, id)
		if err != nil {
			return nil, fmt.Errorf("index names %w", err)
		}
		out = append(out, t)
	}
	return out, nil
}

// Transition moves task id from state from to state to, as a
// compare-and-set in one transaction: an illegal move, or a task no longer
// in from, is a *TransitionError and nothing is written. mutate (may be nil)
// changes other fields first; it runs exactly once, must not change State,
// and an error from it aborts the transition. Transition sets UpdatedAt,
// StartedAt when entering running, and FinishedAt when entering a terminal
// state. Attempt counting is left to the caller's mutate.
func (s *Store) Transition(ctx context.Context, id string, from, to agentbot.TaskState, mutate func(*agentbot.Task) error) (*agentbot.Task, error) {
	defer s.observe("transition", time.Now())
	t, err := s.modify(ctx, id, func(t *agentbot.Task) error {
		if t.State != from || !agentbot.CanTransition(from, to) {
			return &TransitionError{ID: id, From: from, To: to, Actual: t.State}
		}
		if mutate != nil {
			if err := mutate(t); err != nil {
				return err
			}
			if t.State != from {
				return fmt.Errorf("task %s: mutate changed state to %s during transition %s -> %s", id, t.State, from, to)
			}
		}
		now := s.now()
		t.State = to
		if to == agentbot.StateRunning {
			t.StartedAt = now
		}
		if to.Terminal() {
			t.FinishedAt = now
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	s.metrics.tasks.WithLabelValues(string(from)).Dec()
	s.metrics.tasks.WithLabelValues(string(to)).Inc()
	return t, nil
}

// Update changes fields of task id other than its state in one transaction
// and returns the stored result. mutate runs exactly once; changing State
// (use Transition), ID, DeliveryID or the issue is an error and nothing is
// written.
func (s *Store) Update(ctx context.Context, id string, mutate func(*agentbot.Task) error) (*agentbot.Task, error) {
	defer s.observe("update", time.Now())
	if mutate == nil {
		return nil, fmt.Errorf("task %s: Update needs a mutate function", id)
	}
	return s.modify(ctx, id, func(t *agentbot.Task) error {
		before := t.State
		if err := mutate(t); err != nil {
			return err
		}
		if t.State != before {
			return fmt.Errorf("task %s: Update may not change state (%s -> %s); use Transition", id, before, t.State)
		}
		return nil
	})
}

// modify is the read-modify-write shared by Transition and Update. It keeps
// the indexes in step with the state and refuses changes to identity fields.
func (s *Store) modify(ctx context.Context, id string, change func(*agentbot.Task) error) (*agentbot.Task, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if s.readOnly {
		return nil, fmt.Errorf("task %s: store %s opened read-only", id, s.path)
	}
	var out *agentbot.Task
	err := s.db.Update(func(tx *bolt.Tx) error {
		t, err := getTask(tx, id)
		if err != nil {
			return err
		}
		before := *t
		if err := change(t); err != nil {
			return err
		}
		if t.ID != before.ID || t.DeliveryID != before.DeliveryID || t.Ref() != before.Ref() || !t.CreatedAt.Equal(before.CreatedAt) {
			return fmt.Errorf("task %s: id, delivery, issue and creation time cannot change", id)
		}
		t.UpdatedAt = s.now()
		val, err := json.Marshal(t)
		if err != nil {
			return fmt.Errorf("encode %s: %w", t, err)
		}
		if err := tx.Bucket(bucketTasks).Put([]byte(id), val); err != nil {
			return fmt.Errorf("put %s: %w", t, err)
		}
		if t.State != before.State {
			idx := tx.Bucket(bucketByState)
			if err := idx.Delete(stateKey(before.State, id)); err != nil {
				return fmt.Errorf("unindex %s: %w", t, err)
			}
			if err := idx.Put(stateKey(t.State, id), nil); err != nil {
				return fmt.Errorf("index %s: %w", t, err)
			}
		}
		if err := indexReport(tx, &before, t); err != nil {
			return err
		}
		out = t
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}
