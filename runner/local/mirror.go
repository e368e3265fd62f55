package local

import (
	"os"
	"path/filepath"

	"github.com/agentbot/agentbot/runner"
	"github.com/agentbot/agentbot/runner/sandbox"
)

// showMirror keeps job's repository mirror only if the sandbox can be
// shown it (bound read-only at its own path, readOnlyPaths): a mirror in a
// directory the sandbox's uid may not enter would fail the whole mount
// plan, while without it the clone is only slower.
func (l *Launcher) showMirror(job runner.Job) runner.Job {
	m := job.Mirror
	if m == nil {
		return job
	}
	ok := filepath.IsAbs(m.Path)
	if ok {
		_, err := os.Stat(filepath.Join(m.Path, "objects"))
		ok = err == nil
	}
	if ok && l.isolation != IsolationNone {
		if err := sandbox.CanEnter(m.Path, l.uid, l.gid); err != nil {
			l.log.Warn("the repository mirror cannot be shown to the sandbox; the task clones from the origin", "task_id", job.TaskID, "err", err)
			ok = false
		}
	}
	if !ok {
		job.Mirror = nil
	}
	return job
}
