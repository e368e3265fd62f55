// Package agentbot holds the domain types every other package of agentbot
// shares: tasks, their states, the triggers that create them and the control
// commands that steer them. It imports nothing of ours, so webhook/, github/,
// runner/, state/ and the dispatcher can all depend on it without cycles.
package agentbot

import (
	"fmt"
	"time"
)

// Repo names one GitHub repository.
type Repo struct {
	Owner string `json:"owner"`
	Name  string `json:"name"`
}

// FullName is "owner/name".
func (r Repo) FullName() string { return r.Owner + "/" + r.Name }

func (r Repo) String() string { return r.FullName() }

// IssueRef is the coordinate of an issue or pull request, "owner/repo#12".
type IssueRef struct {
	Repo   Repo `json:"repo"`
	Number int  `json:"number"`
}

func (i IssueRef) String() string { return fmt.Sprintf("%s#%d", i.Repo.FullName(), i.Number) }

// TaskKind says what a task asks for.
type TaskKind string

const (
	// KindNew runs the agent on an issue and opens a new branch and PR.
	KindNew TaskKind = "new"
	// KindFollowUp runs the agent again on an existing agentbot PR's branch.
	KindFollowUp TaskKind = "follow-up"
	// KindControl is a control command (cancel, retry, status, help); it never
	// runs an agent itself.
	KindControl TaskKind = "control"
)

// Control is a control command given by comment (`/agent cancel`) or by a
// check-run button.
type Control string

const (
	ControlCancel Control = "cancel"
	ControlRetry  Control = "retry"
	ControlStatus Control = "status"
	ControlHelp   Control = "help"
	// ControlTypo is a lone word near a command word (`/agent cancle`):
	// answered with "did you mean", never run as instructions.
	ControlTypo Control = "typo"
)

// TaskState is where a task is in its life.
type TaskState string

const (
	StateQueued    TaskState = "queued"
	StateRunning   TaskState = "running"
	StateSucceeded TaskState = "succeeded"
	StateFailed    TaskState = "failed"
	StateCancelled TaskState = "cancelled"
)

// Terminal reports whether no further transition leaves s.
func (s TaskState) Terminal() bool {
	return s == StateSucceeded || s == StateFailed || s == StateCancelled
}

// Valid reports whether s is one of the known states.
func (s TaskState) Valid() bool {
	switch s {
	case StateQueued, StateRunning, StateSucceeded, StateFailed, StateCancelled:
		return true
	}
	return false
}

// allowed lists the legal transitions. A running task may go back to queued:
// that is how a task interrupted by a restart is re-queued, and how retry
// re-runs a task (a terminal task is never revived; retry makes a new one).
var allowed = map[TaskState][]TaskState{
	StateQueued:  {StateRunning, StateCancelled, StateFailed},
	StateRunning: {StateSucceeded, StateFailed, StateCancelled, StateQueued},
}

// CanTransition reports whether a task may move from one state to another.
func CanTransition(from, to TaskState) bool {
	for _, s := range allowed[from] {
		if s == to {
			return true
		}
	}
	return false
}

// Sender is who triggered a task, as GitHub reported it. Permission is
// checked later through the API; author_association is only recorded.
type Sender struct {
	Login             string `json:"login"`
	ID                int64  `json:"id,omitempty"`
	AuthorAssociation string `json:"author_association,omitempty"`
}

// Prompt is the material the agent works from.
type Prompt struct {
	Title        string `json:"title,omitempty"`
	Body         string `json:"body,omitempty"`
	Instructions string `json:"instructions,omitempty"`
}

