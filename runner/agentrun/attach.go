package agentrun

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/agentbot/agentbot/runner"
)

// PollInterval is how often Attach looks for new events.
const PollInterval = 100 * time.Millisecond

// ErrRunnerGone is returned by Attach when no agent-runner holds the
// workspace and none recorded an exit code: it died (or never started).
var ErrRunnerGone = errors.New("runner is gone")

// ErrNoBundle is returned by WriteBundle when the workspace holds no bundle.
var ErrNoBundle = errors.New("no result bundle")

// Attach writes to w, verbatim, the events of the workspace's events file
// whose seq is greater than from, then follows the file while agent-runner
// still appends to it. Once agent-runner has finished it returns the exit
// code agent-runner recorded. When agent-runner is gone without recording
// one, it returns runner.ExitInternal and ErrRunnerGone after writing every
// event there is.
func Attach(ctx context.Context, ws Workspace, from int, w io.Writer) (int, error) {
	t := &tail{path: ws.EventsFile(), from: from, w: w}
	defer t.close()
	for {
		// Order matters: the exit code is written after the last event, and
		// the lock is released after the exit code.
		code, done, err := ws.readExitCode()
		if err != nil {
			return runner.ExitInternal, err
		}
		if done {
			return code, t.poll()
		}
		if !ws.running() {
			if code, done, err := ws.readExitCode(); err != nil || done {
				if err != nil {
					return runner.ExitInternal, err
				}
				return code, t.poll()
			}
			if err := t.poll(); err != nil {
				return runner.ExitInternal, err
			}
			return runner.ExitInternal, ErrRunnerGone
		}
		if err := t.poll(); err != nil {
			return runner.ExitInternal, err
		}
		select {
		case <-ctx.Done():
			return runner.ExitInternal, ctx.Err()
		case <-time.After(PollInterval):
		}
	}
}

// tail reads an events file that may still grow, handing on whole lines.
type tail struct {
	path    string
	from    int
	w       io.Writer
	f       *os.File
	partial []byte
	buf     []byte
}

func (t *tail) close() {
	if t.f != nil {
		t.f.Close()
	}
}

// poll writes every whole new line with seq > from. A last line without its
// newline yet is kept until the rest arrives.
func (t *tail) poll() error {
	if t.f == nil {
		f, err := openState(t.path)
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("agentrun: attach: %w", err)
		}
		t.f = f
	}
	if t.buf == nil {
		t.buf = make([]byte, 64<<10)
	}
	for {
		n, err := t.f.Read(t.buf)
		if n > 0 {
			t.partial = append(t.partial, t.buf[:n]...)
			if werr := t.flushLines(); werr != nil {
				return werr
			}
		}
		if errors.Is(err, io.EOF) || (n == 0 && err == nil) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("agentrun: attach: read %s: %w", t.path, err)
		}
	}
}

func (t *tail) flushLines() error {
	for {
		i := bytes.IndexByte(t.partial, '\n')
		if i < 0 {
			return nil
		}
		line := t.partial[:i+1]
		var head struct {
			Seq int `json:"seq"`
		}
		if json.Unmarshal(line, &head) == nil && head.Seq > t.from {
			if _, err := t.w.Write(line); err != nil {
				return fmt.Errorf("agentrun: attach: write: %w", err)
			}
			t.from = head.Seq
		}
		t.partial = t.partial[i+1:]
	}
}

// WriteBundle copies the workspace's result bundle to w.
func WriteBundle(ws Workspace, w io.Writer) error {
	f, err := openState(ws.BundleFile())
	if errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("agentrun: %s: %w", ws.BundleFile(), ErrNoBundle)
	}
	if err != nil {
		return fmt.Errorf("agentrun: bundle: %w", err)
	}
	defer f.Close()
	if _, err := io.Copy(w, f); err != nil {
		return fmt.Errorf("agentrun: bundle: %w", err)
	}
	return nil
}
