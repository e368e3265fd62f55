package sandbox

import (
	"errors"
	"fmt"
	"math"
	"os"
	"strconv"
	"strings"
)

// Limits bound one task's sandbox. Zero values mean "no limit" only where
// the field says so; DefaultLimits holds the defaults.
type Limits struct {
	Memory int64   // bytes of RAM (and RAM+swap where the host accounts it)
	PIDs   int64   // processes and threads
	CPUs   float64 // CPU time, in cores
	Disk   int64   // bytes the workspace may hold
	// TmpSize and ShmSize size the tmpfs on /tmp and /dev/shm. Their pages
	// are also charged to the memory limit where a cgroup enforces it.
	TmpSize int64
	ShmSize int64
}

// Settings read by LimitsFromEnv.
const (
	EnvMemory = "AGENTBOT_SANDBOX_MEMORY"
	EnvPIDs   = "AGENTBOT_SANDBOX_PIDS"
	EnvCPUs   = "AGENTBOT_SANDBOX_CPUS"
	EnvDisk   = "AGENTBOT_SANDBOX_DISK"
)

const (
	KiB int64 = 1 << (10 * (iota + 1))
	MiB
	GiB
	TiB
)

// DefaultLimits are the limits a task gets unless the operator sets others.
func DefaultLimits() Limits {
	return Limits{Memory: 4 * GiB, PIDs: 1024, CPUs: 2, Disk: 10 * GiB, TmpSize: 1 * GiB, ShmSize: 256 * MiB}
}

// LimitsFromEnv starts from DefaultLimits and applies the AGENTBOT_SANDBOX_*
// settings that getenv returns (os.Getenv when nil). Every bad setting is
// reported, one line each.
func LimitsFromEnv(getenv func(string) string) (Limits, error) {
	if getenv == nil {
		getenv = os.Getenv
	}
	l := DefaultLimits()
	var errs []error
	if v := getenv(EnvMemory); v != "" {
		n, err := ParseSize(v)
		if err == nil && n < 64*MiB {
			err = errors.New("is below 64MiB")
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%s=%q: %w", EnvMemory, v, err))
		}
		l.Memory = n
	}
	if v := getenv(EnvDisk); v != "" {
		n, err := ParseSize(v)
		if err == nil && n < 64*MiB {
			err = errors.New("is below 64MiB")
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%s=%q: %w", EnvDisk, v, err))
		}
		l.Disk = n
	}
	if v := getenv(EnvPIDs); v != "" {
		n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		if err == nil && n < 16 {
			err = errors.New("is below 16")
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%s=%q: %w", EnvPIDs, v, err))
		}
		l.PIDs = n
	}
	if v := getenv(EnvCPUs); v != "" {
		n, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
		if err == nil && (math.IsNaN(n) || n < 0.01 || n > 1024) {
			err = errors.New("is not between 0.01 and 1024")
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%s=%q: %w", EnvCPUs, v, err))
		}
		l.CPUs = n
	}
	if l.TmpSize > l.Memory/2 {
		l.TmpSize = l.Memory / 2
	}
	if l.ShmSize > l.Memory/4 {
		l.ShmSize = l.Memory / 4
	}
	return l, errors.Join(errs...)
}

var sizeUnits = map[string]int64{
	"": 1, "b": 1,
	"k": KiB, "kb": 1000, "kib": KiB,
	"m": MiB, "mb": 1000 * 1000, "mib": MiB,
	"g": GiB, "gb": 1000 * 1000 * 1000, "gib": GiB,
	"t": TiB, "tb": 1000 * 1000 * 1000 * 1000, "tib": TiB,
}

// ParseSize reads a byte size such as "4GiB", "512MiB", "1.5G", "10GB" or
// "1048576". K, M, G, T and KiB... are powers of 1024; KB, MB... powers of
// 1000. Units are case-insensitive.
func ParseSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	i := 0
	for i < len(t) && (t[i] >= '0' && t[i] <= '9' || t[i] == '.') {
		i++
	}
	num, unit := t[:i], strings.ToLower(strings.TrimSpace(t[i:]))
	mult, ok := sizeUnits[unit]
	if num == "" || !ok {
		return 0, fmt.Errorf("size %q is not a number with an optional unit (B, KiB, MiB, GiB, TiB, KB, MB, GB, TB)", s)
	}
	f, err := strconv.ParseFloat(num, 64)
	if err != nil {
		return 0, fmt.Errorf("size %q: %w", s, err)
	}
	v := f * float64(mult)
	if v < 1 || v >= math.MaxInt64 {
		return 0, fmt.Errorf("size %q is out of range", s)
	}
	return int64(v), nil
}

// FormatSize writes n the way a user reads it in a failure comment: "4 GiB",
// "512 MiB", "1.5 GiB".
func FormatSize(n int64) string {
	for _, u := range []struct {
		name string
		size int64
	}{{"TiB", TiB}, {"GiB", GiB}, {"MiB", MiB}, {"KiB", KiB}} {
		if n >= u.size {
			v := strconv.FormatFloat(float64(n)/float64(u.size), 'f', 2, 64)
			v = strings.TrimRight(strings.TrimRight(v, "0"), ".")
			return v + " " + u.name
		}
	}
	return strconv.FormatInt(n, 10) + " B"
}
