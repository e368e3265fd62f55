// Package tasklog keeps every task's events on disk as JSON lines, so the
// task page can show a task's timeline and log after its sandbox is gone
// and after a restart, and tail a live one. It imports only the domain
// package and runner's event type, so the dispatcher, the web pages and cmd
// share one store.
package tasklog

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/agentbot/agentbot"
	"github.com/agentbot/agentbot/runner"
)

// Store keeps every task's events as JSON lines in Dir/<task-id>.jsonl, so
// that the task page can show the timeline and the log after the sandbox
// (and its workspace) is gone and after a restart. Each file is capped at
// MaxBytes; later events are dropped except phase, result and error events.
// Watchers are told when a task's log grows, for the live tail.
type Store struct {
	dir      string
	maxBytes int64

	mu       sync.Mutex
	watchers map[string]map[chan struct{}]struct{}
}

// Open makes the log directory (if need be) and returns its store. A
// maxBytes of 0 or less caps each task's log at 8 MiB.
func Open(dir string, maxBytes int64) (*Store, error) {
	if maxBytes <= 0 {
		maxBytes = 8 << 20
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("tasklog: task logs %s: %w", dir, err)
	}
	return &Store{dir: dir, maxBytes: maxBytes, watchers: map[string]map[chan struct{}]struct{}{}}, nil
}

func (l *Store) path(taskID string) (string, error) {
	if err := agentbot.CheckTaskID(taskID); err != nil {
		return "", fmt.Errorf("tasklog: %w", err)
	}
	return filepath.Join(l.dir, taskID+".jsonl"), nil
}

// Append adds events to a task's log and wakes its watchers.
func (l *Store) Append(taskID string, evs ...runner.Event) error {
	p, err := l.path(taskID)
	if err != nil {
		return err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("tasklog: task %s log: %w", taskID, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("tasklog: task %s log: %w", taskID, err)
	}
	size := fi.Size()
	w := bufio.NewWriter(f)
	for _, ev := range evs {
		if size >= l.maxBytes && (ev.Type == runner.EventLog || ev.Type == runner.EventProgress || ev.Type == runner.EventEgress) {
			continue
		}
		b, err := json.Marshal(ev)
		if err != nil {
			return fmt.Errorf("tasklog: task %s log: %w", taskID, err)
		}
		b = append(b, '\n')
		// A bufio.Writer keeps its first error and Flush returns it.
		n, _ := w.Write(b)
		size += int64(n)
	}
	if err := w.Flush(); err != nil {
		return fmt.Errorf("tasklog: task %s log: %w", taskID, err)
	}
	for ch := range l.watchers[taskID] {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
	return nil
}

// Note appends a log line written by agentbot itself (not the agent), such
// as "interrupted by a restart".
func (l *Store) Note(taskID string, now time.Time, msg string) error {
	return l.Append(taskID, runner.Event{Time: now, Type: runner.EventLog, Stream: "agentbot", Message: msg})
}

// Read returns up to max events of a task's log from line index from on,
// and the index to continue from. A task without a log has no events.
func (l *Store) Read(taskID string, from, max int) ([]runner.Event, int, error) {
	p, err := l.path(taskID)
	if err != nil {
		return nil, from, err
	}
	f, err := os.Open(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, from, nil
	}
	if err != nil {
		return nil, from, fmt.Errorf("tasklog: task %s log: %w", taskID, err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	var out []runner.Event
	i := 0
	for sc.Scan() {
		if i < from {
			i++
			continue
		}
		if max > 0 && len(out) >= max {
			break
		}
		var ev runner.Event
		if json.Unmarshal(sc.Bytes(), &ev) == nil {
			out = append(out, ev)
		}
		i++
	}
	return out, i, sc.Err()
}

// Watch returns a channel that receives a value (coalesced) whenever the
// task's log grows, and a function that stops the watch.
func (l *Store) Watch(taskID string) (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	l.mu.Lock()
	if l.watchers[taskID] == nil {
		l.watchers[taskID] = map[chan struct{}]struct{}{}
	}
	l.watchers[taskID][ch] = struct{}{}
	l.mu.Unlock()
	return ch, func() {
		l.mu.Lock()
		delete(l.watchers[taskID], ch)
		if len(l.watchers[taskID]) == 0 {
			delete(l.watchers, taskID)
		}
		l.mu.Unlock()
	}
}

// Prune removes logs not written to for longer than age.
func (l *Store) Prune(now time.Time, age time.Duration) (int, error) {
	entries, err := os.ReadDir(l.dir)
	if err != nil {
		return 0, fmt.Errorf("tasklog: prune logs: %w", err)
	}
	n := 0
	for _, e := range entries {
		fi, err := e.Info()
		if err != nil || fi.IsDir() || now.Sub(fi.ModTime()) < age {
			continue
		}
		if os.Remove(filepath.Join(l.dir, e.Name())) == nil {
			n++
		}
	}
	return n, nil
}
