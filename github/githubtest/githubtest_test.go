package githubtest

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agentbot/agentbot"
	"github.com/agentbot/agentbot/internal/gitserver"
)

var widgets = agentbot.Repo{Owner: "acme", Name: "widgets"}

func setup(t *testing.T) (*Server, *gitserver.Server) {
	s := New(t)
	g := gitserver.New(t, s.GitAuthorize())
	s.AddRepo(widgets, g, "main")
	s.AddRepo(agentbot.Repo{Owner: "acme", Name: "other"}, g, "main")
	s.AddInstallation(1, widgets)
	s.AddIssue(widgets, 1, "Title", "Body", "alice")
	return s, g
}

func jwtFor(t *testing.T, pemKey []byte, claims map[string]any) string {
	t.Helper()
	block, _ := pem.Decode(pemKey)
	key, err := x509.ParsePKCS1PrivateKey(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	enc := func(v any) string {
		b, _ := json.Marshal(v)
		return base64.RawURLEncoding.EncodeToString(b)
	}
	signing := enc(map[string]string{"alg": "RS256", "typ": "JWT"}) + "." + enc(claims)
	sum := sha256.Sum256([]byte(signing))
	sig, err := rsa.SignPKCS1v15(rand.Reader, key, crypto.SHA256, sum[:])
	if err != nil {
		t.Fatal(err)
	}
	return signing + "." + base64.RawURLEncoding.EncodeToString(sig)
}

func do(t *testing.T, s *Server, method, path, auth, body string) (int, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest(method, strings.TrimSuffix(s.URL, "/")+path, strings.NewReader(body))
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var out map[string]any
	_ = json.Unmarshal(raw, &out)
	return resp.StatusCode, out
}

func mint(t *testing.T, s *Server, body string) string {
	t.Helper()
	now := time.Now().Unix()
	status, out := do(t, s, "POST", "/app/installations/1/access_tokens",
		"Bearer "+jwtFor(t, s.PrivateKeyPEM, map[string]any{"iss": fmt.Sprint(s.AppID), "iat": now - 30, "exp": now + 60}), body)
	if status != 201 {
		t.Fatalf("mint: %d %v", status, out)
	}
	return out["token"].(string)
}

func TestAppJWTChecks(t *testing.T) {
	s, _ := setup(t)
	other, _ := rsa.GenerateKey(rand.Reader, 2048)
	otherPEM := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(other)})
	now := time.Now().Unix()
	iss := fmt.Sprint(s.AppID)
	tests := []struct {
		name string
		auth string
		want int
	}{
		{"valid", "Bearer " + jwtFor(t, s.PrivateKeyPEM, map[string]any{"iss": iss, "iat": now - 30, "exp": now + 60}), 201},
		{"numeric iss", "Bearer " + jwtFor(t, s.PrivateKeyPEM, map[string]any{"iss": s.AppID, "iat": now - 30, "exp": now + 60}), 201},
		{"none", "", 401},
		{"other key", "Bearer " + jwtFor(t, otherPEM, map[string]any{"iss": iss, "iat": now - 30, "exp": now + 60}), 401},
		{"other app", "Bearer " + jwtFor(t, s.PrivateKeyPEM, map[string]any{"iss": "1", "iat": now - 30, "exp": now + 60}), 401},
		{"expired", "Bearer " + jwtFor(t, s.PrivateKeyPEM, map[string]any{"iss": iss, "iat": now - 700, "exp": now - 100}), 401},
		{"lives too long", "Bearer " + jwtFor(t, s.PrivateKeyPEM, map[string]any{"iss": iss, "iat": now, "exp": now + 3600}), 401},
		{"issued in the future", "Bearer " + jwtFor(t, s.PrivateKeyPEM, map[string]any{"iss": iss, "iat": now + 300, "exp": now + 500}), 401},
		{"installation token instead", "token " + mint(t, s, ""), 401},
		{"garbage", "Bearer a.b.c", 401},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got, out := do(t, s, "POST", "/app/installations/1/access_tokens", tc.auth, ""); got != tc.want {
				t.Fatalf("status %d (%v), want %d", got, out, tc.want)
			}
		})
	}
}

