package state

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	bolt "go.etcd.io/bbolt"

	"github.com/agentbot/agentbot"
)

// clock is a settable test clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func openStore(t testing.TB, path string, opts Options) *Store {
	t.Helper()
	s, err := Open(path, opts)
	if err != nil {
		t.Fatalf("Open(%s): %v", path, err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func ref(owner, name string, n int) agentbot.IssueRef {
	return agentbot.IssueRef{Repo: agentbot.Repo{Owner: owner, Name: name}, Number: n}
}

func newTask(r agentbot.IssueRef) *agentbot.Task {
	return &agentbot.Task{
		Event: "issues",
		Trigger: agentbot.Trigger{
			Kind:           agentbot.KindNew,
			InstallationID: 42,
			Issue:          r,
			Label:          "agent-task",
			Prompt:         agentbot.Prompt{Title: "Fix the typo", Body: "commmit"},
			Sender:         agentbot.Sender{Login: "octocat", ID: 1, AuthorAssociation: "OWNER"},
		},
	}
}

func mustCreate(t testing.TB, s *Store, delivery string, task *agentbot.Task) *agentbot.Task {
	t.Helper()
	created, err := s.CreateTask(context.Background(), delivery, task)
	if err != nil {
		t.Fatalf("CreateTask(%s): %v", delivery, err)
	}
	if !created {
		t.Fatalf("CreateTask(%s): created = false for a new delivery", delivery)
	}
	return task
}

func TestCreateTaskAssignsFieldsAndGetReturnsThem(t *testing.T) {
	clk := newClock()
	s := openStore(t, filepath.Join(t.TempDir(), "a.db"), Options{Now: clk.Now})
	task := mustCreate(t, s, "d-1", newTask(ref("octo", "hello", 7)))

	if len(task.ID) != 26 {
		t.Errorf("ID %q: want 26 characters", task.ID)
	}
	if task.State != agentbot.StateQueued || task.DeliveryID != "d-1" || !task.CreatedAt.Equal(clk.Now()) || !task.UpdatedAt.Equal(clk.Now()) {
		t.Errorf("created task = state %q delivery %q created %v updated %v", task.State, task.DeliveryID, task.CreatedAt, task.UpdatedAt)
	}
	got, err := s.Get(context.Background(), task.ID)
	if err != nil {
		t.Fatalf("Get: %v", err)
	}
	if got.Trigger.Prompt.Title != "Fix the typo" || got.Trigger.Sender.AuthorAssociation != "OWNER" || got.Ref() != ref("octo", "hello", 7) || got.Trigger.Label != "agent-task" {
		t.Errorf("Get returned %+v", got)
	}
	if _, err := s.Get(context.Background(), "01NOPE"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get(unknown) error = %v, want ErrNotFound", err)
	}
}

func TestCreateTaskRejectsBadInput(t *testing.T) {
	s := openStore(t, filepath.Join(t.TempDir(), "a.db"), Options{})
	tests := []struct {
		name     string
		delivery string
		task     *agentbot.Task
	}{
		{"empty delivery id", "", newTask(ref("o", "r", 1))},
		{"overlong delivery id", strings.Repeat("x", MaxDeliveryIDLen+1), newTask(ref("o", "r", 1))},
		{"nil task", "d", nil},
		{"delivery id not UTF-8", "d\xda", newTask(ref("o", "r", 1))},
		{"unknown state", "d", &agentbot.Task{State: "exploded"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if created, err := s.CreateTask(context.Background(), tt.delivery, tt.task); err == nil || created {
				t.Errorf("CreateTask = %v, %v; want an error", created, err)
			}
		})
	}
	if all, _ := s.List(context.Background(), 0); len(all) != 0 {
		t.Errorf("bad input stored %d tasks", len(all))
	}
}

func TestDuplicateDeliveryCreatesNothing(t *testing.T) {
	s := openStore(t, filepath.Join(t.TempDir(), "a.db"), Options{})
	first := mustCreate(t, s, "dup", newTask(ref("o", "r", 1)))

	second := newTask(ref("o", "r", 2))
	created, err := s.CreateTask(context.Background(), "dup", second)
	if err != nil || created {
		t.Fatalf("second CreateTask = %v, %v; want false, nil", created, err)
	}
	if second.ID != "" || second.State != "" {
		t.Errorf("duplicate create modified the caller's task: %+v", second)
	}
	all, err := s.List(context.Background(), 0)
	if err != nil || len(all) != 1 || all[0].ID != first.ID {
		t.Fatalf("List = %v, %v; want only %s", all, err, first.ID)
	}
	if isNew, err := s.RecordDelivery(context.Background(), "dup"); err != nil || isNew {
		t.Errorf("RecordDelivery(seen) = %v, %v; want false", isNew, err)
	}
	if isNew, err := s.RecordDelivery(context.Background(), "other"); err != nil || !isNew {
		t.Errorf("RecordDelivery(new) = %v, %v; want true", isNew, err)
	}
	if created, err := s.CreateTask(context.Background(), "other", newTask(ref("o", "r", 3))); err != nil || created {
		t.Errorf("CreateTask after RecordDelivery = %v, %v; want false", created, err)
	}
}

func TestRestartKeepsTasksAndDeliveries(t *testing.T) {
	path := filepath.Join(t.TempDir(), "a.db")
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	a := mustCreate(t, s, "d-a", newTask(ref("o", "r", 1)))
	b := mustCreate(t, s, "d-b", newTask(ref("o", "r", 2)))
	if _, err := s.Transition(context.Background(), b.ID, agentbot.StateQueued, agentbot.StateRunning, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := s.RecordDelivery(context.Background(), "d-none"); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	reg := prometheus.NewRegistry()
	s2 := openStore(t, path, Options{Registry: reg})
	for _, id := range []string{a.ID, b.ID} {
		if _, err := s2.Get(context.Background(), id); err != nil {
			t.Errorf("after reopen Get(%s): %v", id, err)
		}
	}
	for _, d := range []string{"d-a", "d-b", "d-none"} {
		if created, err := s2.CreateTask(context.Background(), d, newTask(ref("o", "r", 9))); err != nil || created {
			t.Errorf("after reopen CreateTask(%s) = %v, %v; want a duplicate", d, created, err)
		}
	}
	running, err := s2.ListByState(context.Background(), agentbot.StateRunning)
	if err != nil || len(running) != 1 || running[0].ID != b.ID {
		t.Errorf("ListByState(running) after reopen = %v, %v", running, err)
	}
	for st, want := range map[agentbot.TaskState]float64{agentbot.StateQueued: 1, agentbot.StateRunning: 1, agentbot.StateFailed: 0} {
		if got := gaugeValue(t, s2.metrics.tasks.WithLabelValues(string(st))); got != want {
			t.Errorf("agentbot_tasks{state=%q} after reopen = %v, want %v", st, got, want)
		}
	}
}

func TestSecondOpenFailsWithLockedError(t *testing.T) {
	path := filepath.Join(t.TempDir(), "a.db")
	openStore(t, path, Options{})
	for _, readOnly := range []bool{false, true} {
		t.Run(fmt.Sprintf("readonly=%v", readOnly), func(t *testing.T) {
			s, err := Open(path, Options{Timeout: 50 * time.Millisecond, ReadOnly: readOnly})
			if err == nil {
				s.Close()
				t.Fatal("second Open succeeded")
			}
			if !errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), "database is locked by another agentbot") {
				t.Errorf("second Open error = %v; want ErrLocked", err)
			}
		})
	}
}

func TestConcurrentCreatesForOneDeliveryMakeOneTask(t *testing.T) {
	s := openStore(t, filepath.Join(t.TempDir(), "a.db"), Options{})
	const workers = 32
	var wg sync.WaitGroup
	results := make(chan bool, workers)
	errs := make(chan error, workers)
	for i := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			created, err := s.CreateTask(context.Background(), "same", newTask(ref("o", "r", i)))
			if err != nil {
				errs <- err
			}
			results <- created
		}()
	}
	wg.Wait()
	close(results)
	close(errs)
	for err := range errs {
		t.Errorf("CreateTask: %v", err)
	}
	n := 0
	for c := range results {
		if c {
			n++
		}
	}
	all, err := s.List(context.Background(), 0)
	if n != 1 || err != nil || len(all) != 1 {
		t.Errorf("%d creates reported created, %d tasks stored (%v); want exactly one", n, len(all), err)
	}
}

