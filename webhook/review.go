package webhook

import (
	"encoding/json"
	"fmt"

	"github.com/agentbot/agentbot"
)

// Review events: a review comment (pull_request_review_comment.created) or
// a submitted review's body (pull_request_review.submitted) with an /agent
// command (or a mention) under the same rules as an issue comment. Edited
// and deleted review comments, and edited or dismissed reviews, are
// ignored: a command runs once, when it is first said. Whether the pull
// request is agentbot's is the dispatcher's to judge (its branch), as for
// an issue comment on a pull request.
//
// These payloads carry the whole pull request; json.Unmarshal into the few
// fields used keeps the rest unparsed in shape, as for push.

type reviewPull struct {
	Number int    `json:"number"`
	Title  string `json:"title"`
	Body   string `json:"body"`
}

type reviewCommentEvent struct {
	eventBase
	Comment struct {
		ID                int64  `json:"id"`
		Body              string `json:"body"`
		AuthorAssociation string `json:"author_association"`
		InReplyTo         int64  `json:"in_reply_to_id"`
		ReviewID          int64  `json:"pull_request_review_id"`
		Path              string `json:"path"`
		Line              int    `json:"line"`
		OriginalLine      int    `json:"original_line"`
		StartLine         int    `json:"start_line"`
		Side              string `json:"side"`
		StartSide         string `json:"start_side"`
		DiffHunk          string `json:"diff_hunk"`
	} `json:"comment"`
	PullRequest reviewPull `json:"pull_request"`
}

type reviewEvent struct {
	eventBase
	Review struct {
		ID                int64  `json:"id"`
		Body              string `json:"body"`
		State             string `json:"state"`
		AuthorAssociation string `json:"author_association"`
	} `json:"review"`
	PullRequest reviewPull `json:"pull_request"`
}

func parseReviewComment(payload []byte, opts ParseOptions) (decision, error) {
	var e reviewCommentEvent
	if err := json.Unmarshal(payload, &e); err != nil {
		return decision{}, malformed("pull_request_review_comment", err)
	}
	var d decision
	if e.Action != "created" {
		d.Action, d.Repo = e.Action, e.Repository.FullName
		return ignore(d, "pull_request_review_comment.%s is not a trigger", e.Action), nil
	}
	c := &e.Comment
	root := c.InReplyTo
	if root == 0 {
		root = c.ID
	}
	line := c.Line
	if line == 0 {
		line = c.OriginalLine // an outdated comment keeps where it was said
	}
	ref := &agentbot.ReviewRef{
		CommentID: c.ID, ThreadRoot: root, ReviewID: c.ReviewID,
		Path: c.Path, Line: line, StartLine: c.StartLine, Side: c.Side, StartSide: c.StartSide, DiffHunk: c.DiffHunk,
	}
	if c.ID <= 0 {
		d.Action, d.Repo = e.Action, e.Repository.FullName
		return ignore(d, "payload names no review comment"), nil
	}
	return reviewCommand(&e.eventBase, e.PullRequest, c.Body, c.AuthorAssociation, ref, "a review thread", opts), nil
}

func parseReview(payload []byte, opts ParseOptions) (decision, error) {
	var e reviewEvent
	if err := json.Unmarshal(payload, &e); err != nil {
		return decision{}, malformed("pull_request_review", err)
	}
	var d decision
	if e.Action != "submitted" {
		d.Action, d.Repo = e.Action, e.Repository.FullName
		return ignore(d, "pull_request_review.%s is not a trigger", e.Action), nil
	}
	if e.Review.ID <= 0 {
		d.Action, d.Repo = e.Action, e.Repository.FullName
		return ignore(d, "payload names no review"), nil
	}
	ref := &agentbot.ReviewRef{ReviewID: e.Review.ID}
	return reviewCommand(&e.eventBase, e.PullRequest, e.Review.Body, e.Review.AuthorAssociation, ref, "a review", opts), nil
}

// reviewCommand is the decision for a review comment or review body.
func reviewCommand(ev *eventBase, pr reviewPull, body, assoc string, ref *agentbot.ReviewRef, where string, opts ParseOptions) decision {
	var d decision
	if why := common(&d, ev); why != "" {
		return ignore(d, "%s", why)
	}
	cmd := parseCommand(body, opts)
	if !cmd.Found {
		return ignore(d, "%s has no /agent command", where)
	}
	if pr.Number <= 0 {
		return ignore(d, "payload names no pull request")
	}
	d.Issue.Number = pr.Number
	d.IsPullRequest = true
	d.Review = ref
	d.Sender.AuthorAssociation = assoc
	if cmd.Control != "" {
		d.Kind = agentbot.KindControl
		d.Control = cmd.Control
		d.Suggestion, d.Prompt.Instructions = cmd.Suggestion, cmd.Typed
		d.Reason = fmt.Sprintf("/agent %s in %s", cmd.Control, where)
		return d
	}
	d.Kind = agentbot.KindFollowUp
	d.Reason = "/agent in " + where
	d.Prompt = agentbot.Prompt{Title: pr.Title, Body: pr.Body, Instructions: cmd.Instructions}
	return d
}
