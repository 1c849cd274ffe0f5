package ezthrottle

// The hosted SDK 1.2.0's client surface: SubmitJob, QueueRequest, Request, QueueAndWait and the
// webhook-secret calls, with its types. They go through the hosted envelope
// (POST /api/v1/proxy), which this server answers like the hosted service did.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"
)

// hostedAPI is the target_url host the hosted SDK put in its envelopes. This server uses only
// the path; the hosted proxy needs the host, so a client pointed at it keeps working.
const hostedAPI = "https://ezthrottle.fly.dev"

// QueueRequest is the hosted SDK's first request shape (deprecated there too: use
// SubmitJobRequest or NewStep).
type QueueRequest struct {
	URL        string            `json:"url"`
	WebhookURL string            `json:"webhook_url"`
	Method     string            `json:"method,omitempty"`
	Headers    map[string]string `json:"headers,omitempty"`
	Body       string            `json:"body,omitempty"`
	Metadata   map[string]string `json:"metadata,omitempty"`
	RetryAt    int64             `json:"retry_at,omitempty"` // ms since the Unix epoch
}

// SubmitJobRequest is a job in the hosted SDK's shape.
type SubmitJobRequest struct {
	URL                string                 `json:"url"`
	Method             string                 `json:"method"`
	Headers            map[string]string      `json:"headers,omitempty"`
	Body               string                 `json:"body,omitempty"`
	Metadata           map[string]interface{} `json:"metadata,omitempty"`
	Webhooks           []Webhook              `json:"webhooks,omitempty"`
	WebhookQuorum      int                    `json:"webhook_quorum,omitempty"`
	Regions            []string               `json:"regions,omitempty"`
	RegionPolicy       string                 `json:"region_policy,omitempty"`
	ExecutionMode      string                 `json:"execution_mode,omitempty"`
	RetryPolicy        *RetryPolicy           `json:"retry_policy,omitempty"`
	Trigger            map[string]interface{} `json:"trigger,omitempty"` // of a fallback job
	FallbackJob        *SubmitJobRequest      `json:"fallback_job,omitempty"`
	OnSuccess          *SubmitJobRequest      `json:"on_success,omitempty"`
	OnFailure          *SubmitJobRequest      `json:"on_failure,omitempty"`
	OnFailureTimeoutMs int                    `json:"on_failure_timeout_ms,omitempty"`
	IdempotentKey      string                 `json:"idempotent_key,omitempty"`
	RetryAt            int64                  `json:"retry_at,omitempty"`
}

// Webhook is where a job's outcome is delivered. HasQuorumVote false is not sent, so the
// server's default (true: it votes) applies, as with the hosted SDK; set NoVote to make a
// webhook that is told but does not count toward the quorum. The field is sent in the hosted
// spelling, hasQuorumVote (this server accepts both spellings).
type Webhook struct {
	URL           string   `json:"url"`
	Regions       []string `json:"regions,omitempty"`
	HasQuorumVote bool     `json:"hasQuorumVote,omitempty"`
	// NoVote sends hasQuorumVote false (this package's addition).
	NoVote bool `json:"-"`
}

// MarshalJSON writes the hosted shape, plus hasQuorumVote false for NoVote.
func (w Webhook) MarshalJSON() ([]byte, error) {
	out := map[string]any{"url": w.URL}
	if len(w.Regions) > 0 {
		out["regions"] = w.Regions
	}
	switch {
	case w.NoVote:
		out["hasQuorumVote"] = false
	case w.HasQuorumVote:
		out["hasQuorumVote"] = true
	}
	return json.Marshal(out)
}

// RetryPolicy is a job's retry behaviour; zero fields take the server's defaults (3 retries,
// 2 reroutes, retry on 429/503, reroute on 500/502/504).
type RetryPolicy struct {
	MaxRetries   int   `json:"maxRetries,omitempty"`
	MaxReroutes  int   `json:"maxReroutes,omitempty"`
	RetryCodes   []int `json:"retryCodes,omitempty"`
	RerouteCodes []int `json:"rerouteCodes,omitempty"`
}

