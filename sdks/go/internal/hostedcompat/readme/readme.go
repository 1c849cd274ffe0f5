// Package readme holds the hosted README's remaining snippets, each wrapped in a function,
// with only the import path changed.
package readme

import (
	"context"
	"fmt"
	"io"
	"log"
	"net/http"
	"time"

	ezthrottle "github.com/ezthrottle/ezthrottle/sdks/go"
	"github.com/ezthrottle/ezthrottle/sdks/go/internal/hostedcompat/gin"
	"github.com/ezthrottle/ezthrottle/sdks/go/internal/hostedcompat/uuid"
)

// "Streaming Webhook Results (Non-Blocking)"
func processPayment(client *ezthrottle.Client, amount int) {
	// Generate unique idempotent key
	idempotentKey := fmt.Sprintf("payment_%s", uuid.New().String())

	// Submit payment job
	result, _ := ezthrottle.NewStep(client).
		URL("https://api.stripe.com/charges").
		Method("POST").
		Body(fmt.Sprintf(`{"amount": %d, "currency": "usd"}`, amount)).
		IdempotentKey(idempotentKey).
		Webhooks([]ezthrottle.Webhook{
			{URL: "http://localhost:8080/webhook"},
		}).
		Execute(context.Background())

	fmt.Printf("✅ Job submitted: %s (key: %s)\n", result.JobID, idempotentKey)

	// Watch for webhook result (non-blocking channel)
	webhookChan := client.WatchWebhook(idempotentKey)

	// Do other work while waiting...
	fmt.Println("⏳ Doing other work...")

	// Receive webhook result from channel
	webhookResult := <-webhookChan // Blocks here until webhook arrives

	fmt.Printf("📬 Webhook received! Status: %s\n", webhookResult.Status)

	// Chain next operation based on result
	if webhookResult.Status == "success" {
		// Generate receipt key
		receiptKey := fmt.Sprintf("receipt_%s", uuid.New().String())

		// Send receipt
		ezthrottle.NewStep(client).
			URL("https://api.sendgrid.com/send").
			IdempotentKey(receiptKey).
			Body(webhookResult.Response.Body).
			Execute(context.Background())

		fmt.Println("📧 Receipt sent!")
	}
}

// "Advanced: Concurrent Webhook Watching"
func processMultiplePayments(client *ezthrottle.Client, amounts []int) {
	results := make(chan *ezthrottle.WebhookResult, len(amounts))

	// Submit all jobs concurrently
	for i, amount := range amounts {
		go func(idx, amt int) {
			key := fmt.Sprintf("payment_%d_%s", idx, uuid.New().String())

			// Submit job
			ezthrottle.NewStep(client).
				URL("https://api.stripe.com/charges").
				Method("POST").
				Body(fmt.Sprintf(`{"amount": %d}`, amt)).
				IdempotentKey(key).
				Webhooks([]ezthrottle.Webhook{{URL: "https://app.com/webhook"}}).
				Execute(context.Background())

			// Watch for result
			webhookChan := client.WatchWebhook(key)
			result := <-webhookChan

			results <- result
		}(i, amount)
	}

	// Collect all results
	for i := 0; i < len(amounts); i++ {
		result := <-results
		fmt.Printf("Payment %d: %s\n", i, result.Status)
	}
}

// "Webhook Fanout (Multiple Webhooks)"
func webhookFanout(client *ezthrottle.Client) {
	result, err := ezthrottle.NewStep(client).
		URL("https://api.stripe.com/charges").
		Method("POST").
		Webhooks([]ezthrottle.Webhook{
			// Primary webhook (must succeed)
			{URL: "https://app.com/payment-complete", HasQuorumVote: true},

			// Analytics webhook (optional)
			{URL: "https://analytics.com/track", HasQuorumVote: false},

			// Notification service (must succeed)
			{URL: "https://notify.com/alert", HasQuorumVote: true},

			// Multi-region webhook racing
			{
				URL:           "https://backup.com/webhook",
				Regions:       []string{"iad", "lax"},
				HasQuorumVote: true,
			},
		}).
		WebhookQuorum(2). // At least 2 webhooks with HasQuorumVote=true must succeed
		Execute(context.Background())
	_, _ = result, err
}