func TestConcurrentCreatesForDistinctDeliveriesAllLand(t *testing.T) {
	path := filepath.Join(t.TempDir(), "a.db")
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	const workers, each = 16, 25
	var wg sync.WaitGroup
	var mu sync.Mutex
	ids := map[string]bool{}
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				task := newTask(ref("o", "r", w))
				created, err := s.CreateTask(context.Background(), fmt.Sprintf("d-%d-%d", w, i), task)
				if err != nil || !created {
					t.Errorf("CreateTask = %v, %v", created, err)
					return
				}
				mu.Lock()
				ids[task.ID] = true
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if len(ids) != workers*each {
		t.Fatalf("%d distinct ids, want %d", len(ids), workers*each)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s2 := openStore(t, path, Options{})
	queued, err := s2.ListByState(context.Background(), agentbot.StateQueued)
	if err != nil || len(queued) != workers*each {
		t.Fatalf("after reopen %d queued tasks (%v), want %d", len(queued), err, workers*each)
	}
	for _, task := range queued {
		if !ids[task.ID] {
			t.Errorf("unexpected task %s", task.ID)
		}
	}
	perIssue, err := s2.ListByIssue(context.Background(), ref("o", "r", 3))
	if err != nil || len(perIssue) != each {
		t.Errorf("ListByIssue(o/r#3) = %d tasks (%v), want %d", len(perIssue), err, each)
	}
}

func TestTransition(t *testing.T) {
	clk := newClock()
	s := openStore(t, filepath.Join(t.TempDir(), "a.db"), Options{Now: clk.Now})
	ctx := context.Background()
	errBoom := errors.New("boom")

	tests := []struct {
		name     string
		start    []agentbot.TaskState // transitions applied first, from queued
		from, to agentbot.TaskState
		mutate   func(*agentbot.Task) error
		wantErr  func(error) bool
		check    func(t *testing.T, got *agentbot.Task)
	}{
		{
			name: "queued to running sets StartedAt and runs mutate",
			from: agentbot.StateQueued, to: agentbot.StateRunning,
			mutate: func(t *agentbot.Task) error { t.Attempt++; t.Phase = "clone"; return nil },
			check: func(t *testing.T, got *agentbot.Task) {
				if got.State != agentbot.StateRunning || got.Attempt != 1 || got.Phase != "clone" || got.StartedAt.IsZero() || !got.FinishedAt.IsZero() {
					t.Errorf("got %+v", got)
				}
			},
		},
		{
			name:  "running to succeeded sets FinishedAt",
			start: []agentbot.TaskState{agentbot.StateRunning},
			from:  agentbot.StateRunning, to: agentbot.StateSucceeded,
			mutate: func(t *agentbot.Task) error { t.Result.PRURL = "https://example.test/pr/1"; return nil },
			check: func(t *testing.T, got *agentbot.Task) {
				if got.State != agentbot.StateSucceeded || got.FinishedAt.IsZero() || got.Result.PRURL == "" {
					t.Errorf("got %+v", got)
				}
			},
		},
		{
			name:  "running back to queued (restart requeue)",
			start: []agentbot.TaskState{agentbot.StateRunning},
			from:  agentbot.StateRunning, to: agentbot.StateQueued,
			mutate: func(t *agentbot.Task) error { t.Requeues++; return nil },
			check: func(t *testing.T, got *agentbot.Task) {
				if got.State != agentbot.StateQueued || got.Requeues != 1 {
					t.Errorf("got %+v", got)
				}
			},
		},
		{
			name: "illegal queued to succeeded",
			from: agentbot.StateQueued, to: agentbot.StateSucceeded,
			wantErr: func(err error) bool {
				var te *TransitionError
				return errors.As(err, &te) && !te.Stale() && te.Actual == agentbot.StateQueued
			},
		},
		{
			name:  "terminal task is never revived",
			start: []agentbot.TaskState{agentbot.StateCancelled},
			from:  agentbot.StateCancelled, to: agentbot.StateQueued,
			wantErr: func(err error) bool {
				var te *TransitionError
				return errors.As(err, &te) && !te.Stale()
			},
		},
		{
			name:  "stale compare-and-set",
			start: []agentbot.TaskState{agentbot.StateRunning},
			from:  agentbot.StateQueued, to: agentbot.StateRunning,
			wantErr: func(err error) bool {
				var te *TransitionError
				return errors.As(err, &te) && te.Stale() && te.Actual == agentbot.StateRunning
			},
		},
		{
			name: "mutate error aborts",
			from: agentbot.StateQueued, to: agentbot.StateRunning,
			mutate:  func(t *agentbot.Task) error { t.Attempt = 99; return errBoom },
			wantErr: func(err error) bool { return errors.Is(err, errBoom) },
		},
		{
			name: "mutate may not change state",
			from: agentbot.StateQueued, to: agentbot.StateRunning,
			mutate:  func(t *agentbot.Task) error { t.State = agentbot.StateFailed; return nil },
			wantErr: func(err error) bool { return err != nil },
		},
		{
			name: "mutate may not change the issue",
			from: agentbot.StateQueued, to: agentbot.StateRunning,
			mutate:  func(t *agentbot.Task) error { t.Trigger.Issue.Number++; return nil },
			wantErr: func(err error) bool { return err != nil },
		},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			task := mustCreate(t, s, fmt.Sprintf("tr-%d", i), newTask(ref("o", "r", 100+i)))
			cur := agentbot.StateQueued
			for _, st := range tt.start {
				if _, err := s.Transition(ctx, task.ID, cur, st, nil); err != nil {
					t.Fatalf("setup %s -> %s: %v", cur, st, err)
				}
				cur = st
			}
			clk.Advance(time.Minute)
			before, _ := s.Get(ctx, task.ID)
			got, err := s.Transition(ctx, task.ID, tt.from, tt.to, tt.mutate)
			if tt.wantErr != nil {
				if err == nil || !tt.wantErr(err) {
					t.Fatalf("Transition error = %v", err)
				}
				after, _ := s.Get(ctx, task.ID)
				if after.State != before.State || after.Attempt != before.Attempt || !after.UpdatedAt.Equal(before.UpdatedAt) {
					t.Errorf("failed transition wrote: before %+v after %+v", before, after)
				}
				return
			}
			if err != nil {
				t.Fatalf("Transition: %v", err)
			}
			if !got.UpdatedAt.Equal(clk.Now()) {
				t.Errorf("UpdatedAt = %v, want %v", got.UpdatedAt, clk.Now())
			}
			tt.check(t, got)
			stored, _ := s.Get(ctx, task.ID)
			tt.check(t, stored)
			inState, _ := s.ListByState(ctx, tt.to)
			found := false
			for _, x := range inState {
				found = found || x.ID == task.ID
			}
			inOld, _ := s.ListByState(ctx, tt.from)
			for _, x := range inOld {
				if x.ID == task.ID {
					t.Errorf("task still indexed under %s", tt.from)
				}
			}
			if !found {
				t.Errorf("task not indexed under %s", tt.to)
			}
		})
	}
	if _, err := s.Transition(ctx, "missing", agentbot.StateQueued, agentbot.StateRunning, nil); !errors.Is(err, ErrNotFound) {
		t.Errorf("Transition(missing) = %v, want ErrNotFound", err)
	}
}

