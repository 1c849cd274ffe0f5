// The hosted SDK's test-app (test-app/main.go), retyped with only the import path changed:
// its router, the SDK's webhook handler and store queries, and its test endpoints.
package main

import (
	"context"
	"fmt"
	"log"
	"net/http"
	"os"

	ezthrottle "github.com/ezthrottle/ezthrottle/sdks/go"
	"github.com/ezthrottle/ezthrottle/sdks/go/internal/hostedcompat/gin"
	"github.com/ezthrottle/ezthrottle/sdks/go/internal/hostedcompat/uuid"
)

var (
	API_KEY = getEnv("EZTHROTTLE_API_KEY", "")
	APP_URL = getEnv("APP_URL", "https://ezthrottle-sdk-go.fly.dev")
	PORT    = getEnv("PORT", "8080")
)

var client *ezthrottle.Client

func main() {
	client = ezthrottle.NewClient(
		API_KEY,
		ezthrottle.WithTracktTagsURL("https://tracktags.fly.dev"),
	)

	gin.SetMode(gin.ReleaseMode)
	r := gin.Default()

	r.POST("/webhook", gin.WrapH(client.WebhookHandler()))
	r.GET("/webhooks/*idempotent_key", getWebhook)
	r.GET("/webhooks", listWebhooks)

	r.POST("/test/performance/basic", testPerformanceBasic)
	r.POST("/test/performance/racing", testPerformanceRacing)
	r.POST("/test/performance/fallback-chain", testPerformanceFallbackChain)
	r.POST("/test/workflow/on-success", testWorkflowOnSuccess)
	r.POST("/test/idempotent/hash", testIdempotentHash)
	r.POST("/test/frugal/local", testFrugalLocal)
	r.POST("/test/forward/legacy", testForwardLegacy)

	log.Printf("✅ Test app running on :%s\n", PORT)
	if err := r.Run(":" + PORT); err != nil {
		log.Fatal(err)
	}
}

func getWebhook(c *gin.Context) {
	idempotentKey := c.Param("idempotent_key")
	if len(idempotentKey) > 0 && idempotentKey[0] == '/' {
		idempotentKey = idempotentKey[1:]
	}

	webhook, exists := client.GetWebhookResult(idempotentKey)

	if exists {
		c.JSON(http.StatusOK, gin.H{
			"found":          true,
			"idempotent_key": idempotentKey,
			"webhook": gin.H{
				"received_at": webhook.ReceivedAt,
				"data":        webhook,
			},
		})
	} else {
		c.JSON(http.StatusNotFound, gin.H{
			"found":          false,
			"idempotent_key": idempotentKey,
		})
	}
}

func listWebhooks(c *gin.Context) {
	c.JSON(http.StatusOK, gin.H{
		"message": "Use GET /webhooks/:idempotent_key to query specific webhook",
	})
}

func testPerformanceBasic(c *gin.Context) {
	testKey := fmt.Sprintf("performance_basic_%s", uuid.New().String())

	result, err := ezthrottle.NewStep(client).
		URL("https://httpbin.org/status/200?test=performance_basic").
		Method("GET").
		Type(ezthrottle.StepTypePerformance).
		Webhooks([]ezthrottle.Webhook{{URL: fmt.Sprintf("%s/webhook", APP_URL), HasQuorumVote: true}}).
		IdempotentKey(testKey).
		Execute(context.Background())

	if err != nil {
		c.JSON(http.StatusInternalServerError, gin.H{"error": err.Error()})
		return
	}

	c.JSON(http.StatusOK, gin.H{
		"test":           "performance_basic",
		"idempotent_key": testKey,
		"result":         result,
	})
}

func testPerformanceRacing(c *gin.Context) {
	testKey := fmt.Sprintf("performance_racing_%s", uuid.New().String())

	result, err := ezthrottle.NewStep(client).
		URL("https://httpbin.org/delay/1?test=performance_racing").
		Method("GET").
		Type(ezthrottle.StepTypePerformance).
		Regions([]string{"iad", "lax", "ord"}).
		ExecutionMode("race").
		RegionPolicy("fallback").
		Webhooks([]ezthrottle.Webhook{{URL: fmt.Sprintf("%s/webhook", APP_URL), HasQuorumVote: true}}).
		IdempotentKey(testKey).
		Execute(context.Background())

	if err != nil {
		c.JSON(http.StatusInternalServerError, gin.H{"error": err.Error()})
		return
	}

	c.JSON(http.StatusOK, gin.H{"test": "performance_racing", "idempotent_key": testKey, "result": result})
}

func testPerformanceFallbackChain(c *gin.Context) {
	testKey := fmt.Sprintf("fallback_chain_%s", uuid.New().String())

	fallback2 := ezthrottle.NewStep(client).
		URL("https://httpbin.org/status/200?test=fallback_2").
		Method("GET")

	fallback1 := ezthrottle.NewStep(client).
		URL("https://httpbin.org/delay/2?test=fallback_1").
		Method("GET").
		Fallback(fallback2, []int{}, 500)

	result, err := ezthrottle.NewStep(client).
		URL("https://httpbin.org/status/500?test=fallback_primary").
		Method("GET").
		Type(ezthrottle.StepTypePerformance).
		Webhooks([]ezthrottle.Webhook{{URL: fmt.Sprintf("%s/webhook", APP_URL), HasQuorumVote: true}}).
		Fallback(fallback1, []int{500, 502, 503}, 0).
		IdempotentKey(testKey).
		Execute(context.Background())

	if err != nil {
		c.JSON(http.StatusInternalServerError, gin.H{"error": err.Error()})
		return
	}

	c.JSON(http.StatusOK, gin.H{"test": "performance_fallback_chain", "idempotent_key": testKey, "result": result})
}