// "Handling Rate Limits"
func handlingRateLimits(client *ezthrottle.Client, req *ezthrottle.QueueRequest) {
	resp, err := client.QueueRequest(req)
	if err != nil {
		if ezErr, ok := err.(*ezthrottle.EZThrottleError); ok && ezErr.RetryAt > 0 {
			waitMs := ezErr.RetryAt - time.Now().UnixMilli()
			fmt.Printf("Rate limited, retry in %dms\n", waitMs)

			// Wait and retry with suggested timestamp
			time.Sleep(time.Duration(waitMs) * time.Millisecond)
			req.RetryAt = ezErr.RetryAt
			resp, err = client.QueueRequest(req)
		}
	}
	_, _ = resp, err
}

// "Webhook Security (HMAC Signatures)" — Quick Setup
const WEBHOOK_SECRET = "your_secret_min_16_chars"

func webhookHandler(w http.ResponseWriter, r *http.Request) {
	// Read raw body
	body, _ := io.ReadAll(r.Body)
	signature := r.Header.Get("X-EZThrottle-Signature")

	// Verify signature
	result := ezthrottle.VerifyWebhookSignature(body, signature, WEBHOOK_SECRET, 300)
	if !result.Verified {
		http.Error(w, "Invalid signature: "+result.Reason, http.StatusUnauthorized)
		return
	}

	// Process webhook...
	log.Printf("Webhook verified! Job completed")
	w.WriteHeader(http.StatusOK)
}

// "Verification Functions"
func verificationFunctions(payload []byte, signature, secret string) {
	// Boolean verification
	result := ezthrottle.VerifyWebhookSignature(payload, signature, secret, 300)
	if !result.Verified {
		log.Printf("Failed: %s", result.Reason)
	}

	// Strict verification (returns error)
	if err := ezthrottle.VerifyWebhookSignatureStrict(payload, signature, secret, 300); err != nil {
		log.Fatal(err)
	}

	// Secret rotation support
	result = ezthrottle.TryVerifyWithSecrets(
		payload,
		signature,
		"new_secret",
		"old_secret", // Optional (use "" if not rotating)
		300,
	)
	log.Println(result.Reason) // "valid_primary" or "valid_secondary"

	var verr *ezthrottle.WebhookVerificationError
	_ = verr
}

// "Manage Secrets"
func manageSecrets(client *ezthrottle.Client) {
	// Create/update
	result, _ := client.CreateWebhookSecret("primary_secret", "secondary_secret")

	// Get (masked)
	secrets, _ := client.GetWebhookSecret()
	// map[string]interface{}{
	//   "primary_secret": "prim****cret",
	//   "has_secondary": true
	// }

	// Rotate safely
	result, _ = client.RotateWebhookSecret("new_secret")

	// Delete
	result, _ = client.DeleteWebhookSecret()
	_, _ = result, secrets
}

// "Configuration"
func configuration() *ezthrottle.Client {
	client := ezthrottle.NewClient(
		"your_api_key",
		ezthrottle.WithTracktTagsURL("https://custom-tracktags.com"),
		ezthrottle.WithHTTPClient(&http.Client{
			Timeout: 60 * time.Second,
		}),
	)
	return client
}

