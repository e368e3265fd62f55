// Command agentbot-load drives a running `agentbot serve` with signed webhook
// deliveries over HTTP, from a separate process, at several levels of
// concurrency, and prints latency percentiles and throughput of acknowledged
// (202) deliveries. scripts/bench-intake.sh builds and runs it.
//
//	agentbot-load -url http://127.0.0.1:8080/webhook -secret-file S [-payload F -event E]
//	              [-concurrency 1,16,64] [-rate N] [-duration 10s] [-warmup 1s] [-acked-file F]
//	              [-expect 202] [-cpu-pid PID]
//
// A delivery counts as acknowledged when answered with the -expect status
// (202, a stored task, by default; scripts/bench-peer.sh also counts
// agentbot's 204 for a comment without a command and another server's 200).
// With -cpu-pid the table adds the CPU time (user+system) that process used
// in the measured window per acknowledged delivery.
//
// Without -rate each sender sends its next delivery as soon as the last is
// answered (closed loop: the throughput the server sustains, and the latency
// at that saturation). With -rate the senders together send N deliveries a
// second on a fixed schedule (open loop), and latency is measured from each
// delivery's scheduled time, so a stalled server is not hidden by senders
// that stop sending while they wait.
//
//	agentbot tasks --json --limit 0 | agentbot-load verify -acked-file F
//
// verify checks that every delivery the server acknowledged is in the store
// (read after the server was SIGKILLed), i.e. that a 202 meant "durable".
package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

func main() {
	var err error
	if len(os.Args) > 1 && os.Args[1] == "verify" {
		err = verify(os.Args[2:], os.Stdin, os.Stdout)
	} else {
		err = drive(os.Args[1:], os.Stdout)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "agentbot-load:", err)
		os.Exit(1)
	}
}

// defaultPayload is an issue_comment.created delivery with an /agent
// command, smaller than GitHub's (which also carries full user and
// repository objects); -payload sends a real-sized one.
const defaultPayload = `{"action":"created","issue":{"number":1,"title":"Spelling error in the README file","body":"It looks like you accidently spelled 'commit' with two 't's.","user":{"login":"Codertocat","id":21031067,"type":"User"}},` +
	`"comment":{"id":492700400,"body":"/agent fix the typo","author_association":"OWNER","user":{"login":"Codertocat","id":21031067,"type":"User"}},` +
	`"repository":{"id":186853002,"name":"Hello-World","full_name":"Codertocat/Hello-World","owner":{"login":"Codertocat","id":21031067,"type":"User"}},` +
	`"installation":{"id":1},"sender":{"login":"Codertocat","id":21031067,"type":"User"}}`

type config struct {
	url         string
	secret      []byte
	event       string
	body        []byte
	concurrency []int
	rate        float64
	duration    time.Duration
	warmup      time.Duration
	ackedFile   string
	expect      int
	cpuPID      int
}

