package ezthrottle

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"
)

// testdata/webhook-signatures.json: the server's signing vectors, both schemes, with the
// structured codes (the hosted reasons are checked by the shared verify-vectors).
func TestSignatureVectorsOfTheServer(t *testing.T) {
	raw, err := os.ReadFile("../../testdata/webhook-signatures.json")
	if err != nil {
		t.Fatal(err)
	}
	var file struct {
		Tolerance int `json:"tolerance_s"`
		Sign      []struct {
			Name        string   `json:"name"`
			Secrets     []string `json:"secrets"`
			Timestamp   int64    `json:"timestamp"`
			Body        string   `json:"body"`
			EZSignature string   `json:"ezthrottle_signature"`
		} `json:"sign"`
		Verify []struct {
			Name      string   `json:"name"`
			Scheme    string   `json:"scheme"`
			MsgID     string   `json:"msg_id"`
			Timestamp int64    `json:"timestamp"`
			Header    string   `json:"header"`
			Body      string   `json:"body"`
			Secrets   []string `json:"secrets"`
			Now       int64    `json:"now"`
			Valid     bool     `json:"valid"`
			Reason    *string  `json:"reason"`
		} `json:"verify"`
	}
	if err := json.Unmarshal(raw, &file); err != nil {
		t.Fatal(err)
	}
	if len(file.Sign) == 0 || len(file.Verify) == 0 {
		t.Fatal("no vectors")
	}
	for _, v := range file.Sign {
		if got := SignWebhook([]byte(v.Body), v.Timestamp, v.Secrets...); got != v.EZSignature {
			t.Errorf("sign %s: %s, want %s", v.Name, got, v.EZSignature)
		}
	}
	for _, v := range file.Verify {
		want := VerifyValid
		if v.Reason != nil {
			want = *v.Reason
		}
		now := time.Unix(v.Now, 0)
		for _, secret := range v.Secrets {
			var got VerificationResult
			switch v.Scheme {
			case "ezthrottle":
				got = VerifyWebhookSignatureAt([]byte(v.Body), v.Header, secret, file.Tolerance, now)
			case "standard":
				h := http.Header{}
				h.Set("webhook-id", v.MsgID)
				h.Set("webhook-timestamp", json.Number(strings.TrimSpace(jsonInt(v.Timestamp))).String())
				h.Set("webhook-signature", v.Header)
				got = VerifyStandardWebhookAt([]byte(v.Body), h, secret, file.Tolerance, now)
			default:
				t.Fatalf("unknown scheme %q", v.Scheme)
			}
			if got.Verified != v.Valid || got.Code != want {
				t.Errorf("%s %s: got %+v, want valid=%v code %s", v.Scheme, v.Name, got, v.Valid, want)
			}
		}
	}
}

func jsonInt(n int64) string { b, _ := json.Marshal(n); return string(b) }

func TestHostedVerifierReasons(t *testing.T) {
	body := []byte(`{"job_id":"job_1","status":"success"}`)
	now := time.Unix(1_800_000_000, 0)
	ts := now.Unix()
	const a, b = "secret-a-0123456789", "secret-b-0123456789"
	both := SignWebhook(body, ts, a, b)

	cases := []struct {
		name, header, secret string
		valid                bool
		reason, code         string
	}{
		{"first of two", both, a, true, "valid", VerifyValid},
		{"second of two (the hosted SDK read only the last)", both, b, true, "valid", VerifyValid},
		{"neither", both, "secret-c-0123456789", false, "signature_mismatch", VerifyMismatch},
		{"t after v1", SignWebhook(body, ts, a)[len("t=0000000000,"):] + ",t=" + jsonInt(ts), a, true, "valid", VerifyValid},
		{"upper-case hex is not the signature (as in every SDK)", "t=" + jsonInt(ts) + ",v1=" + strings.ToUpper(SignWebhook(body, ts, a)[len("t=0000000000,v1="):]), a, false, "signature_mismatch", VerifyMismatch},
		{"negative timestamp", "t=-5,v1=00", a, false, `verification_error: invalid timestamp "-5"`, VerifyMalformed},
		{"no t at all", "v1=00", a, false, `verification_error: invalid timestamp ""`, VerifyMalformed},
		{"garbage", "hello", a, false, "missing_v1_signature", VerifyNoSignature},
	}
	for _, c := range cases {
		got := VerifyWebhookSignatureAt(body, c.header, c.secret, 300, now)
		if got.Verified != c.valid || got.Reason != c.reason || got.Code != c.code {
			t.Errorf("%s: %+v, want %v %q %s", c.name, got, c.valid, c.reason, c.code)
		}
	}
	err := strict(VerifyWebhookSignatureAt(body, both, "nope-0123456789abc", 300, now))
	var verr *WebhookVerificationError
	if !errors.As(err, &verr) || verr.Reason != "signature_mismatch" || verr.Code != VerifyMismatch ||
		err.Error() != "Webhook signature verification failed: signature_mismatch" {
		t.Fatalf("strict: %#v", err)
	}
	if r := TryVerifyWithSecretsAt(body, SignWebhook(body, ts, b), a, b, 300, now); !r.Verified || r.Reason != "valid_secondary" {
		t.Fatalf("secondary: %+v", r)
	}
}