// "API Reference"
func apiReference(client *ezthrottle.Client, req *ezthrottle.QueueRequest) {
	var q *ezthrottle.QueueResponse
	var err error
	q, err = client.QueueRequest(req)
	var resp *http.Response
	resp, err = client.Request("GET", "https://api.example.com", map[string]string{"A": "b"}, "")
	var m map[string]interface{}
	m, err = client.QueueAndWait(req, time.Minute, time.Second)
	sub, err := client.SubmitJob(&ezthrottle.SubmitJobRequest{
		URL: "https://api.example.com", Method: "POST",
		RetryPolicy: &ezthrottle.RetryPolicy{MaxRetries: 3, RetryCodes: []int{429}},
		FallbackJob: &ezthrottle.SubmitJobRequest{URL: "https://backup.example.com", Trigger: map[string]interface{}{"type": "on_error"}},
	})
	var wr *ezthrottle.WebhookResult
	var ok bool
	wr, ok = client.GetWebhookResult("key")
	var store *ezthrottle.WebhookStore = ezthrottle.NewWebhookStore()
	store.Store(&ezthrottle.WebhookResult{JobID: "j"})
	var su ezthrottle.StatusUpdate
	var pr ezthrottle.ProxyResponse
	var fr ezthrottle.ForwardedResponse = pr.ForwardedResponse
	var er ezthrottle.ErrorResponse
	var vr ezthrottle.VerificationResult
	var opt ezthrottle.ClientOption = ezthrottle.WithHTTPClient(http.DefaultClient)
	var qr = ezthrottle.QueueRequest{URL: "u", WebhookURL: "w", Method: "GET", Headers: nil, Body: "", Metadata: map[string]string{}, RetryAt: 1}
	var e = &ezthrottle.EZThrottleError{Message: "m", RetryAt: 1}
	var headers map[string]string = wr.Response.Headers
	var meta map[string]interface{} = wr.Metadata
	var at time.Time = wr.ReceivedAt
	_, _, _, _, _, _, _, _, _, _, _, _, _, _, _, _ = q, err, resp, m, sub, ok, su, fr, er, vr, opt, qr, e, headers, meta, at
}

// "Step Builder API (v1.1.0+)"
func stepBuilder(client *ezthrottle.Client) {
	// Multi-region racing with webhooks
	result, err := ezthrottle.NewStep(client).
		URL("https://api.stripe.com/charges").
		Method("POST").
		Type(ezthrottle.StepTypePerformance).
		Webhooks([]ezthrottle.Webhook{
			{URL: "https://app.com/webhook", HasQuorumVote: true},
		}).
		Regions([]string{"iad", "lax", "ord"}).
		ExecutionMode("race").
		Execute(context.Background())
	_, _ = result, err

	// Execute locally, only queue on specific errors
	result, err = ezthrottle.NewStep(client).
		URL("https://api.example.com").
		Type(ezthrottle.StepTypeFrugal).
		FallbackOnError([]int{429, 500, 503}).
		Execute(context.Background())
	_, _ = result, err

	// Workflow chaining: analytics step (cheap)
	analytics := ezthrottle.NewStep(client).
		URL("https://analytics.com/track").
		Type(ezthrottle.StepTypeFrugal)

	// Notification (fast, distributed)
	notification := ezthrottle.NewStep(client).
		URL("https://notify.com").
		Type(ezthrottle.StepTypePerformance).
		Webhooks([]ezthrottle.Webhook{{URL: "https://app.com/webhook"}}).
		Regions([]string{"iad", "lax"}).
		OnSuccess(analytics)

	// Primary API call (cheap local execution)
	result, err = ezthrottle.NewStep(client).
		URL("https://api.example.com").
		Type(ezthrottle.StepTypeFrugal).
		FallbackOnError([]int{429, 500}).
		OnSuccess(notification).
		Execute(context.Background())
	_, _ = result, err

	// Fallback chains
	backup := ezthrottle.NewStep(client).URL("https://backup-api.com")

	result, err = ezthrottle.NewStep(client).
		URL("https://primary-api.com").
		Fallback(backup, []int{500, 502, 503}, 0).
		Execute(context.Background())
	_, _ = result, err

	// HASH strategy (default) - prevents duplicates
	result, err = ezthrottle.NewStep(client).
		URL("https://api.stripe.com/charges").
		IdempotentStrategy(ezthrottle.IdempotentStrategyHash).
		Execute(context.Background())
	_, _ = result, err

	// UNIQUE strategy - allows duplicates (for polling)
	result, err = ezthrottle.NewStep(client).
		URL("https://api.example.com/status").
		IdempotentStrategy(ezthrottle.IdempotentStrategyUnique).
		Execute(context.Background())
	_, _ = result, err

	// The remaining builder methods of step.go.
	_ = ezthrottle.NewStep(client).Header("A", "b").RegionPolicy("strict").RetryPolicy(&ezthrottle.RetryPolicy{}).
		RetryAt(1).OnFailure(backup).OnFailureTimeout(5000).Timeout(time.Second)
	var st ezthrottle.StepType = ezthrottle.StepTypePerformance
	var is ezthrottle.IdempotentStrategy = ezthrottle.IdempotentStrategyUnique
	_, _ = st, is
}