// Trigger is the pure decision taken from one webhook delivery: what, if
// anything, it asks agentbot to do. A zero Kind means "ignore".
type Trigger struct {
	Kind           TaskKind `json:"kind"`
	Control        Control  `json:"control,omitempty"`
	InstallationID int64    `json:"installation_id"`
	Issue          IssueRef `json:"issue"`
	IsPullRequest  bool     `json:"is_pull_request,omitempty"`
	// HeadBranch and HeadSHA are set for follow-ups once known (check runs
	// carry them; a PR comment does not, the dispatcher looks them up).
	HeadBranch string `json:"head_branch,omitempty"`
	HeadSHA    string `json:"head_sha,omitempty"`
	// CheckRunID is set for check_run deliveries.
	CheckRunID int64 `json:"check_run_id,omitempty"`
	// Suggestion is, for ControlTypo, the command the typed word
	// (Prompt.Instructions) is near.
	Suggestion Control `json:"suggestion,omitempty"`
	// ExternalID is check_run.external_id of a check_run delivery: agentbot
	// sets it to the task id when it creates a check run, so a button press
	// maps back to its task even when GitHub lists no pull request.
	ExternalID string `json:"external_id,omitempty"`
	// Label is the label that triggered an issues.labeled task; the
	// dispatcher checks it against the repository's configured trigger label.
	Label string `json:"label,omitempty"`
	// Assignee is who an issues.assigned (new task) or issues.unassigned
	// (cancel) delivery was about; the dispatcher checks it against the
	// repository's configured assignee.
	Assignee string `json:"assignee,omitempty"`
	// Repository is what the delivery said of the repository, so the
	// dispatcher need not ask GitHub again; empty for tasks stored before
	// it was recorded (the dispatcher then asks).
	Repository RepoFacts `json:"repository,omitempty"`
	// CommentID is the triggering comment (0 when an issue label triggered).
	CommentID int64 `json:"comment_id,omitempty"`
	// API is set for a task created through the task API: who (which
	// token) asked, and what it chose beyond the repository's settings.
	API *APIRequest `json:"api,omitempty"`
	// Review is set for a follow-up (or control) asked in a review thread
	// or in a submitted review's body.
	Review *ReviewRef `json:"review,omitempty"`
	Prompt Prompt     `json:"prompt"`
	Sender Sender     `json:"sender"`
	// Reason says, for logs, why an event was ignored or what it matched.
	Reason string `json:"reason,omitempty"`
}

// APIRequest is what a task API call asked for beyond the prompt. The
// token's own repository scope was checked at intake; a task made this way
// has no GitHub user behind it to authorise.
type APIRequest struct {
	// Token names the API token that created the task (never its value).
	Token      string `json:"token"`
	BaseBranch string `json:"base_branch,omitempty"`
	Template   string `json:"template,omitempty"`
	Agent      string `json:"agent,omitempty"`
	Model      string `json:"model,omitempty"`
	// NoPR asks for a branch only (open_pr: false).
	NoPR bool `json:"no_pr,omitempty"`
}

// ReviewRef is where on a pull request's review a command was given: a
// review comment (CommentID, in the thread whose first comment is
// ThreadRoot) or a review's body (ReviewID, CommentID 0). The location
// fields are what the delivery said of the comment.
type ReviewRef struct {
	CommentID  int64  `json:"comment_id,omitempty"`
	ThreadRoot int64  `json:"thread_root,omitempty"`
	ReviewID   int64  `json:"review_id,omitempty"`
	Path       string `json:"path,omitempty"`
	Line       int    `json:"line,omitempty"`
	StartLine  int    `json:"start_line,omitempty"`
	Side       string `json:"side,omitempty"`
	StartSide  string `json:"start_side,omitempty"`
	DiffHunk   string `json:"diff_hunk,omitempty"`
}

// InThread reports whether the command was a review comment, answered in
// its thread.
func (r *ReviewRef) InThread() bool { return r != nil && r.CommentID != 0 }

// RepoFacts are a repository's coordinates as a webhook delivery gives
// them.
type RepoFacts struct {
	DefaultBranch string `json:"default_branch,omitempty"`
	CloneURL      string `json:"clone_url,omitempty"`
}

