package web

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/agentbot/agentbot/runner"
)

func egressEvent(kind, host string, port int, allowed bool, reason string, out, in, ms int64) runner.Event {
	return runner.Event{Time: time.Now(), Type: runner.EventEgress, Egress: &runner.Egress{
		Kind: kind, Host: host, Port: port, Allowed: allowed, Reason: reason, BytesOut: out, BytesIn: in, Millis: ms,
	}}
}

// TestEgressTable: the task page shows the gateway's egress events as a
// table per host and outcome, blocked first, with the sandbox's host names
// escaped; a JSON client gets the same rows.
func TestEgressTable(t *testing.T) {
	f := newFixture(t)
	hostile := `<img src=x onerror=alert(1)>.evil.example`
	if err := f.logs.Append(f.done.ID,
		egressEvent(runner.EgressGit, "git.agentbot.internal", 80, true, "", 300, 4000, 20),
		egressEvent(runner.EgressConnect, "registry.npmjs.org", 443, true, "", 1000, 50000, 120),
		egressEvent(runner.EgressConnect, "evil.example", 443, false, "not on the allow-list", 0, 0, 1),
		egressEvent(runner.EgressGit, "git.agentbot.internal", 80, true, "", 200, 6000, 30),
		egressEvent(runner.EgressConnect, "evil.example", 443, false, "not on the allow-list", 0, 0, 1),
		egressEvent(runner.EgressConnect, hostile, 443, false, "not on the allow-list", 0, 0, 1),
		runner.Event{Time: time.Now(), Type: runner.EventEgress}, // no egress body: skipped
	); err != nil {
		t.Fatal(err)
	}
	srv := f.server(t, Options{})

	_, body := get(t, srv.URL+"/tasks/"+f.done.ID, map[string]string{"Accept": "text/html"})
	for _, s := range []string{`<table id="egress">`, "<code>git.agentbot.internal:80</code>", "<code>registry.npmjs.org:443</code>",
		"<code>evil.example:443</code>", "&lt;img src=x onerror=alert(1)&gt;.evil.example:443", "not on the allow-list",
		"<td>500</td><td>10000</td><td>50ms</td>"} {
		if !strings.Contains(body, s) {
			t.Errorf("task page lacks %q:\n%s", s, body)
		}
	}
	if strings.Contains(body, "<img") {
		t.Errorf("task page holds the sandbox's host name unescaped:\n%s", body)
	}
	if strings.Index(body, "evil.example:443") > strings.Index(body, "git.agentbot.internal:80") {
		t.Errorf("blocked rows are not listed first:\n%s", body)
	}

	_, body = get(t, srv.URL+"/tasks/"+f.done.ID, map[string]string{"Accept": "application/json"})
	var page TaskPage
	if err := json.Unmarshal([]byte(body), &page); err != nil {
		t.Fatal(err)
	}
	want := []EgressRow{
		{Kind: "connect", Host: "evil.example", Port: 443, Reason: "not on the allow-list", Count: 2, Millis: 2},
		{Kind: "connect", Host: hostile, Port: 443, Reason: "not on the allow-list", Count: 1, Millis: 1},
		{Kind: "git", Host: "git.agentbot.internal", Port: 80, Allowed: true, Count: 2, BytesOut: 500, BytesIn: 10000, Millis: 50},
		{Kind: "connect", Host: "registry.npmjs.org", Port: 443, Allowed: true, Count: 1, BytesOut: 1000, BytesIn: 50000, Millis: 120},
	}
	if fmt.Sprint(page.Egress) != fmt.Sprint(want) || page.EgressMore != 0 {
		t.Errorf("egress rows\n%+v\nwant\n%+v (more %d)", page.Egress, want, page.EgressMore)
	}

	// A task without egress events has no table.
	_, body = get(t, srv.URL+"/tasks/"+f.live.ID, map[string]string{"Accept": "text/html"})
	if strings.Contains(body, `id="egress"`) {
		t.Errorf("task without egress events shows a table:\n%s", body)
	}
}

// TestEgressTableCapped: a sandbox that tries thousands of hosts gets the
// first pageEgressRows of them on the page and a count of the rest.
func TestEgressTableCapped(t *testing.T) {
	f := newFixture(t)
	const hosts = pageEgressRows + 57
	evs := make([]runner.Event, 0, hosts)
	for i := range hosts {
		evs = append(evs, egressEvent(runner.EgressConnect, fmt.Sprintf("h%d.example", i), 443, false, "not on the allow-list", 0, 0, 1))
	}
	if err := f.logs.Append(f.done.ID, evs...); err != nil {
		t.Fatal(err)
	}
	srv := f.server(t, Options{})
	_, body := get(t, srv.URL+"/tasks/"+f.done.ID, map[string]string{"Accept": "text/html"})
	if n := strings.Count(body, `<tr class="blocked">`); n != pageEgressRows {
		t.Errorf("%d egress rows, want %d", n, pageEgressRows)
	}
	for _, s := range []string{"h0.example:443", fmt.Sprintf("h%d.example:443", pageEgressRows-1), `<td colspan="7" class="muted" id="egress-more">and 57 more</td>`} {
		if !strings.Contains(body, s) {
			t.Errorf("task page lacks %q", s)
		}
	}
	if strings.Contains(body, fmt.Sprintf("h%d.example", pageEgressRows)) {
		t.Errorf("task page shows row %d", pageEgressRows+1)
	}
}
