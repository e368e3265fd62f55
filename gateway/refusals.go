package gateway

import (
	"net"
	"sync"
	"time"
)

// Wrong capabilities on the shared TCP port cost a log line each, and a
// sandbox can send them as fast as it likes. refusals bounds that per
// source address: a burst of refusalBurst, then one every refusalEvery.
// Beyond it a wrong capability is answered 429 with no log line of its
// own, and one line per source per minute says how many were cut short. A
// valid capability is served whatever its source's count (pods behind one
// address must not be able to shut each other out); guessing one stays as
// hopeless as 256 bits make it.
const (
	refusalBurst   = 20
	refusalEvery   = 3 * time.Second
	refusalSummary = time.Minute
	refusalSources = 4096 // sources remembered; the oldest go first
)

type refusals struct {
	mu  sync.Mutex
	now func() time.Time
	by  map[string]*refusalBucket
}

type refusalBucket struct {
	tokens   float64
	last     time.Time
	dropped  int       // refusals cut short since the last summary
	reported time.Time // last summary line
}

func newRefusals(now func() time.Time) *refusals {
	return &refusals{now: now, by: map[string]*refusalBucket{}}
}

// note records a refusal from remote (host:port). logIt says whether this
// one gets its own log line; summary is how many were cut short since the
// last summary, when one is due now (0 otherwise).
func (r *refusals) note(remote string) (logIt bool, summary int) {
	host, _, err := net.SplitHostPort(remote)
	if err != nil {
		host = remote
	}
	now := r.now()
	r.mu.Lock()
	defer r.mu.Unlock()
	b := r.by[host]
	if b == nil {
		if len(r.by) >= refusalSources {
			r.evictLocked()
		}
		b = &refusalBucket{tokens: refusalBurst, last: now, reported: now}
		r.by[host] = b
	}
	b.tokens = min(refusalBurst, b.tokens+now.Sub(b.last).Seconds()/refusalEvery.Seconds())
	b.last = now
	if b.tokens >= 1 {
		b.tokens--
		return true, 0
	}
	b.dropped++
	if now.Sub(b.reported) >= refusalSummary {
		summary, b.dropped, b.reported = b.dropped, 0, now
	}
	return false, summary
}

// evictLocked forgets the source seen least recently.
func (r *refusals) evictLocked() {
	var oldest string
	var at time.Time
	for host, b := range r.by {
		if oldest == "" || b.last.Before(at) {
			oldest, at = host, b.last
		}
	}
	delete(r.by, oldest)
}
