// The hosted README's "Legacy Code Integration", with only the import path changed (and the
// strings and context imports the snippet used but did not list).
package main

import (
	"context"
	"fmt"
	"net/http"
	"strings"

	ezthrottle "github.com/ezthrottle/ezthrottle/sdks/go"
)

// ForwardRequest represents a request that should be forwarded to EZThrottle
type ForwardRequest struct {
	URL             string
	Method          string
	Headers         map[string]string
	Body            string
	IdempotentKey   string
	Metadata        map[string]interface{}
	Webhooks        []ezthrottle.Webhook
	FallbackOnError []int
}

// Legacy payment function - just return ForwardRequest on errors!
func processPaymentLegacy(orderID string) (*http.Response, *ForwardRequest, error) {
	resp, err := http.Post(
		"https://api.stripe.com/charges",
		"application/json",
		strings.NewReader(`{"amount": 1000, "currency": "usd"}`),
	)

	if err != nil {
		// Network error - forward to EZThrottle
		return nil, &ForwardRequest{
			URL:           "https://api.stripe.com/charges",
			Method:        "POST",
			Body:          `{"amount": 1000, "currency": "usd"}`,
			IdempotentKey: fmt.Sprintf("order_%s", orderID),
			Webhooks:      []ezthrottle.Webhook{{URL: "https://app.com/payment-complete"}},
		}, nil
	}

	if resp.StatusCode == 429 {
		// Rate limited - forward to EZThrottle
		return nil, &ForwardRequest{
			URL:           "https://api.stripe.com/charges",
			Method:        "POST",
			IdempotentKey: fmt.Sprintf("order_%s", orderID),
			Metadata:      map[string]interface{}{"order_id": orderID},
			Webhooks:      []ezthrottle.Webhook{{URL: "https://app.com/payment-complete"}},
		}, nil
	}

	return resp, nil, nil
}

// Helper function to execute with auto-forwarding
func ExecuteWithForwarding(client *ezthrottle.Client, fn func() (*http.Response, *ForwardRequest, error)) (*http.Response, error) {
	resp, forwardReq, err := fn()

	if err != nil {
		return nil, err
	}

	if forwardReq != nil {
		// Auto-forward to EZThrottle
		result, err := ezthrottle.NewStep(client).
			URL(forwardReq.URL).
			Method(forwardReq.Method).
			Headers(forwardReq.Headers).
			Body(forwardReq.Body).
			IdempotentKey(forwardReq.IdempotentKey).
			Webhooks(forwardReq.Webhooks).
			Metadata(forwardReq.Metadata).
			FallbackOnError(forwardReq.FallbackOnError).
			Execute(context.Background())

		if err != nil {
			return nil, err
		}

		fmt.Printf("✅ Forwarded to EZThrottle: %s\n", result.JobID)
		return nil, nil
	}

	return resp, nil
}

// Usage
func main() {
	client := ezthrottle.NewClient("your_api_key")

	// Call legacy function with auto-forwarding
	resp, err := ExecuteWithForwarding(client, func() (*http.Response, *ForwardRequest, error) {
		return processPaymentLegacy("order_12345")
	})

	if resp != nil {
		fmt.Println("Payment succeeded immediately")
	} else if err == nil {
		fmt.Println("Payment forwarded to EZThrottle (check webhook)")
	}
}
