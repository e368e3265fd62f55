package main

import (
	"fmt"
	"io"
	"os"
	"sync"
	"time"
)

// statusLine prints progress: on a terminal, a status line redrawn every
// second with the phase and elapsed time under the scrolling output;
// elsewhere, plain lines.
type statusLine struct {
	w     io.Writer
	tty   bool
	start time.Time

	mu     sync.Mutex
	cur    string
	extra  string
	shown  bool
	stop   chan struct{}
	ticker sync.WaitGroup
}

func newStatusLine(w io.Writer) *statusLine {
	s := &statusLine{w: w, start: time.Now(), stop: make(chan struct{})}
	if f, ok := w.(*os.File); ok {
		if fi, err := f.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 && os.Getenv("TERM") != "dumb" {
			s.tty = true
		}
	}
	if s.tty {
		s.ticker.Add(1)
		go func() {
			defer s.ticker.Done()
			t := time.NewTicker(time.Second)
			defer t.Stop()
			for {
				select {
				case <-s.stop:
					return
				case <-t.C:
					s.mu.Lock()
					s.redraw()
					s.mu.Unlock()
				}
			}
		}()
	}
	return s
}

func (s *statusLine) elapsed() string {
	d := time.Since(s.start).Round(time.Second)
	return fmt.Sprintf("%02d:%02d", int(d.Minutes()), int(d.Seconds())%60)
}

// redraw draws the status line; callers hold mu.
func (s *statusLine) redraw() {
	if !s.tty || s.cur == "" {
		return
	}
	line := fmt.Sprintf("⏱ %s  %s", s.elapsed(), s.cur)
	if s.extra != "" {
		line += " · " + s.extra
	}
	if len(line) > 120 {
		line = line[:120]
	}
	fmt.Fprintf(s.w, "\r\033[K%s", line)
	s.shown = true
}

func (s *statusLine) clear() {
	if s.shown {
		fmt.Fprint(s.w, "\r\033[K")
		s.shown = false
	}
}

func (s *statusLine) printf(format string, args ...any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.clear()
	fmt.Fprintf(s.w, format+"\n", args...)
	s.redraw()
}

func (s *statusLine) phase(p string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.clear()
	fmt.Fprintf(s.w, "▸ [%s] %s\n", s.elapsed(), p)
	s.cur, s.extra = p, ""
	s.redraw()
}

func (s *statusLine) detail(d string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.extra = d
	s.redraw()
}

func (s *statusLine) close() {
	close(s.stop)
	s.ticker.Wait()
	s.mu.Lock()
	s.clear()
	s.mu.Unlock()
}
