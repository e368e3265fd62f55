// Package sandbox builds the pieces of agentbot's local sandbox that every
// isolation shares: one mount plan (what the agent sees), consumed as
// bubblewrap arguments and as an OCI bundle for gVisor's runsc; the agent's
// seccomp filter; per-task limits (cgroups, else rlimits and a disk
// watchdog); and the nested sandbox agent-runner starts the agent in.
//
// The sandbox never runs as the host's root: a process whose host uid is 0
// may write /proc/sys through a user namespace even without capabilities,
// and reads every root-owned file the plan shows it. The plan therefore
// carries a host uid and gid, and bubblewrap runs as them.
package sandbox

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// The sandbox user, the same inside every task.
const (
	SandboxUID  = 1000
	SandboxGID  = 1000
	SandboxUser = "agent"
	// WorkspaceTarget is where the task's workspace appears inside.
	WorkspaceTarget = "/workspace"
	// GatewaySocketTarget is where the egress gateway's socket appears.
	GatewaySocketTarget = "/run/agentbot/gateway.sock"
)

// MountKind says how a Mount is made.
type MountKind int

const (
	// ROBind binds Source read-only on Target.
	ROBind MountKind = iota
	// Bind binds Source read-write on Target.
	Bind
	// Tmpfs mounts an empty tmpfs of Size bytes.
	Tmpfs
	// Proc mounts a procfs of the sandbox's PID namespace.
	Proc
	// Dev mounts a minimal /dev (null, zero, full, random, urandom, tty,
	// pts, ptmx, shm).
	Dev
	// File puts Data, read-only, at Target.
	File
	// Symlink makes Target a symbolic link to Source.
	Symlink
)

// Mount is one entry of the plan, applied in order.
type Mount struct {
	Kind   MountKind
	Source string
	Target string
	Size   int64  // Tmpfs
	Data   []byte // File
}

// PlanOptions are what the caller knows about one task.
type PlanOptions struct {
	// Workspace is the task's workspace on the host; it appears read-write
	// at WorkspaceTarget.
	Workspace string
	// ReadOnly are host paths (the agent CLIs' install directories, the
	// agent-runner binary, a file:// repository) bound read-only at the
	// same path.
	ReadOnly []string
	// HostUID and HostGID are who the sandbox is on the host. 0 is refused.
	HostUID, HostGID int
	Limits           Limits
	// ShareNet keeps the host's network namespace; false (the default)
	// gives the sandbox only a loopback, and GatewaySocket as its way out.
	ShareNet bool
	// GatewaySocket is the task's egress gateway socket on the host,
	// bound at GatewaySocketTarget; its directory must be searchable by
	// the host uid, and the socket writable by it.
	GatewaySocket string
	// NestedAgent says the agent will run in its own nested sandbox
	// (AgentCommand). That needs this sandbox's /proc fully visible, so the
	// read-only /proc/sys moves to the nested layer; /proc/sys is not
	// writable here anyway, since the host uid is not 0.
	NestedAgent bool
	// RunnerRoot says agent-runner runs as the guest's root under gVisor,
	// with RunnerCapabilities, and starts the agent as the sandbox user in
	// namespaces of its own (AgentInitCommand).
	RunnerRoot bool
	// Root is the filesystem root to take system directories from; empty
	// means "/". Tests point it elsewhere.
	Root string
}

// Plan is what one task's sandbox consists of.
type Plan struct {
	Mounts           []Mount
	HostUID, HostGID int
	UID, GID         int
	Home             string
	Workdir          string
	ShareNet         bool
	ReadOnlyProcSys  bool
	RunnerRoot       bool
	Limits           Limits
}

// systemDirs are bound read-only when they exist (or recreated as the
// symbolic links they are on a merged-/usr system).
var systemDirs = []string{"/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"}

// etcEntries are the parts of /etc programs need to resolve names, speak
// TLS and load libraries. Nothing else of /etc (shadow, the operator's
// configuration, ssh keys) is shown.
var etcEntries = []string{
	"/etc/resolv.conf", "/etc/hosts", "/etc/host.conf", "/etc/nsswitch.conf", "/etc/gai.conf",
	"/etc/ssl", "/etc/ca-certificates", "/etc/ca-certificates.conf", "/etc/pki",
	"/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/alternatives",
	"/etc/localtime", "/etc/mime.types", "/etc/protocols", "/etc/services",
}

