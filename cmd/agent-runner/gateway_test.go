package main

import (
	"context"
	"io"
	"strings"
	"testing"
)

// TestStartGatewayPassesTheJobOn: whatever stdin holds, agentrun reads the
// same bytes after startGateway has looked for a gateway in them, so a bad
// job is reported by agentrun as before.
func TestStartGatewayPassesTheJobOn(t *testing.T) {
	for _, tc := range []struct{ name, in string }{
		{"a job without a gateway, and what follows it", `{"version":1,"task_id":"t"}` + "\nmore"},
		{"not JSON", `{"version":1,"task_id":`},
		{"a gateway that is not an object", `{"gateway":"x"}`},
		{"nothing", ``},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, stop, err := startGateway(context.Background(), strings.NewReader(tc.in))
			if err != nil {
				t.Fatal(err)
			}
			defer stop()
			got, err := io.ReadAll(r)
			if err != nil || string(got) != tc.in {
				t.Errorf("read %q, %v; want %q", got, err, tc.in)
			}
		})
	}
}
