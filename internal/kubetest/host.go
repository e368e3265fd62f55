package kubetest

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// The real node changes the host it runs on; hostState records what those
// changes touch before the node starts, and restore puts it back. It is
// written to hostStateFile first, so that a run that was killed (a test
// binary's timeout does not run cleanups) is swept by the next one.
//
// What the node changes, and how each is restored:
//   - sysctls the kubelet sets (kernel.panic, kernel.panic_on_oops,
//     vm.overcommit_memory) and forwarding, which the CNI bridge plugin
//     turns on: written back.
//   - iptables and ip6tables: the kubelet's chains (KUBE-FIREWALL, ...) and
//     our FORWARD rules: the tables are restored from iptables-save.
//   - the bridge and the veths of pods: the bridge is deleted; a veth goes
//     with its pod's network namespace.
//   - mounts (overlay rootfs, netns, volumes): every mount under the paths
//     below that was not there before is unmounted.
//   - directories the runtime puts outside the node's own (/run/containerd,
//     /run/netns, /var/lib/kubelet, /var/lib/cni) and the kubepods cgroups:
//     removed when they did not exist before.
type hostState struct {
	// Dir is the node's own directory (containerd's root and state, the
	// kubelet's root, CNI configuration); removed entirely.
	Dir      string            `json:"dir"`
	Socket   string            `json:"socket"`
	Bridge   string            `json:"bridge"`
	Sysctls  map[string]string `json:"sysctls"`
	IPTables map[string]string `json:"iptables"` // command → iptables-save output
	// Absent lists the paths (directories, cgroups) that did not exist.
	Absent []string `json:"absent"`
	Mounts []string `json:"mounts"` // mount points that existed
}

// hostStateFile and hostLock are fixed: one real node per machine at a time.
const (
	hostStateFile = "/var/tmp/agentbot-kubetest-node.json"
	hostLockFile  = "/var/tmp/agentbot-kubetest-node.lock"
)

// sysctlsTouched are the sysctls the kubelet and the CNI bridge plugin set.
var sysctlsTouched = []string{
	"kernel/panic", "kernel/panic_on_oops", "vm/overcommit_memory", "vm/panic_on_oom",
	"kernel/keys/root_maxkeys", "kernel/keys/root_maxbytes",
	"net/ipv4/ip_forward", "net/ipv4/conf/all/forwarding", "net/ipv6/conf/all/forwarding",
}

// outsidePaths are where containerd and the kubelet write whatever their
// configured directories.
var outsidePaths = []string{"/run/containerd", "/run/netns", "/var/lib/kubelet", "/var/lib/cni", "/opt/containerd", "/var/log/containers", "/var/log/pods"}

var iptablesCommands = []string{"iptables", "ip6tables"}

// HostSnapshot is what a test compares before and after a real node: the
// sysctls and the firewall rules.
type HostSnapshot struct {
	Sysctls  map[string]string
	IPTables map[string][]string
}

// SnapshotHost reads the sysctls and iptables rules the real node changes.
func SnapshotHost() (HostSnapshot, error) {
	s := HostSnapshot{Sysctls: readSysctls(), IPTables: map[string][]string{}}
	for _, c := range iptablesCommands {
		dump, err := iptablesSave(c)
		if err != nil {
			return s, err
		}
		s.IPTables[c] = iptablesRules(dump)
	}
	return s, nil
}

func readSysctls() map[string]string {
	m := map[string]string{}
	for _, k := range sysctlsTouched {
		if b, err := os.ReadFile("/proc/sys/" + k); err == nil {
			m[k] = strings.TrimSpace(string(b))
		}
	}
	return m
}

func iptablesSave(cmd string) (string, error) {
	out, err := exec.Command(cmd + "-save").Output()
	if err != nil {
		return "", fmt.Errorf("kubetest: %s-save: %w", cmd, err)
	}
	return string(out), nil
}

// iptablesRules is a dump without comments and counters, and without
// tables that hold nothing but built-in chains with an ACCEPT policy (a
// restore leaves such a table behind where there was none).
func iptablesRules(dump string) []string {
	var out, table []string
	meaningful := false
	for _, line := range strings.Split(dump, "\n") {
		line = strings.TrimSpace(line)
		switch {
		case line == "" || strings.HasPrefix(line, "#"):
			continue
		case strings.HasPrefix(line, "*"):
			table, meaningful = []string{line}, false
			continue
		case line == "COMMIT":
			if meaningful {
				out = append(out, table...)
			}
			continue
		case strings.HasPrefix(line, ":"):
			f := strings.Fields(line)
			if len(f) >= 2 {
				line = f[0] + " " + f[1]
				if f[1] != "ACCEPT" {
					meaningful = true
				}
			}
		default:
			meaningful = true
		}
		table = append(table, line)
	}
	return out
}