func TestConcurrentTransitionsOneWins(t *testing.T) {
	s := openStore(t, filepath.Join(t.TempDir(), "a.db"), Options{})
	task := mustCreate(t, s, "race", newTask(ref("o", "r", 1)))
	var wg sync.WaitGroup
	wins := make(chan bool, 8)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := s.Transition(context.Background(), task.ID, agentbot.StateQueued, agentbot.StateRunning, func(t *agentbot.Task) error { t.Attempt++; return nil })
			var te *TransitionError
			if err != nil && !(errors.As(err, &te) && te.Stale()) {
				t.Errorf("Transition: %v", err)
			}
			wins <- err == nil
		}()
	}
	wg.Wait()
	close(wins)
	n := 0
	for w := range wins {
		if w {
			n++
		}
	}
	got, _ := s.Get(context.Background(), task.ID)
	if n != 1 || got.Attempt != 1 {
		t.Errorf("%d transitions won, attempt %d; want 1 and 1", n, got.Attempt)
	}
}

func TestUpdate(t *testing.T) {
	s := openStore(t, filepath.Join(t.TempDir(), "a.db"), Options{})
	ctx := context.Background()
	task := mustCreate(t, s, "u", newTask(ref("o", "r", 1)))
	tests := []struct {
		name    string
		mutate  func(*agentbot.Task) error
		wantErr bool
	}{
		{"records handles", func(t *agentbot.Task) error { t.CommentID = 5; t.CheckRunID = 6; return nil }, false},
		{"state change refused", func(t *agentbot.Task) error { t.State = agentbot.StateRunning; return nil }, true},
		{"id change refused", func(t *agentbot.Task) error { t.ID = "X"; return nil }, true},
		{"delivery change refused", func(t *agentbot.Task) error { t.DeliveryID = "X"; return nil }, true},
		{"nil mutate refused", nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := s.Update(ctx, task.ID, tt.mutate)
			if (err != nil) != tt.wantErr {
				t.Fatalf("Update error = %v, wantErr %v", err, tt.wantErr)
			}
		})
	}
	got, _ := s.Get(ctx, task.ID)
	if got.CommentID != 5 || got.CheckRunID != 6 || got.State != agentbot.StateQueued || got.ID != task.ID {
		t.Errorf("after updates %+v", got)
	}
}