func drive(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("agentbot-load", flag.ContinueOnError)
	url := fs.String("url", "", "webhook URL of the server under test")
	secretFile := fs.String("secret-file", "", "file holding the webhook secret")
	payloadFile := fs.String("payload", "", "file holding the delivery body (default: a small /agent comment)")
	event := fs.String("event", "issue_comment", "X-GitHub-Event of the payload")
	levels := fs.String("concurrency", "1,16,64", "comma-separated numbers of concurrent senders")
	rate := fs.Float64("rate", 0, "deliveries per second across all senders (0: each sender sends as fast as answered)")
	duration := fs.Duration("duration", 10*time.Second, "measured time per level")
	warmup := fs.Duration("warmup", time.Second, "unmeasured time before each level")
	ackedFile := fs.String("acked-file", "", "append the delivery ID of every acknowledged delivery here, for verify")
	expect := fs.Int("expect", http.StatusAccepted, "the status that acknowledges a delivery")
	cpuPID := fs.Int("cpu-pid", 0, "report this process's CPU time per acknowledged delivery")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg := config{url: *url, event: *event, rate: *rate, duration: *duration, warmup: *warmup, ackedFile: *ackedFile, body: []byte(defaultPayload),
		expect: *expect, cpuPID: *cpuPID}
	if cfg.url == "" || *secretFile == "" {
		return errors.New("-url and -secret-file are required")
	}
	secret, err := os.ReadFile(*secretFile)
	if err != nil {
		return err
	}
	cfg.secret = bytes.TrimRight(secret, "\r\n")
	if *payloadFile != "" {
		if cfg.body, err = os.ReadFile(*payloadFile); err != nil {
			return err
		}
	}
	for _, l := range strings.Split(*levels, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(l))
		if err != nil || n < 1 {
			return fmt.Errorf("-concurrency: %q is not a positive number", l)
		}
		cfg.concurrency = append(cfg.concurrency, n)
	}

	var acked io.Writer = io.Discard
	if cfg.ackedFile != "" {
		f, err := os.OpenFile(cfg.ackedFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
		if err != nil {
			return err
		}
		defer f.Close()
		bw := bufio.NewWriter(f)
		defer bw.Flush()
		acked = bw
	}

	mode := "closed loop: each sender sends when answered"
	if cfg.rate > 0 {
		mode = fmt.Sprintf("open loop: %.0f deliveries/s in total, latency from the scheduled send time", cfg.rate)
	}
	fmt.Fprintf(stdout, "%s\n", mode)
	fmt.Fprintf(stdout, "%8s %8s %8s %6s %9s %9s %9s %9s %9s", "senders", "sent", "acked", "other", "acked/s", "p50", "p90", "p99", "max")
	if cfg.cpuPID > 0 {
		fmt.Fprintf(stdout, " %10s", "cpu/acked")
	}
	fmt.Fprintln(stdout)
	runID := time.Now().UnixNano()
	for _, n := range cfg.concurrency {
		r, err := runLevel(&cfg, n, fmt.Sprintf("load-%d-%d", runID, n), acked)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "%8d %8d %8d %6d %9.0f %9s %9s %9s %9s", n, r.sent, len(r.latencies), r.other,
			float64(len(r.latencies))/r.elapsed.Seconds(),
			ms(percentile(r.latencies, 50)), ms(percentile(r.latencies, 90)), ms(percentile(r.latencies, 99)), ms(percentile(r.latencies, 100)))
		if cfg.cpuPID > 0 {
			perAcked := "-"
			if len(r.latencies) > 0 {
				perAcked = fmt.Sprintf("%.3fms", float64(r.cpu)/float64(time.Millisecond)/float64(len(r.latencies)))
			}
			fmt.Fprintf(stdout, " %10s", perAcked)
		}
		fmt.Fprintln(stdout)
	}
	return nil
}

type levelResult struct {
	sent      int
	other     int
	latencies []time.Duration // of acknowledged deliveries in the measured window
	elapsed   time.Duration
	cpu       time.Duration // of cfg.cpuPID in the measured window
}

// runLevel runs n senders for warmup+duration, each sending one delivery
// at a time, and measures the window after the warm-up. With a rate, sender
// w sends its i-th delivery at start + (i + w/n) * n/rate, or as soon as its
// previous one is answered if that is later.
func runLevel(cfg *config, n int, prefix string, acked io.Writer) (levelResult, error) {
	client := &http.Client{
		Timeout:   10 * time.Second,
		Transport: &http.Transport{MaxIdleConnsPerHost: n, MaxConnsPerHost: n, DisableCompression: true},
	}
	defer client.CloseIdleConnections()
	sig := sign(cfg.secret, cfg.body)
	start := time.Now()
	measureFrom := start.Add(cfg.warmup)
	ctx, cancel := context.WithDeadline(context.Background(), measureFrom.Add(cfg.duration))
	defer cancel()

	var (
		mu      sync.Mutex
		res     levelResult
		firstEr error
		wg      sync.WaitGroup
	)
	for w := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var lat []time.Duration
			var ids []string
			sent, other := 0, 0
			var interval time.Duration
			if cfg.rate > 0 {
				interval = time.Duration(float64(n) / cfg.rate * float64(time.Second))
			}
			for i := 0; ctx.Err() == nil; i++ {
				id := fmt.Sprintf("%s-%d-%d", prefix, w, i)
				t0 := time.Now()
				if interval > 0 {
					t0 = start.Add(time.Duration(i)*interval + time.Duration(w)*interval/time.Duration(n))
					if wait := time.Until(t0); wait > 0 {
						select {
						case <-time.After(wait):
						case <-ctx.Done():
						}
						if ctx.Err() != nil {
							break
						}
					}
				}
				// Requests started before the deadline run to their end, so a
				// slow last request is measured rather than cancelled.
				req, err := http.NewRequest(http.MethodPost, cfg.url, bytes.NewReader(cfg.body))
				if err != nil {
					mu.Lock()
					firstEr = cmp(firstEr, err)
					mu.Unlock()
					return
				}
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set("X-GitHub-Event", cfg.event)
				req.Header.Set("X-GitHub-Delivery", id)
				req.Header.Set("X-Hub-Signature-256", sig)
				resp, err := client.Do(req)
				if err != nil {
					other++
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				d := time.Since(t0)
				measured := t0.After(measureFrom)
				if measured {
					sent++
				}
				if resp.StatusCode != cfg.expect {
					if measured {
						other++
					}
					continue
				}
				ids = append(ids, id)
				if measured {
					lat = append(lat, d)
				}
			}
			mu.Lock()
			defer mu.Unlock()
			res.sent += sent
			res.other += other
			res.latencies = append(res.latencies, lat...)
			for _, id := range ids {
				fmt.Fprintln(acked, id)
			}
		}()
	}
	var cpuStart time.Duration
	var cpuErr error
	if cfg.cpuPID > 0 {
		time.Sleep(time.Until(measureFrom))
		cpuStart, cpuErr = processCPU(cfg.cpuPID)
	}
	wg.Wait()
	res.elapsed = time.Since(measureFrom)
	if cfg.cpuPID > 0 && cpuErr == nil {
		var end time.Duration
		end, cpuErr = processCPU(cfg.cpuPID)
		res.cpu = end - cpuStart
	}
	if cpuErr != nil {
		firstEr = cmp(firstEr, cpuErr)
	}
	slices.Sort(res.latencies)
	return res, firstEr
}

