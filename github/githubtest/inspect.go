package githubtest

// What a test reads back of the fake: its calls and the objects it holds.

import (
	"path"
	"slices"
	"sort"

	"github.com/agentbot/agentbot"
	"github.com/agentbot/agentbot/internal/gitserver"
)

// RepositoryPayload is r's repository object as GitHub puts it in webhook
// deliveries (and in GET /repos/{owner}/{repo}).
func (s *Server) RepositoryPayload(r agentbot.Repo) map[string]any {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.repoJSON(s.mustRepo(r))
}

// Calls returns every request so far, in order.
func (s *Server) Calls() []Call {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Call(nil), s.calls...)
}

// CallsTo returns the calls whose "METHOD /path" matches pattern (path.Match
// on the path; method "" = any).
func (s *Server) CallsTo(method, pattern string) []Call {
	var out []Call
	for _, c := range s.Calls() {
		if ok, _ := path.Match(pattern, c.Path); ok && (method == "" || method == c.Method) {
			out = append(out, c)
		}
	}
	return out
}

// Unexpected lists requests to endpoints the fake does not implement (each
// already failed the test).
func (s *Server) Unexpected() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.unexpected...)
}

// Comments returns the comments on ref, oldest first.
func (s *Server) Comments(ref agentbot.IssueRef) []Comment {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Comment
	for _, c := range s.mustRepo(ref.Repo).comments {
		if c.Ref == ref {
			cc := *c
			cc.Edits = append([]string(nil), c.Edits...)
			out = append(out, cc)
		}
	}
	return out
}

// Reactions returns the App's reactions on ref and its comments.
func (s *Server) Reactions(ref agentbot.IssueRef) []Reaction {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Reaction
	for _, r := range s.mustRepo(ref.Repo).reactions {
		if r.Ref == ref {
			out = append(out, r)
		}
	}
	return out
}

// PullRequests returns r's pull requests by number.
func (s *Server) PullRequests(r agentbot.Repo) []PullRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	rp := s.mustRepo(r)
	var out []PullRequest
	for _, pr := range rp.prs {
		cp := *pr
		cp.Reviewers = append([]string(nil), pr.Reviewers...)
		out = append(out, cp)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Number < out[j].Number })
	return out
}

// CheckRuns returns r's check runs in creation order.
func (s *Server) CheckRuns(r agentbot.Repo) []CheckRun {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []CheckRun
	for _, cr := range s.mustRepo(r).checkRuns {
		cp := *cr
		cp.Actions = append([]Action(nil), cr.Actions...)
		out = append(out, cp)
	}
	return out
}

// Tokens returns every token minted so far.
func (s *Server) Tokens() []Token {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Token
	for _, t := range s.tokens {
		cp := *t
		cp.Repos = append([]string(nil), t.Repos...)
		cp.Permissions = copyMap(t.Permissions)
		out = append(out, cp)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ExpiresAt.Before(out[j].ExpiresAt) })
	return out
}

// GitAuthorize is a gitserver.Authorize that accepts only unexpired,
// unrevoked tokens minted here, for their own repositories, with contents
// read (fetch) or write (push). Any basic-auth user name is accepted, as on
// GitHub ("x-access-token" by convention).
func (s *Server) GitAuthorize() gitserver.Authorize {
	return func(repoName, user, pass string, write bool) bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		tok := s.tokens[pass]
		if pass == "" || tok == nil || tok.Revoked || !s.now().Before(tok.ExpiresAt) {
			return false
		}
		if !slices.Contains(tok.Repos, repoName) {
			return false
		}
		need := "read"
		if write {
			need = "write"
		}
		if rank(tok.Permissions["contents"]) < rank(need) {
			return false
		}
		if !write {
			tok.GitReads++
		}
		return true
	}
}
