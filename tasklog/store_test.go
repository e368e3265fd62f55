package tasklog

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/agentbot/agentbot/runner"
)

func open(t *testing.T, maxBytes int64) *Store {
	t.Helper()
	s, err := Open(filepath.Join(t.TempDir(), "logs"), maxBytes)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestReadPagesThroughWhatWasAppended(t *testing.T) {
	s := open(t, 0)
	for i := 1; i <= 5; i++ {
		if err := s.Append("t1", runner.Event{Seq: i, Type: runner.EventLog, Message: "line"}); err != nil {
			t.Fatal(err)
		}
	}
	first, next, err := s.Read("t1", 0, 3)
	if err != nil || len(first) != 3 || next != 3 {
		t.Fatalf("first page: %d events, next %d, err %v; want 3, 3", len(first), next, err)
	}
	rest, next, err := s.Read("t1", next, 0)
	if err != nil || len(rest) != 2 || rest[0].Seq != 4 || next != 5 {
		t.Fatalf("rest: %+v, next %d, err %v; want seq 4 and 5, next 5", rest, next, err)
	}
	none, next, err := s.Read("never-ran", 0, 0)
	if err != nil || len(none) != 0 || next != 0 {
		t.Fatalf("a task without a log: %d events, next %d, err %v", len(none), next, err)
	}
}

func TestAFullLogKeepsOnlyWhatTellsHowTheTaskEnded(t *testing.T) {
	s := open(t, 200)
	long := strings.Repeat("x", 300)
	if err := s.Append("t1",
		runner.Event{Type: runner.EventLog, Message: long},
		runner.Event{Type: runner.EventLog, Message: "dropped"},
		runner.Event{Type: runner.EventProgress, Message: "dropped too"},
		runner.Event{Type: runner.EventError, Message: "kept"},
	); err != nil {
		t.Fatal(err)
	}
	if err := s.Note("t1", time.Now(), "agentbot: dropped as well"); err != nil {
		t.Fatal(err)
	}
	evs, _, err := s.Read("t1", 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 2 || evs[0].Message != long || evs[1].Message != "kept" {
		t.Fatalf("events after the cap: %+v; want the long line and the error", evs)
	}
}

func TestTaskIDsThatAreNotFileNamesAreRefused(t *testing.T) {
	s := open(t, 0)
	for _, id := range []string{"../escape", "a/b", "", ".."} {
		if err := s.Append(id, runner.Event{Type: runner.EventLog}); err == nil {
			t.Errorf("Append(%q) wrote a log", id)
		}
		if _, _, err := s.Read(id, 0, 0); err == nil {
			t.Errorf("Read(%q) succeeded", id)
		}
	}
}

func TestWatchersAreToldWhenTheLogGrows(t *testing.T) {
	s := open(t, 0)
	changed, stop := s.Watch("t1")
	defer stop()
	if err := s.Append("t1", runner.Event{Type: runner.EventLog}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-changed:
	case <-time.After(5 * time.Second):
		t.Fatal("the watcher was not told of the append")
	}
}

func TestPruneRemovesOnlyOldLogs(t *testing.T) {
	s := open(t, 0)
	for _, id := range []string{"old", "new"} {
		if err := s.Append(id, runner.Event{Type: runner.EventLog}); err != nil {
			t.Fatal(err)
		}
	}
	now := time.Now()
	old := now.Add(-48 * time.Hour)
	if err := os.Chtimes(filepath.Join(s.dir, "old.jsonl"), old, old); err != nil {
		t.Fatal(err)
	}
	n, err := s.Prune(now, 24*time.Hour)
	if err != nil || n != 1 {
		t.Fatalf("Prune = %d, %v; want 1", n, err)
	}
	if evs, _, _ := s.Read("new", 0, 0); len(evs) != 1 {
		t.Errorf("the recent log lost its events: %d", len(evs))
	}
	if evs, _, _ := s.Read("old", 0, 0); len(evs) != 0 {
		t.Errorf("the old log is still there: %d events", len(evs))
	}
}