// QueueResponse is the hosted SDK's submit result (also FRUGAL's local result).
type QueueResponse struct {
	JobID                   string `json:"job_id"`
	IdempotentKey           string `json:"idempotent_key,omitempty"`
	Status                  string `json:"status"`
	QueuedAt                int64  `json:"queued_at"`
	EstimatedProcessingTime int    `json:"estimated_processing_time,omitempty"`

	// FRUGAL local execution
	ExecutedLocally bool   `json:"executed_locally,omitempty"`
	StatusCode      int    `json:"status_code,omitempty"`
	ResponseBody    string `json:"response_body,omitempty"`
	// Error says why a FRUGAL local call failed ("Request failed: 500"); this SDK's addition.
	Error string `json:"error,omitempty"`

	// ForwardedStatus is the status the server answered the submit with inside the envelope
	// (201 new, 200 duplicate; 202 from servers before the hosted statuses); 0 for a local
	// FRUGAL result.
	ForwardedStatus int `json:"-"`
}

// ProxyResponse is the hosted envelope's answer.
type ProxyResponse struct {
	Status            string            `json:"status"`
	ForwardedResponse ForwardedResponse `json:"forwarded_response"`
	Error             string            `json:"error,omitempty"`
}

// ForwardedResponse is the enveloped call's answer.
type ForwardedResponse struct {
	StatusCode int               `json:"status_code"`
	Body       string            `json:"body"`
	Headers    map[string]string `json:"headers"`
}

// ErrorResponse is the hosted SDK's error body shape.
type ErrorResponse struct {
	Error   string `json:"error"`
	RetryAt int64  `json:"retry_at,omitempty"`
}

// envelope sends one call through POST /api/v1/proxy and returns the forwarded answer.
func (c *Client) envelope(ctx context.Context, method, path string, body []byte, idempotent bool) (*ForwardedResponse, error) {
	headers := map[string]string{}
	if body != nil {
		headers["Content-Type"] = "application/json"
	}
	payload, err := marshal(map[string]any{
		"scope":       "customer",
		"metric_name": "",
		"target_url":  hostedAPI + path,
		"method":      method,
		"headers":     headers,
		"body":        string(body),
	})
	if err != nil {
		return nil, err
	}
	cl := call{method: http.MethodPost, path: "/api/v1/proxy", body: payload, idempotent: idempotent}
	for attempt := 0; ; attempt++ {
		ans, err := c.do(ctx, cl)
		if err != nil {
			return nil, err
		}
		var proxy ProxyResponse
		if err := decode(ans, &proxy); err != nil {
			return nil, err
		}
		if proxy.Status != "allowed" {
			return nil, &EZThrottleError{Status: ans.status, Code: "denied", Message: "request denied: " + proxy.Error, Body: ans.body}
		}
		f := &proxy.ForwardedResponse
		if f.StatusCode < 400 || attempt >= c.maxRetries {
			return f, nil
		}
		// The enveloped call was refused the way a direct one can be: same retry rules.
		e := forwardedError(f, "")
		if !retryable(cl, e) {
			return f, nil
		}
		if sleep(ctx, c.backoff(attempt, e.RetryAfter)) != nil {
			return f, nil
		}
	}
}

// forwardedError is the typed error for a refused enveloped call.
func forwardedError(f *ForwardedResponse, prefix string) *EZThrottleError {
	h := http.Header{}
	for k, v := range f.Headers {
		h.Set(k, v)
	}
	e := apiError(f.StatusCode, h, []byte(f.Body), time.Now())
	if e.Message == "" || e.Code == fmt.Sprintf("http_%d", f.StatusCode) {
		e.Message = prefix + f.Body
	}
	return e
}

// SubmitJob submits a job through the hosted envelope. A new job answers 201, a duplicate 200
// (both accepted, and 202 from servers that predate the hosted statuses); anything else is an
// *EZThrottleError. A 429 carries RetryAt, as with the hosted SDK.
func (c *Client) SubmitJob(req *SubmitJobRequest) (*QueueResponse, error) {
	return c.submitJob(context.Background(), req)
}

func (c *Client) submitJob(ctx context.Context, req *SubmitJobRequest) (*QueueResponse, error) {
	if req == nil {
		return nil, &EZThrottleError{Code: "invalid_input", Message: "SubmitJob: nil request"}
	}
	r := *req
	if r.Method == "" {
		r.Method = http.MethodGet
	}
	body, err := marshal(hostedPayload(&r))
	if err != nil {
		return nil, err
	}
	f, err := c.envelope(ctx, http.MethodPost, "/api/v1/jobs", body, true)
	if err != nil {
		return nil, err
	}
	switch f.StatusCode {
	case http.StatusOK, http.StatusCreated, http.StatusAccepted:
	default:
		return nil, forwardedError(f, "EZThrottle job creation failed: ")
	}
	var q QueueResponse
	if err := json.Unmarshal([]byte(f.Body), &q); err != nil {
		return nil, &EZThrottleError{Status: f.StatusCode, Code: "invalid_answer", Message: "failed to parse EZThrottle response: " + err.Error(), Body: []byte(f.Body)}
	}
	q.ForwardedStatus = f.StatusCode
	if q.QueuedAt == 0 {
		q.QueuedAt = time.Now().UnixMilli()
	}
	return &q, nil
}

