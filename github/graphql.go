package github

import (
	"context"
	"fmt"
	"strings"

	"github.com/agentbot/agentbot"
)

const epGraphQL = "POST /graphql"

// ReviewThreadsQuery is the one GraphQL query agentbot makes: a pull
// request's review threads, whether each is resolved, and its comments'
// REST ids. githubtest answers exactly this shape.
const ReviewThreadsQuery = `query($owner:String!,$name:String!,$number:Int!){repository(owner:$owner,name:$name){pullRequest(number:$number){reviewThreads(first:100){nodes{isResolved comments(first:100){nodes{databaseId}}}}}}}`

type reviewThreadsAnswer struct {
	Data struct {
		Repository *struct {
			PullRequest *struct {
				ReviewThreads struct {
					Nodes []struct {
						IsResolved bool `json:"isResolved"`
						Comments   struct {
							Nodes []struct {
								DatabaseID int64 `json:"databaseId"`
							} `json:"nodes"`
						} `json:"comments"`
					} `json:"nodes"`
				} `json:"reviewThreads"`
			} `json:"pullRequest"`
		} `json:"repository"`
	} `json:"data"`
	Errors []struct {
		Message string `json:"message"`
	} `json:"errors"`
}

// ThreadResolved reports whether the review thread holding comment
// commentID on pull request ref is resolved. A thread not among the first
// 100 (or a comment in none) counts as open.
func (c *Client) ThreadResolved(ctx context.Context, installationID int64, ref agentbot.IssueRef, commentID int64) (bool, error) {
	body := map[string]any{
		"query":     ReviewThreadsQuery,
		"variables": map[string]any{"owner": ref.Repo.Owner, "name": ref.Repo.Name, "number": ref.Number},
	}
	var out reviewThreadsAnswer
	if _, err := c.call(ctx, installationID, epGraphQL, c.graphqlPath(), body, &out); err != nil {
		return false, fmt.Errorf("github: review threads of %s: %w", ref, err)
	}
	if len(out.Errors) > 0 {
		return false, fmt.Errorf("github: review threads of %s: GraphQL: %s", ref, out.Errors[0].Message)
	}
	if out.Data.Repository == nil || out.Data.Repository.PullRequest == nil {
		return false, fmt.Errorf("github: review threads of %s: no such pull request", ref)
	}
	for _, th := range out.Data.Repository.PullRequest.ReviewThreads.Nodes {
		for _, cm := range th.Comments.Nodes {
			if cm.DatabaseID == commentID {
				return th.IsResolved, nil
			}
		}
	}
	return false, nil
}

// graphqlPath is the GraphQL endpoint relative to the REST base:
// https://api.github.com/graphql beside https://api.github.com/, and
// https://HOST/api/graphql beside GitHub Enterprise Server's
// https://HOST/api/v3/.
func (c *Client) graphqlPath() string {
	if c.baseURL != nil && strings.HasSuffix(c.baseURL.Path, "/api/v3/") {
		return "../graphql"
	}
	return "graphql"
}
