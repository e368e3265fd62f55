// Package runner defines the job protocol between agentbot and agent-runner,
// the program that runs inside every sandbox, and the Launcher interface that
// starts sandboxes. The same protocol travels over a child process's pipes
// (local launcher) and over pods/exec (Kubernetes launcher); docs/protocol.md
// describes it for people.
package runner

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"slices"
	"strings"
	"time"
)

// ProtocolVersion is the version of Job and Event. agent-runner refuses a job
// whose version it does not speak.
const ProtocolVersion = 1

// Job is the one JSON document agent-runner reads on stdin.
type Job struct {
	Version int    `json:"version"`
	TaskID  string `json:"task_id"`
	// Repo is "owner/name", for labels and logs.
	Repo string `json:"repo,omitempty"`

	// CloneURL is an https (or file, for local runs) URL without credentials.
	CloneURL string `json:"clone_url"`
	// Token is a read-only installation token for CloneURL's repository. It is
	// used only for git's own commands and never reaches the agent.
	Token string `json:"token,omitempty"`

	// BaseBranch is the branch a new task starts from.
	BaseBranch string `json:"base_branch,omitempty"`
	// Branch is the branch to create (new task) or continue (follow-up).
	Branch string `json:"branch"`
	// FollowUp continues Branch, which must exist with head ExpectedHeadSHA.
	FollowUp        bool   `json:"follow_up,omitempty"`
	ExpectedHeadSHA string `json:"expected_head_sha,omitempty"`

	Prompt   JobPrompt `json:"prompt"`
	Template string    `json:"template,omitempty"`
	Agent    AgentSpec `json:"agent"`

	// TimeLimit bounds the whole job; agent-runner kills the agent's process
	// group when it passes.
	TimeLimit Duration `json:"time_limit"`

	AuthorName  string `json:"author_name"`
	AuthorEmail string `json:"author_email"`

	// IssueNumber is named in the commit message.
	IssueNumber int `json:"issue_number,omitempty"`

	// Mirror, when set, is agentbot's read-only mirror of the repository
	// (package mirror), which the clone borrows objects from; agent-runner
	// falls back to a plain clone when it is missing or unusable.
	Mirror *JobMirror `json:"mirror,omitempty"`

	// Env is extra environment the operator allows into the agent's process
	// (the model API key, for instance). Values are secrets: they are
	// redacted from every event.
	Env map[string]string `json:"env,omitempty"`

	// Gateway, when set, is the sandbox's only way out: agent-runner
	// listens on Gateway.Listen and joins every connection to agentbot's
	// egress gateway — its unix socket bound into a local sandbox, or its
	// TCP address with the task's capability from a Kubernetes pod. The
	// job's Env points the agent's proxy and model clients at Listen.
	Gateway *JobGateway `json:"gateway,omitempty"`
}

// JobGateway is where agent-runner finds agentbot's egress gateway: Socket
// (the local launcher) or Addr with Capability (Kubernetes), never both.
// Capability is the task's secret for its lifetime: it travels only in the
// job on stdin, never in an object the cluster stores, and is redacted like
// a token.
type JobGateway struct {
	// Listen is the loopback address inside the sandbox that the agent's
	// HTTPS_PROXY and model base URLs name (127.0.0.1:3128).
	Listen string `json:"listen"`
	// Socket is the gateway's unix socket as the sandbox sees it.
	Socket string `json:"socket,omitempty"`
	// HostSocket is the socket on agentbot's side, for the local launcher
	// to bind in; it never travels in the job.
	HostSocket string `json:"-"`
	// Addr is the gateway's host:port (the agentbot Service's gateway
	// port).
	Addr string `json:"addr,omitempty"`
	// Capability is the task's 256-bit key (gateway Task.Key).
	Capability string `json:"capability,omitempty"`
}

// JobMirror is a bare mirror of the job's repository, visible read-only
// at Path inside the sandbox.
type JobMirror struct {
	Path string `json:"path"`
	// Heads are the mirror's commits of the branches the job starts from
	// (refs/heads/<name> → commit), so the fetch from the origin tells it
	// what the clone has already and receives only the rest.
	Heads map[string]string `json:"heads,omitempty"`
}

// JobPrompt is what the agent is asked to do.
type JobPrompt struct {
	Title        string `json:"title,omitempty"`
	Body         string `json:"body,omitempty"`
	Instructions string `json:"instructions,omitempty"`
	// ReviewComments and DiffSummary are given to follow-ups.
	ReviewComments []string `json:"review_comments,omitempty"`
	DiffSummary    string   `json:"diff_summary,omitempty"`
}

