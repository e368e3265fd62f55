package main

import (
	"flag"
	"io"
	"strings"
	"testing"
	"time"
)

// TestBindPrecedence: for every kind of setting, a flag wins over its
// environment variable, which wins over the default; a variable that does
// not parse is refused with the setting's names.
func TestBindPrecedence(t *testing.T) {
	type opts struct {
		S string
		B bool
		N int
		D time.Duration
	}
	list := []setting[opts]{
		{"s", "T_S", "def", "", func(o *opts) any { return &o.S }},
		{"b", "T_B", "false", "", func(o *opts) any { return &o.B }},
		{"n", "T_N", "1", "", func(o *opts) any { return &o.N }},
		{"d", "T_D", "1s", "", func(o *opts) any { return &o.D }},
	}
	tests := []struct {
		name    string
		env     map[string]string
		args    []string
		want    opts
		wantErr string
	}{
		{"defaults", nil, nil, opts{"def", false, 1, time.Second}, ""},
		{"environment", map[string]string{"T_S": "env", "T_B": "true", "T_N": "2", "T_D": "2m"}, nil, opts{"env", true, 2, 2 * time.Minute}, ""},
		{"flags win", map[string]string{"T_S": "env", "T_B": "true", "T_N": "2", "T_D": "2m"},
			[]string{"-s", "flag", "-b=false", "-n", "3", "-d", "3h"}, opts{"flag", false, 3, 3 * time.Hour}, ""},
		{"bad duration in the environment", map[string]string{"T_D": "soon"}, nil, opts{}, "--d ($T_D)"},
		{"bad bool in the environment", map[string]string{"T_B": "maybe"}, nil, opts{}, "--b ($T_B)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var o opts
			fs := flag.NewFlagSet("x", flag.ContinueOnError)
			fs.SetOutput(io.Discard)
			err := bind(fs, func(k string) string { return tt.env[k] }, &o, list)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("bind = %v, want an error naming %s", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if err := fs.Parse(tt.args); err != nil {
				t.Fatal(err)
			}
			if o != tt.want {
				t.Errorf("got %+v, want %+v", o, tt.want)
			}
		})
	}
}
