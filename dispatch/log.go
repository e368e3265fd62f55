package dispatch

import (
	"context"
	"log/slog"

	"github.com/agentbot/agentbot"
)

// The logger travels in the context, carrying the keys of what the work is
// about (delivery_id, task_id, repo, issue), so every line a task's work
// logs — in its attempt, its conversation, a control command — says which.
type loggerKey struct{}

func withLogger(ctx context.Context, l *slog.Logger) context.Context {
	return context.WithValue(ctx, loggerKey{}, l)
}

// logFrom is the context's logger; a context without one logs nothing.
func logFrom(ctx context.Context) *slog.Logger {
	if l, ok := ctx.Value(loggerKey{}).(*slog.Logger); ok {
		return l
	}
	return slog.New(slog.DiscardHandler)
}

// taskContext is ctx with a logger carrying t's keys.
func (d *Dispatcher) taskContext(ctx context.Context, t *agentbot.Task) context.Context {
	return withLogger(ctx, d.log.With(
		"delivery_id", t.DeliveryID, "task_id", t.ID,
		"repo", t.Ref().Repo.FullName(), "issue", t.Ref().Number))
}