// AgentSpec picks the coding agent and its options.
type AgentSpec struct {
	// Name is "claude", "codex" or "command".
	Name     string `json:"name"`
	Model    string `json:"model,omitempty"`
	MaxTurns int    `json:"max_turns,omitempty"`
	// Command is the executable (and arguments, split on spaces by a shell-free
	// splitter) for the "command" agent.
	Command string `json:"command,omitempty"`
	// PermissionMode narrows what Claude Code may do without asking
	// ("acceptEdits", "plan", ...); empty means bypassPermissions: the
	// sandbox is the boundary, and inside it the agent runs tests, installs
	// dependencies and uses git. For codex, any value but empty or
	// "bypassPermissions" keeps codex's own workspace-write sandbox.
	PermissionMode string `json:"permission_mode,omitempty"`
	// AllowedTools, when set, are passed as Claude Code's --allowedTools:
	// the tools it may use without asking. Under bypassPermissions that
	// fences nothing off; with a narrower mode, a tool the mode would ask
	// about is refused unless listed (print mode has nobody to ask). A repository's list only
	// narrows the operator's (dispatch.narrowTools).
	AllowedTools []string `json:"allowed_tools,omitempty"`
}

// Duration is a time.Duration that encodes as a Go duration string ("30m").
type Duration time.Duration

func (d Duration) MarshalJSON() ([]byte, error) {
	return json.Marshal(time.Duration(d).String())
}

func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

// Event types written by agent-runner, one JSON object a line.
const (
	EventPhase    = "phase"
	EventLog      = "log"
	EventProgress = "progress"
	EventResult   = "result"
	EventError    = "error"
	// EventEgress is written by agentbot's gateway, never by agent-runner:
	// one connection or request the sandbox made (or tried) to the outside.
	EventEgress = "egress"
)

// Phases, in order.
const (
	PhaseCloning    = "cloning"
	PhaseInit       = "init"
	PhaseAgent      = "agent"
	PhaseCommitting = "committing"
	PhaseBundling   = "bundling"
)

// Event is one line of agent-runner's output. Seq numbers events from 1 so a
// launcher that lost its connection can ask for the rest with
// `agent-runner attach --from N`.
type Event struct {
	Seq  int       `json:"seq"`
	Time time.Time `json:"time"`
	Type string    `json:"type"`

	// Phase is set on phase and error events.
	Phase string `json:"phase,omitempty"`
	// Message is the log line (log), what happened (progress) or what failed
	// (error).
	Message string `json:"message,omitempty"`
	// Stream is "stdout" or "stderr" for log events.
	Stream string `json:"stream,omitempty"`
	// Tool and File describe a progress event when the agent reports them.
	Tool string `json:"tool,omitempty"`
	File string `json:"file,omitempty"`

	Result *RunResult `json:"result,omitempty"`

	// ExitCode and StderrTail are set on error events.
	ExitCode   int      `json:"exit_code,omitempty"`
	StderrTail []string `json:"stderr_tail,omitempty"`

	// Egress is set on egress events.
	Egress *Egress `json:"egress,omitempty"`
}

// Egress kinds: a CONNECT tunnel, a plain-HTTP proxy request, a request to
// the git relay, a request to the model relay.
const (
	EgressConnect = "connect"
	EgressHTTP    = "http"
	EgressGit     = "git"
	EgressModel   = "model"
)

// Egress is what agentbot's gateway measured of one attempt to leave the
// sandbox: agentbot's own figures, not the sandbox's report.
type Egress struct {
	Kind    string `json:"kind"`
	Host    string `json:"host"`
	Port    int    `json:"port,omitempty"`
	Allowed bool   `json:"allowed"`
	// Reason says why the attempt was blocked or failed ("" when it went
	// through).
	Reason string `json:"reason,omitempty"`
	// BytesOut went from the sandbox to the outside, BytesIn back.
	BytesOut int64 `json:"bytes_out"`
	BytesIn  int64 `json:"bytes_in"`
	Millis   int64 `json:"ms"`
	// Model, Usage and CostUSD are set on model relay requests: the model
	// that answered, the tokens its API reported and their price.
	Model   string  `json:"model,omitempty"`
	Usage   *Usage  `json:"usage,omitempty"`
	CostUSD float64 `json:"cost_usd,omitempty"`
}

