package webhook

// The event shapes below name only the fields agentbot acts on, with
// GitHub's JSON names (docs.github.com "Webhook events and payloads").
// go-github's full event types were tried first and dropped for intake: they
// decode every field, so an unrelated one in an unexpected format (a
// timestamp without a "T", as in GitHub's own older examples) failed the
// whole delivery with a 400 and lost a trigger; decoding only what is used
// also halves the parse time.

type user struct {
	Login string `json:"login"`
	ID    int64  `json:"id"`
	Type  string `json:"type"`
}

type repository struct {
	Name          string `json:"name"`
	FullName      string `json:"full_name"`
	DefaultBranch string `json:"default_branch"`
	CloneURL      string `json:"clone_url"`
	Owner         struct {
		Login string `json:"login"`
	} `json:"owner"`
}

type installation struct {
	ID int64 `json:"id"`
}

// eventBase is what every handled event carries.
type eventBase struct {
	Action       string       `json:"action"`
	Repository   repository   `json:"repository"`
	Installation installation `json:"installation"`
	Sender       user         `json:"sender"`
}

type issue struct {
	Number int    `json:"number"`
	Title  string `json:"title"`
	Body   string `json:"body"`
	// PullRequest is present (an object, not null) when the issue is a pull
	// request.
	PullRequest *struct {
		URL string `json:"url"`
	} `json:"pull_request"`
}

type issuesEvent struct {
	eventBase
	Issue issue `json:"issue"`
	Label struct {
		Name string `json:"name"`
	} `json:"label"`
}

type issueCommentEvent struct {
	eventBase
	Issue   issue `json:"issue"`
	Comment struct {
		ID                int64  `json:"id"`
		Body              string `json:"body"`
		AuthorAssociation string `json:"author_association"`
	} `json:"comment"`
}

type checkRunEvent struct {
	eventBase
	CheckRun struct {
		ID         int64  `json:"id"`
		HeadSHA    string `json:"head_sha"`
		ExternalID string `json:"external_id"`
		CheckSuite struct {
			HeadBranch string `json:"head_branch"`
		} `json:"check_suite"`
		PullRequests []struct {
			Number int `json:"number"`
		} `json:"pull_requests"`
	} `json:"check_run"`
	RequestedAction struct {
		Identifier string `json:"identifier"`
	} `json:"requested_action"`
}