// "Webhook Payload" — example handler (Gin)
func handleWebhook(c *gin.Context) {
	var payload struct {
		JobID         string `json:"job_id"`
		IdempotentKey string `json:"idempotent_key"`
		Status        string `json:"status"`
		Response      struct {
			StatusCode int               `json:"status_code"`
			Headers    map[string]string `json:"headers"`
			Body       string            `json:"body"`
		} `json:"response"`
		Metadata map[string]interface{} `json:"metadata"`
	}

	if err := c.BindJSON(&payload); err != nil {
		c.JSON(400, gin.H{"error": err.Error()})
		return
	}

	if payload.Status == "success" {
		// Process successful result
		log.Printf("Job %s succeeded: %s", payload.JobID, payload.Response.Body)
	} else {
		// Handle failure
		log.Printf("Job %s failed", payload.JobID)
	}

	c.JSON(200, gin.H{"ok": true})
}

// "Mixed Workflow Chains (FRUGAL ↔ PERFORMANCE)"
func mixedWorkflows(client *ezthrottle.Client) {
	// Example 1: FRUGAL → PERFORMANCE
	result, err := ezthrottle.NewStep(client).
		URL("https://api.openai.com/v1/chat/completions").
		Type(ezthrottle.StepTypeFrugal).
		FallbackOnError([]int{429, 500}).
		OnSuccess(
			// Chain to PERFORMANCE for fast webhook delivery
			ezthrottle.NewStep(client).
				URL("https://api.sendgrid.com/send").
				Type(ezthrottle.StepTypePerformance).
				Webhooks([]ezthrottle.Webhook{{URL: "https://app.com/email-sent"}}).
				Regions([]string{"iad", "lax", "ord"}),
		).
		Execute(context.Background())
	_, _ = result, err

	// Example 2: PERFORMANCE → FRUGAL
	payment, err := ezthrottle.NewStep(client).
		URL("https://api.stripe.com/charges").
		Type(ezthrottle.StepTypePerformance).
		Webhooks([]ezthrottle.Webhook{{URL: "https://app.com/payment-complete"}}).
		Regions([]string{"iad", "lax"}).
		OnSuccess(
			// Analytics doesn't need speed - save money!
			ezthrottle.NewStep(client).
				URL("https://analytics.com/track").
				Type(ezthrottle.StepTypeFrugal),
		).
		Execute(context.Background())
	_, _ = payment, err

	// Example 3: Complex Mixed Workflow
	workflow, err := ezthrottle.NewStep(client).
		URL("https://cheap-api.com").
		Type(ezthrottle.StepTypeFrugal).
		FallbackOnError([]int{429, 500}).
		Fallback(
			ezthrottle.NewStep(client).URL("https://backup-api.com"),
			[]int{500}, 0,
		).
		OnSuccess(
			// Critical notification needs PERFORMANCE
			ezthrottle.NewStep(client).
				URL("https://critical-webhook.com").
				Type(ezthrottle.StepTypePerformance).
				Webhooks([]ezthrottle.Webhook{{URL: "https://app.com/webhook"}}).
				Regions([]string{"iad", "lax", "ord"}).
				OnSuccess(
					// Analytics is cheap again
					ezthrottle.NewStep(client).
						URL("https://analytics.com/track").
						Type(ezthrottle.StepTypeFrugal),
				),
		).
		OnFailure(
			// Simple Slack alert doesn't need PERFORMANCE
			ezthrottle.NewStep(client).
				URL("https://hooks.slack.com/webhook").
				Type(ezthrottle.StepTypeFrugal),
		).
		Execute(context.Background())
	_, _ = workflow, err
}

// Everything above is referenced so the compile check also runs vet's unused checks.
var _ = []interface{}{processPayment, processMultiplePayments, webhookFanout, handlingRateLimits,
	webhookHandler, verificationFunctions, manageSecrets, configuration, apiReference, stepBuilder,
	handleWebhook, mixedWorkflows}
