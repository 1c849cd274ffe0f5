package ezthrottle

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// EZThrottleError is every error this package returns for a call the server refused or could
// not be reached for. Take it apart with errors.As:
//
//	var e *ezthrottle.EZThrottleError
//	if errors.As(err, &e) && e.Code == "invalid_field" {
//	    log.Printf("fix %s: %s", e.Field, e.Message)
//	}
//
// or test its kind with errors.Is(err, ezthrottle.ErrNotFound) (ErrUnauthorized,
// ErrValidation, ErrConflict, ErrRateLimited, ErrUnavailable, ErrUnreachable, ErrServer).
//
// The first two fields are the hosted SDK's (it built the type with only those, and code
// written for it keeps compiling); the others say what the server answered.
type EZThrottleError struct {
	// Message is the server's message, or what went wrong on the way.
	Message string
	// RetryAt is when to try again (ms since the Unix epoch), set when the server sent
	// Retry-After (429, 503) — the hosted SDK's field.
	RetryAt int64

	// Status is the HTTP status of the answer; 0 when none came (see Err).
	Status int
	// Code is the API error code ("invalid_field", "not_found", "quota_exceeded", …); for
	// errors without an answer "unreachable" (or "canceled" when the context ended), and for
	// answers without a JSON error body "http_<status>".
	Code string
	// Field names the offending input field when the server named one
	// ("retry_policy.max_retries", "headers.x-api-key", …).
	Field string
	// RetryAfter is the server's Retry-After, 0 when it sent none.
	RetryAfter time.Duration
	// RequestID is the answer's X-Request-Id (quote it when reporting a problem).
	RequestID string
	// Body is the raw answer body.
	Body []byte
	// Err is the underlying error when no answer came (connection refused, reset, timeout).
	Err error
}

func (e *EZThrottleError) Error() string {
	if e.Status == 0 && e.Code == "" && e.Err == nil {
		// Built the hosted way: keep the hosted text.
		if e.RetryAt > 0 {
			return fmt.Sprintf("%s (retry at: %d)", e.Message, e.RetryAt)
		}
		return e.Message
	}
	var b strings.Builder
	b.WriteString("ezthrottle: ")
	if e.Status != 0 {
		b.WriteString(strconv.Itoa(e.Status))
		b.WriteByte(' ')
	}
	b.WriteString(e.Code)
	if e.Field != "" {
		b.WriteString(" (")
		b.WriteString(e.Field)
		b.WriteByte(')')
	}
	if e.Message != "" {
		b.WriteString(": ")
		b.WriteString(e.Message)
	}
	if e.Err != nil && !strings.Contains(e.Message, e.Err.Error()) {
		b.WriteString(": ")
		b.WriteString(e.Err.Error())
	}
	if e.RetryAfter > 0 {
		fmt.Fprintf(&b, " (retry after %s)", e.RetryAfter)
	}
	return b.String()
}

// Unwrap gives the underlying network error, if any.
func (e *EZThrottleError) Unwrap() error { return e.Err }

// Is matches the kind sentinels (ErrNotFound, ErrRateLimited, …).
func (e *EZThrottleError) Is(target error) bool {
	k, ok := target.(*kind)
	if !ok {
		return false
	}
	return k.match(e)
}

// Retryable reports whether the same call may succeed later unchanged: no answer came, or the
// server answered 429 or a 5xx.
func (e *EZThrottleError) Retryable() bool {
	return e.Status == 0 || e.Status == http.StatusTooManyRequests || e.Status >= 500
}

type kind struct {
	name  string
	match func(*EZThrottleError) bool
}

func (k *kind) Error() string { return "ezthrottle: " + k.name }