func testWorkflowOnSuccess(c *gin.Context) {
	parentKey := fmt.Sprintf("on_success_parent_%s", uuid.New().String())
	childKey := fmt.Sprintf("on_success_child_%s", uuid.New().String())

	childStep := ezthrottle.NewStep(client).
		URL("https://httpbin.org/delay/1?test=on_success_child").
		Method("GET").
		Type(ezthrottle.StepTypePerformance).
		Webhooks([]ezthrottle.Webhook{{URL: fmt.Sprintf("%s/webhook", APP_URL), HasQuorumVote: true}}).
		IdempotentKey(childKey)

	result, err := ezthrottle.NewStep(client).
		URL("https://httpbin.org/status/200?test=on_success_parent").
		Method("GET").
		Type(ezthrottle.StepTypePerformance).
		Webhooks([]ezthrottle.Webhook{{URL: fmt.Sprintf("%s/webhook", APP_URL), HasQuorumVote: true}}).
		OnSuccess(childStep).
		IdempotentKey(parentKey).
		Execute(context.Background())

	if err != nil {
		c.JSON(http.StatusInternalServerError, gin.H{"error": err.Error()})
		return
	}

	c.JSON(http.StatusOK, gin.H{"test": "workflow_on_success", "parent_key": parentKey, "child_key": childKey, "result": result})
}

func testIdempotentHash(c *gin.Context) {
	runID := uuid.New().String()
	url := fmt.Sprintf("https://httpbin.org/get?test=idempotent_hash&run=%s", runID)

	result1, err := ezthrottle.NewStep(client).
		URL(url).
		Method("GET").
		Type(ezthrottle.StepTypePerformance).
		Webhooks([]ezthrottle.Webhook{{URL: fmt.Sprintf("%s/webhook", APP_URL), HasQuorumVote: true}}).
		IdempotentStrategy(ezthrottle.IdempotentStrategyHash).
		Execute(context.Background())
	if err != nil {
		c.JSON(http.StatusInternalServerError, gin.H{"error": err.Error()})
		return
	}

	result2, err := ezthrottle.NewStep(client).
		URL(url).
		Method("GET").
		Type(ezthrottle.StepTypePerformance).
		Webhooks([]ezthrottle.Webhook{{URL: fmt.Sprintf("%s/webhook", APP_URL), HasQuorumVote: true}}).
		IdempotentStrategy(ezthrottle.IdempotentStrategyHash).
		Execute(context.Background())
	if err != nil {
		c.JSON(http.StatusInternalServerError, gin.H{"error": err.Error()})
		return
	}

	c.JSON(http.StatusOK, gin.H{
		"test":           "idempotent_hash",
		"result1":        result1,
		"result2":        result2,
		"idempotent_key": result1.IdempotentKey,
		"deduped":        result1.JobID == result2.JobID,
	})
}

func testFrugalLocal(c *gin.Context) {
	result, err := ezthrottle.NewStep(client).
		URL("https://httpbin.org/status/200?test=frugal_local").
		Type(ezthrottle.StepTypeFrugal).
		Execute(context.Background())

	if err != nil {
		c.JSON(http.StatusInternalServerError, gin.H{"error": err.Error()})
		return
	}

	c.JSON(http.StatusOK, gin.H{"test": "frugal_local", "result": result})
}

func testForwardLegacy(c *gin.Context) {
	processPayment := func() (interface{}, *ezthrottle.ForwardRequest, error) {
		resp, err := http.Get("https://httpbin.org/status/429")

		if err != nil {
			return nil, &ezthrottle.ForwardRequest{
				URL:           "https://httpbin.org/status/200?test=forward_legacy",
				Method:        "GET",
				IdempotentKey: fmt.Sprintf("legacy_payment_%s", uuid.New().String()),
				Webhooks: []ezthrottle.Webhook{
					{URL: fmt.Sprintf("%s/webhook", APP_URL), HasQuorumVote: true},
				},
				StepType: ezthrottle.StepTypeFrugal,
			}, nil
		}

		if resp.StatusCode == 429 {
			return nil, &ezthrottle.ForwardRequest{
				URL:           "https://httpbin.org/status/200?test=forward_legacy_retry",
				Method:        "GET",
				IdempotentKey: fmt.Sprintf("legacy_payment_%s", uuid.New().String()),
				Webhooks: []ezthrottle.Webhook{
					{URL: fmt.Sprintf("%s/webhook", APP_URL), HasQuorumVote: true},
				},
				StepType: ezthrottle.StepTypeFrugal,
			}, nil
		}

		return resp, nil, nil
	}

	result, err := ezthrottle.ExecuteWithForwarding(client, processPayment)

	if err != nil {
		c.JSON(http.StatusInternalServerError, gin.H{"error": err.Error()})
		return
	}

	if queueResp, ok := result.(*ezthrottle.QueueResponse); ok {
		c.JSON(http.StatusOK, gin.H{
			"test":           "forward_legacy",
			"forwarded":      true,
			"idempotent_key": queueResp.IdempotentKey,
			"job_id":         queueResp.JobID,
			"result":         queueResp,
		})
	} else {
		c.JSON(http.StatusOK, gin.H{"test": "forward_legacy", "forwarded": false})
	}
}

func getEnv(key, defaultValue string) string {
	if value := os.Getenv(key); value != "" {
		return value
	}
	return defaultValue
}
