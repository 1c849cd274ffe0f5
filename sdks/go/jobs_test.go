package ezthrottle_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	ezthrottle "github.com/ezthrottle/ezthrottle/sdks/go"
)

func TestSubmitThenWaitSucceeds(t *testing.T) {
	t.Parallel()
	c := newClient(t)
	ctx := ctxT(t)
	url := uniq(t, "/echo")
	sub, err := c.Submit(ctx, ezthrottle.JobSpec{URL: url, Method: "POST", Body: `{"n":1}`, Metadata: map[string]string{"order": "42"}})
	if err != nil {
		t.Fatal(err)
	}
	if sub.HTTPStatus != 202 || sub.Status != "queued" || !strings.HasPrefix(sub.JobID, "job_") || sub.IdempotentKey == "" {
		t.Fatalf("submit answer: %+v", sub)
	}
	job, err := c.Wait(ctx, sub.JobID, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if job.State != "succeeded" || !job.Final() || job.Response == nil || job.Response.StatusCode != 200 {
		t.Fatalf("job: %s", job.Raw)
	}
	var echo struct{ Method, Body string }
	if err := json.Unmarshal([]byte(job.Response.Body), &echo); err != nil || echo.Method != "POST" || echo.Body != `{"n":1}` {
		t.Fatalf("the target did not get the call: %q", job.Response.Body)
	}
	if job.Response.Headers.Get("Content-Type") != "application/json" {
		t.Fatalf("headers: %v", job.Response.Headers)
	}
	if job.Metadata["order"] != "42" || len(job.Attempts) != 1 || job.Attempts[0].Decision != "success" {
		t.Fatalf("job view: %s", job.Raw)
	}
	got, err := c.Get(ctx, sub.JobID)
	if err != nil || got.State != "succeeded" || got.JobID != sub.JobID {
		t.Fatalf("get: %v %+v", err, got)
	}
}

func TestSubmitWithWaitReturnsTheFinalView(t *testing.T) {
	t.Parallel()
	c := newClient(t)
	sub, err := c.Submit(ctxT(t), ezthrottle.JobSpec{URL: uniq(t, "/echo")}, ezthrottle.SubmitWait(20*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if sub.Job == nil || sub.Job.State != "succeeded" || sub.JobID != sub.Job.JobID || sub.HTTPStatus != 200 {
		t.Fatalf("submit with wait: %+v %s", sub, sub.Raw)
	}
}

func TestDuplicateSubmitAnswersTheSameJob(t *testing.T) {
	t.Parallel()
	c := newClient(t)
	ctx := ctxT(t)
	spec := ezthrottle.JobSpec{URL: uniq(t, "/echo"), IdempotentKey: "dup-" + t.Name() + time.Now().String()}
	a, err := c.Submit(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	b, err := c.Submit(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	if a.Duplicate() || !b.Duplicate() || a.JobID != b.JobID || b.HTTPStatus != 200 || b.IdempotentKey != spec.IdempotentKey {
		t.Fatalf("first %+v second %+v", a, b)
	}
	// The header spelling of the key dedups the same way.
	h := ezthrottle.JobSpec{URL: uniq(t, "/echo")}
	key := "hdr-" + time.Now().String()
	x, err := c.Submit(ctx, h, ezthrottle.IdempotencyKey(key))
	if err != nil {
		t.Fatal(err)
	}
	y, err := c.Submit(ctx, ezthrottle.JobSpec{URL: uniq(t, "/other")}, ezthrottle.IdempotencyKey(key))
	if err != nil || !y.Duplicate() || y.JobID != x.JobID || x.IdempotentKey != key {
		t.Fatalf("header key: %v %+v %+v", err, x, y)
	}
}

func TestTypedErrors(t *testing.T) {
	t.Parallel()
	c := newClient(t)
	ctx := ctxT(t)

	_, err := c.Get(ctx, "job_doesnotexist")
	var e *ezthrottle.EZThrottleError
	if !errors.As(err, &e) || e.Status != 404 || e.Code != "not_found" || !errors.Is(err, ezthrottle.ErrNotFound) || e.RequestID == "" {
		t.Fatalf("unknown job: %#v", err)
	}
	if errors.Is(err, ezthrottle.ErrConflict) || e.Retryable() {
		t.Fatalf("a 404 is neither a conflict nor retryable: %v", err)
	}

	_, err = c.Submit(ctx, ezthrottle.JobSpec{URL: "ftp://example.com/x"})
	if !errors.As(err, &e) || e.Status != 400 || e.Code != "invalid_field" || e.Field != "url" || !errors.Is(err, ezthrottle.ErrValidation) {
		t.Fatalf("bad url: %#v", err)
	}
	if !strings.Contains(err.Error(), "400 invalid_field (url)") {
		t.Fatalf("message: %q", err.Error())
	}

	q := 5
	_, err = c.Submit(ctx, ezthrottle.JobSpec{URL: uniq(t, "/x"), WebhookQuorum: &q, Webhooks: []ezthrottle.Webhook{{URL: env.target + "/hook"}}})
	if !errors.As(err, &e) || e.Status != 400 || e.Field != "webhook_quorum" {
		t.Fatalf("quorum above the voters: %#v", err)
	}

	bad := ezthrottle.NewClient("ezt_live_nottherightkeyatallnottherightkey", ezthrottle.WithBaseURL(env.url))
	_, err = bad.Get(ctx, "job_x")
	if !errors.As(err, &e) || e.Status != 401 || e.Code != "unauthorized" || !errors.Is(err, ezthrottle.ErrUnauthorized) {
		t.Fatalf("bad key: %#v", err)
	}
}

func TestCancelAndConflict(t *testing.T) {
	t.Parallel()
	c := newClient(t)
	ctx := ctxT(t)
	later := time.Now().Add(10 * time.Minute).UnixMilli()
	sub, err := c.Submit(ctx, ezthrottle.JobSpec{URL: uniq(t, "/later"), RetryAt: later})
	if err != nil {
		t.Fatal(err)
	}
	job, err := c.Get(ctx, sub.JobID)
	if err != nil || job.State != "scheduled" {
		t.Fatalf("delayed job: %v %+v", err, job)
	}
	job, err = c.Cancel(ctx, sub.JobID)
	if err != nil || job.State != "cancelled" || job.Error == nil || job.Error.Code != "cancelled" {
		t.Fatalf("cancel: %v %+v", err, job)
	}
	_, err = c.Cancel(ctx, sub.JobID)
	if !errors.Is(err, ezthrottle.ErrConflict) {
		t.Fatalf("second cancel: %v", err)
	}
}

func TestRetryAFailedJob(t *testing.T) {
	t.Parallel()
	c := newClient(t)
	ctx := ctxT(t)
	sub, err := c.Submit(ctx, ezthrottle.JobSpec{URL: uniq(t, "/fail"), RetryPolicy: &ezthrottle.JobRetryPolicy{MaxRetries: ezthrottle.Int(0), MaxReroutes: ezthrottle.Int(0)}})
	if err != nil {
		t.Fatal(err)
	}
	job, err := c.Wait(ctx, sub.JobID, 60*time.Second)
	if err != nil || job.State != "failed" || job.Response.StatusCode != 500 || len(job.Attempts) != 1 {
		t.Fatalf("a /fail job with no retries ends failed after one attempt: %v %s", err, job.Raw)
	}
	again, err := c.Retry(ctx, sub.JobID)
	if err != nil || again.Final() || again.Series != 2 {
		t.Fatalf("retry: %v %+v", err, again)
	}
	done, err := c.Wait(ctx, sub.JobID, 60*time.Second)
	if err != nil || done.State != "failed" || done.Series != 2 {
		t.Fatalf("after retry: %v %+v", err, done)
	}
}

func TestWaitTimesOutWithTheCurrentView(t *testing.T) {
	t.Parallel()
	c := newClient(t)
	ctx := ctxT(t)
	sub, err := c.Submit(ctx, ezthrottle.JobSpec{URL: uniq(t, "/later"), RetryAt: time.Now().Add(10 * time.Minute).UnixMilli()})
	if err != nil {
		t.Fatal(err)
	}
	job, err := c.Wait(ctx, sub.JobID, 300*time.Millisecond)
	var wt *ezthrottle.WaitTimeoutError
	if !errors.Is(err, ezthrottle.ErrWaitTimeout) || !errors.As(err, &wt) || wt.Job.State != "scheduled" || job == nil || job.JobID != sub.JobID {
		t.Fatalf("wait: %v %+v", err, job)
	}
	if _, err := c.Cancel(ctx, sub.JobID); err != nil {
		t.Fatal(err)
	}
}

func TestBatch(t *testing.T) {
	t.Parallel()
	c := newClient(t)
	ctx := ctxT(t)
	res, err := c.Batch(ctx, []ezthrottle.JobSpec{{URL: uniq(t, "/a")}, {URL: "ftp://nope"}, {URL: uniq(t, "/b")}})
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != 3 || res[0].Err != nil || res[0].Status != "queued" || res[2].JobID == "" || res[1].Err == nil || res[1].Err.Code != "invalid_field" || res[1].Err.Field != "url" {
		t.Fatalf("batch: %+v", res)
	}
	if res[0].JobID == res[2].JobID {
		t.Fatal("two jobs, one id")
	}
	for _, r := range []ezthrottle.BatchResult{res[0], res[2]} {
		if j, err := c.Wait(ctx, r.JobID, 30*time.Second); err != nil || j.State != "succeeded" {
			t.Fatalf("batch job: %v %+v", err, j)
		}
	}
}

func TestEventsInOrder(t *testing.T) {
	t.Parallel()
	c := newClient(t)
	ctx := ctxT(t)
	sub, err := c.Submit(ctx, ezthrottle.JobSpec{URL: uniq(t, "/flaky")})
	if err != nil {
		t.Fatal(err)
	}
	stream, err := c.Events(ctx, sub.JobID)
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Close()
	evs, err := stream.Collect()
	if err != nil {
		t.Fatal(err)
	}
	var types []string
	for _, e := range evs {
		if e.Type != "position" {
			types = append(types, e.Type)
		}
	}
	want := "queued dispatching attempt dispatching attempt succeeded"
	if strings.Join(types, " ") != want {
		t.Fatalf("events %v, want %s", types, want)
	}
	last := evs[len(evs)-1]
	job, err := last.Job()
	if err != nil || !last.Final() || job.State != "succeeded" || len(job.Attempts) != 2 || *job.Attempts[0].StatusCode != 429 {
		t.Fatalf("final event: %v %s", err, last.Data)
	}
	if _, err := stream.Next(); err != io.EOF {
		t.Fatalf("after the final event: %v", err)
	}
	// A late subscriber gets the whole story again.
	again, err := c.Events(ctx, sub.JobID)
	if err != nil {
		t.Fatal(err)
	}
	all, err := again.Collect()
	if err != nil || len(all) == 0 || all[0].Type != "queued" || !all[len(all)-1].Final() {
		t.Fatalf("late subscriber: %v %v", err, all)
	}
	_, err = c.Events(ctx, "job_nope")
	if !errors.Is(err, ezthrottle.ErrNotFound) {
		t.Fatalf("events of an unknown job: %v", err)
	}
}

func TestList(t *testing.T) {
	t.Parallel()
	c := tenantClient(t)
	ctx := ctxT(t)
	var ids []string
	for i := 0; i < 3; i++ {
		s, err := c.Submit(ctx, ezthrottle.JobSpec{URL: uniq(t, "/l"), RetryAt: time.Now().Add(time.Hour).UnixMilli()})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, s.JobID)
	}
	page, err := c.List(ctx, ezthrottle.ListOptions{Limit: 2})
	if err != nil || len(page.Jobs) != 2 || page.NextCursor == "" || page.Jobs[0].JobID != ids[2] {
		t.Fatalf("first page: %v %+v", err, page)
	}
	rest, err := c.List(ctx, ezthrottle.ListOptions{Limit: 2, Cursor: page.NextCursor})
	if err != nil || len(rest.Jobs) != 1 || rest.Jobs[0].JobID != ids[0] || rest.NextCursor != "" {
		t.Fatalf("second page: %v %+v", err, rest)
	}
	sched, err := c.List(ctx, ezthrottle.ListOptions{State: "succeeded"})
	if err != nil || len(sched.Jobs) != 0 {
		t.Fatalf("state filter: %v %+v", err, sched)
	}
}

func TestEnvironmentConfiguresTheClient(t *testing.T) {
	t.Setenv("EZTHROTTLE_API_KEY", env.key)
	t.Setenv("EZTHROTTLE_URL", env.url+"/")
	c := ezthrottle.NewClient("")
	if c.BaseURL() != env.url {
		t.Fatalf("base URL %q", c.BaseURL())
	}
	if _, err := c.Get(ctxT(t), "job_nope"); !errors.Is(err, ezthrottle.ErrNotFound) {
		t.Fatalf("with the key from the environment a missing job is 404, got %v", err)
	}
}

func TestWebhookVotesReachTheServer(t *testing.T) {
	t.Parallel()
	c := newClient(t)
	ctx := ctxT(t)
	sub, err := c.Submit(ctx, ezthrottle.JobSpec{URL: uniq(t, "/v"), RetryAt: time.Now().Add(time.Hour).UnixMilli(),
		Webhooks: []ezthrottle.Webhook{{URL: env.target + "/voter"}, {URL: env.target + "/watcher", NoVote: true}},
		Timeout:  90 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	job, err := c.Get(ctx, sub.JobID)
	if err != nil {
		t.Fatal(err)
	}
	var spec struct {
		Webhooks []struct {
			URL  string `json:"url"`
			Vote bool   `json:"has_quorum_vote"`
		} `json:"webhooks"`
		Quorum    int   `json:"webhook_quorum"`
		TimeoutMs int64 `json:"timeout_ms"`
	}
	if err := json.Unmarshal(job.Spec, &spec); err != nil {
		t.Fatal(err)
	}
	if len(spec.Webhooks) != 2 || !spec.Webhooks[0].Vote || spec.Webhooks[1].Vote || spec.Quorum != 1 || spec.TimeoutMs != 90*60*1000 {
		t.Fatalf("spec: %s", job.Spec)
	}
	if _, err := c.Cancel(ctx, sub.JobID); err != nil {
		t.Fatal(err)
	}
}

func TestEventsEndWithTheContext(t *testing.T) {
	t.Parallel()
	c := newClient(t)
	sub, err := c.Submit(ctxT(t), ezthrottle.JobSpec{URL: uniq(t, "/later"), RetryAt: time.Now().Add(time.Hour).UnixMilli()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	stream, err := c.Events(ctx, sub.JobID)
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Close()
	first, err := stream.Next()
	if err != nil || first.Type != "queued" {
		t.Fatalf("first event: %v %+v", err, first)
	}
	cancel() // the job stays scheduled for an hour: only the context can end this stream
	for {
		ev, err := stream.Next()
		if err == nil && ev.Type == "position" {
			continue
		}
		var e *ezthrottle.EZThrottleError
		if !errors.As(err, &e) || e.Code != "canceled" || !errors.Is(err, context.Canceled) {
			t.Fatalf("after cancel: %+v %#v", ev, err)
		}
		break
	}
	if _, err := c.Cancel(ctxT(t), sub.JobID); err != nil {
		t.Fatal(err)
	}
}

// A raced attempt in a cluster's job view (as the server writes it) decodes with its region,
// node, reason and legs.
func TestAttemptDecodesRegionNodeReasonAndLegs(t *testing.T) {
	t.Parallel()
	view := `{"n":2,"series":1,"at":1,"region":"r2","status_code":200,"error":null,"latency_ms":21,
		"decision":"success","wait_ms":null,"node":"n3","reason":"reroute: 502 from r1",
		"legs":[{"region":"r1","node":"n2","status_code":null,"error":"cancelled","latency_ms":22,"decision":"interrupted","outcome":"cancelled"},
		        {"region":"r2","node":"n3","status_code":200,"latency_ms":21,"decision":"success","outcome":"won"}]}`
	var a ezthrottle.Attempt
	if err := json.Unmarshal([]byte(view), &a); err != nil {
		t.Fatal(err)
	}
	if a.Region != "r2" || a.Node == nil || *a.Node != "n3" || a.Reason == nil || *a.Reason != "reroute: 502 from r1" {
		t.Fatalf("attempt: %+v", a)
	}
	if len(a.Legs) != 2 || a.Legs[0].Outcome != "cancelled" || a.Legs[0].StatusCode != nil ||
		a.Legs[1].Outcome != "won" || *a.Legs[1].StatusCode != 200 || *a.Legs[1].Node != "n3" {
		t.Fatalf("legs: %+v", a.Legs)
	}
	var single ezthrottle.Attempt
	if err := json.Unmarshal([]byte(`{"n":1,"series":1,"at":1,"region":"local","status_code":200,"error":null,"latency_ms":1,"decision":"success","wait_ms":null}`), &single); err != nil {
		t.Fatal(err)
	}
	if single.Node != nil || single.Reason != nil || single.Legs != nil {
		t.Fatalf("one node's attempt has no node, reason or legs: %+v", single)
	}
}
