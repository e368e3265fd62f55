package webhook

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/agentbot/agentbot/state"
)

// BenchmarkParse is the pure trigger decision for each kind of delivery.
func BenchmarkParse(b *testing.B) {
	for _, s := range seedFiles {
		body := payload(b, s.file)
		b.Run(strings.TrimSuffix(s.file, ".json"), func(b *testing.B) {
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := Parse(s.event, body, ParseOptions{}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkParseComment(b *testing.B) {
	body := strings.Repeat("Some discussion of the change.\n> quoted /agent line\n", 20) +
		"```\n/agent inside a fence\n```\n/agent fix the flaky test\nand keep the diff small"
	b.ReportAllocs()
	for b.Loop() {
		if !ParseComment(body).Found {
			b.Fatal("no command")
		}
	}
}

// BenchmarkIntake is one delivery through the handler: body read, HMAC
// check, parse, and the durable (fsynced) commit of its task to a real bbolt
// file, without the network. senders=64 shows group commit at work.
func BenchmarkIntake(b *testing.B) {
	for _, senders := range []int{1, 64} {
		b.Run(fmt.Sprintf("senders=%d", senders), func(b *testing.B) {
			store, err := state.Open(filepath.Join(b.TempDir(), "bench.db"), state.Options{})
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { store.Close() })
			h, err := New(Config{Secret: secret, Store: store, Logger: slog.New(slog.NewJSONHandler(io.Discard, nil))})
			if err != nil {
				b.Fatal(err)
			}
			body := payload(b, "issue_comment.created.issue.json")
			sig := Signature(secret, body)
			var seq atomic.Int64
			one := func() {
				req := httptest.NewRequest(http.MethodPost, "/webhook", bytes.NewReader(body))
				req.Header.Set("X-GitHub-Event", "issue_comment")
				req.Header.Set("X-GitHub-Delivery", fmt.Sprintf("bench-%d", seq.Add(1)))
				req.Header.Set("X-Hub-Signature-256", sig)
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, req)
				if rec.Code != http.StatusAccepted {
					b.Errorf("status %d: %s", rec.Code, rec.Body)
				}
			}
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			if senders == 1 {
				for b.Loop() {
					one()
				}
				return
			}
			b.SetParallelism(max(1, senders/runtime.GOMAXPROCS(0)))
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					one()
				}
			})
		})
	}
}

// BenchmarkIntakeHTTP is BenchmarkIntake through a real HTTP server on
// loopback (the client in the same process), so that a CPU profile
// (-cpuprofile) shows the whole server side of a delivery, net/http
// included; scripts/bench-peer.sh measures the same from outside.
func BenchmarkIntakeHTTP(b *testing.B) {
	for _, tc := range []struct {
		name, comment string
		want          int
	}{
		{"agent", "", http.StatusAccepted},
		{"noncommand", "Thanks, no command here.", http.StatusNoContent},
	} {
		b.Run(tc.name, func(b *testing.B) {
			store, err := state.Open(filepath.Join(b.TempDir(), "bench.db"), state.Options{})
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { store.Close() })
			h, err := New(Config{Secret: secret, Store: store, Logger: slog.New(slog.NewJSONHandler(io.Discard, nil))})
			if err != nil {
				b.Fatal(err)
			}
			srv := httptest.NewServer(h)
			b.Cleanup(srv.Close)
			body := payload(b, "issue_comment.created.issue.json")
			if tc.comment != "" {
				body = payload(b, "issue_comment.created.issue.json", set("comment.body", tc.comment))
			}
			sig := Signature(secret, body)
			client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
			b.Cleanup(client.CloseIdleConnections)
			var seq atomic.Int64
			b.SetBytes(int64(len(body)))
			b.SetParallelism(max(1, 64/runtime.GOMAXPROCS(0)))
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					req, _ := http.NewRequest(http.MethodPost, srv.URL, bytes.NewReader(body))
					req.Header.Set("X-GitHub-Event", "issue_comment")
					req.Header.Set("X-GitHub-Delivery", fmt.Sprintf("bench-%d", seq.Add(1)))
					req.Header.Set("X-Hub-Signature-256", sig)
					resp, err := client.Do(req)
					if err != nil {
						b.Error(err)
						return
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != tc.want {
						b.Errorf("status %d, want %d", resp.StatusCode, tc.want)
					}
				}
			})
		})
	}
}