func TestListOrdering(t *testing.T) {
	clk := newClock()
	s := openStore(t, filepath.Join(t.TempDir(), "a.db"), Options{Now: clk.Now})
	ctx := context.Background()
	var ids []string
	for i := range 5 {
		// Same millisecond for some, to exercise the monotonic id source.
		if i%2 == 0 {
			clk.Advance(time.Millisecond)
		}
		ids = append(ids, mustCreate(t, s, fmt.Sprintf("l-%d", i), newTask(ref("o", "r", 1))).ID)
	}
	if _, err := s.Transition(ctx, ids[1], agentbot.StateQueued, agentbot.StateRunning, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Transition(ctx, ids[3], agentbot.StateQueued, agentbot.StateCancelled, nil); err != nil {
		t.Fatal(err)
	}

	got := func(ts []*agentbot.Task) []string {
		var out []string
		for _, t := range ts {
			out = append(out, t.ID)
		}
		return out
	}
	tests := []struct {
		name string
		list func() ([]*agentbot.Task, error)
		want []string
	}{
		{"List newest first", func() ([]*agentbot.Task, error) { return s.List(ctx, 0) }, []string{ids[4], ids[3], ids[2], ids[1], ids[0]}},
		{"List limited", func() ([]*agentbot.Task, error) { return s.List(ctx, 2) }, []string{ids[4], ids[3]}},
		{"ListByState queued+running oldest first", func() ([]*agentbot.Task, error) {
			return s.ListByState(ctx, agentbot.StateRunning, agentbot.StateQueued, agentbot.StateRunning)
		}, []string{ids[0], ids[1], ids[2], ids[4]}},
		{"ListByState none", func() ([]*agentbot.Task, error) { return s.ListByState(ctx) }, nil},
		{"ListByIssue oldest first", func() ([]*agentbot.Task, error) { return s.ListByIssue(ctx, ref("o", "r", 1)) }, ids},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ts, err := tt.list()
			if err != nil {
				t.Fatal(err)
			}
			if fmt.Sprint(got(ts)) != fmt.Sprint(tt.want) {
				t.Errorf("got %v, want %v", got(ts), tt.want)
			}
		})
	}
}

