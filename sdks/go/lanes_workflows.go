package ezthrottle

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
)

// LaneSource says where a lane's value came from: "default", "config", "header",
// "adaptive", "tenant" or "derived", with the header and window when a header announced it.
type LaneSource struct {
	Kind      string  `json:"kind"`
	Header    *string `json:"header,omitempty"`
	WindowS   *uint64 `json:"window_s,omitempty"`
	LearnedAt *uint64 `json:"learned_at,omitempty"`
}

// LanePin is a tenant's pin of its own lane's limits; the zero value unpins.
type LanePin struct {
	Rate            *float64 `json:"rate,omitempty"`
	Burst           *uint32  `json:"burst,omitempty"`
	MaxInFlight     *uint32  `json:"max_in_flight,omitempty"`
	Adaptive        *bool    `json:"adaptive,omitempty"`
	AdaptiveCeiling *float64 `json:"adaptive_ceiling,omitempty"`
}

// Lane is one of the caller's lanes: the limits in force, where each came from, the budget
// left, the pause, queue depth and in flight; in cluster mode the owner node and its epoch.
type Lane struct {
	Lane string `json:"lane"`
	Key  struct {
		Host                  string  `json:"host"`
		CredentialFingerprint *string `json:"credential_fingerprint"`
	} `json:"key"`
	Rate        float64 `json:"rate"`
	Burst       uint32  `json:"burst"`
	MaxInFlight uint32  `json:"max_in_flight"`
	Remaining   *uint64 `json:"remaining"`
	PausedUntil *uint64 `json:"paused_until"`
	Sources     struct {
		Rate        *LaneSource `json:"rate"`
		Burst       *LaneSource `json:"burst"`
		MaxInFlight *LaneSource `json:"max_in_flight"`
		Pause       *LaneSource `json:"pause"`
	} `json:"sources"`
	Adaptive   bool            `json:"adaptive"`
	Pin        json.RawMessage `json:"pin"`
	QueueDepth uint64          `json:"queue_depth"`
	InFlight   uint32          `json:"in_flight"`
	OwnerNode  *string         `json:"owner_node"`
	Epoch      *uint64         `json:"epoch"`
}

// Lanes lists the caller's lanes (GET /api/v1/lanes).
func (c *Client) Lanes(ctx context.Context) ([]Lane, error) {
	ans, err := c.do(ctx, call{method: http.MethodGet, path: "/api/v1/lanes", idempotent: true})
	if err != nil {
		return nil, err
	}
	var out struct {
		Lanes []Lane `json:"lanes"`
	}
	if err := decode(ans, &out); err != nil {
		return nil, err
	}
	return out.Lanes, nil
}

// PinLaneLimits pins the limits of the caller's lanes to host (or host:port); a zero LanePin
// unpins them (PUT /api/v1/lanes/{host}/limits). It returns the lanes as now pinned.
func (c *Client) PinLaneLimits(ctx context.Context, host string, pin LanePin) ([]Lane, error) {
	body, err := json.Marshal(pin)
	if err != nil {
		return nil, err
	}
	ans, err := c.do(ctx, call{method: http.MethodPut, path: "/api/v1/lanes/" + url.PathEscape(host) + "/limits", body: body, idempotent: true})
	if err != nil {
		return nil, err
	}
	var out struct {
		Lanes []Lane `json:"lanes"`
	}
	if err := decode(ans, &out); err != nil {
		return nil, err
	}
	return out.Lanes, nil
}

// WorkflowSpec is a static workflow: a DAG of steps, each a durable job (see docs/workflows.md
// for the step fields: job fields plus name, depends_on, critical, non_blocking, retry,
// compensate, paginate).
type WorkflowSpec struct {
	Name  string           `json:"name"`
	Input any              `json:"input,omitempty"`
	Steps []map[string]any `json:"steps"`
	// Webhooks receive the run's signed workflow.page, workflow.completed, workflow.failed and
	// workflow.cancelled events.
	Webhooks []map[string]any `json:"webhooks,omitempty"`
	// IdempotentKey makes the tenant's runs with this key one run: a second submit answers
	// the first run with Status "duplicate".
	IdempotentKey string `json:"idempotent_key,omitempty"`
}

