package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/agentbot/agentbot"
	"github.com/agentbot/agentbot/state"
)

// TasksOptions are the flags of `agentbot tasks`.
type TasksOptions struct {
	JSON   bool
	Limit  int
	States string

	states       []agentbot.TaskState
	storeTimeout time.Duration
}

// taskSettings are `agentbot tasks`' own flags, next to the data-dir and
// store-timeout settings it shares with serve.
var taskSettings = []setting[TasksOptions]{
	{"json", "", "false", "print the tasks as a JSON array", func(o *TasksOptions) any { return &o.JSON }},
	{"limit", "", "50", "print at most this many tasks, newest first (0: all)", func(o *TasksOptions) any { return &o.Limit }},
	{"state", "", "", "comma-separated states to list (queued, running, succeeded, failed, cancelled)", func(o *TasksOptions) any { return &o.States }},
}

func (o *TasksOptions) validate(opts *Options) error {
	var errs []error
	if opts.DataDir == "" {
		errs = append(errs, errors.New("--data-dir ($AGENTBOT_DATA_DIR): empty"))
	}
	d, err := time.ParseDuration(opts.StoreTimeout)
	if err != nil || d <= 0 {
		errs = append(errs, fmt.Errorf("--store-timeout ($AGENTBOT_STORE_TIMEOUT): %q is not a positive duration", opts.StoreTimeout))
	}
	o.storeTimeout = d
	if o.Limit < 0 {
		errs = append(errs, fmt.Errorf("--limit: %d is negative", o.Limit))
	}
	for _, s := range strings.Split(o.States, ",") {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		st := agentbot.TaskState(s)
		if !st.Valid() {
			errs = append(errs, fmt.Errorf("--state: %q is not a task state", s))
			continue
		}
		o.states = append(o.states, st)
	}
	return errors.Join(errs...)
}

// listTasks prints stored tasks, newest first. It opens the file read-only,
// so it works while serve is stopped and fails with a clear lock error
// while serve runs.
func (m *Main) listTasks(ctx context.Context) error {
	store, err := state.Open(m.DBPath(), state.Options{ReadOnly: true, Timeout: m.Tasks.storeTimeout})
	switch {
	case state.IsNotExist(err):
		fmt.Fprintf(m.Stderr, "agentbot: no tasks yet: %s does not exist\n", m.DBPath())
		return m.printTasks(nil)
	case errors.Is(err, state.ErrLocked):
		return fmt.Errorf("%w (stop agentbot serve to list tasks)", err)
	case err != nil:
		return err
	}
	defer store.Close()

	return m.streamTasks(ctx, store)
}

// streamTasks prints the tasks as they are read, so listing every task
// holds one in memory (a JSON array or a table, newest first).
func (m *Main) streamTasks(ctx context.Context, store *state.Store) error {
	if m.Tasks.JSON {
		n := 0
		w := bufio.NewWriter(m.Stdout)
		err := store.Walk(ctx, m.Tasks.Limit, func(t *agentbot.Task) error {
			b, err := json.MarshalIndent(t, "  ", "  ")
			if err != nil {
				return fmt.Errorf("encode task %s: %w", t.ID, err)
			}
			sep := ",\n  "
			if n == 0 {
				sep = "[\n  "
			}
			n++
			w.WriteString(sep)
			_, err = w.Write(b)
			return err
		}, m.Tasks.states...)
		if err != nil {
			return err
		}
		if n == 0 {
			w.WriteString("[]\n")
		} else {
			w.WriteString("\n]\n")
		}
		return w.Flush()
	}
	tw := tabwriter.NewWriter(m.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tSTATE\tKIND\tISSUE\tSENDER\tCREATED\tDETAIL")
	err := store.Walk(ctx, m.Tasks.Limit, func(t *agentbot.Task) error {
		printTaskRow(tw, t)
		return nil
	}, m.Tasks.states...)
	if err != nil {
		return err
	}
	return tw.Flush()
}

func (m *Main) printTasks(tasks []*agentbot.Task) error {
	if m.Tasks.JSON {
		if tasks == nil {
			tasks = []*agentbot.Task{}
		}
		enc := json.NewEncoder(m.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(tasks)
	}
	tw := tabwriter.NewWriter(m.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tSTATE\tKIND\tISSUE\tSENDER\tCREATED\tDETAIL")
	for _, t := range tasks {
		printTaskRow(tw, t)
	}
	return tw.Flush()
}

func printTaskRow(w io.Writer, t *agentbot.Task) {
	kind := string(t.Trigger.Kind)
	if t.Trigger.Kind == agentbot.KindControl {
		kind += ":" + string(t.Trigger.Control)
	}
	fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", t.ID, t.State, kind, t.Ref(), t.Trigger.Sender.Login,
		t.CreatedAt.UTC().Format(time.RFC3339), detail(t))
}

// detail is the most telling thing about a task, on one short line.
func detail(t *agentbot.Task) string {
	var s string
	switch {
	case t.Result.Error != "":
		s = "error: " + t.Result.Error
	case t.Result.PRURL != "":
		s = t.Result.PRURL
	case t.Result.Branch != "":
		s = "branch " + t.Result.Branch
	case t.Trigger.Prompt.Instructions != "":
		s = t.Trigger.Prompt.Instructions
	default:
		s = t.Trigger.Prompt.Title
	}
	s = strings.Join(strings.Fields(s), " ")
	if r := []rune(s); len(r) > 60 {
		s = string(r[:59]) + "…"
	}
	return s
}