func TestListByIssueKeepsIssuesApart(t *testing.T) {
	s := openStore(t, filepath.Join(t.TempDir(), "a.db"), Options{})
	ctx := context.Background()
	refs := []agentbot.IssueRef{
		ref("ab", "c", 1),
		ref("a", "bc", 1),
		ref("a", "b", 1),
		ref("a", "b", 10),
		ref("a", "b", 256),
	}
	ids := map[agentbot.IssueRef]string{}
	for i, r := range refs {
		ids[r] = mustCreate(t, s, fmt.Sprintf("k-%d", i), newTask(r)).ID
	}
	for _, r := range refs {
		t.Run(r.String(), func(t *testing.T) {
			got, err := s.ListByIssue(ctx, r)
			if err != nil || len(got) != 1 || got[0].ID != ids[r] {
				t.Errorf("ListByIssue(%s) = %v, %v", r, got, err)
			}
		})
	}
	// GitHub's owner and repo names are case-insensitive.
	got, err := s.ListByIssue(ctx, ref("AB", "C", 1))
	if err != nil || len(got) != 1 || got[0].ID != ids[ref("ab", "c", 1)] {
		t.Errorf("ListByIssue(AB/C#1) = %v, %v", got, err)
	}
	if got, _ := s.ListByIssue(ctx, ref("nobody", "x", 1)); len(got) != 0 {
		t.Errorf("ListByIssue(unknown) = %v", got)
	}
}

