package ezthrottle

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"time"
)

// StepType is how a Step runs.
type StepType string

const (
	// StepTypeFrugal calls the target from here first and hands the call to EZThrottle only
	// on a status listed in FallbackOnError or a network error (the default).
	StepTypeFrugal StepType = "frugal"
	// StepTypePerformance hands the call to EZThrottle straight away.
	StepTypePerformance StepType = "performance"
)

// IdempotentStrategy is how a Step's idempotency key is chosen when none is set.
type IdempotentStrategy string

const (
	// IdempotentStrategyHash lets the server derive the key from the call, so identical calls
	// are one job (the default).
	IdempotentStrategyHash IdempotentStrategy = "hash"
	// IdempotentStrategyUnique gives every Execute a fresh random key, so identical calls are
	// separate jobs (polling, scheduled calls).
	IdempotentStrategyUnique IdempotentStrategy = "unique"
)

// Step is the hosted SDK's fluent builder of one call (and its fallback and follow-ups).
type Step struct {
	client *Client

	url             string
	method          string
	headers         map[string]string
	body            string
	metadata        map[string]interface{}
	stepType        StepType
	idempotentStrat IdempotentStrategy
	idempotentKey   string

	fallbackOnError []int
	localTimeout    time.Duration

	webhooks      []Webhook
	webhookQuorum int
	regions       []string
	regionPolicy  string
	executionMode string
	retryPolicy   *RetryPolicy
	retryAt       int64

	fallbackStep     *Step
	fallbackTrigger  map[string]interface{}
	onSuccessStep    *Step
	onFailureStep    *Step
	onFailureTimeout int
}

// NewStep starts a Step with the hosted defaults: GET, FRUGAL, HASH keys, forward on
// 429/500/502/503/504, 30 s local timeout, webhook quorum 1, region policy "fallback",
// execution mode "race".
func NewStep(client *Client) *Step {
	return &Step{
		client:          client,
		method:          "GET",
		headers:         make(map[string]string),
		metadata:        make(map[string]interface{}),
		stepType:        StepTypeFrugal,
		idempotentStrat: IdempotentStrategyHash,
		fallbackOnError: []int{429, 500, 502, 503, 504},
		localTimeout:    30 * time.Second,
		webhookQuorum:   1,
		regionPolicy:    "fallback",
		executionMode:   "race",
	}
}

// URL sets the target URL.
func (s *Step) URL(url string) *Step { s.url = url; return s }

// Method sets the HTTP method.
func (s *Step) Method(method string) *Step { s.method = method; return s }

// Header adds one header.
func (s *Step) Header(key, value string) *Step {
	if s.headers == nil {
		s.headers = make(map[string]string)
	}
	s.headers[key] = value
	return s
}

// Headers replaces the headers.
func (s *Step) Headers(headers map[string]string) *Step { s.headers = headers; return s }

// Body sets the request body.
func (s *Step) Body(body string) *Step { s.body = body; return s }

// Metadata replaces the metadata (echoed in webhooks; the server takes string values).
func (s *Step) Metadata(metadata map[string]interface{}) *Step { s.metadata = metadata; return s }

// Type sets FRUGAL or PERFORMANCE.
func (s *Step) Type(stepType StepType) *Step { s.stepType = stepType; return s }

// IdempotentKey sets the idempotency key.
func (s *Step) IdempotentKey(key string) *Step { s.idempotentKey = key; return s }

// IdempotentStrategy sets how a key is chosen when IdempotentKey is not set.
func (s *Step) IdempotentStrategy(strategy IdempotentStrategy) *Step {
	s.idempotentStrat = strategy
	return s
}

// FallbackOnError sets the local statuses on which a FRUGAL step forwards to EZThrottle.
func (s *Step) FallbackOnError(codes []int) *Step { s.fallbackOnError = codes; return s }

// Timeout bounds a FRUGAL step's local call; a timeout counts as a network error (forward).
func (s *Step) Timeout(timeout time.Duration) *Step { s.localTimeout = timeout; return s }

// Webhooks sets where the outcome is delivered.
func (s *Step) Webhooks(webhooks []Webhook) *Step { s.webhooks = webhooks; return s }

// WebhookQuorum sets how many voting webhooks must acknowledge.
func (s *Step) WebhookQuorum(quorum int) *Step { s.webhookQuorum = quorum; return s }

// Regions sets the regions allowed to make the call.
func (s *Step) Regions(regions []string) *Step { s.regions = regions; return s }

// RegionPolicy sets "fallback" or "strict".
func (s *Step) RegionPolicy(policy string) *Step { s.regionPolicy = policy; return s }

// ExecutionMode sets "race" or "fanout".
func (s *Step) ExecutionMode(mode string) *Step { s.executionMode = mode; return s }

// RetryPolicy sets the job's retry policy.
func (s *Step) RetryPolicy(policy *RetryPolicy) *Step { s.retryPolicy = policy; return s }

// RetryAt sets the earliest time of the first call (ms since the Unix epoch).
func (s *Step) RetryAt(timestamp int64) *Step { s.retryAt = timestamp; return s }

// Fallback sets the step that runs when this one fails: on the listed statuses
// (triggerOnError), else after triggerOnTimeout ms.
func (s *Step) Fallback(step *Step, triggerOnError []int, triggerOnTimeout int) *Step {
	s.fallbackStep = step
	s.fallbackTrigger = make(map[string]interface{})
	if len(triggerOnError) > 0 {
		s.fallbackTrigger["type"] = "on_error"
		s.fallbackTrigger["codes"] = triggerOnError
	} else if triggerOnTimeout > 0 {
		s.fallbackTrigger["type"] = "on_timeout"
		s.fallbackTrigger["timeout_ms"] = triggerOnTimeout
	}
	return s
}

