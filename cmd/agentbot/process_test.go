package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/agentbot/agentbot"
)

// buildAgentbot builds this command into a temporary directory.
func buildAgentbot(t *testing.T) string {
	t.Helper()
	goTool, err := exec.LookPath("go")
	if err != nil {
		goTool = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	bin := filepath.Join(t.TempDir(), "agentbot")
	cmd := exec.Command(goTool, "build", "-o", bin, ".")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// proc is a running `agentbot serve`.
type proc struct {
	cmd   *exec.Cmd
	addr  string
	mu    sync.Mutex
	lines []string
	done  chan struct{}
}

// startServe starts the binary and waits for its "listening" log line.
func startServe(t *testing.T, bin string, env []string) *proc {
	t.Helper()
	p := &proc{cmd: exec.Command(bin, "serve", "--listen", "127.0.0.1:0"), done: make(chan struct{})}
	p.cmd.Env = append(os.Environ(), env...)
	stderr, err := p.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		p.cmd.Process.Kill()
		<-p.done
	})
	addr := make(chan string, 1)
	go func() {
		defer close(p.done)
		defer p.cmd.Wait()
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			line := sc.Text()
			p.mu.Lock()
			p.lines = append(p.lines, line)
			p.mu.Unlock()
			var rec struct {
				Msg  string `json:"msg"`
				Addr string `json:"addr"`
			}
			if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == "listening" {
				addr <- rec.Addr
			}
		}
		close(addr)
	}()
	a, ok := <-addr
	if !ok {
		t.Fatalf("agentbot serve exited before listening:\n%s", p.log())
	}
	p.addr = "http://" + a
	return p
}

func (p *proc) log() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.Join(p.lines, "\n")
}

// tasksJSON runs `agentbot tasks --json --limit 0` on dataDir.
func tasksJSON(t *testing.T, bin string, env []string) []agentbot.Task {
	t.Helper()
	cmd := exec.Command(bin, "tasks", "--json", "--limit", "0")
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("agentbot tasks: %v\n%s", err, out)
	}
	var tasks []agentbot.Task
	if err := json.Unmarshal(out, &tasks); err != nil {
		t.Fatalf("agentbot tasks output: %v\n%s", err, out)
	}
	return tasks
}

// TestProcessSurvivesSIGKILL runs the real binary: deliveries are sent from
// several senders, the server is SIGKILLed while requests are in flight, and
// every delivery it acknowledged must be stored exactly once after the
// crash; a restarted server on the same data dir must still refuse their
// redeliveries, and stop cleanly on SIGTERM.
func TestProcessSurvivesSIGKILL(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := buildAgentbot(t)
	dir := t.TempDir()
	secret := writeFile(t, dir, "secret", testSecret+"\n")
	env := []string{
		"AGENTBOT_DATA_DIR=" + filepath.Join(dir, "data"),
		"AGENTBOT_WEBHOOK_SECRET_FILE=" + secret,
		"AGENTBOT_STORE_TIMEOUT=200ms",
	}
	p := startServe(t, bin, env)

	// A second process on the same data dir fails fast and says why.
	second := exec.Command(bin, "serve", "--listen", "127.0.0.1:0")
	second.Env = append(os.Environ(), env...)
	out, err := second.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "database is locked by another agentbot") {
		t.Errorf("second serve: %v\n%s", err, out)
	}

	const senders, perSender, killAfter = 8, 40, 60
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: senders}}
	var (
		mu     sync.Mutex
		acked  = map[string]bool{}
		sent   = map[string]bool{}
		killed sync.Once
		wg     sync.WaitGroup
	)
	for s := range senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range perSender {
				id := fmt.Sprintf("kill-%d-%d", s, i)
				mu.Lock()
				sent[id] = true
				mu.Unlock()
				status, _, err := deliver(t, client, p.addr, id, labeledPayload(s*1000+i+1))
				if err != nil {
					return // the server is gone
				}
				if status != http.StatusAccepted {
					t.Errorf("delivery %s: status %d", id, status)
					return
				}
				mu.Lock()
				acked[id] = true
				n := len(acked)
				mu.Unlock()
				if n >= killAfter {
					killed.Do(func() { p.cmd.Process.Signal(syscall.SIGKILL) })
				}
			}
		}()
	}
	wg.Wait()
	<-p.done
	if len(acked) < killAfter {
		t.Fatalf("only %d deliveries acknowledged before the kill:\n%s", len(acked), p.log())
	}
	if len(acked) == senders*perSender {
		t.Logf("every delivery was acknowledged before the kill took effect")
	}

	// Nothing acknowledged was lost; nothing is stored twice.
	tasks := tasksJSON(t, bin, env)
	byDelivery := map[string]int{}
	for _, task := range tasks {
		byDelivery[task.DeliveryID]++
	}
	for id := range acked {
		if byDelivery[id] != 1 {
			t.Errorf("acknowledged delivery %s has %d tasks after SIGKILL", id, byDelivery[id])
		}
	}
	for id, n := range byDelivery {
		if !sent[id] || n != 1 {
			t.Errorf("delivery %s: %d tasks (sent: %v)", id, n, sent[id])
		}
	}
	t.Logf("%d acknowledged, %d stored (the difference committed but was not answered before the kill)", len(acked), len(tasks))

	// Restart on the same data dir: redeliveries dedupe, new ones are stored.
	p2 := startServe(t, bin, env)
	for id := range sent {
		status, body, err := deliver(t, client, p2.addr, id, labeledPayload(1))
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case byDelivery[id] == 1 && status != http.StatusOK:
			t.Errorf("redelivery of stored %s: %d %q, want 200", id, status, body)
		case byDelivery[id] == 0 && status != http.StatusAccepted:
			t.Errorf("first delivery of unstored %s: %d %q, want 202", id, status, body)
		}
	}
	if status, body, _ := deliver(t, client, p2.addr, "after-restart", labeledPayload(1)); status != http.StatusAccepted {
		t.Errorf("new delivery after restart: %d %q", status, body)
	}

	// SIGTERM: graceful stop, exit status 0.
	if err := p2.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	<-p2.done
	if code := p2.cmd.ProcessState.ExitCode(); code != 0 {
		t.Errorf("exit code after SIGTERM = %d\n%s", code, p2.log())
	}
	if !strings.Contains(p2.log(), `"msg":"stopped"`) {
		t.Errorf("no stopped line:\n%s", p2.log())
	}
	final := tasksJSON(t, bin, env)
	if len(final) != len(sent)+1 {
		t.Errorf("%d tasks at the end, want one per delivery (%d)", len(final), len(sent)+1)
	}
	if strings.Contains(p.log()+p2.log(), testSecret) {
		t.Error("the secret appears in the logs")
	}
}
