package ezthrottle

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Event is one Server-Sent Event of a job's stream: Type is "queued", "position",
// "dispatching", "attempt", or a final state ("succeeded", "failed", "expired", "cancelled"),
// whose Data is the job's final view.
type Event struct {
	Type string
	Data json.RawMessage
	ID   string
	// Retry is the reconnection delay the server suggested, if any.
	Retry time.Duration
}

// Final reports whether this event ends the stream (it carries the final view).
func (e Event) Final() bool { return IsFinalState(e.Type) }

// Job decodes a final event's data as the job's view.
func (e Event) Job() (*Job, error) {
	var j Job
	if err := json.Unmarshal(e.Data, &j); err != nil {
		return nil, fmt.Errorf("ezthrottle: event %q does not carry a job view: %w", e.Type, err)
	}
	j.Raw = e.Data
	return &j, nil
}

// EventStream reads a job's events as they happen. Close it when done (reading to the end
// closes it too).
type EventStream struct {
	ctx    context.Context
	body   io.ReadCloser
	r      *bufio.Reader
	done   bool
	closed bool
	// last tells the stream's final event type (nil: a job's final states).
	last func(string) bool
}

// Events opens the job's event stream (GET /api/v1/jobs/{id}/events). A late subscriber first
// gets the events it missed. The stream ends after the final event; ctx bounds it.
//
//	stream, err := client.Events(ctx, jobID)
//	if err != nil { … }
//	defer stream.Close()
//	for {
//	    ev, err := stream.Next()
//	    if err == io.EOF { break }
//	    if err != nil { … }
//	    fmt.Println(ev.Type)
//	}
func (c *Client) Events(ctx context.Context, jobID string) (*EventStream, error) {
	ans, err := c.do(ctx, call{method: http.MethodGet, path: jobPath(jobID, "/events"), idempotent: true, stream: true})
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
	return s, nil
}

func newEventStream(body io.ReadCloser) *EventStream {
	return &EventStream{ctx: context.Background(), body: body, r: bufio.NewReaderSize(body, 16<<10)}
}

// Next blocks for the next event. After the final event (or when the server ends the stream)
// it returns io.EOF. A stream cut before its final event is an *EZThrottleError wrapping
// io.ErrUnexpectedEOF (Code "unreachable"), or Code "canceled" when the context ended.
func (s *EventStream) Next() (Event, error) {
	if s.done || s.closed {
		return Event{}, io.EOF
	}
	var ev Event
	var data []string
	seen := false
	for {
		line, err := s.r.ReadString('\n')
		if err != nil && !(errors.Is(err, io.EOF) && line != "") {
			s.Close()
			if errors.Is(err, io.EOF) && !seen {
				s.done = true
				return Event{}, io.EOF
			}
			if ctxErr := s.ctx.Err(); ctxErr != nil {
				return Event{}, canceled(ctxErr, err)
			}
			return Event{}, unreachable(fmt.Errorf("event stream cut: %w", io.ErrUnexpectedEOF))
		}
		line = strings.TrimRight(line, "\r\n")
		if line == "" {
			if !seen {
				continue
			}
			if ev.Type == "" {
				ev.Type = "message"
			}
			ev.Data = json.RawMessage(strings.Join(data, "\n"))
			if (s.last == nil && ev.Final()) || (s.last != nil && s.last(ev.Type)) {
				s.done = true
				s.Close()
			}
			return ev, nil
		}
		if strings.HasPrefix(line, ":") {
			continue // comment / keep-alive
		}
		field, value, _ := strings.Cut(line, ":")
		value = strings.TrimPrefix(value, " ")
		seen = true
		switch field {
		case "event":
			ev.Type = value
		case "data":
			data = append(data, value)
		case "id":
			ev.ID = value
		case "retry":
			if ms, err := strconv.Atoi(value); err == nil {
				ev.Retry = time.Duration(ms) * time.Millisecond
			}
		}
	}
}

// Close ends the stream early.
func (s *EventStream) Close() error {
	if s.closed {
		return nil
	}
	s.closed = true
	return s.body.Close()
}

// Collect reads the stream to its end and returns every event (the final one last).
func (s *EventStream) Collect() ([]Event, error) {
	var out []Event
	for {
		ev, err := s.Next()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		out = append(out, ev)
	}
}