// Ignored reports whether the trigger asks for nothing.
func (t Trigger) Ignored() bool { return t.Kind == "" }

// Result is what a finished attempt produced.
type Result struct {
	Branch      string  `json:"branch,omitempty"`
	BaseBranch  string  `json:"base_branch,omitempty"`
	BaseSHA     string  `json:"base_sha,omitempty"`
	Commit      string  `json:"commit,omitempty"`
	PRNumber    int     `json:"pr_number,omitempty"`
	PRURL       string  `json:"pr_url,omitempty"`
	Summary     string  `json:"summary,omitempty"`
	CostUSD     float64 `json:"cost_usd,omitempty"`
	NoChanges   bool    `json:"no_changes,omitempty"`
	FailedPhase string  `json:"failed_phase,omitempty"`
	Error       string  `json:"error,omitempty"`
	// Permanent marks a failure a retry would repeat as it is (a refused
	// protected-path edit, a settings problem): no retry is suggested.
	Permanent    bool `json:"permanent,omitempty"`
	FilesChanged int  `json:"files_changed,omitempty"`
}

// Task is one unit of work, stored durably before the delivery that created
// it is acknowledged.
type Task struct {
	ID         string    `json:"id"`
	DeliveryID string    `json:"delivery_id"`
	Event      string    `json:"event,omitempty"`
	Trigger    Trigger   `json:"trigger"`
	State      TaskState `json:"state"`
	// Attempt counts runs started; Requeues counts restarts that re-queued
	// an interrupted run (at most once).
	Attempt  int `json:"attempt"`
	Requeues int `json:"requeues,omitempty"`
	// RetryOf is the id of the failed task this one re-runs.
	RetryOf string `json:"retry_of,omitempty"`

	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
	// StartedAt is when the current (or last) attempt started;
	// FirstStartedAt when the first did, so the time a task took counts
	// every attempt (a restart re-queues and starts it again).
	StartedAt      time.Time `json:"started_at,omitempty"`
	FirstStartedAt time.Time `json:"first_started_at,omitempty"`
	FinishedAt     time.Time `json:"finished_at,omitempty"`

	// Conversation handles on GitHub, kept so that a restart edits the same
	// comment and check run instead of creating new ones.
	CommentID  int64 `json:"comment_id,omitempty"`
	CheckRunID int64 `json:"check_run_id,omitempty"`
	// CheckRunHead is the commit the check run is on: a follow-up's opens
	// on the pull request's head and, once the run pushed past it, is
	// superseded by one on the pushed commit.
	CheckRunHead string `json:"check_run_head,omitempty"`
	// CommentAttemptedAt is when agentbot first began to post this task's
	// comment (progress comment, refusal or control reply). It is stored
	// before the post: GitHub may post a comment and still fail the call,
	// so a later attempt (after such an error, or a crash) looks for the
	// comment by its marker and adopts it rather than post a second one.
	CommentAttemptedAt time.Time `json:"comment_attempted_at,omitempty"`
	// AcknowledgedAt is when the task was admitted (sender allowed,
	// settings read) and its progress comment opened; until then it may
	// not run. Schema version 1 files inferred this from CommentID; Open
	// migrates them.
	AcknowledgedAt time.Time `json:"acknowledged_at,omitempty"`

	// Phase is the last phase agent-runner reported.
	Phase string `json:"phase,omitempty"`
	// Reported is set once a terminal task's final state has been written
	// to its comment and check run; a restart repairs those left unset.
	Reported bool   `json:"reported,omitempty"`
	Result   Result `json:"result"`
}

// Acknowledged reports whether the task was admitted and told so on GitHub.
func (t *Task) Acknowledged() bool { return !t.AcknowledgedAt.IsZero() }

// Ref is the task's issue or pull request.
func (t *Task) Ref() IssueRef { return t.Trigger.Issue }

func (t *Task) String() string { return fmt.Sprintf("task %s (%s)", t.ID, t.Trigger.Issue) }