// NewPlan builds the mount plan of one task.
func NewPlan(o PlanOptions) (*Plan, error) {
	if o.HostUID == 0 || o.HostGID == 0 {
		return nil, errors.New("sandbox: the sandbox must not be the host's root (uid and gid 0)")
	}
	if o.HostUID < 0 || o.HostGID < 0 {
		return nil, errors.New("sandbox: host uid and gid are not set")
	}
	if os.Geteuid() != 0 && (o.HostUID != os.Geteuid() || o.HostGID != os.Getegid()) {
		return nil, fmt.Errorf("sandbox: only root can run a sandbox as host uid %d; agentbot runs as uid %d", o.HostUID, os.Geteuid())
	}
	if !filepath.IsAbs(o.Workspace) {
		return nil, fmt.Errorf("sandbox: workspace %q is not an absolute path", o.Workspace)
	}
	root := o.Root
	if root == "" {
		root = "/"
	}
	p := &Plan{
		HostUID: o.HostUID, HostGID: o.HostGID,
		UID: SandboxUID, GID: SandboxGID,
		Home:            WorkspaceTarget + "/home",
		Workdir:         WorkspaceTarget,
		ShareNet:        o.ShareNet,
		ReadOnlyProcSys: !o.NestedAgent,
		RunnerRoot:      o.RunnerRoot,
		Limits:          o.Limits,
	}
	for _, d := range systemDirs {
		host := filepath.Join(root, d)
		fi, err := os.Lstat(host)
		switch {
		case err != nil:
			continue
		case fi.Mode()&os.ModeSymlink != 0:
			target, err := os.Readlink(host)
			if err != nil {
				return nil, fmt.Errorf("sandbox: read link %s: %w", host, err)
			}
			p.Mounts = append(p.Mounts, Mount{Kind: Symlink, Source: target, Target: d})
		case fi.IsDir():
			p.Mounts = append(p.Mounts, Mount{Kind: ROBind, Source: host, Target: d})
		}
	}
	etc, err := etcMounts(root)
	if err != nil {
		return nil, err
	}
	p.Mounts = append(p.Mounts, etc...)
	p.Mounts = append(p.Mounts,
		Mount{Kind: File, Target: "/etc/passwd", Data: []byte(passwd(SandboxUID, SandboxGID, p.Home))},
		Mount{Kind: File, Target: "/etc/group", Data: []byte(group(SandboxGID))},
		Mount{Kind: Proc, Target: "/proc"},
		Mount{Kind: Dev, Target: "/dev"},
		Mount{Kind: Tmpfs, Target: "/tmp", Size: sizeOr(o.Limits.TmpSize, DefaultLimits().TmpSize)},
		Mount{Kind: Tmpfs, Target: "/dev/shm", Size: sizeOr(o.Limits.ShmSize, DefaultLimits().ShmSize)},
	)
	for _, ro := range o.ReadOnly {
		if !filepath.IsAbs(ro) {
			return nil, fmt.Errorf("sandbox: read-only path %q is not absolute", ro)
		}
		if _, err := os.Stat(ro); err != nil {
			return nil, fmt.Errorf("sandbox: read-only path: %w", err)
		}
		p.Mounts = append(p.Mounts, Mount{Kind: ROBind, Source: filepath.Clean(ro), Target: filepath.Clean(ro)})
	}
	p.Mounts = append(p.Mounts, Mount{Kind: Bind, Source: filepath.Clean(o.Workspace), Target: WorkspaceTarget})
	if o.GatewaySocket != "" {
		if err := checkSocket(o.GatewaySocket, o.HostUID, o.HostGID); err != nil {
			return nil, err
		}
		p.Mounts = append(p.Mounts, Mount{Kind: Bind, Source: filepath.Clean(o.GatewaySocket), Target: GatewaySocketTarget})
	}
	for _, m := range p.Mounts {
		if m.Kind != ROBind && m.Kind != Bind {
			continue
		}
		dir := filepath.Dir(m.Source)
		if m.Kind == Bind {
			dir = filepath.Dir(dir) // the workspace itself is created for the host uid
		}
		if err := searchable(dir, o.HostUID, o.HostGID); err != nil {
			return nil, fmt.Errorf("sandbox: %s cannot be shown to the sandbox: %w", m.Source, err)
		}
	}
	return p, nil
}

