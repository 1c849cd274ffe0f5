package ezthrottle_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"time"

	ezthrottle "github.com/ezthrottle/ezthrottle/sdks/go"
)

// Submit a job and long-poll for its outcome.
func ExampleClient_Wait() {
	client := ezthrottle.NewClient("") // EZTHROTTLE_API_KEY, EZTHROTTLE_URL
	ctx := context.Background()
	sub, err := client.Submit(ctx, ezthrottle.JobSpec{URL: "https://api.example.com/orders", Method: "POST", Body: `{"id": 7}`})
	if err != nil {
		log.Fatal(err)
	}
	job, err := client.Wait(ctx, sub.JobID, 2*time.Minute)
	if errors.Is(err, ezthrottle.ErrWaitTimeout) {
		fmt.Println("still", job.State)
		return
	}
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(job.State, job.Response.StatusCode)
}

// Follow a job's events as they happen.
func ExampleClient_Events() {
	client := ezthrottle.NewClient("")
	stream, err := client.Events(context.Background(), "job_…")
	if err != nil {
		log.Fatal(err)
	}
	defer stream.Close()
	for {
		ev, err := stream.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println(ev.Type)
	}
}

// Tell bad input from a server that is down.
func ExampleEZThrottleError() {
	client := ezthrottle.NewClient("")
	_, err := client.Submit(context.Background(), ezthrottle.JobSpec{URL: "ftp://example.com"})
	var e *ezthrottle.EZThrottleError
	switch {
	case errors.As(err, &e) && errors.Is(err, ezthrottle.ErrValidation):
		fmt.Printf("fix %s: %s (%s)\n", e.Field, e.Message, e.Code)
	case errors.Is(err, ezthrottle.ErrUnreachable):
		fmt.Println("EZThrottle is down:", e.Err)
	}
}

// Verify a delivery in your own handler.
func ExampleVerifyWebhookSignature() {
	http.HandleFunc("/webhook", func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		res := ezthrottle.VerifyWebhookSignature(body, r.Header.Get("X-EZThrottle-Signature"), "my-webhook-secret-0123", 300)
		if !res.Verified {
			http.Error(w, "Invalid signature: "+res.Reason, http.StatusUnauthorized)
			return
		}
		w.WriteHeader(http.StatusOK)
	})
}
