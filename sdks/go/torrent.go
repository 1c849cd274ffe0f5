package ezthrottle

import (
	"context"
	"encoding/json"
	"net/http"
)

// TorrentSpec is a call raced from every listed live region now (POST /api/v1/torrent): no
// queue, no retries; every leg takes a permit of the call's lane.
type TorrentSpec struct {
	URL     string            `json:"url"`
	Method  string            `json:"method,omitempty"`
	Headers map[string]string `json:"headers,omitempty"`
	Body    string            `json:"body,omitempty"`
	// Regions to race from (default: the answering node's).
	Regions []string `json:"regions,omitempty"`
	// Timeout is a duration ("2s") or milliseconds; default 10 s.
	Timeout any `json:"timeout,omitempty"`
	// IdempotentKey is sent as Idempotency-Key on every leg (default: a fresh one).
	IdempotentKey string `json:"idempotent_key,omitempty"`
}

// TorrentLeg is one leg of a race: won, lost, cancelled or error.
type TorrentLeg struct {
	Region     string         `json:"region"`
	Node       string         `json:"node,omitempty"`
	Outcome    string         `json:"outcome"`
	StatusCode int            `json:"status_code,omitempty"`
	Error      *TorrentFailed `json:"error,omitempty"`
	LatencyMs  float64        `json:"latency_ms"`
}

// TorrentFailed says why no leg (or this leg) got an answer.
type TorrentFailed struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// TorrentResult is the first 2xx of the race, else the last answer that arrived.
type TorrentResult struct {
	Region        string         `json:"region,omitempty"`
	Node          string         `json:"node,omitempty"`
	StatusCode    int            `json:"status_code,omitempty"`
	Headers       [][2]string    `json:"headers,omitempty"`
	Body          string         `json:"body,omitempty"`
	BodyTruncated bool           `json:"body_truncated,omitempty"`
	LatencyMs     float64        `json:"latency_ms"`
	IdempotentKey string         `json:"idempotent_key"`
	Attempts      []TorrentLeg   `json:"attempts"`
	Error         *TorrentFailed `json:"error,omitempty"`
}

// Torrent races the call now (POST /api/v1/torrent). It is never sent again by the client: a
// race goes out from every region at once, repeating it is the caller's decision. A lane with
// no permit for it answers 429 (lane_paused with Retry-After, or lane_busy).
func (c *Client) Torrent(ctx context.Context, spec TorrentSpec) (*TorrentResult, error) {
	body, err := json.Marshal(spec)
	if err != nil {
		return nil, err
	}
	ans, err := c.do(ctx, call{method: http.MethodPost, path: "/api/v1/torrent", body: body})
	if err != nil {
		return nil, err
	}
	var r TorrentResult
	if err := decode(ans, &r); err != nil {
		return nil, err
	}
	return &r, nil
}
