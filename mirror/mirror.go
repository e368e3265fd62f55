// Package mirror keeps a bare mirror of each repository agentbot works on,
// in its data directory, so that a task's sandbox clones from local disk
// and fetches only the delta from the origin, and the bot verifies a
// result bundle against it instead of fetching the base from GitHub.
//
// agentbot fetches the mirrors itself, outside any sandbox, with a read
// token in git's environment (internal/gitenv) and no hooks. A sandbox gets
// a mirror read-only and uses its objects as an alternate object store,
// which is only safe if no object it needs ever disappears: a mirror is
// therefore never gc'ed or pruned, fetches only add packs, and a mirror is
// removed (least-recently-used eviction, when the total passes the size
// bound) only while no task holds a Lease on it. Leases are held for a
// task's whole lifetime, clone to push.
package mirror

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/agentbot/agentbot"
	"github.com/agentbot/agentbot/internal/gitenv"
)

// DefaultMaxBytes bounds the mirrors' total size when Options.MaxBytes is 0.
const DefaultMaxBytes int64 = 20 << 30

// usedFile marks a mirror's last use; its mtime orders eviction across
// restarts.
const usedFile = "agentbot-used"

// Options configure a Manager.
type Options struct {
	// Dir holds the mirrors (AGENTBOT_MIRROR_DIR, default <data>/mirrors).
	Dir string
	// MaxBytes bounds their total size (AGENTBOT_MIRROR_MAX); the least
	// recently used mirrors no task holds are removed past it.
	MaxBytes int64
	// GID is the sandboxes' host group: mirrors are readable by it and
	// their owner only, not by every local user (0 leaves the group as
	// created).
	GID int
	// Git runs git; its zero value is git on PATH.
	Git    gitenv.Git
	Logger *slog.Logger
	Now    func() time.Time
}

// Manager owns the mirrors in Options.Dir.
type Manager struct {
	opts Options
	log  *slog.Logger

	mu    sync.Mutex
	repos map[string]*entry // by key, "<installation>/<owner>/<name>"
}

// entry is one mirror. leases, used and size are guarded by Manager.mu;
// fetch serialises the updates of this one mirror.
type entry struct {
	key    string
	dir    string
	leases int
	used   time.Time
	size   int64
	fetch  sync.Mutex
}

// Lease is a task's hold on one mirror: while it is held the mirror is not
// removed, so the objects a clone borrowed from it stay.
type Lease struct {
	// Path is the mirror's bare repository (absolute).
	Path string
	// Heads are the mirror's branches (refs/heads/<name> → commit) as the
	// fetch that made this lease left them.
	Heads map[string]string

	m    *Manager
	e    *entry
	once sync.Once
}

// Release gives the lease back; later calls do nothing.
func (l *Lease) Release() {
	if l == nil {
		return
	}
	l.once.Do(func() {
		l.m.mu.Lock()
		l.e.leases--
		l.e.used = l.m.now()
		l.m.mu.Unlock()
		l.m.evict()
	})
}

// Head is branch's commit in the mirror, "" when it has none.
func (l *Lease) Head(branch string) string {
	if l == nil || branch == "" {
		return ""
	}
	return l.Heads["refs/heads/"+branch]
}