func TestPruneDeliveries(t *testing.T) {
	clk := newClock()
	path := filepath.Join(t.TempDir(), "a.db")
	s := openStore(t, path, Options{Now: clk.Now, DeliveryRetention: 24 * time.Hour})
	ctx := context.Background()
	old := mustCreate(t, s, "old", newTask(ref("o", "r", 1)))
	if _, err := s.RecordDelivery(ctx, "old-ignored"); err != nil {
		t.Fatal(err)
	}
	clk.Advance(12 * time.Hour)
	mustCreate(t, s, "young", newTask(ref("o", "r", 2)))
	clk.Advance(13 * time.Hour)

	n, err := s.PruneDeliveries(ctx)
	if err != nil || n != 2 {
		t.Fatalf("PruneDeliveries = %d, %v; want 2", n, err)
	}
	tests := []struct {
		delivery string
		seen     bool
	}{
		{"old", false},
		{"old-ignored", false},
		{"young", true},
	}
	for _, tt := range tests {
		if seen, err := s.SeenDelivery(ctx, tt.delivery); err != nil || seen != tt.seen {
			t.Errorf("SeenDelivery(%s) = %v, %v; want %v", tt.delivery, seen, err, tt.seen)
		}
	}
	if _, err := s.Get(ctx, old.ID); err != nil {
		t.Errorf("pruning a delivery removed its task: %v", err)
	}
	if n, err := s.PruneDeliveries(ctx); err != nil || n != 0 {
		t.Errorf("second PruneDeliveries = %d, %v; want 0", n, err)
	}
	// A forgotten delivery is new again; the pruning survives a restart.
	if isNew, err := s.RecordDelivery(ctx, "old-ignored"); err != nil || !isNew {
		t.Errorf("RecordDelivery(pruned) = %v, %v; want new", isNew, err)
	}
	s.Close()
	s2 := openStore(t, path, Options{Now: clk.Now, DeliveryRetention: 24 * time.Hour})
	for delivery, want := range map[string]bool{"old": false, "old-ignored": true, "young": true} {
		if seen, _ := s2.SeenDelivery(ctx, delivery); seen != want {
			t.Errorf("after restart SeenDelivery(%s) = %v, want %v", delivery, seen, want)
		}
	}
}

