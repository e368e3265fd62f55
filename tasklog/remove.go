package tasklog

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
)

// Remove deletes a task's log (retention); a log that is not there is no
// error.
func (l *Store) Remove(taskID string) error {
	p, err := l.path(taskID)
	if err != nil {
		return err
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("tasklog: remove log of %s: %w", taskID, err)
	}
	return nil
}
