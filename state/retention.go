package state

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/agentbot/agentbot"
)

// The unreported index holds the tasks that ended but whose final comment
// and check run were not written yet, so the dispatcher's recovery reads
// those (a handful) instead of decoding every finished task: with 100,000
// stored tasks that walk paged in the whole file (about 180 MB resident)
// at every start.

func unreported(t *agentbot.Task) bool { return t.State.Terminal() && !t.Reported }

// indexReport keeps the unreported index in step with a task's change
// (before is nil for a new task).
func indexReport(tx *bolt.Tx, before, after *agentbot.Task) error {
	was := before != nil && unreported(before)
	is := unreported(after)
	switch {
	case is && !was:
		if err := tx.Bucket(bucketUnreported).Put([]byte(after.ID), nil); err != nil {
			return fmt.Errorf("index %s as unreported: %w", after, err)
		}
	case was && !is:
		if err := tx.Bucket(bucketUnreported).Delete([]byte(after.ID)); err != nil {
			return fmt.Errorf("unindex %s as unreported: %w", after, err)
		}
	}
	return nil
}

// indexUnreported moves schema 2 to 3: it builds the unreported index
// from the ended tasks (one walk, at the upgrade only).
func indexUnreported(tx *bolt.Tx) error {
	idx, err := tx.CreateBucketIfNotExists(bucketUnreported)
	if err != nil {
		return fmt.Errorf("state: create %s: %w", bucketUnreported, err)
	}
	return tx.Bucket(bucketTasks).ForEach(func(k, v []byte) error {
		var t agentbot.Task
		if err := json.Unmarshal(v, &t); err != nil {
			return fmt.Errorf("state: migrate task %s: %w", k, err)
		}
		if !unreported(&t) {
			return nil
		}
		if err := idx.Put(append([]byte(nil), k...), nil); err != nil {
			return fmt.Errorf("state: migrate task %s: %w", k, err)
		}
		return nil
	})
}

// ListUnreported returns the ended tasks whose final report is not
// written yet, oldest first.
func (s *Store) ListUnreported(ctx context.Context) ([]*agentbot.Task, error) {
	defer s.observe("list_unreported", time.Now())
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var out []*agentbot.Task
	err := s.db.View(func(tx *bolt.Tx) error {
		var ids []string
		if err := tx.Bucket(bucketUnreported).ForEach(func(k, _ []byte) error {
			ids = append(ids, string(k))
			return nil
		}); err != nil {
			return err
		}
		var err error
		out, err = getTasks(tx, ids)
		return err
	})
	return out, err
}

// idTime is the creation time a task id encodes (its first ten characters
// are 48 bits of milliseconds); ok is false for an id not of this store.
func idTime(id string) (time.Time, bool) {
	if len(id) != 26 {
		return time.Time{}, false
	}
	var ms uint64
	for _, c := range id[:10] {
		v := strings.IndexRune(crockford, c)
		if v < 0 {
			return time.Time{}, false
		}
		ms = ms<<5 | uint64(v)
	}
	return time.UnixMilli(int64(ms)), true
}

// PruneFinished deletes up to batch ended tasks that finished before
// cutoff, in one transaction, and returns their ids (the caller removes
// their logs and workspaces). Only tasks created before cutoff are looked
// at (ids sort by creation), so a call reads old tasks only, and a task
// whose final report is not written yet is kept. Call it until it returns
// fewer than batch.
func (s *Store) PruneFinished(ctx context.Context, cutoff time.Time, batch int) ([]string, error) {
	defer s.observe("prune_finished", time.Now())
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if s.readOnly {
		return nil, fmt.Errorf("prune tasks: store %s opened read-only", s.path)
	}
	var pruned []string
	var states []agentbot.TaskState
	err := s.db.Update(func(tx *bolt.Tx) error {
		pruned, states = pruned[:0], states[:0]
		for _, st := range allStates {
			if !st.Terminal() {
				continue
			}
			ids, err := oldFinished(tx, st, cutoff, batch-len(pruned))
			if err != nil {
				return err
			}
			for _, t := range ids {
				if err := deleteTask(tx, t); err != nil {
					return err
				}
				pruned, states = append(pruned, t.ID), append(states, t.State)
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("prune tasks in %s: %w", s.path, err)
	}
	for _, st := range states {
		s.metrics.tasks.WithLabelValues(string(st)).Dec()
	}
	return pruned, nil
}

// oldFinished reads, in id order, the tasks in state st created before
// cutoff and returns up to limit of them that finished before it and
// were reported.
func oldFinished(tx *bolt.Tx, st agentbot.TaskState, cutoff time.Time, limit int) ([]*agentbot.Task, error) {
	var out []*agentbot.Task
	prefix := stateKeyPrefix(st)
	c := tx.Bucket(bucketByState).Cursor()
	for k, _ := c.Seek(prefix); k != nil && hasPrefix(k, prefix) && len(out) < limit; k, _ = c.Next() {
		id := string(k[len(prefix):])
		if at, ok := idTime(id); !ok || !at.Before(cutoff) {
			break
		}
		t, err := getTask(tx, id)
		if err != nil {
			return nil, fmt.Errorf("index names %w", err)
		}
		if t.Reported && t.FinishedAt.Before(cutoff) {
			out = append(out, t)
		}
	}
	return out, nil
}

// deleteTask removes a task and its index entries. Its delivery id stays
// until the delivery retention forgets it.
func deleteTask(tx *bolt.Tx, t *agentbot.Task) error {
	for _, del := range []struct {
		bucket []byte
		key    []byte
	}{
		{bucketTasks, []byte(t.ID)},
		{bucketByState, stateKey(t.State, t.ID)},
		{bucketByIssue, issueKey(t.Ref(), t.ID)},
		{bucketUnreported, []byte(t.ID)},
	} {
		if err := tx.Bucket(del.bucket).Delete(del.key); err != nil {
			return fmt.Errorf("delete %s from %s: %w", t, del.bucket, err)
		}
	}
	return nil
}
