package ezthrottle_test

// The hosted 1.2.0 surface against the real server: Step through the envelope, FRUGAL,
// forwarding, webhook secrets, and the webhook store/handler the hosted test-app uses.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	ezthrottle "github.com/ezthrottle/ezthrottle/sdks/go"
)

// recorder is a reverse proxy in front of the server that notes every path called.
type recorder struct {
	mu    sync.Mutex
	paths []string
	url   string
}

func newRecorder(t *testing.T) *recorder {
	t.Helper()
	u, _ := url.Parse(env.url)
	rp := httputil.NewSingleHostReverseProxy(u)
	rec := &recorder{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec.mu.Lock()
		rec.paths = append(rec.paths, r.Method+" "+r.URL.Path)
		rec.mu.Unlock()
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	rec.url = srv.URL
	return rec
}

func (r *recorder) seen() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.paths...)
}

func isNew(status int) bool { return status == 201 || status == 202 } // 202: servers before the hosted statuses

func TestHostedStepPerformanceGoesThroughTheEnvelope(t *testing.T) {
	t.Parallel()
	rec := newRecorder(t)
	client := ezthrottle.NewClient(env.key, ezthrottle.WithTracktTagsURL(rec.url))
	key := "perf-" + time.Now().Format("150405.000000000")
	step := func() *ezthrottle.Step {
		return ezthrottle.NewStep(client).
			URL(uniq(t, "/charges")).
			Method("POST").
			Body(`{"amount": 1000}`).
			Header("X-Trace", "t1").
			Metadata(map[string]interface{}{"order": "7"}).
			Type(ezthrottle.StepTypePerformance).
			IdempotentKey(key)
	}
	first, err := step().Execute(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !isNew(first.ForwardedStatus) || !strings.HasPrefix(first.JobID, "job_") || first.IdempotentKey != key || first.ExecutedLocally {
		t.Fatalf("first: %+v", first)
	}
	second, err := step().Execute(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if second.ForwardedStatus != 200 || second.JobID != first.JobID || second.Status != "duplicate" {
		t.Fatalf("second: %+v", second)
	}
	for _, p := range rec.seen() {
		if p != "POST /api/v1/proxy" {
			t.Fatalf("a hosted call went to %s, not the envelope", p)
		}
	}
	job, err := newClient(t).Wait(ctxT(t), first.JobID, 30*time.Second)
	if err != nil || job.State != "succeeded" || job.Metadata["order"] != "7" || !strings.Contains(job.Response.Body, `"method": "POST"`) {
		t.Fatalf("the job: %v %s", err, job.Raw)
	}
}

func TestHostedStepIdempotentStrategies(t *testing.T) {
	t.Parallel()
	client := newClient(t)
	url := uniq(t, "/status")
	run := func(s ezthrottle.IdempotentStrategy) *ezthrottle.QueueResponse {
		t.Helper()
		q, err := ezthrottle.NewStep(client).URL(url).Type(ezthrottle.StepTypePerformance).IdempotentStrategy(s).Execute(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		return q
	}
	u1, u2 := run(ezthrottle.IdempotentStrategyUnique), run(ezthrottle.IdempotentStrategyUnique)
	if u1.JobID == u2.JobID || u1.IdempotentKey == u2.IdempotentKey || len(u1.IdempotentKey) != 36 {
		t.Fatalf("unique keys: %+v %+v", u1, u2)
	}
	h1, h2 := run(ezthrottle.IdempotentStrategyHash), run(ezthrottle.IdempotentStrategyHash)
	if h1.JobID != h2.JobID || h2.ForwardedStatus != 200 || h1.JobID == u1.JobID {
		t.Fatalf("hash keys dedup: %+v %+v", h1, h2)
	}
}

func TestHostedFrugal(t *testing.T) {
	t.Parallel()
	// Local success never needs the server: a client pointed nowhere still succeeds.
	nowhere := ezthrottle.NewClient("k", ezthrottle.WithTracktTagsURL("http://127.0.0.1:1"))
	q, err := ezthrottle.NewStep(nowhere).URL(uniq(t, "/ok")).Execute(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if q.Status != "success" || !q.ExecutedLocally || q.StatusCode != 200 || !strings.HasPrefix(q.JobID, "frugal_local_") || !strings.Contains(q.ResponseBody, `"path"`) {
		t.Fatalf("local result: %+v", q)
	}

	client := newClient(t)
	// 429 (in the default FallbackOnError): forwarded, and the server's job gets past it.
	flaky := uniq(t, "/flaky")
	q, err = ezthrottle.NewStep(client).URL(flaky).Execute(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if q.ExecutedLocally || !isNew(q.ForwardedStatus) || q.JobID == "" {
		t.Fatalf("forwarded: %+v", q)
	}
	job, err := client.Wait(ctxT(t), q.JobID, 60*time.Second)
	if err != nil || job.State != "succeeded" {
		t.Fatalf("forwarded job: %v %s", err, job.Raw)
	}

	// A status not in the list: the hosted error, typed.
	local, err := ezthrottle.NewStep(client).URL(uniq(t, "/fail")).FallbackOnError([]int{429}).Execute(context.Background())
	var e *ezthrottle.EZThrottleError
	if !errors.As(err, &e) || e.Status != 500 || e.Code != "local_call_failed" || !strings.Contains(err.Error(), "request failed with status 500") {
		t.Fatalf("unlisted status: %#v", err)
	}
	if local == nil || local.Status != "failed" || !local.ExecutedLocally || local.StatusCode != 500 || local.Error != "Request failed: 500" || local.JobID != "" {
		t.Fatalf("the local failure result: %+v", local)
	}

	// A network error forwards (the server then meets the same dead port and keeps trying).
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	dead := "http://" + l.Addr().String() + "/gone"
	l.Close()
	q, err = ezthrottle.NewStep(client).URL(dead).Timeout(2 * time.Second).Execute(context.Background())
	if err != nil || q.ExecutedLocally || q.JobID == "" {
		t.Fatalf("network error: %v %+v", err, q)
	}
	if _, err := client.Cancel(ctxT(t), q.JobID); err != nil && !errors.Is(err, ezthrottle.ErrConflict) {
		t.Fatal(err)
	}
}

func TestExecuteWithForwarding(t *testing.T) {
	t.Parallel()
	client := newClient(t)
	url := uniq(t, "/legacy")
	res, err := ezthrottle.ExecuteWithForwarding(client, func() (interface{}, *ezthrottle.ForwardRequest, error) {
		return nil, &ezthrottle.ForwardRequest{URL: url, Method: "POST", Body: "x", IdempotentKey: "legacy-" + url, StepType: ezthrottle.StepTypePerformance}, nil
	})
	q, ok := res.(*ezthrottle.QueueResponse)
	if err != nil || !ok || q.JobID == "" || q.IdempotentKey != "legacy-"+url {
		t.Fatalf("forwarded: %v %#v", err, res)
	}
	res, err = ezthrottle.ExecuteWithForwarding(client, func() (interface{}, *ezthrottle.ForwardRequest, error) {
		return "direct", nil, nil
	})
	if err != nil || res != "direct" {
		t.Fatalf("not forwarded: %v %v", err, res)
	}
	boom := errors.New("boom")
	if _, err := ezthrottle.ExecuteWithForwarding(client, func() (interface{}, *ezthrottle.ForwardRequest, error) {
		return nil, nil, boom
	}); !errors.Is(err, boom) {
		t.Fatalf("fn's error: %v", err)
	}
	_, err = ezthrottle.ExecuteWithForwarding(client, func() (interface{}, *ezthrottle.ForwardRequest, error) {
		return nil, &ezthrottle.ForwardRequest{URL: "ftp://nope", StepType: ezthrottle.StepTypePerformance}, nil
	})
	var e *ezthrottle.EZThrottleError
	if !errors.As(err, &e) || e.Status != 400 || e.Field != "url" || !strings.Contains(err.Error(), "failed to forward to EZThrottle") {
		t.Fatalf("a refused forward: %#v", err)
	}
}

func TestHostedSubmitJobAndQueueRequest(t *testing.T) {
	t.Parallel()
	client := newClient(t)
	_, err := client.SubmitJob(&ezthrottle.SubmitJobRequest{URL: uniq(t, "/x"), Method: "GET", Metadata: map[string]interface{}{"n": 1}})
	var e *ezthrottle.EZThrottleError
	if !errors.As(err, &e) || e.Status != 400 || !strings.HasPrefix(e.Field, "metadata") {
		t.Fatalf("metadata values must be strings here: %#v", err)
	}
	res, err := client.QueueAndWait(&ezthrottle.QueueRequest{URL: uniq(t, "/q"), Method: "PUT", Body: "b",
		Metadata: map[string]string{"k": "v"}}, 30*time.Second, time.Second)
	if err != nil || res["state"] != "succeeded" || res["metadata"].(map[string]interface{})["k"] != "v" {
		t.Fatalf("queue and wait: %v %v", err, res)
	}
}

// hook is a webhook receiver that keeps the raw deliveries.
type hook struct {
	mu   sync.Mutex
	got  []delivery
	cond *sync.Cond
	url  string
}

type delivery struct {
	header http.Header
	body   []byte
}

func newHook(t *testing.T) *hook {
	h := &hook{}
	h.cond = sync.NewCond(&h.mu)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		h.mu.Lock()
		h.got = append(h.got, delivery{r.Header.Clone(), b})
		h.cond.Broadcast()
		h.mu.Unlock()
	}))
	t.Cleanup(srv.Close)
	h.url = srv.URL + "/hook"
	return h
}

func (h *hook) await(t *testing.T, n int) delivery {
	t.Helper()
	timer := time.AfterFunc(30*time.Second, func() { h.mu.Lock(); h.cond.Broadcast(); h.mu.Unlock() })
	defer timer.Stop()
	deadline := time.Now().Add(30 * time.Second)
	h.mu.Lock()
	defer h.mu.Unlock()
	for len(h.got) < n {
		if time.Now().After(deadline) {
			t.Fatalf("%d deliveries, want %d", len(h.got), n)
		}
		h.cond.Wait()
	}
	return h.got[n-1]
}

func TestHostedWebhookFlowWithSignatures(t *testing.T) {
	t.Parallel()
	key := newTenantKey(t)
	const secret = "quickstart-secret-0123456789"
	client := ezthrottle.NewClient(key, ezthrottle.WithTracktTagsURL(env.url), ezthrottle.WithWebhookSecrets(secret, ""))

	if _, err := client.GetWebhookSecret(); !errors.Is(err, ezthrottle.ErrNotFound) {
		t.Fatalf("no secret yet: %v", err)
	}
	if _, err := client.CreateWebhookSecret("short", ""); err == nil {
		t.Fatal("a short secret is refused before sending")
	}
	if _, err := client.CreateWebhookSecret(secret, ""); err != nil {
		t.Fatal(err)
	}
	got, err := client.GetWebhookSecret()
	if err != nil || got["has_secondary"] != false || !strings.Contains(fmt.Sprint(got["primary_secret"]), "****") || strings.Contains(fmt.Sprint(got["primary_secret"]), secret) {
		t.Fatalf("masked secret: %v %v", err, got)
	}

	// The hosted test-app's shape: the SDK's handler on the app's own server, then query the store.
	mux := http.NewServeMux()
	mux.Handle("/webhook", client.WebhookHandler())
	app := httptest.NewServer(mux)
	defer app.Close()

	idem := "wh-" + time.Now().Format("150405.000000000")
	res, err := ezthrottle.NewStep(client).
		URL(uniq(t, "/pay")).
		Method("POST").
		Type(ezthrottle.StepTypePerformance).
		Webhooks([]ezthrottle.Webhook{{URL: app.URL + "/webhook", HasQuorumVote: true}}).
		IdempotentKey(idem).
		Execute(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-client.WatchWebhook(idem):
		if r.Status != "success" || r.JobID != res.JobID || r.Response.StatusCode != 200 || r.ReceivedAt.IsZero() || r.Type != "job.succeeded" {
			t.Fatalf("webhook: %+v", r)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no verified webhook within 30s")
	}
	if r, ok := client.GetWebhookResult(idem); !ok || r.JobID != res.JobID {
		t.Fatal("GetWebhookResult by key")
	}
	if r, ok := client.GetWebhookResult(res.JobID); !ok || r.IdempotentKey != idem {
		t.Fatal("GetWebhookResult by job id")
	}

	// Forged and unsigned deliveries are refused with the hosted reason.
	body := `{"job_id":"job_forged","idempotent_key":"forged","status":"success"}`
	for header, reason := range map[string]string{
		"": "no_signature_header",
		ezthrottle.SignWebhook([]byte(body), time.Now().Unix(), "not-the-secret-000000"): "signature_mismatch",
	} {
		req, _ := http.NewRequest("POST", app.URL+"/webhook", strings.NewReader(body))
		if header != "" {
			req.Header.Set("X-EZThrottle-Signature", header)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 401 || !strings.Contains(string(b), reason) {
			t.Fatalf("forged (%s): %d %s", reason, resp.StatusCode, b)
		}
	}
	if _, ok := client.GetWebhookResult("forged"); ok {
		t.Fatal("a forged webhook was stored")
	}

	// Rotation: the server signs with both; a receiver holding only the old secret still
	// verifies, and the two-secret check names the new one.
	const next = "quickstart-secret-next-98765"
	if _, err := client.RotateWebhookSecret(next); err != nil {
		t.Fatal(err)
	}
	got, err = client.GetWebhookSecret()
	if err != nil || got["has_secondary"] != true {
		t.Fatalf("after rotation: %v %v", err, got)
	}
	raw := newHook(t)
	if _, err := ezthrottle.NewStep(client).URL(uniq(t, "/rot")).Type(ezthrottle.StepTypePerformance).
		Webhooks([]ezthrottle.Webhook{{URL: raw.url}}).Execute(context.Background()); err != nil {
		t.Fatal(err)
	}
	d := raw.await(t, 1)
	sig := d.header.Get("X-EZThrottle-Signature")
	if v := ezthrottle.VerifyWebhookSignature(d.body, sig, secret, 300); !v.Verified {
		t.Fatalf("old secret after rotation: %+v (%s)", v, sig)
	}
	if v := ezthrottle.TryVerifyWithSecrets(d.body, sig, next, secret, 300); v.Reason != "valid_primary" {
		t.Fatalf("new secret: %+v", v)
	}
	if v := ezthrottle.VerifyStandardWebhook(d.body, d.header, next, 300); !v.Verified {
		t.Fatalf("Standard Webhooks headers: %+v", v)
	}
	if err := ezthrottle.VerifyWebhookSignatureStrict(d.body, sig, "wrong-secret-000000000", 300); err == nil || !strings.Contains(err.Error(), "signature_mismatch") {
		t.Fatalf("strict: %v", err)
	}

	if _, err := client.DeleteWebhookSecret(); err != nil {
		t.Fatal(err)
	}
	if _, err := client.GetWebhookSecret(); !errors.Is(err, ezthrottle.ErrNotFound) {
		t.Fatalf("after delete: %v", err)
	}
}