// Result statuses.
const (
	StatusSucceeded = "succeeded"
	StatusNoChanges = "no_changes"
)

// RunResult is the payload of the result event.
type RunResult struct {
	Status  string `json:"status"`
	Branch  string `json:"branch,omitempty"`
	BaseSHA string `json:"base_sha,omitempty"`
	Commit  string `json:"commit,omitempty"`
	// BundlePath is where the bundle lies inside the sandbox; launchers fetch
	// it with `agent-runner bundle` instead of reading the path directly.
	BundlePath   string             `json:"bundle_path,omitempty"`
	Files        []FileChange       `json:"files,omitempty"`
	Summary      string             `json:"summary,omitempty"`
	CostUSD      float64            `json:"cost_usd,omitempty"`
	Usage        *Usage             `json:"usage,omitempty"`
	PhaseSeconds map[string]float64 `json:"phase_seconds,omitempty"`
}

// FileChange is one line of a diffstat.
type FileChange struct {
	Path    string `json:"path"`
	Added   int    `json:"added"`
	Deleted int    `json:"deleted"`
}

// Usage is token usage as the agent reported it.
type Usage struct {
	InputTokens              int `json:"input_tokens"`
	OutputTokens             int `json:"output_tokens"`
	CacheReadInputTokens     int `json:"cache_read_input_tokens,omitempty"`
	CacheCreationInputTokens int `json:"cache_creation_input_tokens,omitempty"`
}

// Exit codes of agent-runner.
const (
	ExitOK        = 0
	ExitBadJob    = 2
	ExitClone     = 3
	ExitInit      = 4
	ExitAgent     = 5
	ExitTimeout   = 6
	ExitCommit    = 7
	ExitBundle    = 8
	ExitInternal  = 9
	ExitCancelled = 10
)

// Launcher starts sandboxes and runs agent-runner in them. Implementations:
// runner/local (child process, bubblewrap where present) and
// runner/kubernetes (SandboxClaim + pods/exec).
//
// Every context a Launcher or Run method takes bounds that call only: a run
// lives until agent-runner exits, Stop or Detach, whatever becomes of the
// context it was started with.
type Launcher interface {
	// Name is "local" or "kubernetes", for logs and metrics.
	Name() string
	// KeepsRuns reports whether runs survive the agentbot process that
	// started them. Kubernetes sandboxes do, and the next start re-attaches
	// them, so a graceful stop detaches; local children die with agentbot,
	// so a graceful stop stops them and re-queues their tasks.
	KeepsRuns() bool
	// Start creates (or, after a crash, finds) the sandbox for the task
	// attempt and starts agent-runner in it with job on stdin. It returns
	// once agent-runner is running.
	Start(ctx context.Context, job Job) (Run, error)
	// Attach re-attaches to a task attempt started before a restart (or
	// detached), replaying events after fromSeq. It returns ErrGone when
	// the sandbox no longer runs (local launcher: the child died with the
	// old process).
	Attach(ctx context.Context, taskID string, fromSeq int) (Run, error)
	// Cleanup removes everything the launcher made for the task (workspace,
	// claim). keep asks it to keep the workspace for debugging, where it can.
	Cleanup(ctx context.Context, taskID string, keep bool) error
	// Close stops following every run — Detach where runs are kept, Stop
	// where they are not — and returns only when every goroutine the
	// launcher started has returned. Start and Attach fail after Close.
	Close() error
}

// Run is one running agent-runner.
type Run interface {
	// Events delivers events in order; it is closed when agent-runner's output
	// ends or the run is detached. Wait reports how it ended.
	Events() <-chan Event
	// Wait blocks until agent-runner has exited and returns its exit. A
	// non-nil error means the launcher lost the run (not that the job
	// failed: a failed job is a non-zero exit code and an error event);
	// after Detach it wraps ErrDetached, unless the run had ended already.
	Wait(ctx context.Context) (Exit, error)
	// Bundle streams the result's git bundle (agent-runner bundle) to w.
	Bundle(ctx context.Context, w io.Writer) error
	// Stop kills agent-runner and its agent (the whole process group, or the
	// claim), for cancel.
	Stop(ctx context.Context) error
	// Detach stops following the run without stopping its sandbox, so that
	// a later process (or this one) can Attach. When it returns, Events is
	// closed. It does nothing to a run that has ended.
	Detach()
}

