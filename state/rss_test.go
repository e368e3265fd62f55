package state

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/agentbot/agentbot"
)

// rssChildEnv names the file a child process opens to measure start-up.
const rssChildEnv = "AGENTBOT_RSS_CHILD"

// TestMain lets BenchmarkRestartRSS re-run this binary as a fresh process
// that only starts up, so its peak RSS is start-up's alone.
func TestMain(m *testing.M) {
	if path := os.Getenv(rssChildEnv); path != "" {
		if err := startUp(path); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// startUp does what serve reads at start: open (schema check, state counts,
// delivery ids) and the dispatcher's recovery and first scan.
func startUp(path string) error {
	ctx := context.Background()
	s, err := Open(path, Options{})
	if err != nil {
		return err
	}
	defer s.Close()
	for _, list := range []func() ([]*agentbot.Task, error){
		func() ([]*agentbot.Task, error) { return s.ListByState(ctx, agentbot.StateRunning) },
		func() ([]*agentbot.Task, error) { return s.ListUnreported(ctx) },
		func() ([]*agentbot.Task, error) { return s.ListByState(ctx, agentbot.StateQueued) },
	} {
		if _, err := list(); err != nil {
			return err
		}
	}
	fmt.Println("VmHWM_kB", peakRSS())
	return nil
}

func peakRSS() int {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return -1
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			n, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
			return n
		}
	}
	return -1
}

// fill writes n finished, reported tasks (about 1.8 KB each, like real
// ones) straight through the create transaction body, 10,000 a commit.
func fill(tb testing.TB, path string, n int) {
	s, err := Open(path, Options{})
	if err != nil {
		tb.Fatal(err)
	}
	defer s.Close()
	body := strings.Repeat("The widget crashes when the input is empty. ", 30)
	for done := 0; done < n; {
		err := s.db.Update(func(tx *bolt.Tx) error {
			for i := 0; i < 10000 && done < n; i, done = i+1, done+1 {
				now := time.Now()
				t := newTask(ref("octo", "hello", done%5000))
				t.Trigger.Prompt.Body = body
				t.ID, t.State, t.Reported, t.FinishedAt = s.ids.next(now), agentbot.StateSucceeded, true, now
				t.Result.PRURL = "https://github.com/octo/hello/pull/" + strconv.Itoa(done)
				val, err := json.Marshal(t)
				if err != nil {
					return err
				}
				var created bool
				if err := s.createFn(fmt.Sprintf("fill-%d", done), t, val, now, &created)(tx); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			tb.Fatal(err)
		}
		s.applyPending()
	}
}

// BenchmarkRestartRSS measures the peak resident memory of a process that
// opens a store of 100,000 finished tasks and does serve's start-up reads.
// The bound is 64 MB.
func BenchmarkRestartRSS(b *testing.B) {
	path := filepath.Join(b.TempDir(), "agentbot.db")
	fill(b, path, 100_000)
	st, err := os.Stat(path)
	if err != nil {
		b.Fatal(err)
	}
	var kb int
	for b.Loop() {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), rssChildEnv+"="+path)
		out, err := cmd.Output()
		if err != nil {
			b.Fatalf("child: %v\n%s", err, out)
		}
		if _, err := fmt.Sscanf(strings.TrimSpace(string(out)), "VmHWM_kB %d", &kb); err != nil {
			b.Fatalf("child said %q", out)
		}
	}
	b.ReportMetric(float64(kb)/1024, "peak-RSS-MB")
	b.ReportMetric(float64(st.Size())/(1<<20), "file-MB")
	if kb > 64<<10 {
		b.Errorf("peak RSS after restart %d kB, over 64 MB", kb)
	}
}
