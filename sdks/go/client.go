package ezthrottle

import (
	"bytes"
	"context"
	crand "crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"
)

// DefaultURL is where the client goes when neither WithBaseURL / WithTracktTagsURL nor
// EZTHROTTLE_URL says otherwise: `ezthrottle serve`'s default address.
const DefaultURL = "http://127.0.0.1:8080"

// Client talks to one EZThrottle server. It is safe for concurrent use.
type Client struct {
	apiKey       string
	baseURL      string
	httpClient   *http.Client
	webhookStore *WebhookStore

	timeout    time.Duration
	maxRetries int
	retryBase  time.Duration
	retryMax   time.Duration
	userAgent  string

	webhookPrimary, webhookSecondary string
	webhookTolerance                 int
}

// ClientOption configures a Client (the hosted SDK's functional options).
type ClientOption func(*Client)

// NewClient makes a client. An empty apiKey is taken from EZTHROTTLE_API_KEY; the server's
// address from EZTHROTTLE_URL unless an option sets it, else DefaultURL.
func NewClient(apiKey string, opts ...ClientOption) *Client {
	if apiKey == "" {
		apiKey = os.Getenv("EZTHROTTLE_API_KEY")
	}
	base := os.Getenv("EZTHROTTLE_URL")
	if base == "" {
		base = DefaultURL
	}
	c := &Client{
		apiKey:           apiKey,
		baseURL:          base,
		httpClient:       &http.Client{},
		webhookStore:     NewWebhookStore(),
		timeout:          30 * time.Second,
		maxRetries:       2,
		retryBase:        500 * time.Millisecond,
		retryMax:         8 * time.Second,
		userAgent:        "ezthrottle-go/" + Version,
		webhookTolerance: 300,
	}
	for _, opt := range opts {
		opt(c)
	}
	c.baseURL = strings.TrimRight(c.baseURL, "/")
	return c
}

// WithBaseURL sets the server's address, e.g. "http://127.0.0.1:8080".
func WithBaseURL(u string) ClientOption {
	return func(c *Client) { c.baseURL = u }
}

// WithTracktTagsURL is the hosted SDK's name for WithBaseURL: the hosted SDK sent every call
// to this proxy URL; this server answers the same envelope at the same path.
func WithTracktTagsURL(u string) ClientOption { return WithBaseURL(u) }

// WithHTTPClient sets the *http.Client used for every call (and for FRUGAL's local calls). Its
// Timeout, if any, also bounds long-polls (Wait, Submit with SubmitWait) and event streams:
// leave it 0 and use WithTimeout and contexts instead.
func WithHTTPClient(client *http.Client) ClientOption {
	return func(c *Client) { c.httpClient = client }
}

// WithTimeout bounds each ordinary API call attempt (default 30s; 0 means no bound beyond the
// context). Long-polls get their wait on top of it; event streams are bounded by their context
// only.
func WithTimeout(d time.Duration) ClientOption {
	return func(c *Client) { c.timeout = d }
}

// WithMaxRetries sets how many times a failed call is tried again (default 2; 0 turns retries
// off). What is retried: idempotent calls (reads, waits, submits — the server dedups them by
// idempotency key) on a network error, 429 or 5xx; any call on 429 or 503 (the server did
// nothing).
func WithMaxRetries(n int) ClientOption {
	return func(c *Client) {
		if n < 0 {
			n = 0
		}
		c.maxRetries = n
	}
}

// WithRetryBackoff sets the backoff: try n waits a random time in [0, min(max, base·2ⁿ))
// ("full jitter"); a Retry-After from the server of up to a minute is waited instead.
// Defaults 500ms and 8s.
func WithRetryBackoff(base, max time.Duration) ClientOption {
	return func(c *Client) { c.retryBase, c.retryMax = base, max }
}

// WithUserAgent replaces the User-Agent header.
func WithUserAgent(ua string) ClientOption {
	return func(c *Client) { c.userAgent = ua }
}

// WithWebhookSecrets makes WebhookHandler verify X-EZThrottle-Signature with these secrets
// (secondary may be "") and a tolerance of 300 s, answering 401 with the hosted reason when the
// signature does not verify.
func WithWebhookSecrets(primary, secondary string) ClientOption {
	return func(c *Client) { c.webhookPrimary, c.webhookSecondary = primary, secondary }
}

// BaseURL is the server's address this client uses.
func (c *Client) BaseURL() string { return c.baseURL }

// ---------------------------------------------------------------------------- transport

// call is one API call as the transport sees it.
type call struct {
	method string
	path   string // under the base URL, e.g. /api/v1/jobs
	query  url.Values
	body   []byte // JSON, or nil
	header map[string]string
	// idempotent: safe to send again after a network error or a 5xx.
	idempotent bool
	// extra is added to the per-attempt timeout (long-polls hold the answer that long).
	extra time.Duration
	// stream: no per-attempt timeout and the body is left open (event streams).
	stream bool
}

type answer struct {
	status int
	header http.Header
	body   []byte
	resp   *http.Response // stream calls only, body unread
}

