package sandbox

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestWatchDisk(t *testing.T) {
	cases := []struct {
		name    string
		write   func(dir string) error
		limit   int64
		wantHit bool
	}{
		{"a real file over the limit", func(dir string) error {
			return os.WriteFile(filepath.Join(dir, "big"), make([]byte, 3*MiB), 0o600)
		}, 2 * MiB, true},
		{"a sparse file costs nothing", func(dir string) error {
			f, err := os.Create(filepath.Join(dir, "sparse"))
			if err != nil {
				return err
			}
			defer f.Close()
			return f.Truncate(1 * GiB)
		}, 2 * MiB, false},
		{"hard links count once", func(dir string) error {
			p := filepath.Join(dir, "one")
			if err := os.WriteFile(p, make([]byte, 1*MiB), 0o600); err != nil {
				return err
			}
			for i := range 4 {
				if err := os.Link(p, filepath.Join(dir, "link"+strconv.Itoa(i))); err != nil {
					return err
				}
			}
			return nil
		}, 2 * MiB, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := tc.write(dir); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			defer cancel()
			err := WatchDisk(ctx, dir, tc.limit, 50*time.Millisecond)
			var de *DiskLimitError
			if got := errors.As(err, &de); got != tc.wantHit {
				t.Fatalf("WatchDisk = %v, want hit=%v", err, tc.wantHit)
			}
			if tc.wantHit && (!errors.Is(err, ErrDiskLimit) || err.Error() != "the agent used more than 2 MiB of disk") {
				t.Fatalf("error %q", err)
			}
		})
	}
}

// TestApplyRlimits lowers a child's limits and reads them back from
// /proc/<pid>/limits, where the child's own ulimit would see them.
func TestApplyRlimits(t *testing.T) {
	cmd := exec.Command("/bin/sh", "-c", "read x; cat /proc/$$/limits")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	cmd.Stdout = &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	l := Limits{Memory: 1 * GiB, PIDs: 100, Disk: 512 * MiB}
	applyErr := ApplyRlimits(cmd.Process.Pid, l)
	stdin.Close()
	if err := waitCmd(t, cmd, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	if applyErr != nil {
		t.Fatal(applyErr)
	}
	for _, want := range []string{
		`Max processes\s+100\s+100\s`,
		`Max file size\s+` + strconv.FormatInt(512*MiB, 10) + `\s+` + strconv.FormatInt(512*MiB, 10) + `\s`,
		`Max address space\s+` + strconv.FormatInt(2*GiB, 10) + `\s`,
	} {
		if !regexp.MustCompile(want).MatchString(out.String()) {
			t.Errorf("child's limits lack %s:\n%s", want, out.String())
		}
	}
}
