package sandbox

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// ApplyRlimits lowers pid's resource limits where no cgroup enforces l
// (pid 0 is the caller). Address space stands in for memory (it counts
// mappings, not use, so it is generous: twice the memory limit), file
// size for the disk, and RLIMIT_NPROC for processes. RLIMIT_NPROC counts
// every process of the real uid in the user namespace, so it is only a
// per-task limit when each task has a host uid of its own; with a shared
// host uid it bounds all tasks together. Limits can only be lowered here:
// raising needs CAP_SYS_RESOURCE, which agentbot may lack.
func ApplyRlimits(pid int, l Limits) error {
	set := []struct {
		name     string
		resource int
		value    int64
	}{
		{"RLIMIT_AS", unix.RLIMIT_AS, 2 * l.Memory},
		{"RLIMIT_FSIZE", unix.RLIMIT_FSIZE, l.Disk},
		{"RLIMIT_NPROC", unix.RLIMIT_NPROC, l.PIDs},
	}
	var errs []error
	for _, s := range set {
		if s.value <= 0 {
			continue
		}
		var old unix.Rlimit
		if err := unix.Prlimit(pid, s.resource, nil, &old); err != nil {
			errs = append(errs, fmt.Errorf("sandbox: read %s of pid %d: %w", s.name, pid, err))
			continue
		}
		v := uint64(s.value)
		lim := unix.Rlimit{Cur: min(v, old.Max), Max: min(v, old.Max)}
		if err := unix.Prlimit(pid, s.resource, &lim, nil); err != nil {
			errs = append(errs, fmt.Errorf("sandbox: set %s of pid %d to %d: %w", s.name, pid, v, err))
		}
	}
	return errors.Join(errs...)
}

// ErrDiskLimit is what WatchDisk returns when the workspace outgrew the
// limit.
var ErrDiskLimit = errors.New("the agent wrote more than the disk limit")

// DiskLimitError names the limit in the words a failure comment uses.
type DiskLimitError struct {
	Limit, Used int64
}

func (e *DiskLimitError) Error() string {
	return "the agent used more than " + FormatSize(e.Limit) + " of disk"
}

func (e *DiskLimitError) Unwrap() error { return ErrDiskLimit }

// WatchDisk measures dir every interval and returns a *DiskLimitError as
// soon as it holds more than limit bytes, or nil when ctx ends. Allocated
// blocks are counted, not sizes, so sparse files cost what they use, and a
// hard link once. A walk that cannot finish within the interval counts
// what it saw, so a million small files do not hide a large one for long.
func WatchDisk(ctx context.Context, dir string, limit int64, interval time.Duration) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if used := DiskUsage(ctx, dir, interval); used > limit {
			return &DiskLimitError{Limit: limit, Used: used}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// DiskUsage is the bytes allocated under dir, measured for at most budget.
func DiskUsage(ctx context.Context, dir string, budget time.Duration) int64 {
	deadline := time.Now().Add(budget)
	seen := map[[2]uint64]bool{}
	var used int64
	errStop := errors.New("stop")
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil // gone or unreadable: the agent's business
		}
		if ctx.Err() != nil || time.Now().After(deadline) {
			return errStop
		}
		fi, err := d.Info()
		if err != nil {
			return nil
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		if !ok {
			return nil
		}
		key := [2]uint64{st.Dev, st.Ino}
		if st.Nlink > 1 {
			if seen[key] {
				return nil
			}
			seen[key] = true
		}
		used += st.Blocks * 512
		return nil
	})
	return used
}

// RlimitsEnv carries the limits, encoded by EncodeLimits, to an
// agent-runner whose task has no cgroup: it lowers its own rlimits to them
// before it reads the job, so that nothing it starts escapes them.
const RlimitsEnv = "AGENTBOT_SANDBOX_RLIMITS"

// EncodeLimits writes l as "memory,pids,disk" in bytes and counts.
func EncodeLimits(l Limits) string {
	return fmt.Sprintf("%d,%d,%d", l.Memory, l.PIDs, l.Disk)
}

// DecodeLimits reads what EncodeLimits wrote.
func DecodeLimits(s string) (Limits, error) {
	var l Limits
	if _, err := fmt.Sscanf(s, "%d,%d,%d", &l.Memory, &l.PIDs, &l.Disk); err != nil {
		return l, fmt.Errorf("sandbox: limits %q: %w", s, err)
	}
	return l, nil
}