// do sends a call, retrying as configured; a non-2xx/3xx answer becomes *EZThrottleError.
func (c *Client) do(ctx context.Context, cl call) (*answer, error) {
	for attempt := 0; ; attempt++ {
		ans, err := c.once(ctx, cl)
		if err == nil && ans.status < 400 {
			return ans, nil
		}
		if ctxErr := ctx.Err(); ctxErr != nil {
			if err == nil {
				return nil, apiError(ans.status, ans.header, ans.body, time.Now())
			}
			return nil, canceled(ctxErr, err)
		}
		var apiErr *EZThrottleError
		if err != nil {
			apiErr = unreachable(err)
		} else {
			apiErr = apiError(ans.status, ans.header, ans.body, time.Now())
		}
		if attempt >= c.maxRetries || !retryable(cl, apiErr) {
			return nil, apiErr
		}
		if err := sleep(ctx, c.backoff(attempt, apiErr.RetryAfter)); err != nil {
			return nil, apiErr
		}
	}
}

func retryable(cl call, e *EZThrottleError) bool {
	switch {
	case e.Status == http.StatusTooManyRequests || e.Status == http.StatusServiceUnavailable:
		return true // refused before anything was done
	case e.Status == 0 || e.Status >= 500:
		return cl.idempotent
	}
	return false
}

// backoff: full jitter, or the server's Retry-After when it gave a reasonable one.
func (c *Client) backoff(attempt int, retryAfter time.Duration) time.Duration {
	if retryAfter > 0 && retryAfter <= time.Minute {
		return retryAfter
	}
	ceiling := c.retryBase << attempt
	if ceiling <= 0 || ceiling > c.retryMax {
		ceiling = c.retryMax
	}
	if ceiling <= 0 {
		return 0
	}
	return jitter(ceiling)
}

// jitter is a uniform random duration in [0, n), from crypto/rand (no shared seeded source).
func jitter(n time.Duration) time.Duration {
	var b [8]byte
	if _, err := crand.Read(b[:]); err != nil {
		return n / 2
	}
	return time.Duration(binary.LittleEndian.Uint64(b[:]) % uint64(n))
}

func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

func (c *Client) once(ctx context.Context, cl call) (*answer, error) {
	cancel := context.CancelFunc(func() {})
	if !cl.stream && c.timeout > 0 {
		ctx, cancel = context.WithTimeout(ctx, c.timeout+cl.extra)
	}
	u := c.baseURL + cl.path
	if len(cl.query) > 0 {
		u += "?" + cl.query.Encode()
	}
	var body io.Reader
	if cl.body != nil {
		body = bytes.NewReader(cl.body)
	}
	req, err := http.NewRequestWithContext(ctx, cl.method, u, body)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("building the request: %w", err)
	}
	if c.apiKey != "" {
		req.Header.Set("Authorization", "Bearer "+c.apiKey)
	}
	if cl.body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	if cl.stream {
		req.Header.Set("Accept", "text/event-stream")
	}
	req.Header.Set("User-Agent", c.userAgent)
	for k, v := range cl.header {
		req.Header.Set(k, v)
	}
	resp, err := c.httpClient.Do(req)
	if err != nil {
		cancel()
		return nil, err
	}
	if cl.stream && resp.StatusCode < 400 {
		resp.Body = &cancelOnClose{ReadCloser: resp.Body, cancel: cancel}
		return &answer{status: resp.StatusCode, header: resp.Header, resp: resp}, nil
	}
	defer cancel()
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("reading the answer: %w", err)
	}
	return &answer{status: resp.StatusCode, header: resp.Header, body: data}, nil
}

type cancelOnClose struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (r *cancelOnClose) Close() error {
	err := r.ReadCloser.Close()
	r.cancel()
	return err
}

// decode reads an answer's JSON body into v, keeping the raw bytes where v wants them.
func decode(ans *answer, v any) error {
	if err := json.Unmarshal(ans.body, v); err != nil {
		return &EZThrottleError{
			Status:  ans.status,
			Code:    "invalid_answer",
			Message: fmt.Sprintf("the server's answer is not the expected JSON: %v", err),
			Body:    ans.body,
		}
	}
	return nil
}

func marshal(v any) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, &EZThrottleError{Code: "invalid_input", Message: fmt.Sprintf("cannot encode the request: %v", err), Err: err}
	}
	return b, nil
}

// Raw sends one call through the client's transport (auth, User-Agent, retries for GET) and
// returns the status and body whatever the status; only a failure to get an answer is an
// error. body may be nil; it is sent as JSON.
func (c *Client) Raw(ctx context.Context, method, path string, headers map[string]string, body []byte) (int, []byte, error) {
	cl := call{method: strings.ToUpper(method), path: path, body: body, header: headers, idempotent: strings.EqualFold(method, http.MethodGet)}
	if i := strings.IndexByte(path, '?'); i >= 0 {
		q, err := url.ParseQuery(path[i+1:])
		if err != nil {
			return 0, nil, &EZThrottleError{Code: "invalid_input", Field: "path", Message: err.Error(), Err: err}
		}
		cl.path, cl.query = path[:i], q
	}
	ans, err := c.do(ctx, cl)
	var e *EZThrottleError
	if errors.As(err, &e) && e.Status != 0 {
		return e.Status, e.Body, nil
	}
	if err != nil {
		return 0, nil, err
	}
	return ans.status, ans.body, nil
}
