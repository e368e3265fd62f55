package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/agentbot/agentbot"
	"github.com/agentbot/agentbot/tasklog"
)

// retentionInterval is how often finished tasks past the retention are
// pruned; retentionBatch bounds one transaction.
const (
	retentionInterval = time.Hour
	retentionBatch    = 500
)

// retentionHook prunes, at start and hourly, finished tasks older than
// AGENTBOT_RETENTION with their logs and (local launcher) workspaces.
func retentionHook(_ context.Context, m *Main) (Plugin, error) {
	if m.Ops.retention == 0 {
		return Plugin{}, nil
	}
	logs, err := tasklog.Open(filepath.Join(m.Config.DataDir, "logs"), 0)
	if err != nil {
		return Plugin{}, err
	}
	run := func(ctx context.Context) {
		t := time.NewTicker(retentionInterval)
		defer t.Stop()
		for {
			n, err := m.pruneFinished(ctx, logs, time.Now().Add(-m.Ops.retention))
			switch {
			case err != nil && ctx.Err() == nil:
				m.Logger.Error("prune finished tasks", slog.Any("err", err))
			case n > 0:
				m.Logger.Info("pruned finished tasks past the retention", slog.Int("count", n), slog.Duration("retention", m.Ops.retention))
			}
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}
	return Plugin{Background: run}, nil
}

// pruneFinished deletes in batches, each its own transaction, so the
// writer is never held long; each task's log and workspace go after its
// record (a crash in between leaves files the next run cannot name, so
// stray ones older than the retention are swept too).
func (m *Main) pruneFinished(ctx context.Context, logs *tasklog.Store, cutoff time.Time) (int, error) {
	total := 0
	for {
		ids, err := m.Store.PruneFinished(ctx, cutoff, retentionBatch)
		if err != nil {
			return total, err
		}
		var errs []error
		for _, id := range ids {
			errs = append(errs, logs.Remove(id), m.removeWorkspace(id))
		}
		total += len(ids)
		if err := errors.Join(errs...); err != nil {
			return total, err
		}
		if len(ids) < retentionBatch {
			break
		}
		select {
		case <-ctx.Done():
			return total, ctx.Err()
		case <-time.After(100 * time.Millisecond): // let deliveries in between batches
		}
	}
	_, err := logs.Prune(time.Now(), time.Since(cutoff))
	return total, err
}

// removeWorkspace deletes a local launcher's kept workspace of a pruned
// task, if any.
func (m *Main) removeWorkspace(id string) error {
	if err := agentbot.CheckTaskID(id); err != nil {
		return err
	}
	dir := filepath.Join(m.Config.DataDir, "workspaces", id)
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("remove workspace of %s: %w", id, err)
	}
	return nil
}
