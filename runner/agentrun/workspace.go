package agentrun

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// DefaultWorkspace is used when neither --workspace nor $AGENTBOT_WORKSPACE
// names one.
const DefaultWorkspace = "/workspace"

// Workspace is the directory layout agent-runner works in:
//
//	DIR/repo                        the clone the agent edits
//	DIR/.agentbot/events.jsonl      every event, one JSON object a line
//	DIR/.agentbot/exit-code         agent-runner's exit code, once finished
//	DIR/.agentbot/result.bundle     the result's git bundle
//	DIR/.agentbot/prompt.md         the prompt given to the agent
//	DIR/.agentbot/summary.md        where a command agent may leave a summary
//	DIR/.agentbot/lock              held (flock) while agent-runner runs
type Workspace struct {
	Dir string
}

func (w Workspace) RepoDir() string      { return filepath.Join(w.Dir, "repo") }
func (w Workspace) StateDir() string     { return filepath.Join(w.Dir, ".agentbot") }
func (w Workspace) EventsFile() string   { return filepath.Join(w.StateDir(), "events.jsonl") }
func (w Workspace) ExitCodeFile() string { return filepath.Join(w.StateDir(), "exit-code") }
func (w Workspace) BundleFile() string   { return filepath.Join(w.StateDir(), "result.bundle") }
func (w Workspace) PromptFile() string   { return filepath.Join(w.StateDir(), "prompt.md") }
func (w Workspace) SummaryFile() string  { return filepath.Join(w.StateDir(), "summary.md") }
func (w Workspace) LockFile() string     { return filepath.Join(w.StateDir(), "lock") }

// ResolveWorkspace picks the workspace directory: flag, then
// $AGENTBOT_WORKSPACE, then DefaultWorkspace.
func ResolveWorkspace(flag string) Workspace {
	if flag != "" {
		return Workspace{Dir: flag}
	}
	if env := os.Getenv("AGENTBOT_WORKSPACE"); env != "" {
		return Workspace{Dir: env}
	}
	return Workspace{Dir: DefaultWorkspace}
}

// errBusy means another agent-runner holds the workspace.
var errBusy = errors.New("another agent-runner is running in this workspace")

// lock takes the workspace's lock for the life of this process: the kernel
// drops it when the process dies, however it dies, which is how attach tells
// a running agent-runner from one that is gone.
func (w Workspace) lock() (*os.File, error) {
	if err := os.MkdirAll(w.StateDir(), 0o755); err != nil {
		return nil, fmt.Errorf("agentrun: workspace %s: %w", w.Dir, err)
	}
	f, err := os.OpenFile(w.LockFile(), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("agentrun: workspace %s: %w", w.Dir, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("agentrun: workspace %s: %w", w.Dir, errBusy)
		}
		return nil, fmt.Errorf("agentrun: workspace %s: lock: %w", w.Dir, err)
	}
	return f, nil
}

// running reports whether an agent-runner holds the workspace's lock.
func (w Workspace) running() bool {
	f, err := openState(w.LockFile())
	if err != nil {
		return false
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_SH|syscall.LOCK_NB); err != nil {
		return errors.Is(err, syscall.EWOULDBLOCK)
	}
	// Taken: nobody held it. Release at once so a starting runner can take it.
	_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
	return false
}

// openState opens a file of the state directory (DIR/.agentbot/NAME) for
// reading without following a symlink at .agentbot or at the file, and only
// if it is a regular file. The agent can write the workspace, and attach and
// bundle read it from outside the sandbox, so a symlink there could point
// them at the host's files (another task's events, the App's key) and a
// FIFO or device could hang them.
func openState(path string) (*os.File, error) {
	stateDir := filepath.Dir(path)
	dirfd, err := syscall.Open(filepath.Dir(stateDir), syscall.O_RDONLY|syscall.O_DIRECTORY|syscall.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: filepath.Dir(stateDir), Err: err}
	}
	defer syscall.Close(dirfd)
	sfd, err := syscall.Openat(dirfd, filepath.Base(stateDir), syscall.O_RDONLY|syscall.O_DIRECTORY|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: stateDir, Err: noFollowErr(err)}
	}
	defer syscall.Close(sfd)
	fd, err := syscall.Openat(sfd, filepath.Base(path), syscall.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK|syscall.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: path, Err: noFollowErr(err)}
	}
	var st syscall.Stat_t
	if err := syscall.Fstat(fd, &st); err != nil {
		syscall.Close(fd)
		return nil, &os.PathError{Op: "stat", Path: path, Err: err}
	}
	if st.Mode&syscall.S_IFMT != syscall.S_IFREG {
		syscall.Close(fd)
		return nil, &os.PathError{Op: "open", Path: path, Err: errors.New("not a regular file")}
	}
	return os.NewFile(uintptr(fd), path), nil
}

// noFollowErr names what O_NOFOLLOW refused.
func noFollowErr(err error) error {
	if errors.Is(err, syscall.ELOOP) || errors.Is(err, syscall.ENOTDIR) {
		return fmt.Errorf("is a symlink or not a directory where one belongs: %w", err)
	}
	return err
}

// readExitCode returns the recorded exit code and whether there is one.
func (w Workspace) readExitCode() (int, bool, error) {
	f, err := openState(w.ExitCodeFile())
	if errors.Is(err, os.ErrNotExist) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, 64))
	if err != nil {
		return 0, false, err
	}
	code, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return 0, false, fmt.Errorf("agentrun: %s: %w", w.ExitCodeFile(), err)
	}
	return code, true, nil
}

// writeExitCode records code atomically (write, then rename), so attach never
// reads half a number.
func (w Workspace) writeExitCode(code int) error {
	tmp := w.ExitCodeFile() + ".tmp"
	if err := os.WriteFile(tmp, []byte(strconv.Itoa(code)+"\n"), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, w.ExitCodeFile())
}

// reset removes what an earlier run in this workspace left, so every run
// starts from seq 1 with no stale result.
func (w Workspace) reset() error {
	for _, p := range []string{w.RepoDir(), w.EventsFile(), w.ExitCodeFile(), w.BundleFile(), w.PromptFile(), w.SummaryFile()} {
		if err := os.RemoveAll(p); err != nil {
			return fmt.Errorf("agentrun: workspace %s: %w", w.Dir, err)
		}
	}
	return nil
}
