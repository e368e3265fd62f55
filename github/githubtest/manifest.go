package githubtest

import (
	"encoding/json"
	"net/http"
	"strings"
)

// manifestFlow is the fake's side of registering an App from a manifest:
// codes it issued (each converts once) and the manifests they carry.
type manifestFlow struct {
	codes map[string]json.RawMessage // code → manifest, until converted
}

// IssueManifestCode is what GitHub does when a user creates the App from
// a manifest: it returns the code its redirect would carry. The App it
// converts into is this fake's own App (AppID, PrivateKeyPEM).
func (s *Server) IssueManifestCode(manifest json.RawMessage) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.manifests.codes == nil {
		s.manifests.codes = map[string]json.RawMessage{}
	}
	code := "mc_" + strings.ReplaceAll(newGUID(), "-", "")
	s.manifests.codes[code] = append(json.RawMessage(nil), manifest...)
	return code
}

// WebhookSecret is the secret a converted manifest's App was given.
const WebhookSecret = "githubtest-webhook-secret"

// convertManifest answers POST /app-manifests/{code}/conversions, which
// GitHub serves without authentication; a code works once.
func (s *Server) convertManifest(q *req) {
	code := q.r.PathValue("code")
	manifest, ok := s.manifests.codes[code]
	if !ok {
		writeError(q.w, http.StatusNotFound, "Not Found")
		return
	}
	delete(s.manifests.codes, code)
	var m struct {
		Name string `json:"name"`
	}
	if err := json.Unmarshal(manifest, &m); err != nil || m.Name == "" {
		validationError(q.w, "Invalid manifest")
		return
	}
	out := s.appJSON()
	out["name"], out["html_url"] = m.Name, HTMLBase+"/apps/"+strings.ToLower(m.Name)
	out["pem"], out["webhook_secret"] = string(s.PrivateKeyPEM), WebhookSecret
	out["client_id"], out["client_secret"] = "Iv1.githubtest", "githubtest-client-secret"
	q.call.Auth = "none"
	writeJSON(q.w, http.StatusCreated, out)
}
