package web

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agentbot/agentbot"
	"github.com/agentbot/agentbot/internal/testtool"
	"github.com/agentbot/agentbot/state"
	"github.com/agentbot/agentbot/tasklog"
)

// dashboardWorld is a store with tasks in several states on two
// repositories, served by the pages.
type dashboardWorld struct {
	store   *state.Store
	srv     *httptest.Server
	running *agentbot.Task
	// polled is closed at the first JSON poll, after which the running
	// task moves on to the deliver phase.
	polled chan struct{}
}

func newDashboardWorld(t *testing.T, auth Auth) *dashboardWorld {
	t.Helper()
	dir := t.TempDir()
	st, err := state.Open(filepath.Join(dir, "agentbot.db"), state.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	logs, err := tasklog.Open(filepath.Join(dir, "logs"), 0)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	mk := func(repo string, n int, title string, to agentbot.TaskState, res agentbot.Result) *agentbot.Task {
		task := &agentbot.Task{Trigger: agentbot.Trigger{
			Kind: agentbot.KindNew, Issue: agentbot.IssueRef{Repo: agentbot.Repo{Owner: "octo", Name: repo}, Number: n},
			Prompt: agentbot.Prompt{Title: title}, Sender: agentbot.Sender{Login: "alice"},
		}}
		if _, err := st.CreateTask(ctx, repo+title, task); err != nil {
			t.Fatal(err)
		}
		if to == agentbot.StateQueued {
			return task
		}
		if _, err := st.Transition(ctx, task.ID, agentbot.StateQueued, agentbot.StateRunning, func(x *agentbot.Task) error { x.Phase = "agent"; return nil }); err != nil {
			t.Fatal(err)
		}
		if to != agentbot.StateRunning {
			if _, err := st.Transition(ctx, task.ID, agentbot.StateRunning, to, func(x *agentbot.Task) error { x.Result = res; return nil }); err != nil {
				t.Fatal(err)
			}
		}
		return task
	}
	w := &dashboardWorld{store: st, polled: make(chan struct{})}
	mk("demo", 1, "Add <b>hello</b>", agentbot.StateSucceeded, agentbot.Result{PRURL: "https://github.com/octo/demo/pull/7", CostUSD: 0.42})
	mk("demo", 2, "Break things", agentbot.StateFailed, agentbot.Result{Error: "the agent gave up"})
	mk("other", 3, "Waiting one", agentbot.StateQueued, agentbot.Result{})
	w.running = mk("demo", 4, "Still going", agentbot.StateRunning, agentbot.Result{})
	h, err := New(Options{Store: st, Logs: logs, Counter: st, Auth: auth})
	if err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	w.srv = httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		h.ServeHTTP(rw, r)
		if r.URL.Path == "/" && wantsJSON(r) {
			once.Do(func() {
				if _, err := st.Update(context.Background(), w.running.ID, func(x *agentbot.Task) error { x.Phase = "deliver"; return nil }); err != nil {
					t.Error(err)
				}
				close(w.polled)
			})
		}
	}))
	t.Cleanup(w.srv.Close)
	return w
}

func TestDashboardWithoutJavaScript(t *testing.T) {
	w := newDashboardWorld(t, Auth{BearerToken: "tok"})
	get := func(path, token string) (int, string) {
		req, _ := http.NewRequest(http.MethodGet, w.srv.URL+path, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var b strings.Builder
		_, _ = io.Copy(&b, resp.Body)
		return resp.StatusCode, b.String()
	}
	if status, _ := get("/", ""); status != http.StatusUnauthorized {
		t.Errorf("dashboard without the token answered %d", status)
	}
	tests := []struct {
		name, path string
		want, not  []string
	}{
		{"all", "/", []string{"Add &lt;b&gt;hello&lt;/b&gt;", "Break things", "Waiting one", "Still going", "$0.42", "https://github.com/octo/demo/pull/7", "the agent gave up", `href="https://github.com/octo/demo/issues/1"`}, []string{"<b>hello"}},
		{"by state", "/?state=failed", []string{"Break things"}, []string{"Still going", "Waiting one"}},
		{"by repository", "/?repo=octo/other", []string{"Waiting one"}, []string{"Break things"}},
		{"counts", "/", []string{`data-state="running" href="/?state=running"><span class="state running">running</span> <b>1</b>`, `<span class="state succeeded">succeeded</span> <b>1</b>`}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, body := get(tt.path, "tok")
			if status != 200 {
				t.Fatalf("%s: %d", tt.path, status)
			}
			for _, s := range tt.want {
				if !strings.Contains(body, s) {
					t.Errorf("%s lacks %q", tt.path, s)
				}
			}
			for _, s := range tt.not {
				if strings.Contains(body, s) {
					t.Errorf("%s has %q", tt.path, s)
				}
			}
		})
	}
}

// chromium runs headless Chromium on url with extra flags and returns its
// standard output.
func chromium(t *testing.T, bin, url string, flags ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	args := append([]string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
		"--user-data-dir=" + t.TempDir()}, flags...)
	cmd := exec.CommandContext(ctx, bin, append(args, url)...)
	cmd.Env = append(os.Environ(), "HOME="+t.TempDir())
	out, err := cmd.Output()
	if err != nil {
		var stderr string
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = string(ee.Stderr)
		}
		t.Fatalf("chromium %s: %v\n%s", url, err, stderr)
	}
	return string(out)
}

// TestDashboardInBrowser: in headless Chromium the dashboard lists the
// tasks, filters by state, and its script updates the running row's phase
// without a reload; a screenshot goes to the test's artifact directory.
func TestDashboardInBrowser(t *testing.T) {
	bin := testtool.Chromium(t)
	// The pages always take credentials; a browser sends basic auth
	// from the URL, and its script's requests carry them too.
	w := newDashboardWorld(t, Auth{BasicUser: "ops", BasicPassword: "pw"})
	base := strings.Replace(w.srv.URL, "http://", "http://ops:pw@", 1)

	dom := chromium(t, bin, base+"/?state=failed", "--virtual-time-budget=1000", "--dump-dom")
	if !strings.Contains(dom, "Break things") || strings.Contains(dom, "Still going") {
		t.Errorf("filtered DOM:\n%s", dom)
	}

	dom = chromium(t, bin, base+"/", "--virtual-time-budget=10000", "--dump-dom")
	select {
	case <-w.polled:
	default:
		t.Fatalf("the page's script never polled; DOM:\n%s", dom)
	}
	row := dom[strings.Index(dom, `data-task="`+w.running.ID+`"`):]
	row = row[:strings.Index(row, "</tr>")]
	if !strings.Contains(row, `<td class="phase">deliver</td>`) {
		t.Errorf("the running row was not updated live: %s", row)
	}
	for _, s := range []string{"Add &lt;b&gt;hello&lt;/b&gt;", "Waiting one", "$0.42"} {
		if !strings.Contains(dom, s) {
			t.Errorf("DOM lacks %q", s)
		}
	}

	shot := filepath.Join(t.ArtifactDir(), "dashboard.png")
	chromium(t, bin, base+"/", "--window-size=1280,720", "--screenshot="+shot)
	if fi, err := os.Stat(shot); err != nil || fi.Size() < 1000 {
		t.Errorf("screenshot %s: %v", shot, err)
	}
	t.Logf("screenshot: %s", shot)
}