// OnSuccess sets the step that runs after this one succeeds.
func (s *Step) OnSuccess(step *Step) *Step { s.onSuccessStep = step; return s }

// OnFailure sets the step that runs after this one (and its fallbacks) fails.
func (s *Step) OnFailure(step *Step) *Step { s.onFailureStep = step; return s }

// OnFailureTimeout runs OnFailure if there is no success after this many ms.
func (s *Step) OnFailureTimeout(timeoutMs int) *Step { s.onFailureTimeout = timeoutMs; return s }

// Execute runs the step. PERFORMANCE submits the job and returns the submit answer. FRUGAL
// calls the target first: a 2xx returns {Status "success", ExecutedLocally, StatusCode,
// ResponseBody} (and starts OnSuccess in the background, as the hosted SDK did); a status in
// FallbackOnError or a network error submits the job; any other status is an error, as with
// the hosted SDK (*EZThrottleError, Code "local_call_failed") — returned together with the
// local result {Status "failed", ExecutedLocally, StatusCode, ResponseBody, Error}, the shape
// the other EZThrottle SDKs return for it.
func (s *Step) Execute(ctx context.Context) (*QueueResponse, error) {
	if ctx == nil {
		ctx = context.Background()
	}
	if s.url == "" {
		return nil, &EZThrottleError{Code: "missing_field", Field: "url", Message: "Step: URL is required"}
	}
	if s.stepType == StepTypeFrugal {
		return s.executeFrugal(ctx)
	}
	return s.client.submitJob(ctx, s.ToSubmitJobRequest())
}

func (s *Step) executeFrugal(ctx context.Context) (*QueueResponse, error) {
	local := ctx
	if s.localTimeout > 0 {
		var cancel context.CancelFunc
		local, cancel = context.WithTimeout(ctx, s.localTimeout)
		defer cancel()
	}
	resp, err := s.client.request(local, s.method, s.url, s.headers, s.body)
	if err == nil {
		body, readErr := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode >= 200 && resp.StatusCode < 300 && readErr == nil {
			if s.onSuccessStep != nil {
				next := s.onSuccessStep
				go func() { _, _ = next.Execute(context.Background()) }()
			}
			return &QueueResponse{
				Status:          "success",
				JobID:           "frugal_local_" + newUUID(),
				QueuedAt:        time.Now().UnixMilli(),
				ExecutedLocally: true,
				StatusCode:      resp.StatusCode,
				ResponseBody:    string(body),
			}, nil
		}
		if readErr == nil && !contains(s.fallbackOnError, resp.StatusCode) {
			failed := &QueueResponse{
				Status:          "failed",
				QueuedAt:        time.Now().UnixMilli(),
				ExecutedLocally: true,
				StatusCode:      resp.StatusCode,
				ResponseBody:    string(body),
				Error:           fmt.Sprintf("Request failed: %d", resp.StatusCode),
			}
			return failed, &EZThrottleError{
				Status:  resp.StatusCode,
				Code:    "local_call_failed",
				Message: fmt.Sprintf("request failed with status %d", resp.StatusCode),
				Body:    body,
			}
		}
	}
	if ctxErr := ctx.Err(); ctxErr != nil {
		return nil, canceled(ctxErr, err)
	}
	return s.client.submitJob(ctx, s.ToSubmitJobRequest())
}

func contains(codes []int, code int) bool {
	for _, c := range codes {
		if c == code {
			return true
		}
	}
	return false
}

// ToSubmitJobRequest is the job this step submits (with its fallback and follow-ups). With
// IdempotentStrategyUnique and no key, each call draws a fresh key.
func (s *Step) ToSubmitJobRequest() *SubmitJobRequest {
	req := &SubmitJobRequest{
		URL:           s.url,
		Method:        s.method,
		Headers:       s.headers,
		Body:          s.body,
		Metadata:      s.metadata,
		Webhooks:      s.webhooks,
		WebhookQuorum: s.webhookQuorum,
		Regions:       s.regions,
		RegionPolicy:  s.regionPolicy,
		ExecutionMode: s.executionMode,
		RetryPolicy:   s.retryPolicy,
		RetryAt:       s.retryAt,
	}
	switch {
	case s.idempotentKey != "":
		req.IdempotentKey = s.idempotentKey
	case s.idempotentStrat == IdempotentStrategyUnique:
		req.IdempotentKey = newUUID()
	}
	if s.fallbackStep != nil {
		fb := s.fallbackStep.ToSubmitJobRequest()
		if len(s.fallbackTrigger) > 0 {
			fb.Trigger = s.fallbackTrigger
		}
		req.FallbackJob = fb
	}
	if s.onSuccessStep != nil {
		req.OnSuccess = s.onSuccessStep.ToSubmitJobRequest()
	}
	if s.onFailureStep != nil {
		req.OnFailure = s.onFailureStep.ToSubmitJobRequest()
	}
	if s.onFailureTimeout > 0 {
		req.OnFailureTimeoutMs = s.onFailureTimeout
	}
	return req
}

// newUUID is a random (version 4) UUID.
func newUUID() string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic("ezthrottle: no randomness: " + err.Error())
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}
