package github

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	gh "github.com/google/go-github/v66/github"

	"github.com/agentbot/agentbot"
)

// A POST that creates a comment, a check run or a pull request is not
// idempotent: GitHub may create the object and still answer 502, or the
// connection may drop after the request went out. Retrying blindly would
// post a second comment or open a second check run, so creates are not
// retried by the transport on such answers; create looks for what the
// failed attempt may have made first, and retries only when it finds
// nothing. Rate-limit answers and failed dials are still retried by the
// transport: GitHub did nothing for those.

type createKey struct{}

// withCreate marks ctx's request as a non-idempotent create.
func withCreate(ctx context.Context, on bool) context.Context {
	return context.WithValue(ctx, createKey{}, on)
}

func isCreate(ctx context.Context) bool {
	on, _ := ctx.Value(createKey{}).(bool)
	return on
}

// isDialError reports whether err happened before the request was sent.
func isDialError(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

// uncertain reports whether a create that failed with err may have been
// carried out all the same: a 5xx answer, or a network error after the
// request may have been sent.
func uncertain(ctx context.Context, err error) bool {
	if err == nil || ctx.Err() != nil {
		return false
	}
	var apiErr *APIError
	if errors.As(err, &apiErr) {
		return apiErr.Status >= 500
	}
	return !isDialError(err)
}

// lookupWindow is how far back create looks for what a failed attempt
// made; it covers clock skew between agentbot and GitHub.
const lookupWindow = 10 * time.Minute

// create makes one POST that creates an object, retrying an uncertain
// failure only after find (which fills the caller's result when it finds
// the object) says the object does not exist. find nil means the object
// cannot be recognised: an uncertain failure is then returned, not retried.
func (c *Client) create(ctx context.Context, installationID int64, endpoint, path string, body, out any, find func(context.Context) (bool, error)) error {
	cctx := withCreate(ctx, true)
	for attempt := 1; ; attempt++ {
		_, err := c.call(cctx, installationID, endpoint, path, body, out)
		if !uncertain(ctx, err) {
			return err
		}
		if find == nil {
			return fmt.Errorf("%w (not retried: GitHub may have done it)", err)
		}
		found, ferr := find(ctx)
		if ferr != nil {
			return fmt.Errorf("%w (and looking for what it may have created failed: %w)", err, ferr)
		}
		if found {
			c.logger.LogAttrs(ctx, slog.LevelInfo, "github create failed but had been done; using what it made",
				slog.String("endpoint", endpoint), slog.Int("attempt", attempt), slog.String("err", err.Error()))
			return nil
		}
		if attempt >= c.policy.maxAttempts {
			return err
		}
		wait := c.policy.backoff(attempt)
		reason := "network"
		if apiErr := (*APIError)(nil); errors.As(err, &apiErr) {
			reason = "server_error"
		}
		c.policy.metrics.retries.WithLabelValues(reason).Inc()
		c.logger.LogAttrs(ctx, slog.LevelWarn, "github create retried after finding nothing made",
			slog.String("endpoint", endpoint), slog.Int("attempt", attempt), slog.Duration("wait", wait),
			slog.String("err", err.Error()))
		if err := c.policy.sleep(ctx, wait); err != nil {
			return err
		}
	}
}

// Limits on the look-ups after an uncertain create.
const (
	maxLookupPages = 10
	lookupPerPage  = 100
)

var markerLine = regexp.MustCompile(`^<!-- agentbot task=\S+ -->$`)

// markerOf returns body's first line when it is a CommentMarker.
func markerOf(body string) string {
	first, _, _ := strings.Cut(body, "\n")
	if markerLine.MatchString(first) {
		return first
	}
	return ""
}

const epListComments = "GET /repos/{owner}/{repo}/issues/{number}/comments"

// issueComment is the part of an issue comment a look-up needs; go-github
// v66 does not decode performed_via_github_app.
type issueComment struct {
	ID   int64  `json:"id"`
	Body string `json:"body"`
	User struct {
		Type string `json:"type"`
	} `json:"user"`
	App *struct {
		ID int64 `json:"id"`
	} `json:"performed_via_github_app"`
}

// FindComment looks on ref for this App's comment whose first line is
// marker (a CommentMarker), among the comments updated since since less a
// margin for clock skew between agentbot and GitHub; a zero since looks at
// them all. It is for a caller whose earlier CreateComment failed in a way
// GitHub may have carried out (an error, a crash) and that must adopt that
// comment rather than post a second one.
func (c *Client) FindComment(ctx context.Context, installationID int64, ref agentbot.IssueRef, marker string, since time.Time) (int64, bool, error) {
	if err := checkRef(ref); err != nil {
		return 0, false, err
	}
	if marker == "" || markerOf(marker) != marker {
		return 0, false, fmt.Errorf("github: find comment on %s: %q is not a comment marker", ref, marker)
	}
	if !since.IsZero() {
		since = since.Add(-lookupWindow)
	}
	return c.findComment(ctx, installationID, ref, marker, since)
}

// findComment finds a comment on ref by this App, updated since since (all
// of them for a zero since), whose first line is marker.
func (c *Client) findComment(ctx context.Context, installationID int64, ref agentbot.IssueRef, marker string, since time.Time) (int64, bool, error) {
	for page := 1; page <= maxLookupPages; page++ {
		q := url.Values{"per_page": {strconv.Itoa(lookupPerPage)}, "page": {strconv.Itoa(page)}}
		if !since.IsZero() {
			q.Set("since", since.UTC().Format(time.RFC3339))
		}
		var comments []issueComment
		resp, err := c.call(ctx, installationID, epListComments, issuePath(ref)+"/comments?"+q.Encode(), nil, &comments)
		if err != nil {
			return 0, false, fmt.Errorf("github: comments on %s: %w", ref, err)
		}
		for _, cm := range comments {
			if cm.User.Type == "Bot" && (cm.App == nil || cm.App.ID == c.appID) && markerOf(cm.Body) == marker {
				return cm.ID, true, nil
			}
		}
		if resp.NextPage == 0 {
			break
		}
	}
	return 0, false, nil
}

const epListCheckRuns = "GET /repos/{owner}/{repo}/commits/{ref}/check-runs"

// findCheckRun finds this App's agentbot check run on sha with externalID.
func (c *Client) findCheckRun(ctx context.Context, installationID int64, repo agentbot.Repo, sha, externalID string) (int64, bool, error) {
	for page := 1; page <= maxLookupPages; page++ {
		q := url.Values{
			"check_name": {CheckRunName}, "filter": {"all"}, "app_id": {strconv.FormatInt(c.appID, 10)},
			"per_page": {strconv.Itoa(lookupPerPage)}, "page": {strconv.Itoa(page)},
		}
		var out gh.ListCheckRunsResults
		path := fmt.Sprintf("%s/commits/%s/check-runs?%s", repoPath(repo), url.PathEscape(sha), q.Encode())
		resp, err := c.call(ctx, installationID, epListCheckRuns, path, nil, &out)
		if err != nil {
			return 0, false, fmt.Errorf("github: check runs on %s@%s: %w", repo, sha, err)
		}
		for _, cr := range out.CheckRuns {
			if cr.GetExternalID() == externalID && cr.GetName() == CheckRunName && (cr.App == nil || cr.App.GetID() == c.appID) {
				return cr.GetID(), true, nil
			}
		}
		if resp.NextPage == 0 {
			break
		}
	}
	return 0, false, nil
}
