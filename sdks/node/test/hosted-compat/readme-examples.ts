// The hosted 1.4.0 README's examples, in order, typed.
import { EZThrottle, IdempotentStrategy, Step, StepType } from "ezthrottle";

const client = new EZThrottle({ apiKey: "your_api_key" });

// Quick Start
export async function quickStart(): Promise<void> {
  const result = await new Step(client)
    .url("https://api.example.com/endpoint")
    .method("POST")
    .type(StepType.PERFORMANCE)
    .webhooks([{ url: "https://your-app.com/webhook" }])
    .execute();

  console.log(`Job ID: ${result.job_id}`);
}

// Step Types
export async function stepTypes(): Promise<void> {
  await new Step(client)
    .url("https://api.stripe.com/charges")
    .type(StepType.PERFORMANCE)
    .webhooks([{ url: "https://app.com/webhook" }])
    .regions(["iad", "lax", "ord"]) // Multi-region racing
    .executionMode("race") // First completion wins
    .execute();

  await new Step(client)
    .url("https://api.example.com")
    .type(StepType.FRUGAL)
    .fallbackOnError([429, 500, 503]) // Forward to EZThrottle on these codes
    .execute();
}

// Idempotent Key Strategies
export async function idempotency(): Promise<NodeJS.Timeout> {
  await new Step(client)
    .url("https://api.stripe.com/charges")
    .body(JSON.stringify({ amount: 1000, currency: "usd" }))
    .idempotentStrategy(IdempotentStrategy.HASH) // Default
    .execute();

  return setInterval(async () => {
    await new Step(client)
      .url("https://api.example.com/status")
      .idempotentStrategy(IdempotentStrategy.UNIQUE) // New UUID each time
      .execute();
  }, 60000);
}

// Workflow Chaining
export async function chaining(): Promise<void> {
  const analytics = new Step(client).url("https://analytics.com/track").type(StepType.FRUGAL);

  const notification = new Step(client)
    .url("https://notify.com")
    .type(StepType.PERFORMANCE)
    .webhooks([{ url: "https://app.com/webhook" }])
    .regions(["iad", "lax"])
    .onSuccess(analytics);

  await new Step(client)
    .url("https://api.example.com")
    .type(StepType.FRUGAL)
    .fallbackOnError([429, 500])
    .onSuccess(notification)
    .execute();
}

// Fallback Chains
export async function fallbacks(): Promise<void> {
  const backupApi = new Step().url("https://backup-api.com");

  await new Step(client)
    .url("https://primary-api.com")
    .fallback(backupApi, { triggerOnError: [500, 502, 503] })
    .execute();
}

// Multi-Region Racing
export async function racing(): Promise<void> {
  await new Step(client)
    .url("https://api.example.com")
    .regions(["iad", "lax", "ord"]) // Try all 3 regions
    .regionPolicy("fallback") // Auto-route if region down
    .executionMode("race") // First completion wins
    .webhooks([{ url: "https://app.com/webhook" }])
    .execute();
}

// Webhook Fanout (Multiple Webhooks)
export async function fanout(): Promise<void> {
  await new Step(client)
    .url("https://api.stripe.com/charges")
    .method("POST")
    .webhooks([
      { url: "https://app.com/payment-complete", has_quorum_vote: true },
      { url: "https://analytics.com/track", has_quorum_vote: false },
      { url: "https://notify.com/alert", has_quorum_vote: true },
      { url: "https://backup.com/webhook", regions: ["iad", "lax"], has_quorum_vote: true },
    ])
    .webhookQuorum(2)
    .execute();
}

// Retry Policies
export async function retryPolicies(): Promise<void> {
  await new Step(client)
    .url("https://api.example.com")
    .retryPolicy({
      max_retries: 5,
      max_reroutes: 3,
      retry_codes: [429, 503], // Retry in same region
      reroute_codes: [500, 502, 504], // Try different region
    })
    .execute();
}

