package runner

import (
	"fmt"
	"reflect"
	"strings"
	"testing"
)

// fill sets every string reachable from v (fields, pointers, slices, map
// keys and values) to a distinct value that is none of the protocol's
// words, and returns how many it set.
func fill(v reflect.Value, n *int) {
	switch v.Kind() {
	case reflect.String:
		*n++
		v.SetString(fmt.Sprintf("secret-%d", *n))
	case reflect.Pointer:
		v.Set(reflect.New(v.Type().Elem()))
		fill(v.Elem(), n)
	case reflect.Struct:
		for i := range v.NumField() {
			if v.Type().Field(i).IsExported() {
				fill(v.Field(i), n)
			}
		}
	case reflect.Slice:
		v.Set(reflect.MakeSlice(v.Type(), 2, 2))
		for i := range v.Len() {
			fill(v.Index(i), n)
		}
	case reflect.Map:
		m := reflect.MakeMap(v.Type())
		for range 2 {
			k, e := reflect.New(v.Type().Key()).Elem(), reflect.New(v.Type().Elem()).Elem()
			fill(k, n)
			fill(e, n)
			m.SetMapIndex(k, e)
		}
		v.Set(m)
	}
}

// unmapped lists the path of every string reachable from v that f did not
// reach (f marks what it reached with a prefix).
func unmapped(v reflect.Value, path string, out *[]string) {
	switch v.Kind() {
	case reflect.String:
		if !strings.HasPrefix(v.String(), "mapped:") {
			*out = append(*out, path)
		}
	case reflect.Pointer:
		if v.IsNil() {
			*out = append(*out, path+" (dropped)")
			return
		}
		unmapped(v.Elem(), path, out)
	case reflect.Struct:
		for i := range v.NumField() {
			if v.Type().Field(i).IsExported() {
				unmapped(v.Field(i), path+"."+v.Type().Field(i).Name, out)
			}
		}
	case reflect.Slice:
		for i := range v.Len() {
			unmapped(v.Index(i), fmt.Sprintf("%s[%d]", path, i), out)
		}
	case reflect.Map:
		iter := v.MapRange()
		for iter.Next() {
			unmapped(iter.Key(), path+" key", out)
			unmapped(iter.Value(), path+"["+iter.Key().String()+"]", out)
		}
	}
}

// TestMapStringsReachesEveryString is what keeps redaction complete: every
// string an Event carries, however deep, must pass through MapStrings, so
// a field added to Event, RunResult or FileChange without being mapped
// fails here instead of leaking a secret.
func TestMapStringsReachesEveryString(t *testing.T) {
	var ev Event
	n := 0
	fill(reflect.ValueOf(&ev).Elem(), &n)
	if n < 10 {
		t.Fatalf("filled only %d strings; the walk is broken", n)
	}
	before := fmt.Sprintf("%+v %+v", ev, *ev.Result)
	got := ev.MapStrings(func(s string) string { return "mapped:" + s })

	var missed []string
	unmapped(reflect.ValueOf(got), "Event", &missed)
	if len(missed) > 0 {
		t.Errorf("MapStrings does not reach %s", strings.Join(missed, ", "))
	}
	if after := fmt.Sprintf("%+v %+v", ev, *ev.Result); after != before {
		t.Errorf("MapStrings changed its receiver:\nbefore %s\nafter  %s", before, after)
	}
}

// TestMapStringsKeepsTheProtocolsWords: a secret that happens to equal an
// event type, phase, stream or status (LOG_LEVEL=error) must not corrupt
// the event, while the same word in free text is still redacted.
func TestMapStringsKeepsTheProtocolsWords(t *testing.T) {
	redact := func(s string) string { return strings.ReplaceAll(s, "error", "[REDACTED]") }
	tests := []struct {
		name string
		in   Event
		want func(Event) bool
	}{
		{"event type", Event{Type: EventError, Message: "an error"},
			func(e Event) bool { return e.Type == EventError && e.Message == "an [REDACTED]" }},
		{"phase and stream", Event{Type: EventLog, Phase: PhaseAgent, Stream: "stderr"},
			func(e Event) bool { return e.Phase == PhaseAgent && e.Stream == "stderr" }},
		{"status and phase seconds", Event{Type: EventResult, Result: &RunResult{Status: StatusSucceeded, PhaseSeconds: map[string]float64{PhaseAgent: 1}}},
			func(e Event) bool {
				return e.Result.Status == StatusSucceeded && e.Result.PhaseSeconds[PhaseAgent] == 1
			}},
		{"a word that is not the protocol's", Event{Type: "error-ish", Stream: "errors"},
			func(e Event) bool { return e.Type == "[REDACTED]-ish" && e.Stream == "[REDACTED]s" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.in.MapStrings(redact); !tt.want(got) {
				t.Errorf("MapStrings(%+v) = %+v", tt.in, got)
			}
		})
	}
}
