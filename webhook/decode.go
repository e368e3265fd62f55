package webhook

import "strconv"

// The decoders below fill the event shapes of events.go from one pass of
// the scanner: each names its struct's JSON keys (for the case-insensitive
// match json.Unmarshal also makes), decodes those and skips every other
// value, checking its syntax.

var (
	baseNames         = []string{"action", "repository", "installation", "sender"}
	issuesNames       = append([]string{"issue", "label"}, baseNames...)
	issueCommentNames = append([]string{"issue", "comment"}, baseNames...)
	checkRunNames     = append([]string{"check_run", "requested_action"}, baseNames...)
	userNames         = []string{"login", "id", "type"}
	repositoryNames   = []string{"name", "full_name", "default_branch", "clone_url", "owner"}
	loginNames        = []string{"login"}
	idNames           = []string{"id"}
	nameNames         = []string{"name"}
	issueNames        = []string{"number", "title", "body", "pull_request"}
	urlNames          = []string{"url"}
	commentNames      = []string{"id", "body", "author_association"}
	checkRunRunNames  = []string{"id", "head_sha", "external_id", "check_suite", "pull_requests"}
	headBranchNames   = []string{"head_branch"}
	numberNames       = []string{"number"}
	identifierNames   = []string{"identifier"}
)

func (e *issuesEvent) decode(payload []byte) error {
	return decodeObject(payload, issuesNames, func(s *scanner, key []byte) error {
		switch string(key) {
		case "issue":
			return e.Issue.decode(s)
		case "label":
			return oneString(s, nameNames, "name", &e.Label.Name)
		}
		return e.eventBase.field(s, key)
	})
}

func (e *issueCommentEvent) decode(payload []byte) error {
	return decodeObject(payload, issueCommentNames, func(s *scanner, key []byte) error {
		switch string(key) {
		case "issue":
			return e.Issue.decode(s)
		case "comment":
			c := &e.Comment
			return s.object(commentNames, func(s *scanner, key []byte) error {
				switch string(key) {
				case "id":
					return s.integer(&c.ID, 64)
				case "body":
					return s.str(&c.Body)
				case "author_association":
					return s.str(&c.AuthorAssociation)
				}
				return s.skip()
			})
		}
		return e.eventBase.field(s, key)
	})
}

func (e *checkRunEvent) decode(payload []byte) error {
	return decodeObject(payload, checkRunNames, func(s *scanner, key []byte) error {
		switch string(key) {
		case "check_run":
			return e.decodeRun(s)
		case "requested_action":
			return oneString(s, identifierNames, "identifier", &e.RequestedAction.Identifier)
		}
		return e.eventBase.field(s, key)
	})
}

func (e *checkRunEvent) decodeRun(s *scanner) error {
	r := &e.CheckRun
	return s.object(checkRunRunNames, func(s *scanner, key []byte) error {
		switch string(key) {
		case "id":
			return s.integer(&r.ID, 64)
		case "head_sha":
			return s.str(&r.HeadSHA)
		case "external_id":
			return s.str(&r.ExternalID)
		case "check_suite":
			return oneString(s, headBranchNames, "head_branch", &r.CheckSuite.HeadBranch)
		case "pull_requests":
			return decodePullRequests(s, &r.PullRequests)
		}
		return s.skip()
	})
}

// decodePullRequests decodes into *prs as json.Unmarshal decodes into a
// slice it already holds: null clears it, elements are decoded into the
// slice's existing ones (a null element keeps what was there), and the
// slice is cut to the array's length.
func decodePullRequests(s *scanner, prs *[]pullRequestRef) error {
	if isNull, err := s.null(); isNull || err != nil {
		*prs = nil
		return err
	}
	v := *prs
	n := 0
	err := s.array(func(s *scanner, i int) error {
		switch {
		case i < len(v):
		case i < cap(v):
			v = v[:i+1]
		default:
			v = append(v, pullRequestRef{})
		}
		n = i + 1
		num := int64(v[i].Number)
		if err := oneInt(s, numberNames, "number", &num, strconv.IntSize); err != nil {
			return err
		}
		v[i].Number = int(num)
		return nil
	})
	if err != nil {
		return err
	}
	if n == 0 {
		v = []pullRequestRef{}
	}
	*prs = v[:n]
	return nil
}

// field decodes the keys every handled event shares.
func (b *eventBase) field(s *scanner, key []byte) error {
	switch string(key) {
	case "action":
		return s.str(&b.Action)
	case "repository":
		return b.Repository.decode(s)
	case "installation":
		return oneInt(s, idNames, "id", &b.Installation.ID, 64)
	case "sender":
		return b.Sender.decode(s)
	}
	return s.skip()
}

func (u *user) decode(s *scanner) error {
	return s.object(userNames, func(s *scanner, key []byte) error {
		switch string(key) {
		case "login":
			return s.str(&u.Login)
		case "id":
			return s.integer(&u.ID, 64)
		case "type":
			return s.str(&u.Type)
		}
		return s.skip()
	})
}

func (r *repository) decode(s *scanner) error {
	return s.object(repositoryNames, func(s *scanner, key []byte) error {
		switch string(key) {
		case "name":
			return s.str(&r.Name)
		case "full_name":
			return s.str(&r.FullName)
		case "default_branch":
			return s.str(&r.DefaultBranch)
		case "clone_url":
			return s.str(&r.CloneURL)
		case "owner":
			return oneString(s, loginNames, "login", &r.Owner.Login)
		}
		return s.skip()
	})
}

func (is *issue) decode(s *scanner) error {
	return s.object(issueNames, func(s *scanner, key []byte) error {
		switch string(key) {
		case "number":
			n := int64(is.Number)
			err := s.integer(&n, strconv.IntSize)
			is.Number = int(n)
			return err
		case "title":
			return s.str(&is.Title)
		case "body":
			return s.str(&is.Body)
		case "pull_request":
			// A pointer: null clears it, an object fills it (allocated
			// if need be), as json.Unmarshal does.
			if isNull, err := s.null(); isNull || err != nil {
				is.PullRequest = nil
				return err
			}
			if is.PullRequest == nil {
				is.PullRequest = &struct {
					URL string `json:"url"`
				}{}
			}
			pr := is.PullRequest
			return s.object(urlNames, func(s *scanner, key []byte) error {
				if string(key) == "url" {
					return s.str(&pr.URL)
				}
				return s.skip()
			})
		}
		return s.skip()
	})
}

// oneString decodes an object of which only the string under name is
// needed.
func oneString(s *scanner, names []string, name string, dst *string) error {
	return s.object(names, func(s *scanner, key []byte) error {
		if string(key) == name {
			return s.str(dst)
		}
		return s.skip()
	})
}

// oneInt decodes an object of which only the integer under name is needed.
func oneInt(s *scanner, names []string, name string, dst *int64, bits int) error {
	return s.object(names, func(s *scanner, key []byte) error {
		if string(key) == name {
			return s.integer(dst, bits)
		}
		return s.skip()
	})
}
