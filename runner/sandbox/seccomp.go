package sandbox

import (
	"encoding/binary"
	"fmt"

	"golang.org/x/net/bpf"
)

// Seccomp return values and the seccomp_data layout (linux/seccomp.h).
const (
	seccompRetKillProcess = 0x80000000
	seccompRetErrno       = 0x00050000
	seccompRetAllow       = 0x7fff0000

	errnoEPERM  = 1
	errnoENOSYS = 38

	offNr    = 0
	offArch  = 4
	offArg0  = 16 // low 32 bits of args[0] on a little-endian machine
	x32Flag  = 0x40000000
	nsFlags  = 0x00020000 | 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000 | 0x20000000 | 0x40000000 | 0x00000080
	auditX86 = 0xc000003e // AUDIT_ARCH_X86_64
	auditArm = 0xc00000b7 // AUDIT_ARCH_AARCH64
)

// syscallTable holds the numbers the filter names, per architecture: the
// filter is assembled for both, so one program serves either host.
type syscallTable struct {
	arch uint32
	// denied answer EPERM: tracing and reading other processes, io_uring
	// (which bypasses seccomp for the calls it submits), bpf, perf, the
	// kernel keyring, mounting and joining namespaces.
	denied     map[string]uint32
	namespaced map[string]uint32 // allowed unless the namespace rules are on
	clone      uint32
	clone3     uint32
	unshare    uint32
	x32        bool // syscall numbers with bit 30 set are the x32 ABI
}

var syscallTables = []syscallTable{
	{
		arch: auditX86, x32: true, clone: 56, clone3: 435, unshare: 272,
		denied: map[string]uint32{
			"ptrace": 101, "process_vm_readv": 310, "process_vm_writev": 311,
			"io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427,
			"bpf": 321, "perf_event_open": 298, "keyctl": 250, "add_key": 248, "request_key": 249,
			"kexec_load": 246, "kexec_file_load": 320, "init_module": 175, "finit_module": 313,
			"userfaultfd": 323,
		},
		namespaced: map[string]uint32{
			"mount": 165, "umount2": 166, "pivot_root": 155, "setns": 308,
			"open_tree": 428, "move_mount": 429, "fsopen": 430, "fsconfig": 431, "fsmount": 432, "fspick": 433,
			"mount_setattr": 442,
		},
	},
	{
		arch: auditArm, clone: 220, clone3: 435, unshare: 97,
		denied: map[string]uint32{
			"ptrace": 117, "process_vm_readv": 270, "process_vm_writev": 271,
			"io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427,
			"bpf": 280, "perf_event_open": 241, "keyctl": 219, "add_key": 217, "request_key": 218,
			"kexec_load": 104, "kexec_file_load": 294, "init_module": 105, "finit_module": 273,
			"userfaultfd": 282,
		},
		namespaced: map[string]uint32{
			"mount": 40, "umount2": 39, "pivot_root": 41, "setns": 268,
			"open_tree": 428, "move_mount": 429, "fsopen": 430, "fsconfig": 431, "fsmount": 432, "fspick": 433,
			"mount_setattr": 442,
		},
	},
}

// FilterOptions chooses what the seccomp filter denies beyond its fixed set.
type FilterOptions struct {
	// AllowNamespaces keeps mount, pivot_root, setns, unshare and clone
	// with namespace flags working: agent-runner needs them to start the
	// agent in its nested sandbox, whose own filter then denies them.
	AllowNamespaces bool
}

// SeccompFilter assembles the agent's seccomp program and returns it as the
// raw array of struct sock_filter that bubblewrap's --seccomp FD reads (and
// that seccomp(2) takes). A call from a foreign architecture (a 32-bit
// binary on x86_64, the x32 ABI) kills the process: the numbers would mean
// other calls there.
func SeccompFilter(opts FilterOptions) ([]byte, error) {
	prog, err := seccompProgram(opts)
	if err != nil {
		return nil, err
	}
	raw, err := bpf.Assemble(prog)
	if err != nil {
		return nil, fmt.Errorf("sandbox: assemble seccomp filter: %w", err)
	}
	out := make([]byte, 0, 8*len(raw))
	for _, r := range raw {
		out = binary.NativeEndian.AppendUint16(out, r.Op)
		out = append(out, r.Jt, r.Jf)
		out = binary.NativeEndian.AppendUint32(out, r.K)
	}
	return out, nil
}

