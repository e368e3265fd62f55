package webhook

import (
	"encoding/json"
	"fmt"
	"strings"
	"sync"

	"github.com/agentbot/agentbot"
	"github.com/agentbot/agentbot/github"
)

// maxLearned bounds the repositories Labels remembers; past it, new ones
// stay at first sight (every label is taken in and the dispatcher decides).
const maxLearned = 100000

// Labels is what intake knows of each repository's own trigger label, so
// that a repository's `trigger_label` works without the operator listing
// it (or accepting every label with "*"). Intake never calls GitHub: the
// dispatcher, which reads a repository's settings anyway, tells Labels what
// they say (Learn), and a push to the default branch that touches the
// settings file makes intake forget it until the settings are read again.
// A repository not (or no longer) known is at first sight: every label is
// taken in, and the dispatcher ignores the ones that are not its trigger.
type Labels struct {
	mu     sync.RWMutex
	byRepo map[string]string
}

// NewLabels is an empty book: every repository at first sight.
func NewLabels() *Labels { return &Labels{byRepo: map[string]string{}} }

// Learn records repo's trigger label.
func (l *Labels) Learn(repo agentbot.Repo, label string) {
	key := strings.ToLower(repo.FullName())
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, known := l.byRepo[key]; known || len(l.byRepo) < maxLearned {
		l.byRepo[key] = label
	}
}

// Forget puts repo ("owner/name") back at first sight.
func (l *Labels) Forget(repo string) {
	l.mu.Lock()
	delete(l.byRepo, strings.ToLower(repo))
	l.mu.Unlock()
}

// accepts reports whether label may be repo's trigger: it is the one
// learned, or nothing is learned yet. A nil book accepts nothing more.
func (l *Labels) accepts(repo, label string) bool {
	if l == nil {
		return false
	}
	l.mu.RLock()
	learned, known := l.byRepo[strings.ToLower(repo)]
	l.mu.RUnlock()
	return !known || strings.EqualFold(learned, label)
}

// pushEvent is what a push delivery says of the settings file.
type pushEvent struct {
	eventBase
	Ref     string `json:"ref"`
	Commits []struct {
		Added    []string `json:"added"`
		Removed  []string `json:"removed"`
		Modified []string `json:"modified"`
	} `json:"commits"`
}

// maxPushCommits is how many commits GitHub lists in a push payload; a
// push listing that many may have touched the file in one not listed.
const maxPushCommits = 20

// parsePush never creates a task: it names the repository whose learned
// trigger label a push to the default branch may have changed.
func parsePush(payload []byte) (decision, error) {
	var e pushEvent
	if err := json.Unmarshal(payload, &e); err != nil {
		return decision{}, fmt.Errorf("push event: %w: %w", ErrMalformed, err)
	}
	d := decision{Repo: e.Repository.FullName}
	if e.Ref != "refs/heads/"+e.Repository.DefaultBranch || e.Repository.DefaultBranch == "" {
		return ignore(d, "push to %s, not the default branch", e.Ref), nil
	}
	touched := len(e.Commits) >= maxPushCommits
	for _, c := range e.Commits {
		for _, list := range [][]string{c.Added, c.Removed, c.Modified} {
			for _, p := range list {
				touched = touched || p == github.SettingsPath
			}
		}
	}
	if !touched {
		return ignore(d, "push does not touch %s", github.SettingsPath), nil
	}
	d.Forget = e.Repository.FullName
	return ignore(d, "push changed %s: its trigger label is learned again", github.SettingsPath), nil
}
