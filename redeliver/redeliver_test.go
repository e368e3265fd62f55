package redeliver

import (
	"context"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/agentbot/agentbot/github"
	"github.com/agentbot/agentbot/github/githubtest"
	"github.com/agentbot/agentbot/state"
	"github.com/agentbot/agentbot/webhook"
)

const secret = "redeliver-test-secret"

// rig is agentbot's intake (a real webhook handler on a real bbolt store)
// reachable by the fake GitHub, and a Recoverer reading the fake's log.
type rig struct {
	gh      *githubtest.Server
	store   *state.Store
	comment []byte
}

func newRig(t *testing.T) *rig {
	t.Helper()
	store, err := state.Open(filepath.Join(t.TempDir(), "agentbot.db"), state.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	h, err := webhook.New(webhook.Config{Secret: []byte(secret), Store: store})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	gh := githubtest.New(t)
	gh.SetWebhook(srv.URL, secret)
	comment, err := os.ReadFile("../webhook/testdata/issue_comment.created.issue.json")
	if err != nil {
		t.Fatal(err)
	}
	return &rig{gh: gh, store: store, comment: comment}
}

func (r *rig) recoverer(t *testing.T, opts Options) *Recoverer {
	t.Helper()
	c, err := github.New(github.Config{BaseURL: r.gh.URL, AppID: r.gh.AppID, PrivateKey: r.gh.PrivateKeyPEM})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	opts.GitHub, opts.Store, opts.Handles = c, r.store, webhook.Handles
	opts.Gap = time.Millisecond
	rc, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	return rc
}

func (r *rig) recorded(t *testing.T, guid string) bool {
	t.Helper()
	seen, err := r.store.SeenDelivery(context.Background(), guid)
	if err != nil {
		t.Fatal(err)
	}
	return seen
}

// TestScanRedeliversWhatWasMissed: a bot that was down missed a delivery
// (no answer), another was acknowledged by a store that was since lost
// (202, not recorded); both are redelivered and become tasks. A recorded
// one, an ignored one, one agentbot never acts on and one older than the
// window are left alone, and a second scan asks for nothing.
func TestScanRedeliversWhatWasMissed(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	now := time.Now()

	// Delivered while agentbot listened: recorded, a task.
	recorded := r.gh.Deliver("issue_comment", "created", 1, r.comment)
	if recorded.StatusCode != 202 || !r.recorded(t, recorded.GUID) {
		t.Fatalf("live delivery answered %d, recorded %v", recorded.StatusCode, r.recorded(t, recorded.GUID))
	}
	down := r.gh.AddDelivery(githubtest.Delivery{Event: "issue_comment", Action: "created", InstallationID: 1, StatusCode: 0, Payload: r.comment, DeliveredAt: now.Add(-30 * time.Minute)})
	lost := r.gh.AddDelivery(githubtest.Delivery{Event: "issue_comment", Action: "created", InstallationID: 1, StatusCode: 202, Payload: r.comment, DeliveredAt: now.Add(-20 * time.Minute)})
	ignored := r.gh.AddDelivery(githubtest.Delivery{Event: "issue_comment", Action: "created", InstallationID: 1, StatusCode: 204, Payload: r.comment})
	notOurs := r.gh.AddDelivery(githubtest.Delivery{Event: "pull_request", Action: "opened", InstallationID: 1, StatusCode: 502, Payload: []byte(`{}`)})
	tooOld := r.gh.AddDelivery(githubtest.Delivery{Event: "issue_comment", Action: "created", InstallationID: 1, StatusCode: 503, Payload: r.comment, DeliveredAt: now.Add(-2 * time.Hour)})

	rc := r.recoverer(t, Options{Window: time.Hour})
	res, err := rc.Scan(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if res.Requested != 2 || res.FailedAttempts != 2 {
		t.Errorf("scan = %+v, want 2 requested and 2 failed attempts in the window (down, not ours)", res)
	}
	r.gh.WaitRedeliveries()
	var redelivered []string
	for _, d := range r.gh.Deliveries() {
		if d.Redelivery {
			redelivered = append(redelivered, d.GUID)
			if d.StatusCode != 202 {
				t.Errorf("redelivery of %s answered %d, want 202 (a task stored)", d.GUID, d.StatusCode)
			}
		}
	}
	slices.Sort(redelivered)
	want := []string{down.GUID, lost.GUID}
	slices.Sort(want)
	if !slices.Equal(redelivered, want) {
		t.Errorf("redelivered %v, want the missed %v", redelivered, want)
	}
	for _, d := range []githubtest.Delivery{down, lost} {
		if !r.recorded(t, d.GUID) {
			t.Errorf("delivery %s not recorded after its redelivery", d.GUID)
		}
	}
	for name, d := range map[string]githubtest.Delivery{"ignored": ignored, "not ours": notOurs, "too old": tooOld} {
		if r.recorded(t, d.GUID) {
			t.Errorf("%s delivery %s was redelivered", name, d.GUID)
		}
	}
	tasks, err := r.store.List(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(tasks) != 3 {
		t.Errorf("%d tasks stored, want 3 (the live one and the two recovered)", len(tasks))
	}

	res, err = rc.Scan(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if res.Requested != 0 {
		t.Errorf("second scan asked for %d redeliveries, want none", res.Requested)
	}
	if n := len(r.gh.CallsTo("POST", "/app/hook/deliveries/*/attempts")); n != 2 {
		t.Errorf("%d redelivery requests in all, want 2", n)
	}
}

// TestScanBounds: one scan asks for at most MaxPerScan redeliveries, oldest
// first, and reads at most MaxPages pages; a delivery agentbot keeps
// failing is asked for at most MaxRequests times.
func TestScanBounds(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	r.gh.SetWebhook("http://127.0.0.1:1/webhook", secret) // agentbot stays down
	var missed []githubtest.Delivery
	for i := range 5 {
		missed = append(missed, r.gh.AddDelivery(githubtest.Delivery{Event: "issues", Action: "labeled", InstallationID: 1,
			Payload: []byte(`{}`), DeliveredAt: time.Now().Add(time.Duration(i-10) * time.Minute)}))
	}
	rc := r.recoverer(t, Options{Window: time.Hour, MaxPerScan: 2, MaxRequests: 2})
	res, err := rc.Scan(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if res.Requested != 2 || res.Left != 3 {
		t.Errorf("scan = %+v, want 2 requested and 3 left", res)
	}
	calls := r.gh.CallsTo("POST", "/app/hook/deliveries/*/attempts")
	for i, c := range calls {
		if want := "/app/hook/deliveries/" + strconv.FormatInt(missed[i].ID, 10) + "/attempts"; c.Path != want {
			t.Errorf("redelivery %d asked for %s, want the oldest first (%s)", i, c.Path, want)
		}
	}
	for range 6 { // more scans than it takes
		if _, err := rc.Scan(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(r.gh.CallsTo("POST", "/app/hook/deliveries/*/attempts")); n != 10 {
		t.Errorf("%d redelivery requests for 5 deliveries that keep failing, want 10 (MaxRequests 2 each)", n)
	}

	// The page bound: 150 attempts are two pages of 100; one page is read.
	for range 150 {
		r.gh.AddDelivery(githubtest.Delivery{Event: "issues", Action: "labeled", StatusCode: 204})
	}
	res, err = r.recoverer(t, Options{Window: time.Hour, MaxPages: 1}).Scan(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !res.Truncated || res.Read != 100 {
		t.Errorf("scan with one page = %+v, want 100 read and truncated", res)
	}
}