// userHZ is the unit of /proc/PID/stat's times: USER_HZ, 100 on every
// Linux architecture Go supports.
const userHZ = 100

// processCPU is the user+system time a process has used, from fields 14
// and 15 of /proc/PID/stat (counted after the command name, which may hold
// spaces and parentheses).
func processCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("read CPU time of process %d: %w", pid, err)
	}
	i := bytes.LastIndexByte(b, ')')
	var f []string
	if i >= 0 {
		f = strings.Fields(string(b[i+1:]))
	}
	if len(f) < 13 {
		return 0, fmt.Errorf("process %d: unexpected /proc stat %q", pid, b)
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("process %d: /proc stat times: %w", pid, err)
	}
	return time.Duration(utime+stime) * time.Second / userHZ, nil
}

func cmp(first, err error) error {
	if first != nil {
		return first
	}
	return err
}

func sign(secret, body []byte) string {
	mac := hmac.New(sha256.New, secret)
	mac.Write(body)
	return "sha256=" + hex.EncodeToString(mac.Sum(nil))
}

// percentile of sorted latencies, nearest rank.
func percentile(sorted []time.Duration, p int) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := (len(sorted)*p + 99) / 100
	return sorted[min(max(i-1, 0), len(sorted)-1)]
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2fms", float64(d)/float64(time.Millisecond)) }

// verify reads `agentbot tasks --json` on stdin and checks every delivery
// ID in the acked file has a task.
func verify(args []string, stdin io.Reader, stdout io.Writer) error {
	fs := flag.NewFlagSet("agentbot-load verify", flag.ContinueOnError)
	ackedFile := fs.String("acked-file", "", "delivery IDs acknowledged during the run")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var tasks []struct {
		DeliveryID string `json:"delivery_id"`
	}
	if err := json.NewDecoder(stdin).Decode(&tasks); err != nil {
		return fmt.Errorf("read tasks: %w", err)
	}
	stored := make(map[string]int, len(tasks))
	for _, t := range tasks {
		stored[t.DeliveryID]++
	}
	f, err := os.Open(*ackedFile)
	if err != nil {
		return err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	acked, missing, doubled := 0, 0, 0
	for sc.Scan() {
		acked++
		switch stored[sc.Text()] {
		case 0:
			missing++
			if missing <= 5 {
				fmt.Fprintf(stdout, "missing: %s\n", sc.Text())
			}
		case 1:
		default:
			doubled++
		}
	}
	if err := sc.Err(); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "verify: %d acknowledged deliveries, %d tasks stored, %d acknowledged but missing, %d stored twice\n", acked, len(tasks), missing, doubled)
	if missing > 0 || doubled > 0 {
		return errors.New("an acknowledged delivery was lost or duplicated")
	}
	return nil
}
