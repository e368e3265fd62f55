// Package state is agentbot's durable store: tasks and webhook delivery IDs
// in one bbolt file. Every logical change is one bbolt transaction, values are
// decoded inside the transaction that read them, and a task is committed
// (fsynced) before CreateTask returns, so a delivery acknowledged to GitHub is
// never lost to a crash.
//
// Concurrent CreateTask and RecordDelivery calls are group-committed: a single
// writer goroutine folds every call already waiting into one transaction, so
// N concurrent deliveries cost one fsync instead of N, and a lone delivery
// waits for no timer (unlike bbolt's DB.Batch, which holds every call for
// MaxBatchDelay). Transition, Update and PruneDeliveries run their own
// transactions, because they call back into the caller's mutate function,
// which must run exactly once.
package state

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"

	"github.com/agentbot/agentbot"
)

var (
	// ErrLocked is returned by Open when another process holds the file.
	ErrLocked = errors.New("database is locked by another agentbot")
	// ErrNotFound is returned when no task has the requested id.
	ErrNotFound = errors.New("task not found")
	// ErrClosed is returned by writes after Close.
	ErrClosed = errors.New("store is closed")
)

// SchemaVersion is the layout version this code writes. Open migrates older
// files forward and refuses newer ones.
const SchemaVersion = 3

// MaxDeliveryIDLen bounds delivery IDs (GitHub sends 36-character GUIDs).
const MaxDeliveryIDLen = 256

// DefaultDeliveryRetention is how long delivery IDs are kept for
// deduplication: GitHub lets a delivery be redelivered for three days; the
// margin covers a bot that was down for a while.
const DefaultDeliveryRetention = 7 * 24 * time.Hour

// DefaultTimeout is how long Open waits for the file lock when
// Options.Timeout is zero (bbolt itself would wait forever).
const DefaultTimeout = time.Second

// maxGroup bounds how many calls one group commit folds together.
const maxGroup = 512

// Bucket names. Each is created at Open.
var (
	bucketMeta       = []byte("meta")
	bucketTasks      = []byte("tasks")            // id → JSON task
	bucketByState    = []byte("tasks_by_state")   // state 0x00 id → nil
	bucketByIssue    = []byte("tasks_by_issue")   // issueKey(ref) id → nil
	bucketDeliveries = []byte("deliveries")       // 8-byte unix nanos, delivery id → nil
	bucketUnreported = []byte("tasks_unreported") // id → nil: ended, final report not yet written

	keySchemaVersion = []byte("schema_version")
)

var allBuckets = [][]byte{bucketMeta, bucketTasks, bucketByState, bucketByIssue, bucketDeliveries, bucketUnreported}

// Migration moves a file from schema version From to From+1 inside the
// transaction Open runs; a failing migration leaves the file untouched.
type Migration struct {
	From int
	Run  func(tx *bolt.Tx) error
}

// migrations is the migration hook: when SchemaVersion is raised, the step
// from the previous version is added here.
func migrations() []Migration {
	return []Migration{{From: 1, Run: markAcknowledged}, {From: 2, Run: indexUnreported}}
}

// Options configures Open.
type Options struct {
	// Timeout bounds the wait for the file lock; zero means DefaultTimeout.
	Timeout time.Duration
	// DeliveryRetention is how long delivery IDs are kept; zero means
	// DefaultDeliveryRetention.
	DeliveryRetention time.Duration
	// Registry receives the store's metrics; nil registers nothing.
	Registry *prometheus.Registry
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// ReadOnly opens the file with a shared lock for inspection (the tasks
	// CLI); writes fail and nothing is created or migrated.
	ReadOnly bool

	// schemaVersion and migrations override the package's, so tests can
	// exercise the migration hook.
	schemaVersion int
	migrations    []Migration
}

// Store is the bbolt-backed task and delivery store. Its methods are safe for
// concurrent use.
type Store struct {
	db        *bolt.DB
	path      string
	now       func() time.Time
	retention time.Duration
	readOnly  bool
	metrics   *metrics
	ids       idSource

	// Group commit: writers send on writes under closeMu's read lock; Close
	// takes the write lock, marks the store closed and closes the channel,
	// so the committer drains what was sent and exits.
	closeMu   sync.RWMutex
	closed    bool
	writes    chan *groupWrite
	committed chan struct{}

	// seen is every recorded delivery ID (see deliveries.go); added and
	// removed are the current commit attempt's changes to it, touched only
	// by the committer goroutine.
	seenMu  sync.RWMutex
	seen    map[string]struct{}
	added   map[string]struct{}
	removed []string
}

