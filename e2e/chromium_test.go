package e2e

import (
	"context"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/agentbot/agentbot"
	"github.com/agentbot/agentbot/internal/testtool"
)

// dumpDOM renders url in headless Chromium, lets its scripts run for a
// moment of virtual time, and returns the resulting DOM.
func dumpDOM(t *testing.T, bin, url string) string {
	return dumpDOMBudget(t, bin, url, 3000)
}

func dumpDOMBudget(t *testing.T, bin, url string, budgetMS int) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "--headless", "--no-sandbox", "--disable-gpu",
		"--disable-quic", "--no-first-run", "--disable-background-networking",
		"--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
		"--user-data-dir="+t.TempDir(), "--virtual-time-budget="+strconv.Itoa(budgetMS), "--dump-dom", url)
	cmd.Env = append(os.Environ(), "HOME="+t.TempDir())
	out, err := cmd.Output()
	if err != nil {
		var stderr string
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = string(ee.Stderr)
		}
		t.Fatalf("chromium --dump-dom %s: %v\n%s", url, err, stderr)
	}
	return string(out)
}

// TestTaskPageInBrowser renders the task list and a finished task's page in
// headless Chromium: state, timeline, result links and the log are there.
func TestTaskPageInBrowser(t *testing.T) {
	bin := testtool.Chromium(t)
	w := newWorld(t)
	b := w.start()
	b.deliver("issues", w.issue(9, "Add <docs>", "scripted: stdout writing docs; write docs.md # Docs; summary Added docs.md"))
	task := b.taskFor(9, agentbot.KindNew)
	page := b.waitDone(task.ID, 60*time.Second)
	if page.Task.State != agentbot.StateSucceeded {
		t.Fatalf("task ended %s: %+v", page.Task.State, page.Result)
	}

	dom := dumpDOM(t, bin, b.browserURL("/tasks/"+task.ID))
	for _, want := range []string{
		`id="state" class="state succeeded"`,
		"Add &lt;docs&gt;", // the title, escaped
		page.Result.PRURL,
		page.Result.Branch,
		"writing docs", // a log line
		"Added docs.md",
		"<td>agent</td>", // a timeline row
	} {
		if !strings.Contains(dom, want) {
			t.Errorf("task page lacks %q", want)
		}
	}
	if t.Failed() {
		t.Logf("DOM:\n%s", dom)
	}
	list := dumpDOM(t, bin, b.browserURL("/tasks"))
	if !strings.Contains(list, `data-task="`+task.ID+`"`) || !strings.Contains(list, "octo/widgets#9") {
		t.Errorf("task list lacks the task:\n%s", list)
	}
}

// TestLiveLogInBrowser opens a running task's page: its script follows the
// log over server-sent events, so lines the agent prints after the page
// loaded appear, and the page notices the end.
func TestLiveLogInBrowser(t *testing.T) {
	bin := testtool.Chromium(t)
	w := newWorld(t)
	b := w.start()
	b.deliver("issues", w.issue(10, "Slow docs", "scripted: stdout early line; sleep 2; stdout late line; write docs.md x"))
	task := b.taskFor(10, agentbot.KindNew)
	eventually(t, 30*time.Second, "the agent phase", func() bool { return b.task(task.ID).Task.Phase == "agent" })
	dom := dumpDOMBudget(t, bin, b.browserURL("/tasks/"+task.ID), 15000)
	for _, want := range []string{"early line", "late line", "(finished"} {
		if !strings.Contains(dom, want) {
			t.Errorf("live page lacks %q", want)
		}
	}
	if t.Failed() {
		t.Logf("DOM:\n%s", dom)
	}
}
