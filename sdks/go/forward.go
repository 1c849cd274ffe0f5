package ezthrottle

import (
	"context"
	"errors"
	"fmt"
)

// ForwardRequest describes a call that existing code gives up on and wants EZThrottle to
// deliver instead (return it from the function passed to ExecuteWithForwarding).
type ForwardRequest struct {
	URL             string
	Method          string
	Headers         map[string]string
	Body            string
	IdempotentKey   string
	Metadata        map[string]interface{}
	Webhooks        []Webhook
	Regions         []string
	FallbackOnError []int
	// StepType: FRUGAL (the default) tries the call once more from here first.
	StepType StepType
}

// ExecuteWithForwarding runs fn; when fn returns a ForwardRequest, the call it describes is
// executed as a Step (FRUGAL unless StepType says otherwise) and its *QueueResponse is
// returned; otherwise fn's own result. fn's error is returned as is.
//
//	result, err := ezthrottle.ExecuteWithForwarding(client, func() (interface{}, *ezthrottle.ForwardRequest, error) {
//	    resp, err := http.Get(url)
//	    if err != nil || resp.StatusCode == 429 {
//	        return nil, &ezthrottle.ForwardRequest{URL: url, Method: "GET"}, nil
//	    }
//	    return resp, nil, nil
//	})
func ExecuteWithForwarding(client *Client, fn func() (interface{}, *ForwardRequest, error)) (interface{}, error) {
	return ExecuteWithForwardingContext(context.Background(), client, fn)
}

// ExecuteWithForwardingContext is ExecuteWithForwarding with a context for the forward.
func ExecuteWithForwardingContext(ctx context.Context, client *Client, fn func() (interface{}, *ForwardRequest, error)) (interface{}, error) {
	result, fwd, err := fn()
	if err != nil {
		return nil, err
	}
	if fwd == nil {
		return result, nil
	}
	method := fwd.Method
	if method == "" {
		method = "GET"
	}
	step := NewStep(client).
		URL(fwd.URL).
		Method(method).
		Headers(fwd.Headers).
		Body(fwd.Body).
		IdempotentKey(fwd.IdempotentKey).
		Metadata(fwd.Metadata).
		Webhooks(fwd.Webhooks).
		Regions(fwd.Regions)
	if fwd.StepType != "" {
		step = step.Type(fwd.StepType)
	} else {
		step = step.Type(StepTypeFrugal)
	}
	if len(fwd.FallbackOnError) > 0 {
		step = step.FallbackOnError(fwd.FallbackOnError)
	}
	q, err := step.Execute(ctx)
	if err != nil {
		return nil, fmt.Errorf("failed to forward to EZThrottle: %w", err)
	}
	return q, nil
}

// ForwardOrFallback submits spec; if EZThrottle cannot take it — no answer, or 503 (nothing
// stored) — it runs fallback instead (and reports fellBack), so EZThrottle never becomes a
// single point of failure. Other errors (bad input, 429) are returned: the server is working.
func (c *Client) ForwardOrFallback(ctx context.Context, spec JobSpec, fallback func(context.Context) error) (sub *Submission, fellBack bool, err error) {
	sub, err = c.Submit(ctx, spec)
	if err == nil {
		return sub, false, nil
	}
	if ctx.Err() == nil && (errors.Is(err, ErrUnreachable) || errors.Is(err, ErrUnavailable)) {
		return nil, true, fallback(ctx)
	}
	return nil, false, err
}
