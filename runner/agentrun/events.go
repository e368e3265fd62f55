package agentrun

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/agentbot/agentbot/runner"
)

// maxMessage bounds one event's message, so a runaway agent cannot fill the
// events file with a single line.
const maxMessage = 8 << 10

// minSecret is the shortest Job.Env value that is redacted: shorter values
// ("1", "yes") are settings, not secrets, and redacting them would shred
// every line.
const minSecret = 4

// redactor replaces secrets with "[REDACTED]".
type redactor struct {
	r *strings.Replacer
}

func newRedactor(job runner.Job) *redactor {
	var secrets []string
	if job.Token != "" {
		secrets = append(secrets, job.Token,
			base64.StdEncoding.EncodeToString([]byte("x-access-token:"+job.Token)))
	}
	for _, v := range job.Env {
		if len(v) >= minSecret {
			secrets = append(secrets, v)
		}
	}
	// Longest first, so a secret that contains another is replaced whole.
	sort.Slice(secrets, func(i, j int) bool { return len(secrets[i]) > len(secrets[j]) })
	var pairs []string
	for _, s := range secrets {
		pairs = append(pairs, s, "[REDACTED]")
	}
	return &redactor{r: strings.NewReplacer(pairs...)}
}

func (r *redactor) String(s string) string {
	if r == nil || s == "" {
		return s
	}
	return r.r.Replace(s)
}

// event redacts every string an event carries.
func (r *redactor) event(e runner.Event) runner.Event { return e.MapStrings(r.String) }

// emitter numbers events, redacts them and writes each as one line to the
// events file and to standard output.
type emitter struct {
	mu     sync.Mutex
	seq    int
	file   *os.File
	out    io.Writer
	outErr error
	redact *redactor
	now    func() time.Time
}

func newEmitter(path string, out io.Writer) (*emitter, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("agentrun: events file: %w", err)
	}
	return &emitter{file: f, out: out, now: time.Now}, nil
}

func (e *emitter) setRedactor(r *redactor) {
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
	ev = e.redact.event(ev)
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