// Kinds of *EZThrottleError, for errors.Is.
var (
	// ErrUnauthorized: 401, a missing or unknown API key.
	ErrUnauthorized error = &kind{"unauthorized", func(e *EZThrottleError) bool { return e.Status == 401 }}
	// ErrNotFound: 404, no such job (or not this tenant's).
	ErrNotFound error = &kind{"not found", func(e *EZThrottleError) bool { return e.Status == 404 }}
	// ErrConflict: 409, e.g. cancelling a job that is already final.
	ErrConflict error = &kind{"conflict", func(e *EZThrottleError) bool { return e.Status == 409 }}
	// ErrValidation: 400, 413 or 422 — the input was refused; Code and Field say why.
	ErrValidation error = &kind{"invalid input", func(e *EZThrottleError) bool {
		return e.Status == 400 || e.Status == 413 || e.Status == 422
	}}
	// ErrRateLimited: 429 (quota_exceeded, too_many_waiters); RetryAfter says when to come back.
	ErrRateLimited error = &kind{"rate limited", func(e *EZThrottleError) bool { return e.Status == 429 }}
	// ErrUnavailable: 503, the server could not store anything right now.
	ErrUnavailable error = &kind{"unavailable", func(e *EZThrottleError) bool { return e.Status == 503 }}
	// ErrServer: any 5xx.
	ErrServer error = &kind{"server error", func(e *EZThrottleError) bool { return e.Status >= 500 }}
	// ErrUnreachable: no answer came (connection refused or reset, timeout before an answer).
	ErrUnreachable error = &kind{"unreachable", func(e *EZThrottleError) bool { return e.Code == "unreachable" }}
)

// ErrWaitTimeout is matched (errors.Is) by the *WaitTimeoutError that Wait returns when the
// job was not final when the wait ended.
var ErrWaitTimeout = errors.New("ezthrottle: the job is not final yet")

// WaitTimeoutError is returned by Wait when the wait ended before
// the job was final. Job is its view at that moment.
type WaitTimeoutError struct {
	Job *Job
}

func (e *WaitTimeoutError) Error() string {
	return fmt.Sprintf("ezthrottle: job %s is still %s after the wait", e.Job.JobID, e.Job.State)
}

// Is makes errors.Is(err, ErrWaitTimeout) true.
func (e *WaitTimeoutError) Is(target error) bool { return target == ErrWaitTimeout }

// apiError turns a refused answer into an *EZThrottleError.
func apiError(status int, header http.Header, body []byte, now time.Time) *EZThrottleError {
	e := &EZThrottleError{Status: status, Body: body}
	if header != nil {
		e.RequestID = header.Get("X-Request-Id")
		e.RetryAfter = parseRetryAfter(header.Get("Retry-After"), now)
	}
	var shape struct {
		Error *struct {
			Code    string `json:"code"`
			Field   string `json:"field"`
			Message string `json:"message"`
		} `json:"error"`
	}
	if json.Unmarshal(body, &shape) == nil && shape.Error != nil && shape.Error.Code != "" {
		e.Code, e.Field, e.Message = shape.Error.Code, shape.Error.Field, shape.Error.Message
	} else {
		e.Code = "http_" + strconv.Itoa(status)
		e.Message = strings.TrimSpace(truncate(string(body), 512))
	}
	if e.RetryAfter > 0 {
		e.RetryAt = now.Add(e.RetryAfter).UnixMilli()
	}
	return e
}

func unreachable(err error) *EZThrottleError {
	return &EZThrottleError{Code: "unreachable", Message: "no answer from the server", Err: err}
}

// canceled is the error of a call its context ended (errors.Is(err, context.Canceled) or
// context.DeadlineExceeded holds).
func canceled(ctxErr, err error) *EZThrottleError {
	if err == nil {
		err = ctxErr
	}
	return &EZThrottleError{Code: "canceled", Message: "the call's context ended: " + ctxErr.Error(), Err: err}
}

// parseRetryAfter reads seconds or an HTTP date; 0 when absent or unreadable.
func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if secs, err := strconv.ParseFloat(v, 64); err == nil {
		if secs <= 0 {
			return 0
		}
		return time.Duration(secs * float64(time.Second))
	}
	if t, err := http.ParseTime(v); err == nil {
		if d := t.Sub(now); d > 0 {
			return d
		}
	}
	return 0
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