func TestSchemaMigrationHook(t *testing.T) {
	path := filepath.Join(t.TempDir(), "a.db")
	// A file one version older than this build's, migrated one step.
	old := SchemaVersion - 1
	s, err := Open(path, Options{schemaVersion: old, migrations: migrations()[:old-1]})
	if err != nil {
		t.Fatal(err)
	}
	task := mustCreate(t, s, "m", newTask(ref("o", "r", 1)))
	s.Close()

	failing := []Migration{{From: old, Run: func(tx *bolt.Tx) error {
		if err := tx.Bucket(bucketMeta).Put([]byte("half"), []byte("done")); err != nil {
			return err
		}
		return errors.New("disk says no")
	}}}
	if _, err := Open(path, Options{schemaVersion: SchemaVersion, migrations: failing}); err == nil || !strings.Contains(err.Error(), fmt.Sprintf("migrate schema %d to %d", old, SchemaVersion)) {
		t.Fatalf("failing migration: Open error = %v", err)
	}

	ran := 0
	steps := []Migration{{From: old, Run: func(tx *bolt.Tx) error {
		ran++
		return tx.Bucket(bucketMeta).Put([]byte("migrated"), []byte("yes"))
	}}}
	s2, err := Open(path, Options{schemaVersion: SchemaVersion, migrations: steps})
	if err != nil {
		t.Fatalf("Open with migration: %v", err)
	}
	err = s2.db.View(func(tx *bolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		if got := decodeVersion(meta.Get(keySchemaVersion)); got != SchemaVersion {
			t.Errorf("schema version after migration = %d", got)
		}
		if meta.Get([]byte("half")) != nil {
			t.Error("the failed migration's write survived")
		}
		if string(meta.Get([]byte("migrated"))) != "yes" {
			t.Error("migration did not run")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s2.Get(context.Background(), task.ID); err != nil {
		t.Errorf("task lost in migration: %v", err)
	}
	s2.Close()
	if ran != 1 {
		t.Errorf("migration ran %d times", ran)
	}

	// A build that speaks the older version must refuse the migrated file.
	if _, err := Open(path, Options{schemaVersion: old, migrations: migrations()[:old-1]}); err == nil || !strings.Contains(err.Error(), "newer") {
		t.Errorf("Open of a newer schema = %v, want a refusal", err)
	}
	if _, err := Open(path, Options{ReadOnly: true, schemaVersion: old, migrations: migrations()[:old-1]}); err == nil || !strings.Contains(err.Error(), "newer") {
		t.Errorf("read-only Open of a newer schema = %v, want a refusal", err)
	}
}

// TestMigrationMarksAcknowledged opens a schema 1 file, where a progress
// comment meant "acknowledged", and finds the tasks that had one
// acknowledged — and only those — after the migration.
func TestMigrationMarksAcknowledged(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "v1.db")
	s, err := Open(path, Options{schemaVersion: 1})
	if err != nil {
		t.Fatal(err)
	}
	acked := mustCreate(t, s, "a", newTask(ref("o", "r", 1)))
	if _, err := s.Update(ctx, acked.ID, func(x *agentbot.Task) error { x.CommentID = 9; return nil }); err != nil {
		t.Fatal(err)
	}
	waiting := mustCreate(t, s, "b", newTask(ref("o", "r", 2)))
	s.Close()

	s2 := openStore(t, path, Options{})
	for _, tc := range []struct {
		id   string
		want bool
	}{{acked.ID, true}, {waiting.ID, false}} {
		got, err := s2.Get(ctx, tc.id)
		if err != nil {
			t.Fatal(err)
		}
		if got.Acknowledged() != tc.want {
			t.Errorf("task %s acknowledged = %v, want %v", tc.id, got.Acknowledged(), tc.want)
		}
	}
}

func TestReadOnly(t *testing.T) {
	dir := t.TempDir()
	if _, err := Open(filepath.Join(dir, "missing.db"), Options{ReadOnly: true}); !IsNotExist(err) {
		t.Errorf("read-only Open of a missing file = %v, want not-exist", err)
	}
	path := filepath.Join(dir, "a.db")
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	task := mustCreate(t, s, "r", newTask(ref("o", "r", 1)))
	s.Close()

	// Two readers may share the file.
	r1 := openStore(t, path, Options{ReadOnly: true})
	r2 := openStore(t, path, Options{ReadOnly: true, Timeout: 50 * time.Millisecond})
	for _, r := range []*Store{r1, r2} {
		if all, err := r.List(context.Background(), 0); err != nil || len(all) != 1 || all[0].ID != task.ID {
			t.Errorf("read-only List = %v, %v", all, err)
		}
	}
	if _, err := r1.CreateTask(context.Background(), "w", newTask(ref("o", "r", 2))); err == nil {
		t.Error("CreateTask on a read-only store succeeded")
	}
	if _, err := r1.Transition(context.Background(), task.ID, agentbot.StateQueued, agentbot.StateRunning, nil); err == nil {
		t.Error("Transition on a read-only store succeeded")
	}
	// A writer cannot open while readers hold the file.
	if _, err := Open(path, Options{Timeout: 50 * time.Millisecond}); !errors.Is(err, ErrLocked) {
		t.Errorf("writer Open under readers = %v, want ErrLocked", err)
	}
}

func TestWritesAfterCloseFail(t *testing.T) {
	s, err := Open(filepath.Join(t.TempDir(), "a.db"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateTask(context.Background(), "late", newTask(ref("o", "r", 1))); !errors.Is(err, ErrClosed) {
		t.Errorf("CreateTask after Close = %v, want ErrClosed", err)
	}
}

func TestCancelledContextWritesNothing(t *testing.T) {
	s := openStore(t, filepath.Join(t.TempDir(), "a.db"), Options{})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if created, err := s.CreateTask(ctx, "c", newTask(ref("o", "r", 1))); !errors.Is(err, context.Canceled) || created {
		t.Errorf("CreateTask(cancelled) = %v, %v", created, err)
	}
	if seen, _ := s.SeenDelivery(context.Background(), "c"); seen {
		t.Error("cancelled create recorded its delivery")
	}
}

func TestIDsAreSortableAndUnique(t *testing.T) {
	var g idSource
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	times := []time.Time{base, base, base.Add(time.Millisecond), base.Add(-time.Hour), base.Add(2 * time.Millisecond), base.Add(2 * time.Millisecond)}
	prev := ""
	for i, now := range times {
		id := g.next(now)
		if len(id) != 26 || strings.Trim(id, crockford) != "" {
			t.Fatalf("id %q is not 26 Crockford characters", id)
		}
		if id <= prev {
			t.Errorf("id %d %q not after %q", i, id, prev)
		}
		prev = id
	}
	if got := encodeID([16]byte{}); got != strings.Repeat("0", 26) {
		t.Errorf("encodeID(zero) = %q", got)
	}
	if got := encodeID([16]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}); got != "7"+strings.Repeat("Z", 25) {
		t.Errorf("encodeID(max) = %q", got)
	}
}

func gaugeValue(t *testing.T, g prometheus.Gauge) float64 {
	t.Helper()
	var m dto.Metric
	if err := g.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetGauge().GetValue()
}

func TestMetricsRegistered(t *testing.T) {
	reg := prometheus.NewRegistry()
	s := openStore(t, filepath.Join(t.TempDir(), "a.db"), Options{Registry: reg})
	task := mustCreate(t, s, "m", newTask(ref("o", "r", 1)))
	if _, err := s.Transition(context.Background(), task.ID, agentbot.StateQueued, agentbot.StateRunning, nil); err != nil {
		t.Fatal(err)
	}
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	ops := 0
	for _, f := range families {
		for _, m := range f.GetMetric() {
			switch f.GetName() {
			case "agentbot_tasks":
				got[m.GetLabel()[0].GetValue()] = m.GetGauge().GetValue()
			case "agentbot_store_operation_duration_seconds":
				ops++
			}
		}
	}
	want := map[string]float64{"queued": 0, "running": 1, "succeeded": 0, "failed": 0, "cancelled": 0}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("agentbot_tasks = %v, want %v", got, want)
	}
	if ops < 2 {
		t.Errorf("%d operation series, want create_task and transition at least", ops)
	}
	// A second store on the same registry is refused, not a panic.
	if _, err := Open(filepath.Join(t.TempDir(), "b.db"), Options{Registry: reg}); err == nil {
		t.Error("second store on one registry registered its metrics twice")
	}
}
