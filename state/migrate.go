package state

import (
	"encoding/json"
	"fmt"

	bolt "go.etcd.io/bbolt"

	"github.com/agentbot/agentbot"
)

// markAcknowledged moves schema 1 to 2. Version 1 had no AcknowledgedAt:
// a task with a progress comment was taken to be acknowledged. Version 2
// stores it; tasks that had a comment get their creation time, the best
// moment the file knows.
func markAcknowledged(tx *bolt.Tx) error {
	b := tx.Bucket(bucketTasks)
	type change struct{ key, val []byte }
	var changes []change
	err := b.ForEach(func(k, v []byte) error {
		var t agentbot.Task
		if err := json.Unmarshal(v, &t); err != nil {
			return fmt.Errorf("state: migrate task %s: %w", k, err)
		}
		if t.CommentID == 0 || t.Acknowledged() || t.Trigger.Kind == agentbot.KindControl {
			return nil
		}
		t.AcknowledgedAt = t.CreatedAt
		nv, err := json.Marshal(&t)
		if err != nil {
			return fmt.Errorf("state: migrate task %s: %w", k, err)
		}
		changes = append(changes, change{append([]byte(nil), k...), nv})
		return nil
	})
	if err != nil {
		return err
	}
	for _, c := range changes {
		if err := b.Put(c.key, c.val); err != nil {
			return fmt.Errorf("state: migrate task %s: %w", c.key, err)
		}
	}
	return nil
}
