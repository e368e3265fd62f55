package api

import (
	_ "embed"
	"net/http"
)

// openAPIDoc describes the API (OpenAPI 3.1); it is served as it is, and
// TestOpenAPIDocument checks it names every route the handler serves.
//
//go:embed openapi.json
var openAPIDoc []byte

func (h *Handler) openAPI(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.Write(openAPIDoc) //nolint:errcheck // the client went away
}