// Exit is how agent-runner ended.
type Exit struct {
	// Code is agent-runner's exit code (ExitOK, ExitAgent, ...).
	Code int
	// StderrTail is the last lines (at most StderrTailLines) agent-runner
	// wrote on stderr, for a failure report when it died before it could
	// say why in an error event. It comes from the sandbox unredacted:
	// callers redact it.
	StderrTail []string
	// LimitHit names the sandbox limit the run ran into, in the words a
	// failure comment uses ("the agent used more than 4 GiB of memory"),
	// or is empty. The launcher fills it from what it measured outside
	// the sandbox (cgroup counters, its disk watchdog), never from
	// anything the sandbox reported.
	LimitHit string
}

// StderrTailLines is how many lines of agent-runner's stderr Exit keeps.
const StderrTailLines = 25

// TailLines returns the last n lines of s, without a final empty line; nil
// when s holds none. Launchers use it to make Exit.StderrTail.
func TailLines(s string, n int) []string {
	s = strings.TrimRight(s, "\n")
	if s == "" {
		return nil
	}
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return lines
}

// ErrDetached is what Wait returns (wrapped) for a run that was detached
// before it ended: agent-runner may still run, and Attach may follow it.
var ErrDetached = errors.New("runner: detached")

// ErrGone is returned by Launcher.Attach when the sandbox of a task no longer
// runs agent-runner, so the task must be re-queued or failed.
var ErrGone = errors.New("runner: sandbox is gone")

// MapStrings returns a copy of e with f applied to every string it carries,
// the result's and its files' included. Redaction on both sides of the
// protocol goes through it, so a field added here is redacted everywhere
// (TestMapStringsReachesEveryString fails for a field it misses).
//
// The protocol's own words (event types, streams, phases, statuses) are
// passed through unchanged: they are public, and redacting them would
// corrupt the event — an operator's LOG_LEVEL=error would otherwise turn
// every error event into one of an unknown type. Any other value in those
// fields, as a hostile sandbox may write, goes through f like the rest.
func (e Event) MapStrings(f func(string) string) Event {
	e.Type = mapWord(e.Type, f, eventTypes)
	e.Phase = mapWord(e.Phase, f, phases)
	e.Stream = mapWord(e.Stream, f, streams)
	e.Message = f(e.Message)
	e.Tool = f(e.Tool)
	e.File = f(e.File)
	e.StderrTail = mapSlice(e.StderrTail, f)
	if e.Result != nil {
		res := e.Result.mapStrings(f)
		e.Result = &res
	}
	if e.Egress != nil {
		eg := *e.Egress
		eg.Kind = mapWord(eg.Kind, f, egressKinds)
		eg.Host, eg.Reason, eg.Model = f(eg.Host), f(eg.Reason), f(eg.Model)
		e.Egress = &eg
	}
	return e
}

func (res RunResult) mapStrings(f func(string) string) RunResult {
	res.Status = mapWord(res.Status, f, statuses)
	res.Branch = f(res.Branch)
	res.BaseSHA = f(res.BaseSHA)
	res.Commit = f(res.Commit)
	res.BundlePath = f(res.BundlePath)
	res.Summary = f(res.Summary)
	res.Files = mapSlice(res.Files, func(fc FileChange) FileChange {
		fc.Path = f(fc.Path)
		return fc
	})
	if len(res.PhaseSeconds) > 0 {
		secs := make(map[string]float64, len(res.PhaseSeconds))
		for k, v := range res.PhaseSeconds {
			secs[mapWord(k, f, phases)] = v
		}
		res.PhaseSeconds = secs
	}
	return res
}

// The protocol's own words, which MapStrings leaves alone.
var (
	eventTypes  = []string{EventPhase, EventLog, EventProgress, EventResult, EventError, EventEgress}
	egressKinds = []string{EgressConnect, EgressHTTP, EgressGit, EgressModel}
	phases      = []string{PhaseCloning, PhaseInit, PhaseAgent, PhaseCommitting, PhaseBundling}
	streams     = []string{"stdout", "stderr", "agentbot"}
	statuses    = []string{StatusSucceeded, StatusNoChanges}
)

// mapSlice is f applied to every element, in a new slice (an empty one
// stays as it is, nil included).
func mapSlice[T any](s []T, f func(T) T) []T {
	if len(s) == 0 {
		return s
	}
	out := make([]T, len(s))
	for i, v := range s {
		out[i] = f(v)
	}
	return out
}

func mapWord(s string, f func(string) string, words []string) string {
	if s == "" || slices.Contains(words, s) {
		return s
	}
	return f(s)
}
