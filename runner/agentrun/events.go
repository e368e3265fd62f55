package agentrun

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/agentbot/agentbot/internal/secret"
	"github.com/agentbot/agentbot/runner"
)

// maxMessage bounds one event's message, so a runaway agent cannot fill the
// events file with a single line.
const maxMessage = 8 << 10

// newRedactor hides the job's token, its gateway capability and every value of its Env (the model
// API key, for instance) in every event, as well as anything shaped like a
// GitHub token.
func newRedactor(job runner.Job) secret.Redactor {
	secrets := []string{job.Token}
	if job.Gateway != nil {
		secrets = append(secrets, job.Gateway.Capability)
	}
	for _, v := range job.Env {
		secrets = append(secrets, v)
	}
	return secret.New(secrets...)
}

// emitter numbers events, redacts them and writes each as one line to the
// events file and to standard output.
type emitter struct {
	mu     sync.Mutex
	seq    int
	file   *os.File
	out    io.Writer
	outErr error
	redact secret.Redactor
	now    func() time.Time
}

func newEmitter(path string, out io.Writer) (*emitter, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("agentrun: events file: %w", err)
	}
	return &emitter{file: f, out: out, now: time.Now}, nil
}

func (e *emitter) setRedactor(r secret.Redactor) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.redact = r
}

// emit writes ev. Errors writing standard output are remembered but do not
// stop the run: the reader may have gone (a broken exec connection) and will
// replay the file with attach. An error writing the file is returned.
func (e *emitter) emit(ev runner.Event) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.seq++
	ev.Seq = e.seq
	ev.Time = e.now().UTC()
	ev.Message = truncate(ev.Message, maxMessage)
	ev = ev.MapStrings(e.redact.String)
	line, err := json.Marshal(ev)
	if err != nil {
		return fmt.Errorf("agentrun: encode event %d: %w", ev.Seq, err)
	}
	line = append(line, '\n')
	// One write per line: a reader of the file sees whole lines or a
	// prefix of the last one, never interleaved halves.
	if _, err := e.file.Write(line); err != nil {
		return fmt.Errorf("agentrun: write event %d: %w", ev.Seq, err)
	}
	if e.out != nil && e.outErr == nil {
		if _, err := e.out.Write(line); err != nil {
			e.outErr = err
		}
	}
	return nil
}

func (e *emitter) close() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if err := e.file.Sync(); err != nil {
		e.file.Close()
		return err
	}
	return e.file.Close()
}

// truncate cuts s to at most n bytes on a rune boundary.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + " …[truncated]"
}
