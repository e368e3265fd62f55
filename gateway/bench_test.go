package gateway

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The benchmarks compare the same work direct and through the gateway as
// the sandbox reaches it (a loopback port forwarded to the task's unix
// socket, then the gateway's own outbound connection). docs/benchmarks.md
// has the figures.

const downloadSize = 200 << 20

// BenchmarkDownload: a 200 MB HTTPS download, direct and through a
// CONNECT tunnel; compare the MB/s.
func BenchmarkDownload(b *testing.B) {
	chunk := make([]byte, 1<<20)
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(downloadSize))
		for range downloadSize / len(chunk) {
			if _, err := w.Write(chunk); err != nil {
				return
			}
		}
	}))
	defer srv.Close()
	p := port(b, srv)
	g := newGateway(b, Options{Resolver: hosts{"dl.test": "127.0.0.1"}, AllowCIDRs: loopback})
	_, proxy := openTask(b, g, TaskSpec{Allow: AllowList{{Host: "dl.test", Port: p}}})
	_, tcpProxy := openTCPTask(b, g, TaskSpec{Allow: AllowList{{Host: "dl.test", Port: p}}})
	run := func(b *testing.B, c *http.Client, u string) {
		b.SetBytes(downloadSize)
		for b.Loop() {
			resp, err := c.Get(u)
			if err != nil {
				b.Fatal(err)
			}
			n, err := io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if err != nil || n != downloadSize {
				b.Fatalf("read %d bytes: %v", n, err)
			}
		}
	}
	b.Run("direct", func(b *testing.B) {
		c := srv.Client()
		run(b, c, srv.URL)
	})
	b.Run("gateway", func(b *testing.B) {
		run(b, proxyClient(b, proxy, srv), fmt.Sprintf("https://dl.test:%d/", p))
	})
	b.Run("gateway-tcp", func(b *testing.B) {
		run(b, proxyClient(b, tcpProxy, srv), fmt.Sprintf("https://dl.test:%d/", p))
	})
}

// openTCPTask opens a task as a Kubernetes pod reaches it: the gateway's
// shared TCP listener, and ForwardTCP with the task's capability on a
// loopback port (agent-runner's 127.0.0.1:3128 in the pod). It returns the
// proxy URL.
func openTCPTask(b testing.TB, g *Gateway, spec TaskSpec) (*Task, string) {
	b.Helper()
	if spec.TaskID == "" {
		spec.TaskID = "tcp1"
	}
	task := openShared(b, g, spec)
	return task, forwardTCP(b, serveTCP(b, g), task.Key())
}

// BenchmarkConnectLatency: 1,000 small exchanges on fresh connections,
// direct and each through its own CONNECT; reports the p50 and p99 of
// both and the p99 the gateway adds.
func BenchmarkConnectLatency(b *testing.B) {
	echo, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer echo.Close()
	go func() {
		for {
			c, err := echo.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				buf := make([]byte, 64)
				n, _ := c.Read(buf)
				_, _ = c.Write(buf[:n])
			}()
		}
	}()
	p := echo.Addr().(*net.TCPAddr).Port
	g := newGateway(b, Options{Resolver: hosts{"echo.test": "127.0.0.1"}, AllowCIDRs: loopback})
	_, socketProxy := openTask(b, g, TaskSpec{Allow: AllowList{{Host: "echo.test", Port: p}}})
	_, tcpProxy := openTCPTask(b, g, TaskSpec{Allow: AllowList{{Host: "echo.test", Port: p}}})
	exchange := func(c io.ReadWriter) {
		if _, err := c.Write([]byte("ping")); err != nil {
			b.Fatal(err)
		}
		buf := make([]byte, 4)
		if _, err := io.ReadFull(c, buf); err != nil {
			b.Fatal(err)
		}
	}
	direct := func() {
		c, err := net.Dial("tcp", echo.Addr().String())
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		exchange(c)
	}
	tunnel := func(proxyAddr string) {
		c, err := net.Dial("tcp", proxyAddr)
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		fmt.Fprintf(c, "CONNECT echo.test:%d HTTP/1.1\r\nHost: echo.test:%d\r\n\r\n", p, p)
		br := bufio.NewReader(c)
		resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
		if err != nil || resp.StatusCode != http.StatusOK {
			b.Fatalf("CONNECT: %v %v", resp, err)
		}
		exchange(struct {
			io.Reader
			io.Writer
		}{br, c})
	}
	for _, path := range []struct{ name, proxy string }{{"socket", socketProxy}, {"tcp", tcpProxy}} {
		addr := strings.TrimPrefix(path.proxy, "http://")
		b.Run(path.name, func(b *testing.B) {
			compare(b, 1000, timed(direct), timed(func() { tunnel(addr) }))
		})
	}
}

