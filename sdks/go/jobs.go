package ezthrottle

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// JobSpec is a job to submit (docs/api.md, POST /api/v1/jobs). Zero fields are not sent and take
// the server's defaults.
type JobSpec struct {
	URL     string            `json:"url"`
	Method  string            `json:"method,omitempty"` // default GET
	Headers map[string]string `json:"headers,omitempty"`
	Body    string            `json:"body,omitempty"`
	// Metadata is echoed in webhooks and job views.
	Metadata map[string]string `json:"metadata,omitempty"`
	Webhooks []Webhook         `json:"webhooks,omitempty"`
	// WebhookQuorum: voting webhooks that must acknowledge; nil = the server's default.
	WebhookQuorum *int     `json:"webhook_quorum,omitempty"`
	Regions       []string `json:"regions,omitempty"`
	RegionPolicy  string   `json:"region_policy,omitempty"`  // "fallback" | "strict"
	ExecutionMode string   `json:"execution_mode,omitempty"` // "race" | "fanout"
	// RetryPolicy: nil fields take the server's defaults (3 retries, 2 reroutes, …).
	RetryPolicy *JobRetryPolicy `json:"retry_policy,omitempty"`
	// Timeout is how long the server keeps trying (default 24h); then the job ends expired.
	Timeout time.Duration `json:"-"`
	// RetryAt is the earliest time of the first call, ms since the Unix epoch (a delayed job).
	RetryAt int64 `json:"retry_at,omitempty"`
	// IdempotentKey dedups submissions; empty = a hash of the call (identical calls dedup).
	IdempotentKey string `json:"idempotent_key,omitempty"`

	// Chain fields: a fallback chain (one logical job) and the children its outcome creates.
	FallbackJob        *JobSpec `json:"fallback_job,omitempty"`
	Trigger            *Trigger `json:"trigger,omitempty"` // on a fallback job: when it runs
	OnSuccess          *JobSpec `json:"on_success,omitempty"`
	OnFailure          *JobSpec `json:"on_failure,omitempty"`
	OnFailureTimeoutMs int      `json:"on_failure_timeout_ms,omitempty"`
}

// JobRetryPolicy is a job's retry behaviour. Unset (nil) fields take the server's defaults:
// 3 retries on retry_codes [429, 503] and network errors, 2 reroutes on reroute_codes [500, 502,
// 504]. Int makes the pointers: &JobRetryPolicy{MaxRetries: ezthrottle.Int(0)} never retries.
type JobRetryPolicy struct {
	MaxRetries  *int `json:"max_retries,omitempty"`
	MaxReroutes *int `json:"max_reroutes,omitempty"`
	// RetryCodes and RerouteCodes are sent when non-nil (an empty, non-nil list means none).
	RetryCodes   []int `json:"-"`
	RerouteCodes []int `json:"-"`
}

// MarshalJSON sends the set fields only.
func (p JobRetryPolicy) MarshalJSON() ([]byte, error) {
	out := map[string]any{}
	if p.MaxRetries != nil {
		out["max_retries"] = *p.MaxRetries
	}
	if p.MaxReroutes != nil {
		out["max_reroutes"] = *p.MaxReroutes
	}
	if p.RetryCodes != nil {
		out["retry_codes"] = p.RetryCodes
	}
	if p.RerouteCodes != nil {
		out["reroute_codes"] = p.RerouteCodes
	}
	return json.Marshal(out)
}

// Int returns a pointer to n (for the optional numbers of JobSpec and JobRetryPolicy).
func Int(n int) *int { return &n }

// Trigger says when a fallback job runs: Type "on_error" with Codes, or "on_timeout" with
// TimeoutMs.
type Trigger struct {
	Type      string `json:"type"`
	Codes     []int  `json:"codes,omitempty"`
	TimeoutMs int    `json:"timeout_ms,omitempty"`
}

// MarshalJSON sends Timeout as a duration string ("1500ms").
func (s JobSpec) MarshalJSON() ([]byte, error) {
	type plain JobSpec
	out := struct {
		plain
		Timeout string `json:"timeout,omitempty"`
	}{plain: plain(s)}
	if s.Timeout > 0 {
		out.Timeout = strconv.FormatInt(s.Timeout.Milliseconds(), 10) + "ms"
	}
	return json.Marshal(out)
}

