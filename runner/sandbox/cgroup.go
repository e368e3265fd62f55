package sandbox

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// cgroupControllers are the controllers a task's cgroup limits.
var cgroupControllers = []string{"memory", "pids", "cpu"}

// Cgroup is one task's control group: under cgroup v2 one directory, under
// v1 one per controller. It lives below agentbot's own cgroup, so limits
// an operator puts on agentbot hold for its tasks too.
type Cgroup struct {
	v2     bool
	dirs   map[string]string // controller → directory; v2 has one, under ""
	limits Limits
}

// ErrNoCgroups wraps every reason a task's cgroup cannot be made; the
// caller logs it, shows it in /readyz and falls back to rlimits and the
// disk watchdog.
var ErrNoCgroups = errors.New("cgroups unavailable")

// NewCgroup creates the cgroup agentbot/<name> below agentbot's own and
// applies l's memory (and memory+swap), process and CPU limits.
func NewCgroup(name string, l Limits) (*Cgroup, error) {
	if !containerIDPattern.MatchString(name) || strings.Contains(name, "..") {
		return nil, fmt.Errorf("sandbox: cgroup name %q is not a safe directory name", name)
	}
	mounts, own, err := readCgroupMounts()
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNoCgroups, err)
	}
	c := &Cgroup{dirs: map[string]string{}, limits: l}
	if m, ok := mounts[""]; ok && hasV2Controllers(m) {
		c.v2 = true
		c.dirs[""] = filepath.Join(m, own[""], "agentbot", name)
	} else {
		for _, ctl := range cgroupControllers {
			m, ok := mounts[ctl]
			if !ok {
				return nil, fmt.Errorf("%w: no cgroup v1 %s controller is mounted and cgroup v2 lacks memory, pids and cpu", ErrNoCgroups, ctl)
			}
			c.dirs[ctl] = filepath.Join(m, own[ctl], "agentbot", name)
		}
	}
	for _, d := range c.dirs {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("%w: create %s: %w", ErrNoCgroups, d, err)
		}
	}
	if err := c.apply(); err != nil {
		_ = c.Remove(context.Background())
		return nil, fmt.Errorf("%w: %w", ErrNoCgroups, err)
	}
	return c, nil
}

// readCgroupMounts finds the cgroup mounts (v2 under "", v1 under each
// controller) and this process's path in each hierarchy.
func readCgroupMounts() (mounts, own map[string]string, err error) {
	mounts, own = map[string]string{}, map[string]string{}
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// id parent dev root mountpoint opts [optional...] - fstype source superopts
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		if !ok {
			continue
		}
		pf, qf := strings.Fields(pre), strings.Fields(post)
		if len(pf) < 5 || len(qf) < 3 {
			continue
		}
		switch qf[0] {
		case "cgroup2":
			mounts[""] = pf[4]
		case "cgroup":
			for _, o := range strings.Split(qf[2], ",") {
				mounts[o] = pf[4]
			}
		}
	}
	if err := sc.Err(); err != nil {
		return nil, nil, err
	}
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return nil, nil, err
	}
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		// hierarchy-id:controllers:path
		f := strings.SplitN(l, ":", 3)
		if len(f) != 3 {
			continue
		}
		for _, ctl := range strings.Split(f[1], ",") {
			own[ctl] = f[2]
		}
	}
	return mounts, own, nil
}

func hasV2Controllers(mount string) bool {
	b, err := os.ReadFile(filepath.Join(mount, "cgroup.controllers"))
	if err != nil {
		return false
	}
	have := strings.Fields(string(b))
	for _, want := range cgroupControllers {
		found := false
		for _, h := range have {
			found = found || h == want
		}
		if !found {
			return false
		}
	}
	return true
}

func (c *Cgroup) write(ctl, file, value string) error {
	p := filepath.Join(c.dirs[ctl], file)
	if err := os.WriteFile(p, []byte(value), 0o644); err != nil {
		return fmt.Errorf("write %q to %s: %w", value, p, err)
	}
	return nil
}