// hostedPayload is the job body the hosted SDK sent: only the fields that are set.
func hostedPayload(r *SubmitJobRequest) map[string]any {
	p := map[string]any{"url": r.URL, "method": r.Method}
	if r.Headers != nil {
		p["headers"] = r.Headers
	}
	if r.Body != "" {
		p["body"] = r.Body
	}
	if r.Metadata != nil {
		p["metadata"] = r.Metadata
	}
	if len(r.Webhooks) > 0 {
		p["webhooks"] = r.Webhooks
	}
	if r.WebhookQuorum > 0 {
		p["webhook_quorum"] = r.WebhookQuorum
	}
	if len(r.Regions) > 0 {
		p["regions"] = r.Regions
	}
	if r.RegionPolicy != "" {
		p["region_policy"] = r.RegionPolicy
	}
	if r.ExecutionMode != "" {
		p["execution_mode"] = r.ExecutionMode
	}
	if r.RetryPolicy != nil {
		p["retry_policy"] = r.RetryPolicy
	}
	if r.Trigger != nil {
		p["trigger"] = r.Trigger
	}
	if r.FallbackJob != nil {
		p["fallback_job"] = hostedPayload(withMethod(r.FallbackJob))
	}
	if r.OnSuccess != nil {
		p["on_success"] = hostedPayload(withMethod(r.OnSuccess))
	}
	if r.OnFailure != nil {
		p["on_failure"] = hostedPayload(withMethod(r.OnFailure))
	}
	if r.OnFailureTimeoutMs > 0 {
		p["on_failure_timeout_ms"] = r.OnFailureTimeoutMs
	}
	if r.IdempotentKey != "" {
		p["idempotent_key"] = r.IdempotentKey
	}
	if r.RetryAt > 0 {
		p["retry_at"] = r.RetryAt
	}
	return p
}

func withMethod(r *SubmitJobRequest) *SubmitJobRequest {
	c := *r
	if c.Method == "" {
		c.Method = http.MethodGet
	}
	return &c
}

// QueueRequest submits a QueueRequest (the hosted SDK's deprecated call; WebhookURL becomes
// one voting webhook).
func (c *Client) QueueRequest(req *QueueRequest) (*QueueResponse, error) {
	return c.SubmitJob(queueToSubmit(req))
}

func queueToSubmit(req *QueueRequest) *SubmitJobRequest {
	s := &SubmitJobRequest{URL: req.URL, Method: req.Method, Headers: req.Headers, Body: req.Body, RetryAt: req.RetryAt}
	if req.WebhookURL != "" {
		s.Webhooks = []Webhook{{URL: req.WebhookURL, HasQuorumVote: true}}
		s.WebhookQuorum = 1
	}
	if req.Metadata != nil {
		s.Metadata = make(map[string]interface{}, len(req.Metadata))
		for k, v := range req.Metadata {
			s.Metadata[k] = v
		}
	}
	return s
}

// Request makes a direct HTTP call with the client's *http.Client (no EZThrottle involved),
// bounded by WithTimeout (default 30s, as the hosted client's timeout); FRUGAL steps use it for
// their local try. Close the body.
func (c *Client) Request(method, url string, headers map[string]string, body string) (*http.Response, error) {
	return c.request(context.Background(), method, url, headers, body)
}

func (c *Client) request(ctx context.Context, method, url string, headers map[string]string, body string) (*http.Response, error) {
	// Bounded like the hosted SDK's 30 s client timeout (WithTimeout), body read included.
	cancel := context.CancelFunc(func() {})
	if c.timeout > 0 {
		ctx, cancel = context.WithTimeout(ctx, c.timeout)
	}
	resp, err := c.requestOnce(ctx, method, url, headers, body)
	if err != nil {
		cancel()
		return nil, err
	}
	resp.Body = &cancelOnClose{ReadCloser: resp.Body, cancel: cancel}
	return resp, nil
}

func (c *Client) requestOnce(ctx context.Context, method, url string, headers map[string]string, body string) (*http.Response, error) {
	var r io.Reader
	if body != "" {
		r = bytes.NewReader([]byte(body))
	}
	req, err := http.NewRequestWithContext(ctx, method, url, r)
	if err != nil {
		return nil, fmt.Errorf("failed to create request: %w", err)
	}
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	return c.httpClient.Do(req)
}