// Submission is the server's answer to a submit.
type Submission struct {
	JobID string `json:"job_id"`
	// Status is what the submission became: "queued", "racing" (it lists regions, race mode)
	// or "duplicate" (a job with this idempotency key exists; JobID is that job). Empty when
	// Job is set.
	Status        string `json:"status,omitempty"`
	IdempotentKey string `json:"idempotent_key"`
	// Job is the final view when the submit waited (SubmitWait) and the job ended in time.
	Job *Job `json:"-"`
	// HTTPStatus is the answer's status: 202 new, 200 duplicate or final view.
	HTTPStatus int `json:"-"`
	// Raw is the answer's JSON as the server sent it.
	Raw json.RawMessage `json:"-"`
}

// Duplicate reports whether the submit found an existing job with the same idempotency key.
func (s *Submission) Duplicate() bool { return s.Status == "duplicate" }

// Job is a job's view (GET /api/v1/jobs/{id}).
type Job struct {
	JobID         string            `json:"job_id"`
	State         string            `json:"state"` // queued scheduled running succeeded failed expired cancelled
	Lane          string            `json:"lane"`
	IdempotentKey string            `json:"idempotent_key"`
	Spec          json.RawMessage   `json:"spec"` // as stored; credentials redacted
	Metadata      map[string]string `json:"metadata"`
	CreatedAt     int64             `json:"created_at"`
	UpdatedAt     int64             `json:"updated_at"`
	RunAt         int64             `json:"run_at"`
	DeadlineAt    int64             `json:"deadline_at"`
	FinishedAt    *int64            `json:"finished_at"`
	AttemptCount  int               `json:"attempt_count"`
	Series        int               `json:"series"`
	Attempts      []Attempt         `json:"attempts"`
	Response      *JobResponse      `json:"response"`
	Error         *JobError         `json:"error"`
	Webhooks      []json.RawMessage `json:"webhooks"`
	ParentID      *string           `json:"parent_id"`
	Children      []string          `json:"children"`
	// Raw is the view's JSON as the server sent it.
	Raw json.RawMessage `json:"-"`
}

// Final reports whether the job has ended (succeeded, failed, expired or cancelled).
func (j *Job) Final() bool { return IsFinalState(j.State) }

// IsFinalState reports whether a job state is one a job ends in.
func IsFinalState(state string) bool {
	switch state {
	case "succeeded", "failed", "expired", "cancelled":
		return true
	}
	return false
}

// Attempt is one call the server made for a job.
type Attempt struct {
	N          int     `json:"n"`
	Series     int     `json:"series"`
	At         int64   `json:"at"`
	Region     string  `json:"region"`
	StatusCode *int    `json:"status_code"` // nil on a network error
	Error      *string `json:"error"`
	LatencyMs  int64   `json:"latency_ms"`
	Decision   string  `json:"decision"` // success retry reroute fail interrupted
	WaitMs     *int64  `json:"wait_ms"`
	// Node is the node that made the call (cluster mode; nil on one node).
	Node *string `json:"node,omitempty"`
	// Reason says why the attempt ran where it did when it moved ("reroute: 502 from r1").
	Reason *string `json:"reason,omitempty"`
	// Legs are a raced attempt's legs (execution_mode race, with Outcome) or a fanout
	// attempt's, one per region.
	Legs []AttemptLeg `json:"legs,omitempty"`
}

// AttemptLeg is one region's leg of a raced or fanout attempt.
type AttemptLeg struct {
	Region     string  `json:"region"`
	Node       *string `json:"node,omitempty"`
	StatusCode *int    `json:"status_code"`
	Error      *string `json:"error,omitempty"`
	LatencyMs  int64   `json:"latency_ms"`
	Decision   string  `json:"decision"`
	// Outcome of a raced leg: won lost cancelled error refused ("" for a fanout leg).
	Outcome string `json:"outcome,omitempty"`
}

// JobResponse is the target's final answer.
type JobResponse struct {
	StatusCode    int        `json:"status_code"`
	Headers       HeaderList `json:"headers"`
	Body          string     `json:"body"`
	BodyTruncated bool       `json:"body_truncated"`
}

// HeaderList is headers as [name, value] pairs, in order (names may repeat).
type HeaderList [][2]string

// Get is the first value of a header, by case-insensitive name.
func (h HeaderList) Get(name string) string {
	for _, kv := range h {
		if strings.EqualFold(kv[0], name) {
			return kv[1]
		}
	}
	return ""
}

// JobError says why a job failed, expired or was cancelled.
type JobError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// SubmitOption changes one Submit.
type SubmitOption func(*submitOptions)

type submitOptions struct {
	wait    time.Duration
	idemKey string
}