func TestInstallationTokenScopes(t *testing.T) {
	s, _ := setup(t)
	read := mint(t, s, `{"repositories":["widgets"],"permissions":{"issues":"read"}}`)
	write := mint(t, s, `{"repositories":["widgets"],"permissions":{"issues":"write"}}`)
	revoked := mint(t, s, "")
	if st, _ := do(t, s, "DELETE", "/installation/token", "token "+revoked, ""); st != 204 {
		t.Fatalf("revoke: %d", st)
	}
	s.SetTokenLifetime(-time.Minute)
	expired := mint(t, s, "")
	jwt := "Bearer " + jwtFor(t, s.PrivateKeyPEM, map[string]any{"iss": fmt.Sprint(s.AppID), "iat": time.Now().Unix() - 30, "exp": time.Now().Unix() + 60})
	tests := []struct {
		name               string
		method, path, auth string
		body               string
		want               int
	}{
		{"read token reads", "GET", "/repos/acme/widgets/issues/1", "token " + read, "", 200},
		{"read token cannot write", "POST", "/repos/acme/widgets/issues/1/comments", "token " + read, `{"body":"x"}`, 403},
		{"write token writes", "POST", "/repos/acme/widgets/issues/1/comments", "Bearer " + write, `{"body":"x"}`, 201},
		{"pulls need pull_requests permission", "GET", "/repos/acme/widgets/pulls", "token " + read, "", 403},
		{"other repository is invisible", "GET", "/repos/acme/other", "token " + write, "", 404},
		{"no auth", "GET", "/repos/acme/widgets", "", "", 401},
		{"unknown token", "GET", "/repos/acme/widgets", "token ghs_made_up", "", 401},
		{"revoked token", "GET", "/repos/acme/widgets", "token " + revoked, "", 401},
		{"expired token", "GET", "/repos/acme/widgets", "token " + expired, "", 401},
		{"JWT on a repository endpoint", "GET", "/repos/acme/widgets", jwt, "", 401},
		{"unknown field", "POST", "/repos/acme/widgets/issues/1/comments", "token " + write, `{"body":"x","bodyy":"y"}`, 422},
		{"empty comment", "POST", "/repos/acme/widgets/issues/1/comments", "token " + write, `{"body":" "}`, 422},
		{"comment too long", "POST", "/repos/acme/widgets/issues/1/comments", "token " + write, `{"body":"` + strings.Repeat("é", 65537) + `"}`, 422},
		{"scope beyond the installation", "POST", "/app/installations/1/access_tokens", jwt, `{"repositories":["other"]}`, 422},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got, out := do(t, s, tc.method, tc.path, tc.auth, tc.body); got != tc.want {
				t.Fatalf("status %d (%v), want %d", got, out, tc.want)
			}
		})
	}
	// Git accepts the same tokens by the same rules.
	authz := s.GitAuthorize()
	s.SetTokenLifetime(time.Hour)
	cr := mint(t, s, `{"repositories":["widgets"],"permissions":{"contents":"read"}}`)
	cw := mint(t, s, `{"repositories":["widgets"],"permissions":{"contents":"write"}}`)
	gitTests := []struct {
		name  string
		repo  string
		pass  string
		write bool
		want  bool
	}{
		{"read fetches", "acme/widgets", cr, false, true},
		{"read cannot push", "acme/widgets", cr, true, false},
		{"write pushes", "acme/widgets", cw, true, true},
		{"other repo", "acme/other", cw, false, false},
		{"issues token has no contents", "acme/widgets", read, false, false},
		{"expired", "acme/widgets", expired, false, false},
		{"unknown", "acme/widgets", "nope", false, false},
	}
	for _, tc := range gitTests {
		if got := authz(tc.repo, "x-access-token", tc.pass, tc.write); got != tc.want {
			t.Errorf("git %s: %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestPullRequestRules(t *testing.T) {
	s, _ := setup(t)
	s.CommitFile(widgets, "feature", "f.txt", "f\n")
	tok := "token " + mint(t, s, "")
	tests := []struct {
		name string
		body string
		want int
	}{
		{"missing branch", `{"title":"t","head":"nope","base":"main"}`, 422},
		{"missing base", `{"title":"t","head":"feature","base":"nope"}`, 422},
		{"no title", `{"head":"feature","base":"main"}`, 422},
		{"no commits", `{"title":"t","head":"main","base":"main"}`, 422},
		{"fork head", `{"title":"t","head":"someone:feature","base":"main"}`, 422},
		{"opens", `{"title":"t","head":"acme:feature","base":"main","draft":true}`, 201},
		{"duplicate head", `{"title":"t2","head":"feature","base":"main"}`, 422},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got, out := do(t, s, "POST", "/repos/acme/widgets/pulls", tok, tc.body); got != tc.want {
				t.Fatalf("status %d (%v), want %d", got, out, tc.want)
			}
		})
	}
	prs := s.PullRequests(widgets)
	if len(prs) != 1 || prs[0].Number != 2 || !prs[0].Draft || prs[0].Head != "feature" {
		t.Fatalf("pull requests = %+v", prs)
	}
}

func TestFailNextAndConcurrency(t *testing.T) {
	s, _ := setup(t)
	tok := "token " + mint(t, s, "")
	s.FailNext("GET", "/repos/acme/*", 2, 502, nil)
	var wg sync.WaitGroup
	codes := make([]int, 8)
	for i := range codes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			codes[i], _ = do(t, s, "GET", "/repos/acme/widgets", tok, "")
		}()
	}
	wg.Wait()
	failed := 0
	for _, c := range codes {
		if c == 502 {
			failed++
		}
	}
	if failed != 2 {
		t.Fatalf("codes = %v, want exactly two 502s", codes)
	}
	calls := s.CallsTo("GET", "/repos/acme/widgets")
	if len(calls) != 8 {
		t.Fatalf("%d calls recorded", len(calls))
	}
	// Check runs must name a commit the repository has.
	body, _ := json.Marshal(map[string]any{"name": "agentbot", "head_sha": strings.Repeat("0", 40)})
	if st, _ := do(t, s, "POST", "/repos/acme/widgets/check-runs", tok, string(bytes.TrimSpace(body))); st != 422 {
		t.Fatalf("check run on an unknown commit: %d", st)
	}
}