func (c *Cgroup) apply() error {
	l := c.limits
	period := int64(100000)
	quota := int64(l.CPUs * float64(period))
	if c.v2 {
		// The parent must hand the controllers down; a parent that holds
		// processes itself cannot (EBUSY), which the error names.
		parent := filepath.Dir(c.dirs[""])
		if err := os.WriteFile(filepath.Join(parent, "cgroup.subtree_control"), []byte("+memory +pids +cpu"), 0o644); err != nil {
			return fmt.Errorf("enable controllers in %s (delegate a cgroup to agentbot and run it in a leaf): %w", parent, err)
		}
		var errs []error
		if l.Memory > 0 {
			errs = append(errs, c.write("", "memory.max", strconv.FormatInt(l.Memory, 10)), c.write("", "memory.swap.max", "0"))
		}
		if l.PIDs > 0 {
			errs = append(errs, c.write("", "pids.max", strconv.FormatInt(l.PIDs, 10)))
		}
		if quota > 0 {
			errs = append(errs, c.write("", "cpu.max", fmt.Sprintf("%d %d", quota, period)))
		}
		return errors.Join(errs...)
	}
	if l.Memory > 0 {
		if err := c.write("memory", "memory.limit_in_bytes", strconv.FormatInt(l.Memory, 10)); err != nil {
			return err
		}
		// Where swap is accounted, memory+swap gets the same limit, so
		// swapping does not stretch it. Absent without swap accounting.
		if _, err := os.Stat(filepath.Join(c.dirs["memory"], "memory.memsw.limit_in_bytes")); err == nil {
			if err := c.write("memory", "memory.memsw.limit_in_bytes", strconv.FormatInt(l.Memory, 10)); err != nil {
				return err
			}
		}
	}
	if l.PIDs > 0 {
		if err := c.write("pids", "pids.max", strconv.FormatInt(l.PIDs, 10)); err != nil {
			return err
		}
	}
	if quota > 0 {
		if err := c.write("cpu", "cpu.cfs_period_us", strconv.FormatInt(period, 10)); err != nil {
			return err
		}
		return c.write("cpu", "cpu.cfs_quota_us", strconv.FormatInt(quota, 10))
	}
	return nil
}

// Start starts cmd inside the cgroup, so that no process it forks escapes
// between start and placement. Under v2 the kernel places the child
// (CLONE_INTO_CGROUP); under v1 the starting thread joins the cgroup for
// the fork, which the child inherits, and then returns to where it was.
func (c *Cgroup) Start(cmd *exec.Cmd) error {
	if c.v2 {
		d, err := os.Open(c.dirs[""])
		if err != nil {
			return fmt.Errorf("sandbox: open cgroup: %w", err)
		}
		defer d.Close()
		if cmd.SysProcAttr == nil {
			cmd.SysProcAttr = &syscall.SysProcAttr{}
		}
		cmd.SysProcAttr.UseCgroupFD = true
		cmd.SysProcAttr.CgroupFD = int(d.Fd())
		return cmd.Start()
	}
	runtime.LockOSThread()
	// A thread left in the task's cgroup would charge agentbot's work to
	// it: if it cannot go back, it is not unlocked and so ends with its
	// goroutine, as the runtime does with locked threads.
	_, own, err := readCgroupMounts()
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("sandbox: %w", err)
	}
	tid := strconv.Itoa(unix.Gettid())
	for _, d := range c.dirs {
		if err := os.WriteFile(filepath.Join(d, "tasks"), []byte(tid), 0o644); err != nil {
			return errors.Join(fmt.Errorf("sandbox: join cgroup %s: %w", d, err), c.leave(tid, own))
		}
	}
	startErr := cmd.Start()
	if err := c.leave(tid, own); err != nil {
		return errors.Join(startErr, err)
	}
	runtime.UnlockOSThread()
	return startErr
}

func (c *Cgroup) leave(tid string, own map[string]string) error {
	mounts, _, err := readCgroupMounts()
	if err != nil {
		return err
	}
	var errs []error
	for ctl := range c.dirs {
		p := filepath.Join(mounts[ctl], own[ctl], "tasks")
		if err := os.WriteFile(p, []byte(tid), 0o644); err != nil {
			errs = append(errs, fmt.Errorf("sandbox: leave cgroup for %s: %w", p, err))
		}
	}
	return errors.Join(errs...)
}