func timed(f func()) func() time.Duration {
	return func() time.Duration {
		start := time.Now()
		f()
		return time.Since(start)
	}
}

// compare takes n timings of each, interleaved so that the machine's load
// falls on both alike, and reports their percentiles.
func compare(b *testing.B, n int, direct, through func() time.Duration) {
	var d, g []time.Duration
	for b.Loop() {
		for range n {
			d = append(d, direct())
			g = append(g, through())
		}
	}
	us := func(x time.Duration) float64 { return float64(x.Nanoseconds()) / 1e3 }
	b.ReportMetric(us(pct(d, 50)), "direct-p50-µs")
	b.ReportMetric(us(pct(d, 99)), "direct-p99-µs")
	b.ReportMetric(us(pct(g, 50)), "gateway-p50-µs")
	b.ReportMetric(us(pct(g, 99)), "gateway-p99-µs")
	b.ReportMetric(us(pct(g, 99)-pct(d, 99)), "added-p99-µs")
}

func pct(s []time.Duration, p int) time.Duration {
	s = slices.Clone(s)
	slices.Sort(s)
	return s[(len(s)-1)*p/100]
}

// BenchmarkModelFirstByte: the time to the first streamed byte of a model
// answer, direct and through the model relay.
func BenchmarkModelFirstByte(b *testing.B) {
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprint(w, "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"model\":\"m\",\"usage\":{\"input_tokens\":1,\"output_tokens\":1}}}\n\n")
		w.(http.Flusher).Flush()
		time.Sleep(time.Millisecond) // the rest of the answer comes later
		fmt.Fprint(w, "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n")
	}))
	defer api.Close()
	u, _ := url.Parse(api.URL)
	g := newGateway(b, Options{Model: ModelOptions{AnthropicURL: u, AnthropicKey: "k"}})
	task, proxy := openTask(b, g, TaskSpec{})
	tcpTask, tcpProxy := openTCPTask(b, g, TaskSpec{})
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4}}
	const body = `{"model":"m","stream":true,"max_tokens":1,"messages":[]}`
	firstByte := func(u, key string) time.Duration {
		req, _ := http.NewRequest(http.MethodPost, u, strings.NewReader(body))
		req.Header.Set("X-Api-Key", key)
		start := time.Now()
		resp, err := client.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		defer resp.Body.Close()
		if _, err := resp.Body.Read(make([]byte, 1)); err != nil {
			b.Fatal(err)
		}
		took := time.Since(start)
		if rest, err := io.ReadAll(resp.Body); err != nil || !strings.Contains(string(rest), "message_stop") {
			b.Fatalf("the answer after its first byte: %q, %v", rest, err)
		}
		return took
	}
	for _, path := range []struct{ name, proxy, key string }{{"socket", proxy, task.Key()}, {"tcp", tcpProxy, tcpTask.Key()}} {
		b.Run(path.name, func(b *testing.B) {
			compare(b, 1000,
				func() time.Duration { return firstByte(api.URL+"/v1/messages", "k") },
				func() time.Duration { return firstByte(path.proxy+"/anthropic/v1/messages", path.key) })
		})
	}
}
