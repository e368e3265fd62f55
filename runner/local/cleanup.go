package local

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// killLeftovers kills the process group of a run recorded by an earlier
// agentbot process, if it still exists and is still that run.
func (l *Launcher) killLeftovers(taskID string) {
	meta, err := readMeta(l.taskDir(taskID))
	if err != nil || meta.PID <= 0 {
		return
	}
	cmdline, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(meta.PID), "cmdline"))
	if err == nil && strings.Contains(string(cmdline), l.Workspace(taskID)) {
		l.log.Warn("killing leftover agent-runner", "task_id", taskID, "pid", meta.PID)
		_ = syscall.Kill(-meta.PID, syscall.SIGKILL)
	}
	// The agent's own children (its process group is not agent-runner's)
	// survive agent-runner's death; they are in its session and work in
	// the task's workspace, which tells them from strangers that reuse the
	// number.
	if killSession(meta.PID, l.Workspace(taskID)) {
		l.log.Warn("killed processes the agent left", "task_id", taskID, "session", meta.PID)
	}
}

// Cleanup implements runner.Launcher. With keep, the workspace stays for
// Options.KeepFailed and is swept by a later Start or Cleanup.
func (l *Launcher) Cleanup(ctx context.Context, taskID string, keep bool) error {
	if err := checkTaskID(taskID); err != nil {
		return err
	}
	l.mu.Lock()
	r := l.runs[taskID]
	delete(l.runs, taskID)
	l.mu.Unlock()
	if r != nil && !r.exited() {
		// Cleanup goes on to remove the workspace either way; a run that
		// cannot be stopped is worth a line in the log.
		if err := r.Stop(ctx); err != nil {
			l.log.Warn("cleanup: cannot stop the run", "task_id", taskID, "err", err)
		}
	}
	dir := l.taskDir(taskID)
	if keep {
		meta, _ := readMeta(dir)
		meta.KeepUntil = l.now().Add(l.opts.KeepFailed)
		if err := writeMeta(dir, meta); err != nil {
			return fmt.Errorf("local launcher: task %s: keep workspace: %w", taskID, err)
		}
		l.log.Info("workspace kept for debugging", "task_id", taskID, "path", dir, "until", meta.KeepUntil)
	} else if err := removeAll(dir); err != nil {
		return fmt.Errorf("local launcher: task %s: remove workspace: %w", taskID, err)
	}
	l.sweep()
	return nil
}

// sweep removes kept workspaces whose time is up.
func (l *Launcher) sweep() {
	entries, err := os.ReadDir(l.root)
	if err != nil {
		return
	}
	now := l.now()
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		dir := filepath.Join(l.root, e.Name())
		meta, err := readMeta(dir)
		if err != nil || meta.KeepUntil.IsZero() || now.Before(meta.KeepUntil) {
			continue
		}
		l.mu.Lock()
		_, live := l.runs[e.Name()]
		l.mu.Unlock()
		if live {
			continue
		}
		if err := removeAll(dir); err != nil {
			l.log.Warn("cannot remove expired workspace", "path", dir, "err", err)
		}
	}
}

// removeAll removes dir, first making read-only directories (git's object
// store, Go's module cache) writable again.
func removeAll(dir string) error {
	if err := os.RemoveAll(dir); err == nil {
		return nil
	}
	_ = filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			_ = os.Chmod(p, 0o700)
		}
		return nil
	})
	return os.RemoveAll(dir)
}

func writeMeta(dir string, m runMeta) error {
	b, err := json.Marshal(m)
	if err != nil {
		return err
	}
	tmp := filepath.Join(dir, "run.json.tmp")
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(dir, "run.json"))
}

func readMeta(dir string) (runMeta, error) {
	var m runMeta
	b, err := os.ReadFile(filepath.Join(dir, "run.json"))
	if err != nil {
		return m, err
	}
	err = json.Unmarshal(b, &m)
	return m, err
}
