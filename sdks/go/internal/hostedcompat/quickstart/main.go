// The hosted README's "Quick Start", with only the import path changed.
package main

import (
	"context"

	ezthrottle "github.com/ezthrottle/ezthrottle/sdks/go"
	"github.com/ezthrottle/ezthrottle/sdks/go/internal/hostedcompat/gin"
	"github.com/ezthrottle/ezthrottle/sdks/go/internal/hostedcompat/uuid"
)

func main() {
	// Create client (webhook store created automatically)
	client := ezthrottle.NewClient("your_api_key")

	// Setup your server
	router := gin.Default()

	// Mount EZThrottle webhook handler on YOUR existing server
	router.POST("/webhook", gin.WrapH(client.WebhookHandler()))

	// Example: Process payment endpoint
	router.POST("/process-payment", func(c *gin.Context) {
		// Generate unique idempotent key
		idempotentKey := uuid.New().String()

		// Submit job (returns immediately)
		result, _ := ezthrottle.NewStep(client).
			URL("https://api.stripe.com/charges").
			Method("POST").
			IdempotentKey(idempotentKey).
			Webhooks([]ezthrottle.Webhook{
				{URL: "https://your-app.com/webhook"},
			}).
			Execute(context.Background())

		c.JSON(200, gin.H{
			"job_id":         result.JobID,
			"idempotent_key": idempotentKey,
		})
	})

	// Start server (single port!)
	router.Run(":8080")
}