func TestFailAfterPerformsThenFails(t *testing.T) {
	s, _ := setup(t)
	tok := "token " + mint(t, s, "")
	ref := agentbot.IssueRef{Repo: widgets, Number: 1}
	s.FailAfter("POST", "/repos/acme/widgets/issues/*/comments", 1, 502)
	// A refused request keeps its own answer and leaves the failure armed.
	if st, _ := do(t, s, "POST", "/repos/acme/widgets/issues/1/comments", tok, `{"body":""}`); st != 422 {
		t.Fatalf("empty body: %d, want 422", st)
	}
	if st, _ := do(t, s, "POST", "/repos/acme/widgets/issues/1/comments", tok, `{"body":"one"}`); st != 502 {
		t.Fatalf("first create: %d, want 502", st)
	}
	if got := s.Comments(ref); len(got) != 1 || got[0].Body != "one" {
		t.Fatalf("comments after a 502 = %+v, want the comment created", got)
	}
	if st, _ := do(t, s, "POST", "/repos/acme/widgets/issues/1/comments", tok, `{"body":"two"}`); st != 201 {
		t.Fatalf("second create: %d, want 201", st)
	}
	if calls := s.CallsTo("POST", "/repos/acme/widgets/issues/1/comments"); len(calls) != 3 || calls[1].Status != 502 {
		t.Fatalf("calls = %v", calls)
	}
}

// list GETs path and decodes the JSON answer into out; it returns the
// Link header.
func list(t *testing.T, s *Server, path, auth string, out any) string {
	t.Helper()
	req, _ := http.NewRequest("GET", strings.TrimSuffix(s.URL, "/")+path, nil)
	req.Header.Set("Authorization", auth)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s: %d", path, resp.StatusCode)
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		t.Fatal(err)
	}
	return resp.Header.Get("Link")
}

func TestListCommentsAndCheckRuns(t *testing.T) {
	s, _ := setup(t)
	tok := "token " + mint(t, s, "")
	for i := range 3 {
		if st, _ := do(t, s, "POST", "/repos/acme/widgets/issues/1/comments", tok, fmt.Sprintf(`{"body":"c%d"}`, i)); st != 201 {
			t.Fatalf("create: %d", st)
		}
	}
	var comments []struct {
		Body string `json:"body"`
		Via  struct {
			ID int64 `json:"id"`
		} `json:"performed_via_github_app"`
	}
	link := list(t, s, "/repos/acme/widgets/issues/1/comments?per_page=2", tok, &comments)
	if len(comments) != 2 || comments[0].Body != "c0" || comments[0].Via.ID != s.AppID || !strings.Contains(link, `page=2`) {
		t.Fatalf("page 1 = %+v, link %q", comments, link)
	}
	comments = nil
	if link := list(t, s, "/repos/acme/widgets/issues/1/comments?per_page=2&page=2", tok, &comments); len(comments) != 1 || link != "" {
		t.Fatalf("page 2 = %+v, link %q", comments, link)
	}
	comments = nil
	future := time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
	if list(t, s, "/repos/acme/widgets/issues/1/comments?since="+future, tok, &comments); len(comments) != 0 {
		t.Fatalf("since the future = %+v", comments)
	}

	head := s.CommitFile(widgets, "main", "x.txt", "x\n")
	for _, ext := range []string{"a", "b"} {
		body := fmt.Sprintf(`{"name":"agentbot","head_sha":%q,"external_id":%q}`, head, ext)
		if st, out := do(t, s, "POST", "/repos/acme/widgets/check-runs", tok, body); st != 201 {
			t.Fatalf("create check run: %d %v", st, out)
		}
	}
	var runs struct {
		Total int `json:"total_count"`
		Runs  []struct {
			ExternalID string `json:"external_id"`
			App        struct {
				ID int64 `json:"id"`
			} `json:"app"`
		} `json:"check_runs"`
	}
	list(t, s, "/repos/acme/widgets/commits/"+head+"/check-runs?check_name=agentbot&filter=all", tok, &runs)
	if runs.Total != 2 || runs.Runs[0].ExternalID != "b" || runs.Runs[1].App.ID != s.AppID {
		t.Fatalf("filter=all = %+v", runs)
	}
	runs.Runs = nil
	list(t, s, "/repos/acme/widgets/commits/main/check-runs?check_name=agentbot", tok, &runs)
	if runs.Total != 1 || runs.Runs[0].ExternalID != "b" {
		t.Fatalf("latest on main = %+v", runs)
	}
	runs.Runs = nil
	list(t, s, fmt.Sprintf("/repos/acme/widgets/commits/%s/check-runs?app_id=%d", head, s.AppID+1), tok, &runs)
	if runs.Total != 0 {
		t.Fatalf("another App's runs = %+v", runs)
	}
}