// WorkflowRun is a workflow as the server shows it; Raw holds the whole answer (every step
// with its job, attempts and timings).
type WorkflowRun struct {
	WorkflowID string            `json:"workflow_id"`
	Name       string            `json:"name,omitempty"`
	Status     string            `json:"status"`
	Resumes    int               `json:"resumes,omitempty"`
	Steps      []json.RawMessage `json:"steps,omitempty"`
	Raw        json.RawMessage   `json:"-"`
}

func workflowPath(id string, tail string) string {
	return "/api/v1/workflows/" + url.PathEscape(id) + tail
}

// CancelWorkflow ends a run that is not over "cancelled": its unfinished step jobs too, no
// compensation runs (POST /api/v1/workflows/{id}/cancel; 409 when it is over).
func (c *Client) CancelWorkflow(ctx context.Context, workflowID string) (*WorkflowRun, error) {
	ans, err := c.do(ctx, call{method: http.MethodPost, path: workflowPath(workflowID, "/cancel")})
	if err != nil {
		return nil, err
	}
	return runFrom(ans)
}

// ResumeWorkflow continues a failed or cancelled run: steps that succeeded keep their results,
// the others run again with new job ids and keys (POST /api/v1/workflows/{id}/resume).
func (c *Client) ResumeWorkflow(ctx context.Context, workflowID string) (*WorkflowRun, error) {
	ans, err := c.do(ctx, call{method: http.MethodPost, path: workflowPath(workflowID, "/resume")})
	if err != nil {
		return nil, err
	}
	return runFrom(ans)
}

// RestartWorkflow starts a new run of a finished run's definition and input; the answer
// carries the new run's id (POST /api/v1/workflows/{id}/restart).
func (c *Client) RestartWorkflow(ctx context.Context, workflowID string) (*WorkflowRun, error) {
	ans, err := c.do(ctx, call{method: http.MethodPost, path: workflowPath(workflowID, "/restart")})
	if err != nil {
		return nil, err
	}
	return runFrom(ans)
}

// IsFinalWorkflowEvent reports whether t is the last event of a run's stream
// (workflow.completed, workflow.failed or workflow.cancelled; its data is the run's view).
func IsFinalWorkflowEvent(t string) bool {
	return t == "workflow.completed" || t == "workflow.failed" || t == "workflow.cancelled"
}

// WorkflowEvents opens a run's event stream (GET /api/v1/workflows/{id}/events): step.started,
// workflow.page, step.ended, then one final event (IsFinalWorkflowEvent) after which Next
// returns io.EOF. A late subscriber first gets what it missed.
func (c *Client) WorkflowEvents(ctx context.Context, workflowID string) (*EventStream, error) {
	ans, err := c.do(ctx, call{method: http.MethodGet, path: workflowPath(workflowID, "/events"), idempotent: true, stream: true})
	if err != nil {
		return nil, err
	}
	ct := ans.header.Get("Content-Type")
	if !strings.HasPrefix(ct, "text/event-stream") {
		body, _ := io.ReadAll(io.LimitReader(ans.resp.Body, 4096))
		ans.resp.Body.Close()
		return nil, &EZThrottleError{Status: ans.status, Code: "invalid_answer",
			Message: fmt.Sprintf("expected an event stream, got %q", ct), Body: body}
	}
	s := newEventStream(ans.resp.Body)
	s.ctx = ctx
	s.last = IsFinalWorkflowEvent
	return s, nil
}

// SubmitWorkflow stores a workflow and starts its first steps (POST /api/v1/workflows).
func (c *Client) SubmitWorkflow(ctx context.Context, spec WorkflowSpec) (*WorkflowRun, error) {
	body, err := json.Marshal(spec)
	if err != nil {
		return nil, err
	}
	ans, err := c.do(ctx, call{method: http.MethodPost, path: "/api/v1/workflows", body: body})
	if err != nil {
		return nil, err
	}
	return runFrom(ans)
}

// GetWorkflow returns a workflow run with every step (GET /api/v1/workflows/{id}).
func (c *Client) GetWorkflow(ctx context.Context, workflowID string) (*WorkflowRun, error) {
	ans, err := c.do(ctx, call{method: http.MethodGet, path: "/api/v1/workflows/" + url.PathEscape(workflowID), idempotent: true})
	if err != nil {
		return nil, err
	}
	return runFrom(ans)
}

func runFrom(ans *answer) (*WorkflowRun, error) {
	var r WorkflowRun
	if err := decode(ans, &r); err != nil {
		return nil, err
	}
	r.Raw = json.RawMessage(ans.body)
	return &r, nil
}
