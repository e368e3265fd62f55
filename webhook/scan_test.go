package webhook

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
)

// scanSeeds are payloads where a hand-written JSON reader could part from
// encoding/json.
var scanSeeds = []string{
	`{"action":"created","action":"edited"}`,
	`{"Action":"created","ACTION":"x","ſender":{"LOGIN":"u","İd":1}}`,
	`{"\u0061ction":"created","repository":{"\u006eame":"r\u00e9\ud83d\ude00\ud800x"}}`,
	"{\"action\":\"cr\xffeated\",\"issue\":{\"title\":\"\xe2\x82\"}}",
	`{"comment":{"body":"a\\user\n\t\"x\"\/\b\f\r","body":"\\"},"issue":{"body":"\u00e9\n"}}`,
	`{"action":null,"repository":null,"issue":{"pull_request":{},"pull_request":null}}`,
	`{"issue":{"pull_request":{"url":"a"},"pull_request":{"html_url":1}}}`,
	`{"check_run":{"pull_requests":[{"number":5},{"number":6}],"pull_requests":[null,{}]}}`,
	`{"check_run":{"pull_requests":[{"number":5}],"pull_requests":[],"pull_requests":[null]}}`,
	`{"check_run":{"pull_requests":null}}`,
	`{"issue":{"number":1.0}}`, `{"issue":{"number":-0}}`, `{"issue":{"number":1e2}}`,
	`{"issue":{"number":99999999999999999999}}`, `{"installation":{"id":-9223372036854775808}}`,
	`{"issue":{"number":"1"}}`, `{"comment":{"body":5}}`, `{"repository":[]}`, `{"sender":"x"}`,
	`{"x":[1,2,{"y":[true,false,null,-1.5e+3,0.0,"\/\b\f\n\r\t"]}]}`,
	`{"x":01}`, `{"x":1.}`, `{"x":.5}`, `{"x":-}`, `{"x":1e}`, `{"x":tru}`, `{"x":"\x"}`, `{"x":"\u12"}`,
	"{\"x\":\"a\tb\"}", `{"x":1,}`, `{,}`, `{"x"}`, `[1,]`, `{"a":1}{}`, ` {} `, ``, ` `, `null`, `[]`, `"s"`, `0`,
	strings.Repeat("[", 10000) + strings.Repeat("]", 10000),
	strings.Repeat("[", 10001) + strings.Repeat("]", 10001),
	`{"action":"created","x":` + strings.Repeat(`{"a":`, 9999) + `1` + strings.Repeat(`}`, 9999) + `}`,
	`{"action":"created","x":` + strings.Repeat(`{"a":`, 10000) + `1` + strings.Repeat(`}`, 10000) + `}`,
}

// FuzzScanMatchesUnmarshal holds the single-pass decoders to what they
// replaced: for any payload, each event decodes to exactly what
// json.Unmarshal decodes into the same struct, an error exactly when
// json.Unmarshal errs, and valid agrees with json.Valid.
func FuzzScanMatchesUnmarshal(f *testing.F) {
	for _, s := range seedFiles {
		f.Add(payload(f, s.file))
	}
	for _, s := range scanSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		if got, want := valid(body), json.Valid(body); got != want {
			t.Fatalf("valid = %v, json.Valid = %v", got, want)
		}
		same(t, "issues", body, func(e *issuesEvent) error { return e.decode(body) })
		same(t, "issue_comment", body, func(e *issueCommentEvent) error { return e.decode(body) })
		same(t, "check_run", body, func(e *checkRunEvent) error { return e.decode(body) })
	})
}

func same[E any](t *testing.T, event string, body []byte, decode func(*E) error) {
	t.Helper()
	var got, want E
	gotErr, wantErr := decode(&got), json.Unmarshal(body, &want)
	switch {
	case (gotErr != nil) != (wantErr != nil):
		t.Fatalf("%s: decode error %v, json.Unmarshal error %v", event, gotErr, wantErr)
	case gotErr == nil && !reflect.DeepEqual(got, want):
		t.Fatalf("%s: decoded\n %+v\njson.Unmarshal\n %+v", event, got, want)
	}
}
