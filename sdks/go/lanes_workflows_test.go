package ezthrottle_test

import (
	"encoding/json"
	"errors"
	"io"
	"net/url"
	"strings"
	"testing"
	"time"

	ezthrottle "github.com/ezthrottle/ezthrottle/sdks/go"
)

func TestLanesAndPins(t *testing.T) {
	t.Parallel()
	c := tenantClient(t)
	ctx := ctxT(t)
	target := uniq(t, "/echo")
	if _, err := c.Submit(ctx, ezthrottle.JobSpec{URL: target}, ezthrottle.SubmitWait(20*time.Second)); err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(target)
	lanes, err := c.Lanes(ctx)
	if err != nil || len(lanes) != 1 || lanes[0].Key.Host != u.Host || lanes[0].OwnerNode != nil {
		t.Fatalf("lanes: %v %+v", err, lanes)
	}
	rate := 5.0
	pinned, err := c.PinLaneLimits(ctx, u.Host, ezthrottle.LanePin{Rate: &rate})
	if err != nil || len(pinned) != 1 || pinned[0].Rate != 5 || pinned[0].Sources.Rate == nil || pinned[0].Sources.Rate.Kind != "tenant" {
		t.Fatalf("pin: %v %+v", err, pinned)
	}
	if _, err := c.PinLaneLimits(ctx, u.Host, ezthrottle.LanePin{}); err != nil {
		t.Fatal(err)
	}
	_, err = c.PinLaneLimits(ctx, "no-such-host.example", ezthrottle.LanePin{Rate: &rate})
	var e *ezthrottle.EZThrottleError
	if !errors.As(err, &e) || e.Status != 404 || e.Field != "host" {
		t.Fatalf("pin of an unknown host: %v", err)
	}
}

func TestWorkflowRunsItsSteps(t *testing.T) {
	t.Parallel()
	c := newClient(t)
	ctx := ctxT(t)
	run, err := c.SubmitWorkflow(ctx, ezthrottle.WorkflowSpec{
		Name:  "two-steps",
		Input: map[string]string{"order": "42"},
		Steps: []map[string]any{
			{"name": "charge", "url": uniq(t, "/charge") + "&o={{input.order}}", "method": "POST"},
			{"name": "email", "url": uniq(t, "/email"), "depends_on": []string{"charge"}},
		},
	})
	if err != nil || run.Status != "running" || run.WorkflowID == "" {
		t.Fatalf("submit: %v %+v", err, run)
	}
	// Each step is a job: await the jobs (server long-poll); a step's end and the release of the
	// next are one transaction, so the next job is in the view once the first is final.
	for _, name := range []string{"charge", "email"} {
		if run, err = c.GetWorkflow(ctx, run.WorkflowID); err != nil {
			t.Fatal(err)
		}
		jobID := stepJob(t, run, name)
		if job, err := c.Wait(ctx, jobID, 30*time.Second); err != nil || job.State != "succeeded" {
			t.Fatalf("%s: %v %+v", name, err, job)
		}
	}
	if run, err = c.GetWorkflow(ctx, run.WorkflowID); err != nil {
		t.Fatal(err)
	}
	if run.Status != "succeeded" || len(run.Steps) != 2 {
		t.Fatalf("run: %s", run.Raw)
	}
	_, err = c.SubmitWorkflow(ctx, ezthrottle.WorkflowSpec{Name: "bad", Steps: []map[string]any{{"name": "a", "url": "ftp://x"}}})
	var e *ezthrottle.EZThrottleError
	if !errors.As(err, &e) || e.Status != 400 {
		t.Fatalf("bad workflow: %v", err)
	}
}

// stepJob is the job id of a run's step, failing the test when the step has none yet.
func stepJob(t *testing.T, run *ezthrottle.WorkflowRun, name string) string {
	t.Helper()
	for _, raw := range run.Steps {
		var st struct {
			Name  string  `json:"name"`
			JobID *string `json:"job_id"`
		}
		if err := json.Unmarshal(raw, &st); err != nil {
			t.Fatal(err)
		}
		if st.Name == name && st.JobID != nil {
			return *st.JobID
		}
	}
	t.Fatalf("step %s has no job: %s", name, run.Raw)
	return ""
}

func TestWorkflowEventsAndControl(t *testing.T) {
	t.Parallel()
	c := newClient(t)
	ctx := ctxT(t)
	spec := ezthrottle.WorkflowSpec{
		Name:          "keyed",
		IdempotentKey: "order-" + uniq(t, "/k"),
		Steps:         []map[string]any{{"name": "only", "url": uniq(t, "/only")}},
	}
	run, err := c.SubmitWorkflow(ctx, spec)
	if err != nil || run.Status != "running" {
		t.Fatalf("submit: %v %+v", err, run)
	}
	dup, err := c.SubmitWorkflow(ctx, spec)
	if err != nil || dup.Status != "duplicate" || dup.WorkflowID != run.WorkflowID {
		t.Fatalf("duplicate: %v %+v", err, dup)
	}
	stream, err := c.WorkflowEvents(ctx, run.WorkflowID)
	if err != nil {
		t.Fatal(err)
	}
	var types []string
	var last ezthrottle.Event
	for {
		ev, err := stream.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		types = append(types, ev.Type)
		last = ev
	}
	if strings.Join(types, ",") != "step.started,step.ended,workflow.completed" {
		t.Fatalf("events: %v", types)
	}
	var view struct {
		Status string `json:"status"`
	}
	if err := json.Unmarshal(last.Data, &view); err != nil || view.Status != "succeeded" {
		t.Fatalf("final: %v %s", err, last.Data)
	}
	var e *ezthrottle.EZThrottleError
	if _, err := c.CancelWorkflow(ctx, run.WorkflowID); !errors.As(err, &e) || e.Status != 409 {
		t.Fatalf("cancel of a finished run: %v", err)
	}
	if _, err := c.ResumeWorkflow(ctx, run.WorkflowID); !errors.As(err, &e) || e.Status != 409 {
		t.Fatalf("resume of a succeeded run: %v", err)
	}
	again, err := c.RestartWorkflow(ctx, run.WorkflowID)
	if err != nil || again.WorkflowID == run.WorkflowID || again.Status != "running" {
		t.Fatalf("restart: %v %+v", err, again)
	}
	later, err := c.SubmitWorkflow(ctx, ezthrottle.WorkflowSpec{Name: "later", Steps: []map[string]any{
		{"name": "later", "url": uniq(t, "/later"), "retry_at": time.Now().Add(30 * 24 * time.Hour).UnixMilli()},
	}})
	if err != nil {
		t.Fatal(err)
	}
	cancelled, err := c.CancelWorkflow(ctx, later.WorkflowID)
	if err != nil || cancelled.Status != "cancelled" {
		t.Fatalf("cancel: %v %+v", err, cancelled)
	}
	resumed, err := c.ResumeWorkflow(ctx, later.WorkflowID)
	if err != nil || resumed.Status != "running" || resumed.Resumes != 1 {
		t.Fatalf("resume: %v %+v", err, resumed)
	}
}