// searchable checks that uid:gid (without capabilities) may walk through
// every directory from / to dir: bubblewrap resolves bind sources as the
// sandbox's host uid.
func searchable(dir string, uid, gid int) error {
	for d := filepath.Clean(dir); ; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err != nil {
			return err
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		if !ok {
			return fmt.Errorf("stat %s: no owner", d)
		}
		perm := fi.Mode().Perm()
		ok = perm&0o001 != 0 ||
			(int(st.Uid) == uid && perm&0o100 != 0) ||
			(int(st.Gid) == gid && perm&0o010 != 0)
		if !ok {
			return fmt.Errorf("host uid %d may not enter %s (mode %v, owner %d:%d); give it search permission (chmod o+x) or move it", uid, d, perm, st.Uid, st.Gid)
		}
		if d == "/" {
			return nil
		}
	}
}

// checkSocket checks that path is a unix socket the host uid can reach and
// connect to.
func checkSocket(path string, uid, gid int) error {
	if !filepath.IsAbs(path) {
		return fmt.Errorf("sandbox: gateway socket %q is not an absolute path", path)
	}
	fi, err := os.Lstat(path)
	if err != nil {
		return fmt.Errorf("sandbox: gateway socket: %w", err)
	}
	if fi.Mode().Type() != os.ModeSocket {
		return fmt.Errorf("sandbox: gateway socket %s is not a socket", path)
	}
	if err := searchable(filepath.Dir(path), uid, gid); err != nil {
		return fmt.Errorf("sandbox: gateway socket %s cannot be shown to the sandbox: %w", path, err)
	}
	st, _ := fi.Sys().(*syscall.Stat_t)
	perm := fi.Mode().Perm()
	if st == nil || !(perm&0o002 != 0 || int(st.Uid) == uid && perm&0o200 != 0 || int(st.Gid) == gid && perm&0o020 != 0) {
		return fmt.Errorf("sandbox: host uid %d may not connect to the gateway socket %s (mode %v)", uid, path, perm)
	}
	return nil
}

// etcMounts binds the curated /etc entries that exist. A symbolic link
// (resolv.conf into /run, localtime into /usr/share/zoneinfo) is bound as
// what it points to, since its target may not be in the sandbox.
func etcMounts(root string) ([]Mount, error) {
	var out []Mount
	for _, e := range etcEntries {
		host := filepath.Join(root, e)
		if _, err := os.Lstat(host); err != nil {
			continue
		}
		resolved, err := filepath.EvalSymlinks(host)
		if err != nil {
			continue // a dangling link: nothing to show
		}
		out = append(out, Mount{Kind: ROBind, Source: resolved, Target: e})
	}
	return out, nil
}

func passwd(uid, gid int, home string) string {
	return strings.Join([]string{
		"root:x:0:0:root:/nonexistent:/usr/sbin/nologin",
		fmt.Sprintf("%s:x:%d:%d:agentbot sandbox:%s:/bin/sh", SandboxUser, uid, gid, home),
		"nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin",
	}, "\n") + "\n"
}

func group(gid int) string {
	return fmt.Sprintf("root:x:0:\n%s:x:%d:\nnogroup:x:65534:\n", SandboxUser, gid)
}

func sizeOr(n, def int64) int64 {
	if n > 0 {
		return n
	}
	return def
}

// Env is the environment the sandbox user starts with; the caller adds its
// own settings (agent-runner's, proxies) after it.
func (p *Plan) Env() []string {
	return []string{
		"HOME=" + p.Home, "USER=" + SandboxUser, "LOGNAME=" + SandboxUser,
		"PATH=/usr/local/bin:/usr/bin:/bin", "TMPDIR=/tmp", "LANG=C.UTF-8",
		"AGENTBOT_WORKSPACE=" + WorkspaceTarget,
	}
}

// PrepareWorkspace creates the workspace and its home directory owned by
// the sandbox's host uid, which is who writes them.
func (p *Plan) PrepareWorkspace() error {
	ws := p.workspaceSource()
	for _, d := range []string{ws, filepath.Join(ws, "home")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return fmt.Errorf("sandbox: create %s: %w", d, err)
		}
		if err := os.Lchown(d, p.HostUID, p.HostGID); err != nil {
			return fmt.Errorf("sandbox: give %s to uid %d: %w", d, p.HostUID, err)
		}
	}
	return nil
}

func (p *Plan) workspaceSource() string {
	for _, m := range p.Mounts {
		if m.Kind == Bind && m.Target == WorkspaceTarget {
			return m.Source
		}
	}
	return ""
}
