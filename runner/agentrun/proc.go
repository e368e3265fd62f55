package agentrun

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"
)

const (
	// maxLine bounds one output line kept in memory; the rest of a longer
	// line is read and dropped so the process never blocks on a full pipe.
	maxLine = 1 << 20
	// stderrTailLines is how many last lines of standard error an error
	// event carries.
	stderrTailLines = 20
	// drainWait bounds how long output is still read after the process
	// group was killed: a process that escaped the group (setsid) may hold
	// the pipes open for ever.
	drainWait = 5 * time.Second
)

// proc is one program agent-runner starts: git, the template's init or the
// agent. It runs in its own process group, which is killed as a whole when
// ctx ends and again when the program exits, so no grandchild outlives it.
type proc struct {
	Dir   string
	Path  string
	Args  []string
	Env   []string
	Stdin string // a file fed to standard input; "" for none
	// Nested, when set, starts the program in the agent's nested sandbox.
	Nested *nestedSandbox
	// User, when set, is who the program runs as: the sandbox user, for
	// agent-runner's git under gVisor, where agent-runner is the guest's
	// root.
	User *syscall.Credential
	// Output, when set, receives standard output as it is (Stdout is then
	// not called).
	Output *os.File

	// Stdout and Stderr receive output lines (without newlines); either may
	// be nil to drop them. They are called from two goroutines.
	Stdout func(line string)
	Stderr func(line string)
}

// procResult is how a proc ended.
type procResult struct {
	ExitCode   int // -1 when killed by a signal
	StderrTail []string
}

// errStart wraps failures to start the program at all.
var errStart = errors.New("cannot start")

func (p proc) run(ctx context.Context) (procResult, error) {
	var res procResult
	cmd, err := p.command()
	if err != nil {
		return res, err
	}
	defer closeFiles(cmd.ExtraFiles)
	if f, ok := cmd.Stdin.(*os.File); ok {
		defer f.Close()
	}
	// Pipes made here rather than by exec.Cmd: Cmd.Wait would otherwise wait
	// for every holder of the pipes, including grandchildren.
	outR, outW, err := os.Pipe()
	if err != nil {
		return res, fmt.Errorf("%w %s: %w", errStart, p.Path, err)
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		outR.Close()
		outW.Close()
		return res, fmt.Errorf("%w %s: %w", errStart, p.Path, err)
	}
	cmd.Stdout, cmd.Stderr = outW, errW
	if p.Output != nil {
		cmd.Stdout = p.Output
	}
	startErr := cmd.Start()
	outW.Close()
	errW.Close()
	closeFiles(cmd.ExtraFiles)
	if startErr != nil {
		outR.Close()
		errR.Close()
		return res, fmt.Errorf("%w %s: %w", errStart, p.Path, startErr)
	}
	tail := p.readOutput(outR, errR)
	waitErr := waitKilling(ctx, cmd)
	res.StderrTail = tail.finish(outR, errR)
	res.ExitCode = cmd.ProcessState.ExitCode()
	if ctx.Err() != nil {
		return res, context.Cause(ctx)
	}
	var exitErr *exec.ExitError
	if waitErr != nil && !errors.As(waitErr, &exitErr) {
		return res, fmt.Errorf("%s: %w", p.Path, waitErr)
	}
	return res, nil
}

// command is the program's command: in its own process group, and inside
// the nested agent sandbox when p.Nested says so.
func (p proc) command() (*exec.Cmd, error) {
	path, args := p.Path, p.Args
	var extra []*os.File
	var clone uintptr
	if p.Nested != nil {
		ac, err := p.Nested.wrap(append([]string{p.Path}, p.Args...))
		if err != nil {
			return nil, fmt.Errorf("%w %s: %w", errStart, p.Path, err)
		}
		path, args, extra, clone = ac.Path, ac.Args, []*os.File{ac.Seccomp}, ac.Cloneflags
	}
	cmd := exec.Command(path, args...)
	cmd.Dir = p.Dir
	cmd.Env = p.Env
	cmd.ExtraFiles = extra
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL, Cloneflags: clone, Credential: p.User}
	if clone&syscall.CLONE_NEWPID != 0 {
		// Go's child checks getppid() against its parent's pid after
		// setting the death signal, and getppid() is 0 in a new PID
		// namespace: it would kill itself. The namespace's init dies with
		// agent-runner anyway, agent-runner being the container's init.
		cmd.SysProcAttr.Pdeathsig = 0
	}
	if p.Stdin != "" {
		f, err := os.Open(p.Stdin)
		if err != nil {
			closeFiles(extra)
			return nil, fmt.Errorf("%w %s: %w", errStart, p.Path, err)
		}
		cmd.Stdin = f
	}
	return cmd, nil
}

// closeFiles closes what a started (or failed) command no longer needs in
// this process.
func closeFiles(fs []*os.File) {
	for _, f := range fs {
		f.Close()
	}
}

// waitKilling waits for cmd, killing its process group when ctx ends and
// again once the leader exited, so that nothing it started outlives it.
func waitKilling(ctx context.Context, cmd *exec.Cmd) error {
	pgid := cmd.Process.Pid
	exited := make(chan struct{})
	killerDone := make(chan struct{})
	go func() {
		defer close(killerDone)
		select {
		case <-ctx.Done():
			killGroup(pgid)
		case <-exited:
		}
	}()
	err := cmd.Wait()
	close(exited)
	<-killerDone
	killGroup(pgid)
	return err
}

// outputTail follows a program's two output pipes and keeps the last
// lines of standard error.
type outputTail struct {
	mu      sync.Mutex
	lines   []string
	readers sync.WaitGroup
}

func (p proc) readOutput(outR, errR *os.File) *outputTail {
	t := &outputTail{lines: make([]string, 0, stderrTailLines)}
	t.readers.Add(2)
	go func() {
		defer t.readers.Done()
		readLines(outR, p.Stdout)
	}()
	go func() {
		defer t.readers.Done()
		readLines(errR, func(line string) {
			t.mu.Lock()
			if len(t.lines) == stderrTailLines {
				t.lines = append(t.lines[:0], t.lines[1:]...)
			}
			t.lines = append(t.lines, line)
			t.mu.Unlock()
			if p.Stderr != nil {
				p.Stderr(line)
			}
		})
	}()
	return t
}

// finish waits (at most drainWait) for the readers, closes the pipes and
// returns the stderr tail.
func (t *outputTail) finish(outR, errR *os.File) []string {
	drained := make(chan struct{})
	go func() {
		t.readers.Wait()
		close(drained)
	}()
	select {
	case <-drained:
	case <-time.After(drainWait):
		// Closing the read ends unblocks the readers.
		outR.Close()
		errR.Close()
		<-drained
	}
	outR.Close()
	errR.Close()
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]string(nil), t.lines...)
}

func killGroup(pgid int) {
	// ESRCH (nobody left) is the usual, fine answer.
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
}

// readLines calls fn for each line of r, cutting lines longer than maxLine,
// until r ends.
func readLines(r io.Reader, fn func(string)) {
	br := bufio.NewReaderSize(r, 64<<10)
	var buf []byte
	for {
		chunk, isPrefix, err := br.ReadLine()
		if len(chunk) > 0 && len(buf) < maxLine {
			room := maxLine - len(buf)
			if len(chunk) > room {
				chunk = chunk[:room]
			}
			buf = append(buf, chunk...)
		}
		if err != nil {
			if len(buf) > 0 && fn != nil {
				fn(string(buf))
			}
			return
		}
		if isPrefix {
			continue
		}
		if fn != nil {
			fn(string(buf))
		}
		buf = buf[:0]
	}
}
