package hostedcompat

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	ezthrottle "github.com/ezthrottle/ezthrottle/sdks/go"
	"github.com/ezthrottle/ezthrottle/sdks/go/internal/hostedcompat/gin"
	"github.com/ezthrottle/ezthrottle/sdks/go/internal/hostedcompat/uuid"
)

// RunHostedQuickStart is a hosted-style program, written with the hosted 1.2.0 names only: a
// client pointed at baseURL (the one change a migrating user makes), a webhook secret, the
// app's own server verifying X-EZThrottle-Signature before handing the body to the SDK's
// webhook handler, a PERFORMANCE Step with that webhook, and the result watched on a channel.
// It returns the webhook result once it arrived verified.
func RunHostedQuickStart(apiKey, baseURL, target string, wait time.Duration) (*ezthrottle.WebhookResult, error) {
	const secret = "hosted-quickstart-secret-0123"
	client := ezthrottle.NewClient(apiKey, ezthrottle.WithTracktTagsURL(baseURL))
	if _, err := client.CreateWebhookSecret(secret, ""); err != nil {
		return nil, fmt.Errorf("create secret: %w", err)
	}

	verified := make(chan string, 4)
	router := gin.Default()
	router.POST("/webhook", func(c *gin.Context) {
		body, _ := io.ReadAll(c.Request.Body)
		result := ezthrottle.VerifyWebhookSignature(body, c.Request.Header.Get("X-EZThrottle-Signature"), secret, 300)
		verified <- result.Reason
		if !result.Verified {
			c.JSON(http.StatusUnauthorized, gin.H{"error": "Invalid signature: " + result.Reason})
			return
		}
		c.Request.Body = io.NopCloser(bytes.NewReader(body))
		gin.WrapH(client.WebhookHandler())(c)
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	srv := &http.Server{Handler: router}
	go srv.Serve(ln)
	defer srv.Close()

	idempotentKey := fmt.Sprintf("payment_%s", uuid.New().String())
	result, err := ezthrottle.NewStep(client).
		URL(target).
		Method("POST").
		Body(`{"amount": 1000, "currency": "usd"}`).
		Type(ezthrottle.StepTypePerformance).
		IdempotentKey(idempotentKey).
		Webhooks([]ezthrottle.Webhook{{URL: "http://" + ln.Addr().String() + "/webhook", HasQuorumVote: true}}).
		Execute(context.Background())
	if err != nil {
		return nil, fmt.Errorf("execute: %w", err)
	}
	if result.JobID == "" {
		return nil, fmt.Errorf("no job id in %+v", result)
	}

	select {
	case webhookResult := <-client.WatchWebhook(idempotentKey):
		if reason := <-verified; reason != "valid" {
			return nil, fmt.Errorf("the delivery verified as %q", reason)
		}
		return webhookResult, nil
	case reason := <-verified:
		if reason != "valid" {
			return nil, fmt.Errorf("the delivery did not verify: %s", reason)
		}
		select {
		case webhookResult := <-client.WatchWebhook(idempotentKey):
			return webhookResult, nil
		case <-time.After(wait):
			return nil, fmt.Errorf("verified but not stored within %v", wait)
		}
	case <-time.After(wait):
		return nil, fmt.Errorf("no webhook within %v", wait)
	}
}