// Add moves an already running process into the cgroup.
func (c *Cgroup) Add(pid int) error {
	for _, d := range c.dirs {
		if err := os.WriteFile(filepath.Join(d, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0o644); err != nil {
			return fmt.Errorf("sandbox: add pid %d to %s: %w", pid, d, err)
		}
	}
	return nil
}

// LimitHit says which limits a task ran into.
type LimitHit struct {
	Memory bool
	PIDs   bool
}

// Describe is the reason a failure comment gives, "" when none was hit.
func (h LimitHit) Describe(l Limits) string {
	var out []string
	if h.Memory {
		out = append(out, "the agent used more than "+FormatSize(l.Memory)+" of memory")
	}
	if h.PIDs {
		out = append(out, "the agent started more than "+strconv.FormatInt(l.PIDs, 10)+" processes")
	}
	return strings.Join(out, "; ")
}

// Hit reads whether the memory limit killed a process and whether a fork
// was refused at the process limit.
func (c *Cgroup) Hit() (LimitHit, error) {
	var h LimitHit
	if c.v2 {
		mem, err1 := keyedValue(filepath.Join(c.dirs[""], "memory.events"), "oom_kill")
		pids, err2 := keyedValue(filepath.Join(c.dirs[""], "pids.events"), "max")
		return LimitHit{Memory: mem > 0, PIDs: pids > 0}, errors.Join(err1, err2)
	}
	oom, err := keyedValue(filepath.Join(c.dirs["memory"], "memory.oom_control"), "oom_kill")
	if err != nil {
		return h, err
	}
	pids, err := keyedValue(filepath.Join(c.dirs["pids"], "pids.events"), "max")
	return LimitHit{Memory: oom > 0, PIDs: pids > 0}, err
}

// keyedValue reads "key value" lines and returns key's value.
func keyedValue(path, key string) (int64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, fmt.Errorf("sandbox: %w", err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(l, " "); ok && k == key {
			return strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		}
	}
	return 0, fmt.Errorf("sandbox: %s has no %q", path, key)
}

// Kill SIGKILLs every process in the cgroup until none is left or ctx
// ends: a process forking as fast as it is killed is caught within a few
// rounds, since the pids limit bounds it.
func (c *Cgroup) Kill(ctx context.Context) error {
	for _, d := range c.dirs {
		if c.v2 {
			_ = os.WriteFile(filepath.Join(d, "cgroup.kill"), []byte("1"), 0o644)
		}
		for killAll(filepath.Join(d, "cgroup.procs")) > 0 {
			select {
			case <-ctx.Done():
				return fmt.Errorf("sandbox: kill cgroup %s: %w", d, ctx.Err())
			case <-time.After(5 * time.Millisecond):
			}
		}
	}
	return nil
}

// Remove kills every process left in the cgroup and removes it. It
// returns once the cgroup is gone or ctx ends.
func (c *Cgroup) Remove(ctx context.Context) error {
	var errs []error
	for _, d := range c.dirs {
		for {
			if c.v2 {
				_ = os.WriteFile(filepath.Join(d, "cgroup.kill"), []byte("1"), 0o644)
			}
			n := killAll(filepath.Join(d, "cgroup.procs"))
			err := os.Remove(d)
			if err == nil || errors.Is(err, os.ErrNotExist) {
				break
			}
			if n == 0 && !errors.Is(err, syscall.EBUSY) {
				errs = append(errs, fmt.Errorf("sandbox: remove cgroup %s: %w", d, err))
				break
			}
			select {
			case <-ctx.Done():
				errs = append(errs, fmt.Errorf("sandbox: remove cgroup %s: %w (last: %w)", d, ctx.Err(), err))
			case <-time.After(10 * time.Millisecond):
				continue
			}
			break
		}
	}
	return errors.Join(errs...)
}

// killAll SIGKILLs every pid listed in procs and says how many it found.
func killAll(procs string) int {
	b, err := os.ReadFile(procs)
	if err != nil {
		return 0
	}
	n := 0
	for _, f := range strings.Fields(string(b)) {
		if pid, err := strconv.Atoi(f); err == nil && pid > 0 {
			_ = syscall.Kill(pid, syscall.SIGKILL)
			n++
		}
	}
	return n
}
