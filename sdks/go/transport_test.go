package ezthrottle

// Transport behaviour that the real server cannot be made to show on demand (a 503, a reset
// connection), against scripted loopback servers.

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// scripted answers the n-th request with script[n] (the last one repeats).
func scripted(t *testing.T, script ...func(w http.ResponseWriter)) (*httptest.Server, *atomic.Int32) {
	t.Helper()
	var n atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		i := int(n.Add(1)) - 1
		if i >= len(script) {
			i = len(script) - 1
		}
		script[i](w)
	}))
	t.Cleanup(srv.Close)
	return srv, &n
}

func status(code int, body string, headers ...string) func(w http.ResponseWriter) {
	return func(w http.ResponseWriter) {
		for i := 0; i+1 < len(headers); i += 2 {
			w.Header().Set(headers[i], headers[i+1])
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		_, _ = io.WriteString(w, body)
	}
}

const jobJSON = `{"job_id":"job_1","state":"succeeded","attempts":[],"response":null}`

func fast(url string, opts ...ClientOption) *Client {
	return NewClient("k", append([]ClientOption{WithBaseURL(url), WithRetryBackoff(time.Millisecond, 5*time.Millisecond)}, opts...)...)
}

func TestRetriesIdempotentCallsOn5xxAnd429(t *testing.T) {
	srv, n := scripted(t,
		status(503, `{"error":{"code":"unavailable","message":"disk full"}}`),
		status(429, `{"error":{"code":"quota_exceeded","message":"slow down"}}`, "Retry-After", "0"),
		status(200, jobJSON))
	job, err := fast(srv.URL).Get(context.Background(), "job_1")
	if err != nil || job.State != "succeeded" || n.Load() != 3 {
		t.Fatalf("err %v, %d calls", err, n.Load())
	}
}

func TestGivesUpAfterMaxRetriesWithTheLastError(t *testing.T) {
	srv, n := scripted(t, status(502, `bad gateway`))
	_, err := fast(srv.URL).Get(context.Background(), "job_1")
	var e *EZThrottleError
	if !errors.As(err, &e) || e.Status != 502 || e.Code != "http_502" || !errors.Is(err, ErrServer) || n.Load() != 3 {
		t.Fatalf("err %#v, %d calls", err, n.Load())
	}
	n.Store(0)
	_, err = fast(srv.URL, WithMaxRetries(0)).Get(context.Background(), "job_1")
	if err == nil || n.Load() != 1 {
		t.Fatalf("retries off: err %v, %d calls", err, n.Load())
	}
}

func TestNonIdempotentCallsAreRetriedOnlyWhenRefused(t *testing.T) {
	srv, n := scripted(t, status(500, `{"error":{"code":"internal","message":"boom"}}`))
	_, err := fast(srv.URL).Cancel(context.Background(), "job_1")
	if err == nil || n.Load() != 1 {
		t.Fatalf("a cancel is not sent again after a 500: %v, %d calls", err, n.Load())
	}
	srv2, n2 := scripted(t, status(503, `{"error":{"code":"unavailable","message":"x"}}`), status(200, jobJSON))
	if _, err := fast(srv2.URL).Cancel(context.Background(), "job_1"); err != nil || n2.Load() != 2 {
		t.Fatalf("a 503 did nothing, so a cancel is sent again: %v, %d calls", err, n2.Load())
	}
}

func TestClientErrorsAreNotRetried(t *testing.T) {
	srv, n := scripted(t, status(400, `{"error":{"code":"invalid_field","field":"url","message":"bad"}}`))
	_, err := fast(srv.URL).Submit(context.Background(), JobSpec{URL: "x"})
	var e *EZThrottleError
	if !errors.As(err, &e) || e.Field != "url" || n.Load() != 1 {
		t.Fatalf("%v, %d calls", err, n.Load())
	}
}

func TestRetryAfterIsHonoured(t *testing.T) {
	srv, n := scripted(t, status(429, `{"error":{"code":"quota_exceeded","message":"x"}}`, "Retry-After", "1"), status(200, jobJSON))
	start := time.Now()
	if _, err := fast(srv.URL).Get(context.Background(), "job_1"); err != nil || n.Load() != 2 {
		t.Fatalf("%v, %d calls", err, n.Load())
	}
	if waited := time.Since(start); waited < 900*time.Millisecond {
		t.Fatalf("retried after %v, before the server's Retry-After of 1s", waited)
	}
	// Without retries the error carries it, and the hosted RetryAt.
	srv2, _ := scripted(t, status(429, `{"error":{"code":"quota_exceeded","message":"x"}}`, "Retry-After", "7"))
	_, err := fast(srv2.URL, WithMaxRetries(0)).Get(context.Background(), "job_1")
	var e *EZThrottleError
	if !errors.As(err, &e) || e.RetryAfter != 7*time.Second || e.RetryAt < time.Now().Add(6*time.Second).UnixMilli() || !errors.Is(err, ErrRateLimited) {
		t.Fatalf("%#v", err)
	}
}

func TestNetworkErrorsRetryIdempotentCalls(t *testing.T) {
	// A listener that accepts and slams the door: every call fails without an answer.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	var accepted atomic.Int32
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			c.Close()
		}
	}()
	url := "http://" + l.Addr().String()
	_, err = fast(url).Get(context.Background(), "job_1")
	var e *EZThrottleError
	if !errors.As(err, &e) || e.Status != 0 || e.Code != "unreachable" || e.Err == nil || !errors.Is(err, ErrUnreachable) || !e.Retryable() {
		t.Fatalf("%#v", err)
	}
	if accepted.Load() != 3 {
		t.Fatalf("%d connections, want 3 (1 + 2 retries)", accepted.Load())
	}
	accepted.Store(0)
	_, err = fast(url).Retry(context.Background(), "job_1")
	if !errors.Is(err, ErrUnreachable) || accepted.Load() != 1 {
		t.Fatalf("a retry (not idempotent) is sent once: %v, %d", err, accepted.Load())
	}
}