// Mixed Workflow Chains, examples 1-3
export async function mixed(): Promise<void> {
  const result = await new Step(client)
    .url("https://api.openai.com/v1/chat/completions")
    .type(StepType.FRUGAL)
    .fallbackOnError([429, 500])
    .onSuccess(
      new Step(client)
        .url("https://api.sendgrid.com/send")
        .type(StepType.PERFORMANCE)
        .webhooks([{ url: "https://app.com/email-sent" }])
        .regions(["iad", "lax", "ord"]),
    )
    .execute();
  console.log(result);

  const payment = await new Step(client)
    .url("https://api.stripe.com/charges")
    .type(StepType.PERFORMANCE)
    .webhooks([{ url: "https://app.com/payment-complete" }])
    .regions(["iad", "lax"])
    .onSuccess(new Step(client).url("https://analytics.com/track").type(StepType.FRUGAL))
    .execute();
  console.log(payment);

  const workflow = await new Step(client)
    .url("https://cheap-api.com")
    .type(StepType.FRUGAL)
    .fallbackOnError([429, 500])
    .fallback(new Step().url("https://backup-api.com"), { triggerOnError: [500] })
    .onSuccess(
      new Step(client)
        .url("https://critical-webhook.com")
        .type(StepType.PERFORMANCE)
        .webhooks([{ url: "https://app.com/webhook" }])
        .regions(["iad", "lax", "ord"])
        .onSuccess(new Step(client).url("https://analytics.com/track").type(StepType.FRUGAL)),
    )
    .onFailure(new Step(client).url("https://hooks.slack.com/webhook").type(StepType.FRUGAL))
    .execute();
  console.log(workflow);
}

// Production Ready: the test-app's calls
export async function testApp(APP_URL: string, runId: string): Promise<void> {
  await new Step(client)
    .url("https://httpbin.org/delay/1")
    .type(StepType.PERFORMANCE)
    .webhooks([{ url: `${APP_URL}/webhook` }])
    .regions(["iad", "lax", "ord"])
    .executionMode("race")
    .execute();
  await new Step(client)
    .url(`https://httpbin.org/get?run=${runId}`)
    .idempotentStrategy(IdempotentStrategy.HASH)
    .execute();
  await new Step(client)
    .url("https://httpbin.org/status/500")
    .fallback(new Step().url("https://httpbin.org/status/200"), { triggerOnError: [500, 502, 503] })
    .execute();
  await new Step(client)
    .url("https://httpbin.org/status/200")
    .onSuccess(new Step().url("https://httpbin.org/delay/1"))
    .execute();
  await new Step(client).url("https://httpbin.org/status/200").type(StepType.FRUGAL).execute();
}

// Async/Await Streaming
export async function processWithWebhook(): Promise<void> {
  const result = await new Step(client)
    .url("https://api.example.com/endpoint")
    .method("POST")
    .type(StepType.PERFORMANCE)
    .webhooks([{ url: "https://app.com/webhook", hasQuorumVote: true }])
    .idempotentKey("async_job_123")
    .execute();

  console.log(`Job submitted: ${result.job_id}`);
}

interface Order {
  id: string;
  amount: number;
}

export async function processBatchConcurrently(orders: Order[]) {
  const promises = orders.map(async (order) => {
    const result = await new Step(client)
      .url(`https://api.example.com/process`)
      .method("POST")
      .body(JSON.stringify(order))
      .type(StepType.PERFORMANCE)
      .webhooks([{ url: "https://app.com/webhook", hasQuorumVote: true }])
      .idempotentKey(`order_${order.id}`)
      .execute();

    return { orderId: order.id, jobId: result.job_id, idempotentKey: result.idempotent_key };
  });

  const submissions = await Promise.all(promises);
  console.log(`Submitted ${submissions.length} jobs concurrently`);
  submissions.forEach((s) => {
    console.log(`Order ${s.orderId} → Job ${s.jobId}`);
  });
  return submissions;
}

export async function processBatchWithErrorHandling(orders: Order[]) {
  const promises = orders.map(async (order) => {
    try {
      const result = await new Step(client)
        .url(`https://api.example.com/process`)
        .method("POST")
        .body(JSON.stringify(order))
        .type(StepType.PERFORMANCE)
        .webhooks([{ url: "https://app.com/webhook", hasQuorumVote: true }])
        .idempotentKey(`order_${order.id}`)
        .execute();

      return { orderId: order.id, jobId: result.job_id };
    } catch (error: any) {
      return { orderId: order.id, error: error.message };
    }
  });

  const results = await Promise.allSettled(promises);
  const succeeded = results.filter((r) => r.status === "fulfilled" && !r.value.error);
  const failed = results.filter((r) => r.status === "rejected" || (r.status === "fulfilled" && r.value.error));
  console.log(`Succeeded: ${succeeded.length}, Failed: ${failed.length}`);
  return { succeeded, failed };
}

// Legacy API (Deprecated)
export async function legacy(): Promise<void> {
  await client.queueRequest({
    url: "https://api.example.com",
    webhookUrl: "https://your-app.com/webhook", // Note: singular
    method: "POST",
  });
}
