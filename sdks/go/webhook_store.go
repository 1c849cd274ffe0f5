package ezthrottle

import (
	"bytes"
	"encoding/json"
	"io"
	"log"
	"net/http"
	"sync"
	"time"
)

// WebhookResult is a webhook delivery's body (docs/api.md, Webhooks).
type WebhookResult struct {
	JobID         string                 `json:"job_id"`
	IdempotentKey string                 `json:"idempotent_key"`
	Status        string                 `json:"status"` // "success" or "failed"
	Response      WebhookResponse        `json:"response"`
	Metadata      map[string]interface{} `json:"metadata"`
	ReceivedAt    time.Time              `json:"received_at"`

	// This server's additions (absent from the hosted service's bodies).
	Error       *JobError `json:"error,omitempty"`
	Attempts    int       `json:"attempts,omitempty"`
	Region      string    `json:"region,omitempty"`
	CompletedAt int64     `json:"completed_at,omitempty"`
	Type        string    `json:"type,omitempty"`      // Standard Webhooks: job.succeeded, job.failed, …
	Timestamp   string    `json:"timestamp,omitempty"` // RFC 3339 of CompletedAt
}

// WebhookResponse is the target's answer in a webhook body.
type WebhookResponse struct {
	StatusCode int               `json:"status_code"`
	Headers    map[string]string `json:"headers"`
	Body       string            `json:"body"`
}

// StatusUpdate is a job's progress as the hosted SDK reported it.
type StatusUpdate struct {
	State         string         // "queued", "completed", "failed"
	JobID         string         // job id
	IdempotentKey string         // idempotency key
	Result        *WebhookResult // the webhook body ("completed" only)
	Error         error          // what went wrong ("failed" only)
}

// WebhookStore keeps received webhook bodies in memory, by idempotency key and by job id,
// and hands them to watchers.
type WebhookStore struct {
	mu       sync.RWMutex
	webhooks map[string]*WebhookResult
	watchers map[string][]chan *WebhookResult
}

// NewWebhookStore makes an empty store.
func NewWebhookStore() *WebhookStore {
	return &WebhookStore{
		webhooks: make(map[string]*WebhookResult),
		watchers: make(map[string][]chan *WebhookResult),
	}
}

// Store keeps a result (stamping ReceivedAt) and wakes whoever watches its key or job id.
func (s *WebhookStore) Store(result *WebhookResult) {
	s.mu.Lock()
	defer s.mu.Unlock()
	result.ReceivedAt = time.Now()
	for _, key := range []string{result.IdempotentKey, result.JobID} {
		if key == "" {
			continue
		}
		s.webhooks[key] = result
		for _, ch := range s.watchers[key] {
			select {
			case ch <- result:
			default:
			}
		}
		delete(s.watchers, key)
	}
}

// Get returns the result stored under an idempotency key (or job id).
func (s *WebhookStore) Get(idempotentKey string) (*WebhookResult, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	r, ok := s.webhooks[idempotentKey]
	return r, ok
}

// Watch returns a channel that receives the result for an idempotency key (or job id) once it
// arrives — at once if it already has.
func (s *WebhookStore) Watch(idempotentKey string) <-chan *WebhookResult {
	s.mu.Lock()
	defer s.mu.Unlock()
	ch := make(chan *WebhookResult, 1)
	if r, ok := s.webhooks[idempotentKey]; ok {
		ch <- r
		close(ch)
		return ch
	}
	s.watchers[idempotentKey] = append(s.watchers[idempotentKey], ch)
	return ch
}

// maxWebhookBody bounds what the handler reads.
const maxWebhookBody = 4 << 20

// ServeHTTP is the webhook receiver: POST only; with secrets set (see Handler) the signature
// must verify; a JSON body is stored and answered {"ok": true}.
func (s *WebhookStore) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.Handler("", "", 300).ServeHTTP(w, r)
}

// Handler is the receiver with signature checking: when primary is set, X-EZThrottle-Signature
// must verify with primary or secondary within tolerance seconds, else 401 with the reason.
func (s *WebhookStore) Handler(primary, secondary string, tolerance int) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			http.Error(w, "Method not allowed", http.StatusMethodNotAllowed)
			return
		}
		body, err := io.ReadAll(io.LimitReader(r.Body, maxWebhookBody+1))
		if err != nil || len(body) > maxWebhookBody {
			http.Error(w, "Could not read the body", http.StatusBadRequest)
			return
		}
		if primary != "" {
			v := TryVerifyWithSecrets(body, r.Header.Get("X-EZThrottle-Signature"), primary, secondary, tolerance)
			if !v.Verified {
				http.Error(w, "Invalid signature: "+v.Reason, http.StatusUnauthorized)
				return
			}
		}
		var result WebhookResult
		dec := json.NewDecoder(bytes.NewReader(body))
		if err := dec.Decode(&result); err != nil {
			log.Printf("ezthrottle: webhook body is not the expected JSON: %v", err)
			http.Error(w, "Invalid JSON", http.StatusBadRequest)
			return
		}
		s.Store(&result)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write([]byte(`{"ok":true}` + "\n"))
	})
}

// WebhookHandler is the client's webhook receiver: mount it on your own server at the path
// your jobs' webhooks point to. Bodies land in the client's store (GetWebhookResult,
// WatchWebhook). With WithWebhookSecrets, unsigned or badly signed deliveries get 401.
//
//	http.Handle("/webhook", client.WebhookHandler())
func (c *Client) WebhookHandler() http.Handler {
	return c.webhookStore.Handler(c.webhookPrimary, c.webhookSecondary, c.webhookTolerance)
}

// GetWebhookResult returns the webhook received for an idempotency key (or job id).
func (c *Client) GetWebhookResult(idempotentKey string) (*WebhookResult, bool) {
	return c.webhookStore.Get(idempotentKey)
}

// WatchWebhook returns a channel that receives the webhook for an idempotency key (or job id).
func (c *Client) WatchWebhook(idempotentKey string) <-chan *WebhookResult {
	return c.webhookStore.Watch(idempotentKey)
}

// WebhookStore is the client's store of received webhooks.
func (c *Client) WebhookStore() *WebhookStore { return c.webhookStore }