// New opens the mirrors in o.Dir, creating it.
func New(o Options) (*Manager, error) {
	if o.Dir == "" || !filepath.IsAbs(o.Dir) {
		return nil, fmt.Errorf("mirror: directory %q is not an absolute path", o.Dir)
	}
	if o.MaxBytes == 0 {
		o.MaxBytes = DefaultMaxBytes
	}
	if o.MaxBytes < 0 {
		return nil, errors.New("mirror: the size bound is negative")
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	// 0711: the sandbox's uid passes through to the one mirror it is
	// shown, and lists none.
	if err := os.MkdirAll(o.Dir, 0o711); err != nil {
		return nil, fmt.Errorf("mirror: %w", err)
	}
	if err := os.Chmod(o.Dir, 0o711); err != nil {
		return nil, fmt.Errorf("mirror: %w", err)
	}
	m := &Manager{opts: o, log: o.Logger, repos: map[string]*entry{}}
	if err := m.scan(); err != nil {
		return nil, err
	}
	return m, nil
}

func (m *Manager) now() time.Time {
	if m.opts.Now != nil {
		return m.opts.Now()
	}
	return time.Now()
}

// Dir is where the mirrors are.
func (m *Manager) Dir() string { return m.opts.Dir }

// Names on GitHub: an owner is letters, digits and hyphens; a repository
// name adds dots and underscores. Neither may be "." or ".." (checked apart).
var (
	ownerPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9-]{0,38}$`)
	namePattern  = regexp.MustCompile(`^[A-Za-z0-9._-]{1,100}$`)
)

// Key is the mirror's place under Dir for installation's repo, refused for
// anything that is not a plain GitHub owner/name: a name from a webhook
// must not reach outside Dir ("../x") or share another repository's mirror.
func Key(installationID int64, repo agentbot.Repo) (string, error) {
	if installationID <= 0 {
		return "", fmt.Errorf("mirror: installation id %d is not valid", installationID)
	}
	if !ownerPattern.MatchString(repo.Owner) || !namePattern.MatchString(repo.Name) ||
		repo.Name == "." || repo.Name == ".." || strings.HasPrefix(repo.Name, ".") ||
		strings.HasSuffix(strings.ToLower(repo.Name), ".git") {
		return "", fmt.Errorf("mirror: %q is not a repository name agentbot mirrors", repo.FullName())
	}
	return fmt.Sprintf("%d/%s/%s.git", installationID, strings.ToLower(repo.Owner), strings.ToLower(repo.Name)), nil
}

// Acquire brings installation's mirror of repo up to date from cloneURL
// (an http(s) URL, fetched with token) and returns a lease on it. The
// caller Releases it when the task ends. An error leaves no lease: the
// task clones plainly.
func (m *Manager) Acquire(ctx context.Context, installationID int64, repo agentbot.Repo, cloneURL, token string) (*Lease, error) {
	key, err := Key(installationID, repo)
	if err != nil {
		return nil, err
	}
	if !strings.HasPrefix(cloneURL, "https://") && !strings.HasPrefix(cloneURL, "http://") {
		return nil, fmt.Errorf("mirror: %s: only http(s) remotes are mirrored", repo)
	}
	m.mu.Lock()
	e := m.repos[key]
	if e == nil {
		e = &entry{key: key, dir: filepath.Join(m.opts.Dir, filepath.FromSlash(key))}
		m.repos[key] = e
	}
	e.leases++
	e.used = m.now()
	m.mu.Unlock()
	l := &Lease{Path: e.dir, m: m, e: e}

	e.fetch.Lock()
	heads, err := m.update(ctx, e, cloneURL, token)
	size := dirSize(e.dir)
	e.fetch.Unlock()
	m.mu.Lock()
	e.size = size
	m.mu.Unlock()
	if err != nil {
		l.Release()
		return nil, fmt.Errorf("mirror: %s: %w", repo, err)
	}
	l.Heads = heads
	m.evict()
	return l, nil
}

// update fetches e from the remote, creating it if need be, and lists its
// branches. A mirror that cannot be fetched into (corrupt, half-made) is
// made again from nothing, once.
func (m *Manager) update(ctx context.Context, e *entry, remote, token string) (map[string]string, error) {
	if _, err := os.Stat(filepath.Join(e.dir, "HEAD")); err == nil {
		heads, ferr := m.fetch(ctx, e.dir, remote, token)
		if ferr == nil {
			return heads, nil
		}
		if ctx.Err() != nil {
			return nil, ferr
		}
		// Another task's clone may borrow from this mirror: it stays.
		m.mu.Lock()
		shared := e.leases > 1
		m.mu.Unlock()
		if shared {
			return nil, ferr
		}
		m.log.Warn("mirror fetch failed; making the mirror again", "mirror", e.key, "err", ferr)
	}
	if err := removeDir(e.dir); err != nil {
		return nil, err
	}
	tmp := e.dir + ".new"
	if err := removeDir(tmp); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(e.dir), 0o711); err != nil {
		return nil, err
	}
	// --shared=0640 with the sandboxes' group: they read what agentbot
	// writes here (git makes the directories setgid, so what later
	// fetches add keeps the group); other local users do not.
	if _, err := m.opts.Git.Run(ctx, nil, "init", "-q", "--bare", "--shared=0640", tmp); err != nil {
		return nil, err
	}
	if err := m.giveGroup(tmp); err != nil {
		_ = os.RemoveAll(tmp)
		return nil, err
	}
	heads, err := m.fetch(ctx, tmp, remote, token)
	if err != nil {
		_ = os.RemoveAll(tmp)
		return nil, err
	}
	if err := os.Rename(tmp, e.dir); err != nil {
		_ = os.RemoveAll(tmp)
		return nil, err
	}
	return heads, nil
}

// fetchOpts keep a mirror append-only and inert: no hooks (a fetch runs
// reference-transaction hooks), no automatic gc or maintenance (which
// would prune objects a sandbox's clone borrows), no submodules.
var fetchOpts = []string{
	"-c", "core.hooksPath=/dev/null", "-c", "gc.auto=0", "-c", "maintenance.auto=false",
	"-c", "fetch.writeCommitGraph=false", "-c", "core.fsmonitor=false",
}

// fetch updates the mirror at dir: every branch, as the remote has them
// (deleted branches' refs go; their objects stay).
func (m *Manager) fetch(ctx context.Context, dir, remote, token string) (map[string]string, error) {
	args := append(append([]string(nil), fetchOpts...), "--git-dir", dir,
		"fetch", "-q", "--prune", "--no-tags", "--no-write-fetch-head", "--no-auto-gc",
		"--no-recurse-submodules", "--", remote, "+refs/heads/*:refs/heads/*")
	if _, err := m.opts.Git.Run(ctx, gitenv.Auth(remote, token), args...); err != nil {
		return nil, err
	}
	out, err := m.opts.Git.Run(ctx, nil, "--git-dir", dir, "for-each-ref", "--format=%(objectname) %(refname)", "refs/heads/")
	if err != nil {
		return nil, err
	}
	heads := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if sha, ref, ok := strings.Cut(line, " "); ok {
			heads[ref] = sha
		}
	}
	now := m.now()
	f, err := os.OpenFile(filepath.Join(dir, usedFile), os.O_CREATE|os.O_WRONLY, 0o640)
	if err == nil {
		f.Close()
		_ = os.Chtimes(f.Name(), now, now)
	}
	return heads, nil
}

// evict removes the least recently used mirrors no one holds until the
// total is within the bound. A held mirror is never removed, whatever the
// total: a running task's clone borrows its objects.
func (m *Manager) evict() {
	var doomed []*entry
	m.mu.Lock()
	var total int64
	var idle []*entry
	for _, e := range m.repos {
		total += e.size
		if e.leases == 0 {
			idle = append(idle, e)
		}
	}
	sort.Slice(idle, func(i, j int) bool { return idle[i].used.Before(idle[j].used) })
	for _, e := range idle {
		if total <= m.opts.MaxBytes {
			break
		}
		total -= e.size
		delete(m.repos, e.key)
		doomed = append(doomed, e)
	}
	// Removed from the map under mu, so no Acquire finds them; renamed
	// while still holding it, so a new mirror of the same repository
	// cannot be made at the path before the old one is out of the way.
	var trash []string
	for _, e := range doomed {
		t := filepath.Join(m.opts.Dir, fmt.Sprintf(".evicted-%d-%s", m.now().UnixNano(), strings.ReplaceAll(e.key, "/", "_")))
		if err := os.Rename(e.dir, t); err != nil && !errors.Is(err, os.ErrNotExist) {
			m.log.Warn("cannot evict mirror", "mirror", e.key, "err", err)
			continue
		}
		trash = append(trash, t)
		m.log.Info("mirror evicted", "mirror", e.key, "bytes", e.size)
	}
	m.mu.Unlock()
	for _, t := range trash {
		_ = os.RemoveAll(t)
	}
}

// scan learns the mirrors a previous run left, and removes the leftovers
// of interrupted creations and evictions.
func (m *Manager) scan() error {
	tops, err := os.ReadDir(m.opts.Dir)
	if err != nil {
		return fmt.Errorf("mirror: %w", err)
	}
	for _, t := range tops {
		if strings.HasPrefix(t.Name(), ".evicted-") {
			_ = os.RemoveAll(filepath.Join(m.opts.Dir, t.Name()))
		}
	}
	matches, err := filepath.Glob(filepath.Join(m.opts.Dir, "*", "*", "*"))
	if err != nil {
		return fmt.Errorf("mirror: %w", err)
	}
	for _, dir := range matches {
		if strings.HasSuffix(dir, ".git.new") {
			_ = os.RemoveAll(dir)
			continue
		}
		rel, err := filepath.Rel(m.opts.Dir, dir)
		if err != nil || !strings.HasSuffix(rel, ".git") {
			continue
		}
		e := &entry{key: filepath.ToSlash(rel), dir: dir, size: dirSize(dir)}
		if fi, err := os.Stat(filepath.Join(dir, usedFile)); err == nil {
			e.used = fi.ModTime()
		}
		m.repos[e.key] = e
	}
	m.evict()
	return nil
}

// Size is the mirrors' total size as last measured.
func (m *Manager) Size() int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	var total int64
	for _, e := range m.repos {
		total += e.size
	}
	return total
}

// giveGroup gives dir's tree to Options.GID.
func (m *Manager) giveGroup(dir string) error {
	if m.opts.GID <= 0 {
		return nil
	}
	return filepath.WalkDir(dir, func(p string, _ os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, -1, m.opts.GID)
	})
}

func removeDir(dir string) error {
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("remove %s: %w", dir, err)
	}
	return nil
}

// dirSize is the bytes of the regular files under dir.
func dirSize(dir string) int64 {
	var n int64
	_ = filepath.WalkDir(dir, func(_ string, d os.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if d.Type().IsRegular() {
			if fi, err := d.Info(); err == nil {
				n += fi.Size()
			}
		}
		return nil
	})
	return n
}
