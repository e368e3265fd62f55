package state

import (
	"context"
	"fmt"
	"io"
	"time"

	bolt "go.etcd.io/bbolt"
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
