package web

import (
	"sort"
	"strconv"
	"time"

	"github.com/agentbot/agentbot/runner"
)

// pageEgressRows caps the task page's egress table: the hosts come from the
// sandbox, which can try as many as it likes.
const pageEgressRows = 200

// EgressRow is the task page's summary of the attempts the sandbox made to
// one kind:host:port with one outcome, as agentbot's gateway measured them.
type EgressRow struct {
	Kind    string `json:"kind"`
	Host    string `json:"host"`
	Port    int    `json:"port,omitempty"`
	Allowed bool   `json:"allowed"`
	// Reason is why the first of these attempts was blocked or failed.
	Reason   string  `json:"reason,omitempty"`
	Count    int     `json:"count"`
	BytesOut int64   `json:"bytes_out"`
	BytesIn  int64   `json:"bytes_in"`
	Millis   int64   `json:"ms"`
	CostUSD  float64 `json:"cost_usd,omitempty"`
}

// Addr is host:port as the table shows it.
func (r EgressRow) Addr() string {
	if r.Port == 0 {
		return r.Host
	}
	return r.Host + ":" + strconv.Itoa(r.Port)
}

// Took is the attempts' total duration, rounded for reading.
func (r EgressRow) Took() string {
	return (time.Duration(r.Millis) * time.Millisecond).String()
}

type egressKey struct {
	kind, host string
	port       int
	allowed    bool
}

// egressRows aggregates the log's egress events per kind, host, port and
// outcome, blocked rows first and otherwise in the order of first attempt;
// it returns at most pageEgressRows rows and how many more there were.
func egressRows(evs []runner.Event) (rows []EgressRow, more int) {
	index := map[egressKey]int{}
	for _, ev := range evs {
		e := ev.Egress
		if ev.Type != runner.EventEgress || e == nil {
			continue
		}
		k := egressKey{e.Kind, e.Host, e.Port, e.Allowed}
		i, ok := index[k]
		if !ok {
			i = len(rows)
			index[k] = i
			rows = append(rows, EgressRow{Kind: e.Kind, Host: e.Host, Port: e.Port, Allowed: e.Allowed, Reason: e.Reason})
		}
		r := &rows[i]
		r.Count++
		r.BytesOut += e.BytesOut
		r.BytesIn += e.BytesIn
		r.Millis += e.Millis
		r.CostUSD += e.CostUSD
	}
	sort.SliceStable(rows, func(i, j int) bool { return !rows[i].Allowed && rows[j].Allowed })
	if len(rows) > pageEgressRows {
		more = len(rows) - pageEgressRows
		rows = rows[:pageEgressRows]
	}
	if rows == nil {
		rows = []EgressRow{}
	}
	return rows, more
}