func TestContextCancelsTheBackoff(t *testing.T) {
	srv, n := scripted(t, status(503, `{"error":{"code":"unavailable","message":"x"}}`, "Retry-After", "30"))
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := fast(srv.URL).Get(ctx, "job_1")
	if !errors.Is(err, ErrUnavailable) || time.Since(start) > 5*time.Second || n.Load() != 1 {
		t.Fatalf("%v after %v, %d calls", err, time.Since(start), n.Load())
	}
}

func TestBackoffIsFullJitterUnderTheCeiling(t *testing.T) {
	c := NewClient("k", WithRetryBackoff(100*time.Millisecond, time.Second))
	for attempt := 0; attempt < 8; attempt++ {
		ceiling := 100 * time.Millisecond << attempt
		if ceiling > time.Second {
			ceiling = time.Second
		}
		var max time.Duration
		for i := 0; i < 200; i++ {
			d := c.backoff(attempt, 0)
			if d < 0 || d >= ceiling {
				t.Fatalf("attempt %d: %v outside [0, %v)", attempt, d, ceiling)
			}
			if d > max {
				max = d
			}
		}
		if max < ceiling/2 {
			t.Fatalf("attempt %d: 200 draws all below %v: not spread over [0, %v)", attempt, max, ceiling)
		}
	}
	if d := c.backoff(0, 3*time.Second); d != 3*time.Second {
		t.Fatalf("Retry-After: %v", d)
	}
	if d := c.backoff(0, time.Hour); d >= 100*time.Millisecond {
		t.Fatalf("an absurd Retry-After falls back to the backoff: %v", d)
	}
}

func TestRetryAfterParsing(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	cases := map[string]time.Duration{
		"":                              0,
		"2":                             2 * time.Second,
		"0.5":                           500 * time.Millisecond,
		"-1":                            0,
		"soon":                          0,
		"Fri, 02 Jan 2026 03:04:15 GMT": 10 * time.Second,
	}
	for in, want := range cases {
		if got := parseRetryAfter(in, now); got != want {
			t.Errorf("%q: %v, want %v", in, got, want)
		}
	}
}

