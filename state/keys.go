package state

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"strings"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/agentbot/agentbot"
)

var allStates = []agentbot.TaskState{
	agentbot.StateQueued, agentbot.StateRunning, agentbot.StateSucceeded,
	agentbot.StateFailed, agentbot.StateCancelled,
}

// crockford is Crockford's base32 alphabet; its characters sort in the same
// order as their values, so ids sort by creation time as plain strings.
const crockford = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"

// idSource makes ULID-like task ids: 48 bits of milliseconds then 80 bits of
// randomness, 26 characters. Within one millisecond (or if the clock steps
// back) the random part is incremented, so ids from one store are strictly
// increasing.
type idSource struct {
	mu     sync.Mutex
	lastMS uint64
	rnd    [10]byte
}

func (g *idSource) next(now time.Time) string {
	g.mu.Lock()
	defer g.mu.Unlock()
	ms := uint64(now.UnixMilli())
	if ms > g.lastMS {
		g.lastMS = ms
		rand.Read(g.rnd[:]) // never fails: since Go 1.24 a failing source crashes the program
		g.rnd[0] &= 0x7f    // leave room to increment within one millisecond
	} else {
		for i := len(g.rnd) - 1; i >= 0; i-- {
			g.rnd[i]++
			if g.rnd[i] != 0 {
				break
			}
		}
	}
	var raw [16]byte
	binary.BigEndian.PutUint16(raw[0:2], uint16(g.lastMS>>32))
	binary.BigEndian.PutUint32(raw[2:6], uint32(g.lastMS))
	copy(raw[6:], g.rnd[:])
	return encodeID(raw)
}

// encodeID writes 128 bits as 26 base32 characters (the first carries 3 bits).
func encodeID(raw [16]byte) string {
	hi := binary.BigEndian.Uint64(raw[0:8])
	lo := binary.BigEndian.Uint64(raw[8:16])
	var out [26]byte
	for i := 25; i >= 0; i-- {
		out[i] = crockford[lo&31]
		lo = lo>>5 | hi<<59
		hi >>= 5
	}
	return string(out[:])
}

func stateKeyPrefix(st agentbot.TaskState) []byte {
	return append([]byte(st), 0)
}

func stateKey(st agentbot.TaskState, id string) []byte {
	return append(stateKeyPrefix(st), id...)
}

// issueKeyPrefix encodes (owner, name, number) with length prefixes, so no
// two refs share a prefix whatever their characters. Owner and name are
// lower-cased: GitHub treats them case-insensitively.
func issueKeyPrefix(ref agentbot.IssueRef) []byte {
	owner, name := strings.ToLower(ref.Repo.Owner), strings.ToLower(ref.Repo.Name)
	b := make([]byte, 0, 2*binary.MaxVarintLen64+len(owner)+len(name)+8)
	b = binary.AppendUvarint(b, uint64(len(owner)))
	b = append(b, owner...)
	b = binary.AppendUvarint(b, uint64(len(name)))
	b = append(b, name...)
	b = binary.BigEndian.AppendUint64(b, uint64(ref.Number))
	return b
}

func issueKey(ref agentbot.IssueRef, id string) []byte {
	return append(issueKeyPrefix(ref), id...)
}

// appendFill is the split threshold for buckets whose keys mostly arrive in
// order (time-sortable ids, time-prefixed delivery keys). bbolt's default
// of 0.5 leaves every page of an append-only bucket half empty: measured
// 2.8KB of file per task with it.
const appendFill = 0.9

// appendBucket returns the named bucket set up for in-order inserts.
func appendBucket(tx *bolt.Tx, name []byte) *bolt.Bucket {
	b := tx.Bucket(name)
	b.FillPercent = appendFill
	return b
}

func hasPrefix(k, prefix []byte) bool { return bytes.HasPrefix(k, prefix) }