// Open opens (creating if needed) the bbolt file at path, creates the
// buckets, checks the schema version and runs any migrations. A second
// process opening the same file fails after opts.Timeout with ErrLocked.
func Open(path string, opts Options) (*Store, error) {
	timeout := opts.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	retention := opts.DeliveryRetention
	if retention <= 0 {
		retention = DefaultDeliveryRetention
	}
	version, steps := SchemaVersion, migrations()
	if opts.schemaVersion != 0 {
		version, steps = opts.schemaVersion, opts.migrations
	}
	if opts.ReadOnly {
		// bbolt opens a missing file read-only as an error deep in mmap;
		// say plainly that there is nothing yet.
		if _, err := os.Stat(path); err != nil {
			return nil, fmt.Errorf("open store %s: %w", path, err)
		}
	}

	db, err := bolt.Open(path, 0o600, &bolt.Options{
		Timeout:      timeout,
		ReadOnly:     opts.ReadOnly,
		FreelistType: bolt.FreelistMapType,
		// The freelist is written at each commit: without it, Open walks
		// every page of the file to rebuild it, which made a restart with
		// 100,000 tasks resident at 238 MB (28 MB with it; see
		// BenchmarkRestartRSS). Group commit measured no slower.
		NoFreelistSync: false,
		// Readers never block the writer while the file is below this size.
		InitialMmapSize: 64 << 20,
	})
	if err != nil {
		if errors.Is(err, bolterrors.ErrTimeout) {
			return nil, fmt.Errorf("open store %s: %w (waited %s)", path, ErrLocked, timeout)
		}
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}

	s := &Store{
		db:        db,
		path:      path,
		now:       now,
		retention: retention,
		readOnly:  opts.ReadOnly,
		metrics:   newMetrics(),
		writes:    make(chan *groupWrite, maxGroup),
		committed: make(chan struct{}),
		added:     make(map[string]struct{}),
	}
	counts, err := s.prepare(version, steps)
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	for st, n := range counts {
		s.metrics.tasks.WithLabelValues(string(st)).Set(float64(n))
	}
	if opts.Registry != nil {
		if err := s.metrics.register(opts.Registry); err != nil {
			db.Close()
			return nil, fmt.Errorf("open store %s: register metrics: %w", path, err)
		}
	}
	if opts.ReadOnly {
		s.closed = true
		close(s.writes)
		close(s.committed)
	} else {
		go s.commitLoop()
	}
	return s, nil
}

// prepare creates the buckets, checks and migrates the schema, and counts
// tasks by state for the gauges.
func (s *Store) prepare(version int, steps []Migration) (map[agentbot.TaskState]int, error) {
	counts := make(map[agentbot.TaskState]int)
	countStates := func(tx *bolt.Tx) {
		for _, st := range allStates {
			counts[st] = 0
		}
		b := tx.Bucket(bucketByState)
		if b == nil {
			return
		}
		for _, st := range allStates {
			prefix := stateKeyPrefix(st)
			c := b.Cursor()
			for k, _ := c.Seek(prefix); k != nil && hasPrefix(k, prefix); k, _ = c.Next() {
				counts[st]++
			}
		}
	}
	if s.readOnly {
		err := s.db.View(func(tx *bolt.Tx) error {
			if meta := tx.Bucket(bucketMeta); meta != nil {
				have := decodeVersion(meta.Get(keySchemaVersion))
				if have > version {
					return fmt.Errorf("schema version %d is newer than this agentbot's %d", have, version)
				}
				if have < version {
					return fmt.Errorf("schema version %d needs migrating to %d: start agentbot serve once", have, version)
				}
			}
			countStates(tx)
			return s.loadDeliveries(tx)
		})
		return counts, err
	}
	err := s.db.Update(func(tx *bolt.Tx) error {
		for _, name := range allBuckets {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return fmt.Errorf("create bucket %s: %w", name, err)
			}
		}
		meta := tx.Bucket(bucketMeta)
		raw := meta.Get(keySchemaVersion)
		have := decodeVersion(raw)
		if raw == nil {
			// A new file starts at the current version.
			have = version
		}
		if have > version {
			return fmt.Errorf("schema version %d is newer than this agentbot's %d", have, version)
		}
		for have < version {
			step := findMigration(steps, have)
			if step == nil {
				return fmt.Errorf("no migration from schema version %d", have)
			}
			if err := step.Run(tx); err != nil {
				return fmt.Errorf("migrate schema %d to %d: %w", have, have+1, err)
			}
			have++
		}
		if err := meta.Put(keySchemaVersion, encodeVersion(have)); err != nil {
			return fmt.Errorf("write schema version: %w", err)
		}
		countStates(tx)
		return s.loadDeliveries(tx)
	})
	return counts, err
}

func findMigration(steps []Migration, from int) *Migration {
	for i := range steps {
		if steps[i].From == from {
			return &steps[i]
		}
	}
	return nil
}

func encodeVersion(v int) []byte { return binary.BigEndian.AppendUint64(nil, uint64(v)) }

func decodeVersion(b []byte) int {
	if len(b) != 8 {
		return 0
	}
	return int(binary.BigEndian.Uint64(b))
}

// Path is the file the store was opened from.
func (s *Store) Path() string { return s.path }

// Close waits for pending writes to commit and closes the file.
func (s *Store) Close() error {
	s.closeMu.Lock()
	if !s.closed {
		s.closed = true
		close(s.writes)
	}
	s.closeMu.Unlock()
	<-s.committed
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("close store %s: %w", s.path, err)
	}
	return nil
}

// IsNotExist reports whether err says the store file does not exist (from a
// read-only Open).
func IsNotExist(err error) bool { return errors.Is(err, fs.ErrNotExist) }

// observe records a store operation's latency.
func (s *Store) observe(op string, start time.Time) {
	s.metrics.opDuration.WithLabelValues(op).Observe(time.Since(start).Seconds())
}