func TestEventStreamParsing(t *testing.T) {
	raw := ": keep-alive\r\n\r\n" +
		"event: queued\r\ndata: {\"at\":1}\r\n\r\n" +
		"id: 7\nevent: attempt\ndata: {\"a\":\ndata: 2}\nretry: 1500\n\n" +
		"data: plain\n\n" +
		"event: succeeded\ndata: {\"job_id\":\"job_1\",\"state\":\"succeeded\"}\n\n" +
		"event: never-read\ndata: {}\n\n"
	s := newEventStream(io.NopCloser(strings.NewReader(raw)))
	evs, err := s.Collect()
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 4 {
		t.Fatalf("%d events: %+v", len(evs), evs)
	}
	if evs[0].Type != "queued" || string(evs[0].Data) != `{"at":1}` {
		t.Fatalf("first: %+v", evs[0])
	}
	if evs[1].Type != "attempt" || string(evs[1].Data) != "{\"a\":\n2}" || evs[1].ID != "7" || evs[1].Retry != 1500*time.Millisecond {
		t.Fatalf("multi-line data: %+v", evs[1])
	}
	if evs[2].Type != "message" || string(evs[2].Data) != "plain" {
		t.Fatalf("default type: %+v", evs[2])
	}
	job, err := evs[3].Job()
	if !evs[3].Final() || err != nil || job.JobID != "job_1" {
		t.Fatalf("final: %+v %v", evs[3], err)
	}
	// Cut before the final event: an error, not a quiet end.
	cut := newEventStream(io.NopCloser(strings.NewReader("event: queued\ndata: {}\n\nevent: attempt\ndata: {")))
	if _, err := cut.Next(); err != nil {
		t.Fatal(err)
	}
	if _, err := cut.Next(); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("cut stream: %v", err)
	}
}

func TestJobSpecJSON(t *testing.T) {
	q := 0
	b, err := marshal(JobSpec{URL: "https://x", Timeout: 90 * time.Second, WebhookQuorum: &q,
		Webhooks: []Webhook{{URL: "https://h", NoVote: true}, {URL: "https://v", HasQuorumVote: true}}})
	if err != nil {
		t.Fatal(err)
	}
	want := `{"url":"https://x","webhooks":[{"hasQuorumVote":false,"url":"https://h"},{"hasQuorumVote":true,"url":"https://v"}],"webhook_quorum":0,"timeout":"90000ms"}`
	if string(b) != want {
		t.Fatalf("\n got %s\nwant %s", b, want)
	}
}

func TestContextEndIsCanceledNotUnreachable(t *testing.T) {
	hold := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-hold }))
	defer srv.Close()
	defer close(hold)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err := fast(srv.URL).Get(ctx, "job_1")
	var e *EZThrottleError
	if !errors.As(err, &e) || e.Code != "canceled" || !errors.Is(err, context.DeadlineExceeded) || errors.Is(err, ErrUnreachable) {
		t.Fatalf("%#v", err)
	}
}

func TestForwardOrFallback(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := "http://" + l.Addr().String()
	l.Close()
	ran := 0
	fb := func(context.Context) error { ran++; return nil }
	sub, fell, err := fast(down).ForwardOrFallback(context.Background(), JobSpec{URL: "https://x"}, fb)
	if err != nil || !fell || sub != nil || ran != 1 {
		t.Fatalf("server down: %v %v %v ran=%d", sub, fell, err, ran)
	}
	busy, _ := scripted(t, status(503, `{"error":{"code":"unavailable","message":"x"}}`))
	if _, fell, err := fast(busy.URL).ForwardOrFallback(context.Background(), JobSpec{URL: "https://x"}, fb); err != nil || !fell || ran != 2 {
		t.Fatalf("503: %v %v ran=%d", fell, err, ran)
	}
	bad, _ := scripted(t, status(400, `{"error":{"code":"invalid_field","field":"url","message":"x"}}`))
	if _, fell, err := fast(bad.URL).ForwardOrFallback(context.Background(), JobSpec{URL: "x"}, fb); !errors.Is(err, ErrValidation) || fell || ran != 2 {
		t.Fatalf("400: %v %v ran=%d", fell, err, ran)
	}
	ok, _ := scripted(t, status(202, `{"job_id":"job_5","status":"queued","idempotent_key":"k"}`))
	if sub, fell, err := fast(ok.URL).ForwardOrFallback(context.Background(), JobSpec{URL: "https://x"}, fb); err != nil || fell || sub.JobID != "job_5" || ran != 2 {
		t.Fatalf("202: %v %v %v", sub, fell, err)
	}
}
