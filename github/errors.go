package github

import (
	"errors"
	"fmt"
	"net/http"
	"strings"

	gh "github.com/google/go-github/v66/github"
)

// Sentinel errors matched with errors.Is against an *APIError.
var (
	ErrNotFound     = errors.New("github: not found")
	ErrForbidden    = errors.New("github: forbidden")
	ErrUnauthorized = errors.New("github: unauthorized")
	ErrValidation   = errors.New("github: validation failed")
	ErrRateLimited  = errors.New("github: rate limited")
)

// APIError is a response from GitHub that says no: any status outside 2xx
// that was not (or no longer) worth retrying.
type APIError struct {
	Status int
	// Endpoint is the request's method and path template,
	// "POST /repos/{owner}/{repo}/pulls"; never an id or a name.
	Endpoint string
	// Message is GitHub's own message with its field errors, if any.
	Message string
	// RateLimited is set for primary and secondary rate-limit answers.
	RateLimited bool
}

func (e *APIError) Error() string {
	msg := e.Message
	if msg == "" {
		msg = http.StatusText(e.Status)
	}
	return fmt.Sprintf("github: %s: %d %s", e.Endpoint, e.Status, msg)
}

// Is lets errors.Is(err, ErrNotFound) and friends classify an APIError.
func (e *APIError) Is(target error) bool {
	switch target {
	case ErrNotFound:
		return e.Status == http.StatusNotFound
	case ErrForbidden:
		return e.Status == http.StatusForbidden && !e.RateLimited
	case ErrUnauthorized:
		return e.Status == http.StatusUnauthorized
	case ErrValidation:
		return e.Status == http.StatusUnprocessableEntity
	case ErrRateLimited:
		return e.RateLimited
	}
	return false
}

// IsNotFound reports whether err is GitHub answering 404.
func IsNotFound(err error) bool { return errors.Is(err, ErrNotFound) }

// IsForbidden reports whether err is GitHub answering 403 for a reason other
// than a rate limit.
func IsForbidden(err error) bool { return errors.Is(err, ErrForbidden) }

// toAPIError turns go-github's error types into *APIError; other errors
// (network, context) are returned unchanged.
func toAPIError(endpoint string, err error) error {
	if err == nil {
		return nil
	}
	var (
		er  *gh.ErrorResponse
		rl  *gh.RateLimitError
		ab  *gh.AbuseRateLimitError
		acc *gh.AcceptedError
	)
	switch {
	case errors.As(err, &rl):
		return &APIError{Status: statusOf(rl.Response, http.StatusForbidden), Endpoint: endpoint, Message: rl.Message, RateLimited: true}
	case errors.As(err, &ab):
		return &APIError{Status: statusOf(ab.Response, http.StatusForbidden), Endpoint: endpoint, Message: ab.Message, RateLimited: true}
	case errors.As(err, &er):
		status := statusOf(er.Response, 0)
		return &APIError{
			Status:      status,
			Endpoint:    endpoint,
			Message:     errorMessage(er),
			RateLimited: status == http.StatusTooManyRequests,
		}
	case errors.As(err, &acc):
		return &APIError{Status: http.StatusAccepted, Endpoint: endpoint, Message: "accepted, not yet done"}
	}
	return err
}

func statusOf(r *http.Response, def int) int {
	if r == nil {
		return def
	}
	return r.StatusCode
}

func errorMessage(er *gh.ErrorResponse) string {
	msg := er.Message
	var details []string
	for _, fe := range er.Errors {
		switch {
		case fe.Message != "":
			details = append(details, fe.Message)
		case fe.Field != "":
			details = append(details, fmt.Sprintf("%s.%s %s", fe.Resource, fe.Field, fe.Code))
		case fe.Code != "":
			details = append(details, fe.Code)
		}
	}
	if len(details) > 0 {
		msg += " (" + strings.Join(details, "; ") + ")"
	}
	return msg
}

// IsValidation reports whether err is GitHub refusing a request as invalid
// (422), such as a pull request from a branch that does not exist.
func IsValidation(err error) bool { return errors.Is(err, ErrValidation) }

// IsRateLimited reports whether err is a rate limit agentbot gave up
// waiting for.
func IsRateLimited(err error) bool { return errors.Is(err, ErrRateLimited) }