// recordHost sweeps what an interrupted run left, then records the host as
// it is now and writes the record to hostStateFile.
func recordHost(dir, socket, bridge string) (*hostState, error) {
	if err := sweepHost(); err != nil {
		return nil, err
	}
	h := &hostState{Dir: dir, Socket: socket, Bridge: bridge, Sysctls: readSysctls(), IPTables: map[string]string{}}
	for _, c := range iptablesCommands {
		dump, err := iptablesSave(c)
		if err != nil {
			return nil, err
		}
		h.IPTables[c] = dump
	}
	for _, p := range append(outsidePaths, cgroupDirs()...) {
		if _, err := os.Lstat(p); errors.Is(err, os.ErrNotExist) {
			h.Absent = append(h.Absent, p)
		}
	}
	mounts, err := mountPoints()
	if err != nil {
		return nil, err
	}
	h.Mounts = mounts
	b, err := json.Marshal(h)
	if err != nil {
		return nil, fmt.Errorf("kubetest: %w", err)
	}
	if err := os.WriteFile(hostStateFile, b, 0o600); err != nil {
		return nil, fmt.Errorf("kubetest: record host state: %w", err)
	}
	return h, nil
}

// sweepHost restores the host from an interrupted run's record, if any.
func sweepHost() error {
	b, err := os.ReadFile(hostStateFile)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("kubetest: read %s: %w", hostStateFile, err)
	}
	var h hostState
	if err := json.Unmarshal(b, &h); err != nil {
		return fmt.Errorf("kubetest: decode %s: %w", hostStateFile, err)
	}
	if err := h.restore(); err != nil {
		return fmt.Errorf("kubetest: sweep what an interrupted run left: %w", err)
	}
	return nil
}

// cgroupDirs are the kubelet's kubepods cgroups, one per hierarchy.
func cgroupDirs() []string {
	entries, err := os.ReadDir("/sys/fs/cgroup")
	if err != nil {
		return nil
	}
	var dirs []string
	for _, e := range entries {
		if e.IsDir() {
			dirs = append(dirs, filepath.Join("/sys/fs/cgroup", e.Name(), "kubepods"))
		}
	}
	return dirs
}

// restore undoes the node's changes. The node's processes must be stopped;
// restore kills what is left of the containers (shims and their children).
func (h *hostState) restore() error {
	var errs []error
	if h.Socket != "" {
		killTree(func(cmdline string) bool { return strings.Contains(cmdline, h.Socket) })
	}
	mounts := map[string]bool{}
	for _, m := range h.Mounts {
		mounts[m] = true
	}
	if err := unmountUnder(append([]string{h.Dir}, outsidePaths...), mounts); err != nil {
		errs = append(errs, err)
	}
	for k, v := range h.Sysctls {
		if err := os.WriteFile("/proc/sys/"+k, []byte(v), 0o644); err != nil {
			errs = append(errs, fmt.Errorf("kubetest: restore sysctl %s: %w", k, err))
		}
	}
	for c, dump := range h.IPTables {
		if err := iptablesRestore(c, dump); err != nil {
			errs = append(errs, err)
		}
	}
	if h.Bridge != "" {
		if out, err := exec.Command("ip", "link", "del", h.Bridge).CombinedOutput(); err != nil && !bytes.Contains(out, []byte("Cannot find device")) {
			errs = append(errs, fmt.Errorf("kubetest: delete bridge %s: %v: %s", h.Bridge, err, out))
		}
	}
	for _, p := range h.Absent {
		var err error
		if strings.HasPrefix(p, "/sys/fs/cgroup/") {
			err = removeCgroup(p)
		} else {
			err = os.RemoveAll(p)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("kubetest: remove %s: %w", p, err))
		}
	}
	if h.Dir != "" {
		if err := os.RemoveAll(h.Dir); err != nil {
			errs = append(errs, fmt.Errorf("kubetest: remove %s: %w", h.Dir, err))
		}
	}
	if len(errs) == 0 {
		if err := os.Remove(hostStateFile); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// iptablesRestore puts back a table dump; tables the dump lacks are reset
// to empty built-in chains (restore flushes every table it is given).
func iptablesRestore(cmd, dump string) error {
	builtin := map[string][]string{
		"filter": {"INPUT", "FORWARD", "OUTPUT"},
		"nat":    {"PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"},
		"mangle": {"PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"},
	}
	current, err := iptablesSave(cmd)
	if err != nil {
		return err
	}
	in := dump
	for table, chains := range builtin {
		if strings.Contains(dump, "*"+table+"\n") || !strings.Contains(current, "*"+table+"\n") {
			continue
		}
		in += "*" + table + "\n"
		for _, c := range chains {
			in += ":" + c + " ACCEPT [0:0]\n"
		}
		in += "COMMIT\n"
	}
	restore := exec.Command(cmd + "-restore")
	restore.Stdin = strings.NewReader(in)
	if out, err := restore.CombinedOutput(); err != nil {
		return fmt.Errorf("kubetest: %s-restore: %v: %s", cmd, err, out)
	}
	return nil
}

// mountPoints lists the current mount points.
func mountPoints() ([]string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, fmt.Errorf("kubetest: %w", err)
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 4 {
			out = append(out, unescapeMount(fields[4]))
		}
	}
	return out, sc.Err()
}

