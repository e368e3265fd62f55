package state

import (
	"context"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/agentbot/agentbot"
)

// CountByState counts the tasks in each state from the state index's keys
// (no task is decoded).
func (s *Store) CountByState(ctx context.Context) (map[agentbot.TaskState]int, error) {
	defer s.observe("count_by_state", time.Now())
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	out := make(map[agentbot.TaskState]int, len(allStates))
	err := s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketByState).Cursor()
		for _, st := range allStates {
			prefix := stateKeyPrefix(st)
			for k, _ := c.Seek(prefix); k != nil && hasPrefix(k, prefix); k, _ = c.Next() {
				out[st]++
			}
		}
		return nil
	})
	return out, err
}
