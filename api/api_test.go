package api

import (
	"encoding/json"
	"testing"
)

func TestOpenAPIDocument(t *testing.T) {
	var doc struct {
		OpenAPI string                    `json:"openapi"`
		Paths   map[string]map[string]any `json:"paths"`
	}
	if err := json.Unmarshal(openAPIDoc, &doc); err != nil {
		t.Fatal(err)
	}
	routes := map[string][]string{
		"/api/v1/openapi.json":      {"get"},
		"/api/v1/tasks":             {"get", "post"},
		"/api/v1/tasks/{id}":        {"get"},
		"/api/v1/tasks/{id}/cancel": {"post"},
		"/api/v1/tasks/{id}/retry":  {"post"},
	}
	for path, methods := range routes {
		for _, m := range methods {
			if doc.Paths[path][m] == nil {
				t.Errorf("the document lacks %s %s", m, path)
			}
		}
	}
	if len(doc.Paths) != len(routes) || doc.OpenAPI != "3.1.0" {
		t.Errorf("document paths %d, version %q", len(doc.Paths), doc.OpenAPI)
	}
}

func TestNewRefusesWeakOrNoTokens(t *testing.T) {
	tests := []struct {
		name   string
		tokens []Token
	}{
		{"no token", nil},
		{"a short token", []Token{{Name: "x", Value: "short", Repos: []string{"*"}}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := New(Options{Store: nilStore{}, Tokens: tc.tokens}); err == nil {
				t.Fatal("New accepted it")
			}
		})
	}
}

type nilStore struct{ Store }