func TestWebhookStoreWatchAndGet(t *testing.T) {
	s := NewWebhookStore()
	early := s.Watch("key-1")
	byJob := s.Watch("job_1")
	s.Store(&WebhookResult{JobID: "job_1", IdempotentKey: "key-1", Status: "success"})
	for _, ch := range []<-chan *WebhookResult{early, byJob} {
		select {
		case r := <-ch:
			if r.JobID != "job_1" || r.ReceivedAt.IsZero() {
				t.Fatalf("watched: %+v", r)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("a watcher was not told")
		}
	}
	late := s.Watch("key-1") // already there: answered at once, and closed
	if r, ok := <-late; !ok || r.Status != "success" {
		t.Fatal("late watcher")
	}
	if _, ok := <-late; ok {
		t.Fatal("a late watcher's channel is closed after the result")
	}
	if _, ok := s.Get("job_1"); !ok {
		t.Fatal("by job id")
	}
	if _, ok := s.Get("other"); ok {
		t.Fatal("unknown key")
	}

	// The handler: POST only, JSON only.
	h := s.Handler("", "", 300)
	for _, c := range []struct {
		method, body string
		want         int
	}{{"GET", "", 405}, {"POST", "not json", 400}, {"POST", `{"job_id":"job_2","idempotent_key":"k2","status":"failed","response":{"status_code":500,"headers":{"a":"b"},"body":"x"},"error":{"code":"retries_exhausted","message":"m"}}`, 200}} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(c.method, "/webhook", strings.NewReader(c.body)))
		if rec.Code != c.want {
			t.Fatalf("%s %q: %d, want %d", c.method, c.body, rec.Code, c.want)
		}
	}
	if r, ok := s.Get("k2"); !ok || r.Error == nil || r.Error.Code != "retries_exhausted" || r.Response.Headers["a"] != "b" {
		t.Fatalf("stored: %+v", r)
	}
}

func TestEnvelopeAnswers(t *testing.T) {
	// Forwarded answers the hosted SDK met: a 429 inside the envelope carries RetryAt; a
	// refused submit is typed; 200/201/202 are all success.
	script := []string{
		`{"status":"allowed","forwarded_response":{"status_code":429,"headers":{"retry-after":"3"},"body":"{\"error\":{\"code\":\"quota_exceeded\",\"message\":\"slow\"}}"}}`,
		`{"status":"allowed","forwarded_response":{"status_code":400,"headers":{},"body":"{\"error\":{\"code\":\"invalid_field\",\"field\":\"url\",\"message\":\"bad\"}}"}}`,
		`{"status":"allowed","forwarded_response":{"status_code":202,"headers":{},"body":"{\"job_id\":\"job_9\",\"status\":\"queued\",\"idempotent_key\":\"k\"}"}}`,
		`{"status":"denied","error":"plan limit"}`,
	}
	i := 0
	var seen []map[string]any
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var env map[string]any
		_ = json.NewDecoder(r.Body).Decode(&env)
		seen = append(seen, env)
		if r.URL.Path != "/api/v1/proxy" || r.Header.Get("Authorization") != "Bearer k" {
			w.WriteHeader(500)
			return
		}
		_, _ = w.Write([]byte(script[i]))
		i++
	}))
	defer srv.Close()
	c := NewClient("k", WithTracktTagsURL(srv.URL), WithMaxRetries(0))

	_, err := c.SubmitJob(&SubmitJobRequest{URL: "https://x"})
	var e *EZThrottleError
	if !errors.As(err, &e) || e.Status != 429 || e.RetryAt <= time.Now().UnixMilli() || e.RetryAfter != 3*time.Second {
		t.Fatalf("429: %#v", err)
	}
	_, err = c.SubmitJob(&SubmitJobRequest{URL: "https://x"})
	if !errors.As(err, &e) || e.Status != 400 || e.Field != "url" {
		t.Fatalf("400: %#v", err)
	}
	q, err := c.SubmitJob(&SubmitJobRequest{URL: "https://x"})
	if err != nil || q.JobID != "job_9" || q.ForwardedStatus != 202 || q.QueuedAt == 0 {
		t.Fatalf("202: %v %+v", err, q)
	}
	_, err = c.SubmitJob(&SubmitJobRequest{URL: "https://x"})
	if err == nil || !strings.Contains(err.Error(), "request denied: plan limit") {
		t.Fatalf("denied: %v", err)
	}
	env := seen[0]
	var job map[string]any
	if err := json.Unmarshal([]byte(env["body"].(string)), &job); err != nil {
		t.Fatal(err)
	}
	if env["target_url"] != "https://ezthrottle.fly.dev/api/v1/jobs" || env["method"] != "POST" || job["method"] != "GET" || job["url"] != "https://x" {
		t.Fatalf("envelope: %v / %v", env, job)
	}

	// A Step's body is the hosted one: quorum, region policy and mode always; the UNIQUE key a UUID.
	req := NewStep(c).URL("https://y").IdempotentStrategy(IdempotentStrategyUnique).
		Fallback(NewStep(c).URL("https://z"), nil, 500).ToSubmitJobRequest()
	b, _ := json.Marshal(hostedPayload(req))
	var p map[string]any
	_ = json.Unmarshal(b, &p)
	fb, _ := p["fallback_job"].(map[string]any)
	trig, _ := fb["trigger"].(map[string]any)
	if p["webhook_quorum"] != 1.0 || p["region_policy"] != "fallback" || p["execution_mode"] != "race" ||
		len(p["idempotent_key"].(string)) != 36 || trig["type"] != "on_timeout" || trig["timeout_ms"] != 500.0 {
		t.Fatalf("step payload: %s", b)
	}
	_ = context.Background()
}
