package sandbox

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"
)

// BwrapOptions are what BwrapCommand needs beyond the plan.
type BwrapOptions struct {
	Bwrap   string // path of bwrap
	Seccomp []byte // a program from SeccompFilter; nil loads none
	Argv    []string
	Env     []string // the command's environment; nil means p.Env()
}

// BwrapCommand returns the command that runs opts.Argv under bubblewrap as
// the plan describes, and a function that closes the descriptors it holds
// for the child (call it once the command has started, or failed to).
//
// bwrap runs as the plan's host uid (agentbot as root switches to it): an
// unprivileged bwrap that maps the sandbox uid onto the host uid in a new
// user namespace. It resolves every bind source as that uid, even one
// passed as a descriptor (--ro-bind-fd resolves the descriptor's path
// again), which is why NewPlan checks that the host uid can reach them.
// Descriptors still pin what was checked.
func (p *Plan) BwrapCommand(opts BwrapOptions) (*exec.Cmd, func(), error) {
	var files []*os.File
	closeAll := func() {
		for _, f := range files {
			f.Close()
		}
	}
	fd := func(f *os.File) string {
		files = append(files, f)
		return strconv.Itoa(2 + len(files)) // ExtraFiles start at 3
	}
	args := []string{"--unshare-user", "--uid", strconv.Itoa(p.UID), "--gid", strconv.Itoa(p.GID),
		"--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
		"--hostname", "agentbot-sandbox",
		"--new-session", "--die-with-parent", "--cap-drop", "ALL",
	}
	if !p.ShareNet {
		args = append(args, "--unshare-net")
	}
	for _, m := range p.Mounts {
		a, err := p.bwrapMount(m, fd)
		if err != nil {
			closeAll()
			return nil, nil, err
		}
		args = append(args, a...)
	}
	if p.ReadOnlyProcSys {
		// After --proc: the kernel checks sysctl writes by uid alone.
		args = append(args, "--ro-bind", "/proc/sys", "/proc/sys")
	}
	// The tmpfs root and /etc are bwrap's own; nothing there is the
	// agent's to change.
	args = append(args, "--remount-ro", "/")
	if opts.Seccomp != nil {
		f, err := memFile("agentbot-seccomp", opts.Seccomp)
		if err != nil {
			closeAll()
			return nil, nil, err
		}
		args = append(args, "--seccomp", fd(f))
	}
	args = append(args, "--chdir", p.Workdir, "--")
	cmd := exec.Command(opts.Bwrap, append(args, opts.Argv...)...)
	cmd.Env = opts.Env
	if cmd.Env == nil {
		cmd.Env = p.Env()
	}
	cmd.ExtraFiles = files
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Pdeathsig: syscall.SIGKILL}
	if os.Geteuid() != p.HostUID {
		cmd.SysProcAttr.Credential = &syscall.Credential{Uid: uint32(p.HostUID), Gid: uint32(p.HostGID), Groups: []uint32{}}
	}
	return cmd, closeAll, nil
}

func (p *Plan) bwrapMount(m Mount, fd func(*os.File) string) ([]string, error) {
	switch m.Kind {
	case ROBind, Bind:
		f, err := os.OpenFile(m.Source, unix.O_PATH|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
		if err != nil {
			return nil, fmt.Errorf("sandbox: open %s to bind it: %w", m.Source, err)
		}
		if m.Kind == Bind {
			return []string{"--bind-fd", fd(f), m.Target}, nil
		}
		return []string{"--ro-bind-fd", fd(f), m.Target}, nil
	case Tmpfs:
		return []string{"--perms", "1777", "--size", strconv.FormatInt(m.Size, 10), "--tmpfs", m.Target}, nil
	case Proc:
		return []string{"--proc", m.Target}, nil
	case Dev:
		return []string{"--dev", m.Target}, nil
	case Symlink:
		return []string{"--symlink", m.Source, m.Target}, nil
	case File:
		f, err := memFile("agentbot-file", m.Data)
		if err != nil {
			return nil, err
		}
		return []string{"--perms", "0444", "--ro-bind-data", fd(f), m.Target}, nil
	}
	return nil, fmt.Errorf("sandbox: mount kind %d of %s is unknown", m.Kind, m.Target)
}

// memFile returns a descriptor, at offset 0, of an anonymous file holding
// data: bwrap reads generated files and the seccomp program from one.
func memFile(name string, data []byte) (*os.File, error) {
	mfd, err := unix.MemfdCreate(name, unix.MFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("sandbox: memfd for %s: %w", name, err)
	}
	f := os.NewFile(uintptr(mfd), name)
	if _, err := f.Write(data); err != nil {
		f.Close()
		return nil, fmt.Errorf("sandbox: write %s: %w", name, err)
	}
	if _, err := f.Seek(0, 0); err != nil {
		f.Close()
		return nil, fmt.Errorf("sandbox: rewind %s: %w", name, err)
	}
	return f, nil
}
