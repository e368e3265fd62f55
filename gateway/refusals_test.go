package gateway

import (
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/agentbot/agentbot/internal/testtool"
)

// TestRefusalsBoundTheLog: a source gets refusalBurst log lines at once,
// then one per refusalEvery; what is cut short is summed up once a minute;
// another source has its own count.
func TestRefusalsBoundTheLog(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	r := newRefusals(func() time.Time { return now })
	logged := 0
	for range refusalBurst + 10 {
		if ok, _ := r.note("10.0.0.7:4000"); ok {
			logged++
		}
	}
	if logged != refusalBurst {
		t.Fatalf("%d of %d refusals logged at once; want %d", logged, refusalBurst+10, refusalBurst)
	}
	if ok, _ := r.note("10.0.0.8:1"); !ok {
		t.Fatal("another source's first refusal was not logged")
	}
	now = now.Add(refusalEvery)
	if ok, _ := r.note("10.0.0.7:4001"); !ok {
		t.Fatalf("no log line after %s", refusalEvery)
	}
	if ok, _ := r.note("10.0.0.7:4002"); ok {
		t.Fatal("a second line within the same interval")
	}
	now = now.Add(refusalSummary)
	// A minute refills the burst; exhaust it, and the next says how many
	// were cut short since the source was first seen.
	for range refusalBurst {
		r.note("10.0.0.7:4003")
	}
	ok, cut := r.note("10.0.0.7:4004")
	if ok || cut != 12 {
		t.Fatalf("after a minute: logged %v, summary of %d; want a summary of the 12 cut short", ok, cut)
	}
	if _, again := r.note("10.0.0.7:4005"); again != 0 {
		t.Fatalf("a second summary within the minute: %d", again)
	}
}

// TestRefusalsRememberBoundedSources: a flood of sources cannot grow the
// table beyond refusalSources.
func TestRefusalsRememberBoundedSources(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	r := newRefusals(func() time.Time { now = now.Add(time.Millisecond); return now })
	for i := range refusalSources + 100 {
		r.note(fmt.Sprintf("10.%d.%d.%d:1", i>>16&255, i>>8&255, i&255))
	}
	if n := len(r.by); n > refusalSources {
		t.Fatalf("%d sources remembered; want at most %d", n, refusalSources)
	}
}

// TestTCPServerBoundsRefusals: a sandbox that floods the shared port with
// wrong capabilities gets refusalBurst 407s and log lines, then 429s and no
// more lines; a valid capability from the same address is still served.
func TestTCPServerBoundsRefusals(t *testing.T) {
	var logs testtool.Buffer
	g := newGateway(t, Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	addr := serveTCP(t, g)
	task := openShared(t, g, TaskSpec{TaskID: "t"})
	statuses := map[string]int{}
	for range refusalBurst + 5 {
		statuses[strings.Fields(upgradeStatus(t, addr, "not-a-capability"))[1]]++
	}
	if statuses["407"] != refusalBurst || statuses["429"] != 5 {
		t.Fatalf("statuses of %d wrong capabilities: %v; want %d × 407 then 5 × 429", refusalBurst+5, statuses, refusalBurst)
	}
	if n := strings.Count(logs.String(), "without a running task's capability"); n != refusalBurst {
		t.Fatalf("%d log lines for the refusals; want %d", n, refusalBurst)
	}
	if status := upgradeStatus(t, addr, task.Key()); !strings.HasPrefix(status, statusSwitched) {
		t.Fatalf("the task's own capability after the flood: %q; want 101", status)
	}
}