func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// unmountUnder detaches every mount below roots that is not in keep,
// deepest first.
func unmountUnder(roots []string, keep map[string]bool) error {
	var errs []error
	for round := 0; round < 5; round++ {
		mounts, err := mountPoints()
		if err != nil {
			return err
		}
		var todo []string
		for _, m := range mounts {
			if keep[m] {
				continue
			}
			for _, r := range roots {
				if r != "" && (m == r || strings.HasPrefix(m, r+"/")) {
					todo = append(todo, m)
					break
				}
			}
		}
		if len(todo) == 0 {
			return nil
		}
		sort.Slice(todo, func(i, j int) bool { return len(todo[i]) > len(todo[j]) })
		errs = errs[:0]
		for _, m := range todo {
			if err := syscall.Unmount(m, syscall.MNT_DETACH); err != nil && !errors.Is(err, syscall.EINVAL) && !errors.Is(err, syscall.ENOENT) {
				errs = append(errs, fmt.Errorf("kubetest: unmount %s: %w", m, err))
			}
		}
	}
	return errors.Join(errs...)
}

// removeCgroup removes a cgroup and its children, deepest first; a cgroup
// whose processes are still exiting gets a few tries.
func removeCgroup(root string) error {
	var dirs []string
	_ = filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			dirs = append(dirs, p)
		}
		return nil
	})
	sort.Slice(dirs, func(i, j int) bool { return len(dirs[i]) > len(dirs[j]) })
	var last error
	for _, d := range dirs {
		for try := 0; try < 50; try++ {
			last = syscall.Rmdir(d)
			if last == nil || errors.Is(last, syscall.ENOENT) {
				last = nil
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if last != nil {
			return fmt.Errorf("rmdir %s: %w", d, last)
		}
	}
	return nil
}

// killTree kills (SIGKILL) every process whose command line matches and all
// their descendants: the containerd shims of our node and the containers
// they run.
func killTree(match func(cmdline string) bool) {
	parents := map[int]int{}
	var roots []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		if stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat")); err == nil {
			// pid (comm) state ppid ...: comm may hold spaces and parens.
			if i := bytes.LastIndexByte(stat, ')'); i > 0 {
				if f := strings.Fields(string(stat[i+1:])); len(f) > 1 {
					parents[pid], _ = strconv.Atoi(f[1])
				}
			}
		}
		if cmd, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline")); err == nil && match(string(bytes.ReplaceAll(cmd, []byte{0}, []byte{' '}))) {
			roots = append(roots, pid)
		}
	}
	kill := map[int]bool{}
	for _, r := range roots {
		kill[r] = true
	}
	for changed := true; changed; {
		changed = false
		for pid, ppid := range parents {
			if kill[ppid] && !kill[pid] {
				kill[pid], changed = true, true
			}
		}
	}
	for pid := range kill {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	// Give the kernel a moment to reap them before mounts and cgroups go.
	deadline := time.Now().Add(5 * time.Second)
	for pid := range kill {
		for time.Now().Before(deadline) {
			if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}
