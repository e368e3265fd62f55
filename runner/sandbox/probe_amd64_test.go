package sandbox

const (
	cloneNewUser = 0x10000000
	cloneNewPID  = 0x20000000
	cloneNewNS   = 0x00020000
	cloneFS      = 0x00000200
	cloneThread  = 0x00010000
	sigchld      = 17
)

// probeCalls are x86_64 numbers; each denied call is made with arguments
// the kernel rejects (EINVAL, EBADF, EFAULT) if the filter misses it.
var probeCalls = []probeCall{
	{"ptrace", 101, []uintptr{0x4206 /* PTRACE_SEIZE */, 1, 0, 0}},
	{"process_vm_readv", 310, []uintptr{1, 0, 0, 0, 0, 1 /* bad flags */}},
	{"process_vm_writev", 311, []uintptr{1, 0, 0, 0, 0, 1}},
	{"io_uring_setup", 425, []uintptr{0, 0}},
	{"io_uring_enter", 426, []uintptr{^uintptr(0), 0, 0, 0, 0, 0}},
	{"io_uring_register", 427, []uintptr{^uintptr(0), 0, 0, 0}},
	{"bpf", 321, []uintptr{^uintptr(0), 0, 0}},
	{"perf_event_open", 298, []uintptr{0, 0, 0, ^uintptr(0), 0}},
	{"keyctl", 250, []uintptr{^uintptr(0), 0, 0, 0, 0}},
	{"add_key", 248, []uintptr{0, 0, 0, 0, 0}},
	{"request_key", 249, []uintptr{0, 0, 0, 0}},
	{"mount", 165, []uintptr{0, 0, 0, 0, 0}},
	{"umount2", 166, []uintptr{0, ^uintptr(0)}},
	{"pivot_root", 155, []uintptr{0, 0}},
	{"setns", 308, []uintptr{^uintptr(0), 0}},
	{"unshare_newuser", 272, []uintptr{cloneNewUser | 0x80000000 /* invalid bit */}},
	{"clone_newuser", 56, []uintptr{cloneNewUser | cloneFS | sigchld}}, // EINVAL when let through
	{"clone_newpid", 56, []uintptr{cloneNewPID | cloneThread | sigchld}},
	{"clone3", 435, []uintptr{0, 0}},
	// Allowed calls, made harmlessly.
	{"getpid", 39, nil},
	{"unshare_none", 272, []uintptr{0}},
	{"clone_plain_bad", 56, []uintptr{cloneThread | sigchld}}, // EINVAL from the kernel, not the filter
}