// seccompProgram lays the program out with symbolic jump targets and then
// resolves them: one section per architecture, each ending in the shared
// return instructions.
func seccompProgram(opts FilterOptions) ([]bpf.Instruction, error) {
	var a asm
	a.emit(bpf.LoadAbsolute{Off: offArch, Size: 4})
	for i, t := range syscallTables {
		a.jeq(t.arch, fmt.Sprintf("arch%d", i), "")
	}
	a.emit(bpf.RetConstant{Val: seccompRetKillProcess})
	for i, t := range syscallTables {
		sec := fmt.Sprintf("arch%d", i)
		a.label(sec)
		a.emit(bpf.LoadAbsolute{Off: offNr, Size: 4})
		if t.x32 {
			a.jset(x32Flag, "kill", "")
		}
		for _, nr := range sortedNumbers(t.denied) {
			a.jeq(nr, "eperm", "")
		}
		if !opts.AllowNamespaces {
			for _, nr := range sortedNumbers(t.namespaced) {
				a.jeq(nr, "eperm", "")
			}
			// clone3 passes its flags in memory a filter cannot read;
			// ENOSYS makes libc and Go fall back to clone.
			a.jeq(t.clone3, "enosys", "")
			a.jeq(t.clone, sec+"flags", "")
			a.jeq(t.unshare, sec+"flags", "")
		}
		a.emit(bpf.RetConstant{Val: seccompRetAllow})
		if !opts.AllowNamespaces {
			a.label(sec + "flags")
			a.emit(bpf.LoadAbsolute{Off: offArg0, Size: 4})
			a.jset(nsFlags, "eperm", "")
			a.emit(bpf.RetConstant{Val: seccompRetAllow})
		}
	}
	a.label("eperm")
	a.emit(bpf.RetConstant{Val: seccompRetErrno | errnoEPERM})
	a.label("enosys")
	a.emit(bpf.RetConstant{Val: seccompRetErrno | errnoENOSYS})
	a.label("kill")
	a.emit(bpf.RetConstant{Val: seccompRetKillProcess})
	return a.resolve()
}

func sortedNumbers(m map[string]uint32) []uint32 {
	out := make([]uint32, 0, len(m))
	for _, nr := range m {
		out = append(out, nr)
	}
	// Insertion sort: a stable program makes filters comparable.
	for i := 1; i < len(out); i++ {
		for j := i; j > 0 && out[j] < out[j-1]; j-- {
			out[j], out[j-1] = out[j-1], out[j]
		}
	}
	return out
}

// asm is a tiny BPF assembler with labels; conditional jumps reach forward
// at most 255 instructions, which this program never needs.
type asm struct {
	prog   []bpf.Instruction
	fixups []fixup
	labels map[string]int
}

type fixup struct {
	at          int
	true, false string // "" falls through
}

func (a *asm) emit(i bpf.Instruction) { a.prog = append(a.prog, i) }

func (a *asm) label(name string) {
	if a.labels == nil {
		a.labels = map[string]int{}
	}
	a.labels[name] = len(a.prog)
}

func (a *asm) jeq(val uint32, t, f string) {
	a.fixups = append(a.fixups, fixup{len(a.prog), t, f})
	a.emit(bpf.JumpIf{Cond: bpf.JumpEqual, Val: val})
}

func (a *asm) jset(val uint32, t, f string) {
	a.fixups = append(a.fixups, fixup{len(a.prog), t, f})
	a.emit(bpf.JumpIf{Cond: bpf.JumpBitsSet, Val: val})
}

func (a *asm) resolve() ([]bpf.Instruction, error) {
	skip := func(from int, label string) (uint8, error) {
		if label == "" {
			return 0, nil
		}
		to, ok := a.labels[label]
		d := to - from - 1
		if !ok || d < 0 || d > 255 {
			return 0, fmt.Errorf("sandbox: seccomp filter: jump from %d to %q (%d) out of reach", from, label, to)
		}
		return uint8(d), nil
	}
	for _, f := range a.fixups {
		j := a.prog[f.at].(bpf.JumpIf)
		var err error
		if j.SkipTrue, err = skip(f.at, f.true); err != nil {
			return nil, err
		}
		if j.SkipFalse, err = skip(f.at, f.false); err != nil {
			return nil, err
		}
		a.prog[f.at] = j
	}
	return a.prog, nil
}