// SubmitWait holds the submit until the job is final or d has passed (the server caps it at
// 5 minutes). If the job ended, the Submission carries its view in Job.
func SubmitWait(d time.Duration) SubmitOption {
	return func(o *submitOptions) { o.wait = d }
}

// IdempotencyKey sends the Idempotency-Key header (an alternative to JobSpec.IdempotentKey; if
// both are set they must be equal).
func IdempotencyKey(key string) SubmitOption {
	return func(o *submitOptions) { o.idemKey = key }
}

func durationParam(d time.Duration) string {
	return strconv.FormatInt(d.Milliseconds(), 10) + "ms"
}

// Submit hands a job to the server; it is stored before this returns. Retried on network
// errors and 5xx (a retried submit whose first try did land answers Status "duplicate" with
// the same JobID).
func (c *Client) Submit(ctx context.Context, spec JobSpec, opts ...SubmitOption) (*Submission, error) {
	var o submitOptions
	for _, f := range opts {
		f(&o)
	}
	body, err := marshal(spec)
	if err != nil {
		return nil, err
	}
	cl := call{method: http.MethodPost, path: "/api/v1/jobs", body: body, idempotent: true}
	if o.wait > 0 {
		cl.query = url.Values{"wait": {durationParam(o.wait)}}
		cl.extra = o.wait
	}
	if o.idemKey != "" {
		cl.header = map[string]string{"Idempotency-Key": o.idemKey}
	}
	ans, err := c.do(ctx, cl)
	if err != nil {
		return nil, err
	}
	return submission(ans)
}

func submission(ans *answer) (*Submission, error) {
	var probe struct {
		State string `json:"state"`
	}
	_ = json.Unmarshal(ans.body, &probe)
	s := &Submission{HTTPStatus: ans.status, Raw: json.RawMessage(ans.body)}
	if probe.State != "" {
		job, err := jobFrom(ans)
		if err != nil {
			return nil, err
		}
		s.Job, s.JobID, s.IdempotentKey = job, job.JobID, job.IdempotentKey
		return s, nil
	}
	if err := decode(ans, s); err != nil {
		return nil, err
	}
	return s, nil
}

func jobFrom(ans *answer) (*Job, error) {
	var j Job
	if err := decode(ans, &j); err != nil {
		return nil, err
	}
	j.Raw = json.RawMessage(ans.body)
	return &j, nil
}

func jobPath(id string, tail string) string {
	return "/api/v1/jobs/" + url.PathEscape(id) + tail
}

// Get reads a job's view.
func (c *Client) Get(ctx context.Context, jobID string) (*Job, error) {
	ans, err := c.do(ctx, call{method: http.MethodGet, path: jobPath(jobID, ""), idempotent: true})
	if err != nil {
		return nil, err
	}
	return jobFrom(ans)
}

// maxServerWait is the longest the server holds a long-poll.
const maxServerWait = 5 * time.Minute

// Wait long-polls the server until the job is final, and returns its view. If timeout passes
// first it returns the current view and a *WaitTimeoutError (errors.Is(err, ErrWaitTimeout)).
// timeout <= 0 waits until ctx is done. Waits longer than the server's cap (5 minutes) are
// made of several long-polls.
func (c *Client) Wait(ctx context.Context, jobID string, timeout time.Duration) (*Job, error) {
	var deadline time.Time
	if timeout > 0 {
		deadline = time.Now().Add(timeout)
	}
	for {
		slice := maxServerWait
		if !deadline.IsZero() {
			slice = time.Until(deadline)
			if slice > maxServerWait {
				slice = maxServerWait
			}
			if slice < 0 {
				slice = 0
			}
		}
		ans, err := c.do(ctx, call{
			method: http.MethodGet, path: jobPath(jobID, "/wait"),
			query: url.Values{"timeout": {durationParam(slice)}}, idempotent: true, extra: slice,
		})
		if err != nil {
			return nil, err
		}
		job, err := jobFrom(ans)
		if err != nil {
			return nil, err
		}
		if job.Final() {
			return job, nil
		}
		if !deadline.IsZero() && !time.Now().Before(deadline) {
			return job, &WaitTimeoutError{Job: job}
		}
		if err := ctx.Err(); err != nil {
			return job, err
		}
	}
}

// Cancel ends a job that is not final yet as cancelled and returns its view (409 ErrConflict
// if it already ended).
func (c *Client) Cancel(ctx context.Context, jobID string) (*Job, error) {
	ans, err := c.do(ctx, call{method: http.MethodPost, path: jobPath(jobID, "/cancel")})
	if err != nil {
		return nil, err
	}
	return jobFrom(ans)
}