// QueueAndWait submits req and waits up to timeout for the job to end, returning its final
// view as a map. (The hosted SDK only slept here; this one long-polls the server, so
// pollInterval is unused.) If the job is not final in time the error matches ErrWaitTimeout.
func (c *Client) QueueAndWait(req *QueueRequest, timeout time.Duration, pollInterval time.Duration) (map[string]interface{}, error) {
	_ = pollInterval
	q, err := c.QueueRequest(req)
	if err != nil {
		return nil, err
	}
	job, err := c.Wait(context.Background(), q.JobID, timeout)
	if err != nil {
		return nil, err
	}
	var m map[string]interface{}
	if err := json.Unmarshal(job.Raw, &m); err != nil {
		return nil, err
	}
	return m, nil
}

// ---------------------------------------------------------------------------- webhook secrets

// CreateWebhookSecret sets the tenant's webhook signing secrets (16+ characters each;
// secondary may be "" — then only the primary signs). Returns the server's (masked) answer.
func (c *Client) CreateWebhookSecret(primarySecret, secondarySecret string) (map[string]interface{}, error) {
	if len(primarySecret) < 16 {
		return nil, &EZThrottleError{Code: "invalid_field", Field: "primary_secret", Message: "primarySecret must be at least 16 characters"}
	}
	if secondarySecret != "" && len(secondarySecret) < 16 {
		return nil, &EZThrottleError{Code: "invalid_field", Field: "secondary_secret", Message: "secondarySecret must be at least 16 characters"}
	}
	payload := map[string]any{"primary_secret": primarySecret}
	if secondarySecret != "" {
		payload["secondary_secret"] = secondarySecret
	}
	body, err := marshal(payload)
	if err != nil {
		return nil, err
	}
	return c.secretCall(http.MethodPost, "/api/v1/webhook-secrets", body, true)
}

// GetWebhookSecret reads the secrets, masked ({"primary_secret": "****wxyz", "has_secondary":
// …}). With none set the error matches ErrNotFound.
func (c *Client) GetWebhookSecret() (map[string]interface{}, error) {
	m, err := c.secretCall(http.MethodGet, "/api/v1/webhook-secrets", nil, true)
	if e, ok := err.(*EZThrottleError); ok && e.Status == http.StatusNotFound {
		e.Message = "no webhook secrets configured. Call CreateWebhookSecret() first"
	}
	return m, err
}

// DeleteWebhookSecret removes the secrets (webhooks go unsigned).
func (c *Client) DeleteWebhookSecret() (map[string]interface{}, error) {
	return c.secretCall(http.MethodDelete, "/api/v1/webhook-secrets", nil, true)
}

// RotateWebhookSecret makes newSecret the primary and keeps the old primary as secondary, so
// deliveries are signed with both until you retire the old one with
// CreateWebhookSecret(newSecret, ""). (The hosted SDK read the masked secret back and so lost
// the old one; this calls the server's rotate endpoint.) With no secret set yet it creates one.
func (c *Client) RotateWebhookSecret(newSecret string) (map[string]interface{}, error) {
	if len(newSecret) < 16 {
		return nil, &EZThrottleError{Code: "invalid_field", Field: "new_secret", Message: "newSecret must be at least 16 characters"}
	}
	body, err := marshal(map[string]any{"new_secret": newSecret})
	if err != nil {
		return nil, err
	}
	m, err := c.secretCall(http.MethodPost, "/api/v1/webhook-secrets/rotate", body, false)
	if e, ok := err.(*EZThrottleError); ok && e.Status == http.StatusNotFound {
		return c.CreateWebhookSecret(newSecret, "")
	}
	return m, err
}

func (c *Client) secretCall(method, path string, body []byte, idempotent bool) (map[string]interface{}, error) {
	f, err := c.envelope(context.Background(), method, path, body, idempotent)
	if err != nil {
		return nil, err
	}
	if f.StatusCode < 200 || f.StatusCode >= 300 {
		return nil, forwardedError(f, "request failed: ")
	}
	result := map[string]interface{}{}
	if len(bytes.TrimSpace([]byte(f.Body))) == 0 {
		return result, nil
	}
	if err := json.Unmarshal([]byte(f.Body), &result); err != nil {
		return nil, &EZThrottleError{Status: f.StatusCode, Code: "invalid_answer", Message: "failed to parse response: " + err.Error(), Body: []byte(f.Body)}
	}
	return result, nil
}
