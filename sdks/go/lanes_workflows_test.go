package ezthrottle_test

import (
	"errors"
	"net/url"
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
	deadline := time.Now().Add(30 * time.Second)
	for run.Status == "running" && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond) // no long-poll for runs yet: poll the view
		if run, err = c.GetWorkflow(ctx, run.WorkflowID); err != nil {
			t.Fatal(err)
		}
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