// Retry queues a failed or expired job again as a new attempt series and returns its view
// (409 ErrConflict for other states).
func (c *Client) Retry(ctx context.Context, jobID string) (*Job, error) {
	ans, err := c.do(ctx, call{method: http.MethodPost, path: jobPath(jobID, "/retry")})
	if err != nil {
		return nil, err
	}
	return jobFrom(ans)
}

// BatchResult is one job's outcome in a batch, in request order: a submission, or Err.
type BatchResult struct {
	JobID         string `json:"job_id,omitempty"`
	Status        string `json:"status,omitempty"`
	IdempotentKey string `json:"idempotent_key,omitempty"`
	// Err says why this job was refused (Code, Field, Message; Status is 0).
	Err *EZThrottleError `json:"-"`
	// Raw is this result's JSON as the server sent it.
	Raw json.RawMessage `json:"-"`
}

// Batch submits up to 1,000 jobs in one transaction. Each job is accepted or refused on its
// own; a refused one has Err set.
func (c *Client) Batch(ctx context.Context, specs []JobSpec) ([]BatchResult, error) {
	if specs == nil {
		specs = []JobSpec{}
	}
	body, err := marshal(map[string]any{"jobs": specs})
	if err != nil {
		return nil, err
	}
	ans, err := c.do(ctx, call{method: http.MethodPost, path: "/api/v1/jobs/batch", body: body, idempotent: true})
	if err != nil {
		return nil, err
	}
	var out struct {
		Results []json.RawMessage `json:"results"`
	}
	if err := decode(ans, &out); err != nil {
		return nil, err
	}
	results := make([]BatchResult, len(out.Results))
	for i, raw := range out.Results {
		r := &results[i]
		r.Raw = raw
		var item struct {
			BatchResult
			Error *struct {
				Code    string `json:"code"`
				Field   string `json:"field"`
				Message string `json:"message"`
			} `json:"error"`
		}
		if err := json.Unmarshal(raw, &item); err != nil {
			return nil, &EZThrottleError{Status: ans.status, Code: "invalid_answer", Message: err.Error(), Body: ans.body}
		}
		r.JobID, r.Status, r.IdempotentKey = item.JobID, item.Status, item.IdempotentKey
		if item.Error != nil {
			r.Err = &EZThrottleError{Code: item.Error.Code, Field: item.Error.Field, Message: item.Error.Message, Body: raw}
		}
	}
	return results, nil
}

// ListOptions filters List; zero fields are not sent.
type ListOptions struct {
	State        string
	Lane         string
	CreatedAfter int64 // ms since the Unix epoch
	Limit        int
	Cursor       string
}

// JobList is one page of jobs, newest first.
type JobList struct {
	Jobs []Job `json:"jobs"`
	// NextCursor fetches the next page (ListOptions.Cursor); empty on the last one.
	NextCursor string `json:"next_cursor"`
}

// List reads one page of the tenant's jobs, newest first.
func (c *Client) List(ctx context.Context, opts ListOptions) (*JobList, error) {
	q := url.Values{}
	if opts.State != "" {
		q.Set("state", opts.State)
	}
	if opts.Lane != "" {
		q.Set("lane", opts.Lane)
	}
	if opts.CreatedAfter != 0 {
		q.Set("created_after", strconv.FormatInt(opts.CreatedAfter, 10))
	}
	if opts.Limit != 0 {
		q.Set("limit", strconv.Itoa(opts.Limit))
	}
	if opts.Cursor != "" {
		q.Set("cursor", opts.Cursor)
	}
	ans, err := c.do(ctx, call{method: http.MethodGet, path: "/api/v1/jobs", query: q, idempotent: true})
	if err != nil {
		return nil, err
	}
	var out struct {
		Jobs       []json.RawMessage `json:"jobs"`
		NextCursor *string           `json:"next_cursor"`
	}
	if err := decode(ans, &out); err != nil {
		return nil, err
	}
	list := &JobList{Jobs: make([]Job, len(out.Jobs))}
	if out.NextCursor != nil {
		list.NextCursor = *out.NextCursor
	}
	for i, raw := range out.Jobs {
		if err := json.Unmarshal(raw, &list.Jobs[i]); err != nil {
			return nil, &EZThrottleError{Status: ans.status, Code: "invalid_answer", Message: err.Error(), Body: ans.body}
		}
		list.Jobs[i].Raw = raw
	}
	return list, nil
}
