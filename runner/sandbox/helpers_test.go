package sandbox

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"testing"
)

// helperEnv makes the test binary a probe instead of a test run: the
// sandbox tests start it inside bwrap or runsc and read what it reports.
const helperEnv = "AGENTBOT_SANDBOX_TEST_HELPER"

func TestMain(m *testing.M) {
	switch os.Getenv(helperEnv) {
	case "":
		os.Exit(m.Run())
	case "syscalls":
		os.Exit(probeSyscalls())
	default:
		fmt.Fprintf(os.Stderr, "unknown helper %q\n", os.Getenv(helperEnv))
		os.Exit(2)
	}
}

// probeSyscalls tries each call the seccomp tests name and prints
// name → errno ("" for success) as JSON. Every call is made so that it
// cannot succeed with an effect: the kernel itself would refuse it with a
// different errno (EINVAL, EBADF, EFAULT) when the filter lets it through.
func probeSyscalls() int {
	res := map[string]string{}
	try := func(name string, trap uintptr, a ...uintptr) {
		var args [6]uintptr
		copy(args[:], a)
		_, _, e := syscall.RawSyscall6(trap, args[0], args[1], args[2], args[3], args[4], args[5])
		if e != 0 {
			res[name] = e.Error()
		} else {
			res[name] = ""
		}
	}
	for _, c := range probeCalls {
		try(c.name, c.nr, c.args...)
	}
	// A process still starts: the agent runs shells, git and node.
	if err := exec.Command("/bin/sh", "-c", "exit 0").Run(); err != nil {
		res["exec"] = err.Error()
	} else {
		res["exec"] = ""
	}
	if err := json.NewEncoder(os.Stdout).Encode(res); err != nil {
		return 1
	}
	return 0
}
