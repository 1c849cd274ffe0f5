// executeWithForwarding / withAutoForward (hosted README) and examples/basic.js, typed.
import {
  EZThrottle,
  EZThrottleError,
  RateLimitError,
  StepType,
  TimeoutError,
  executeWithForwarding,
  withAutoForward,
  type ForwardRequest,
} from "ezthrottle";

const client = new EZThrottle({
  apiKey: process.env.TRACKTAGS_API_KEY || "ck_live_cust_XXX_YYY",
  tracktagsUrl: "https://tracktags.fly.dev",
  ezthrottleUrl: "https://ezthrottle.fly.dev",
});
const STRIPE_KEY = "sk_test";

async function processPayment(orderId: string): Promise<any | { forward: ForwardRequest }> {
  try {
    const response = await fetch("https://api.stripe.com/charges", {
      method: "POST",
      headers: { Authorization: `Bearer ${STRIPE_KEY}` },
      body: JSON.stringify({ amount: 1000, currency: "usd" }),
    });

    if (response.status === 429) {
      return {
        forward: {
          url: "https://api.stripe.com/charges",
          method: "POST",
          idempotentKey: `order_${orderId}`,
          webhooks: [{ url: "https://app.com/webhook", hasQuorumVote: true }],
          stepType: StepType.FRUGAL,
        },
      };
    }

    return await response.json();
  } catch (error) {
    return {
      forward: {
        url: "https://api.stripe.com/charges",
        method: "POST",
        idempotentKey: `order_${orderId}`,
      },
    };
  }
}

export async function main(): Promise<void> {
  const result = await executeWithForwarding(client, () => processPayment("order_123"));
  console.log(result);

  const processPaymentWithForwarding = withAutoForward(client, processPayment);
  const result1 = await processPaymentWithForwarding("order_123");
  const result2 = await processPaymentWithForwarding("order_456");
  console.log(result1, result2);

  // forwardOrFallback (hosted 1.4.0's new method)
  const charged = await client.forwardOrFallback(
    async () => {
      const response = await fetch("https://api.stripe.com/charges", {
        method: "POST",
        headers: { Authorization: "Bearer sk_live_..." },
        body: JSON.stringify({ amount: 1000 }),
      });
      return response.json();
    },
    {
      url: "https://api.stripe.com/charges",
      method: "POST",
      headers: { Authorization: "Bearer sk_live_..." },
      body: JSON.stringify({ amount: 1000 }),
      webhooks: [{ url: "https://your-app.com/webhook" }],
    },
  );
  console.log(charged);
}

// examples/basic.js
export async function basic(): Promise<void> {
  try {
    const result = await client.queueRequest({
      url: "https://api.example.com/data",
      webhookUrl: "https://myapp.com/webhook",
      method: "GET",
      metadata: { userId: "12345", requestId: "abc-123" },
    });
    console.log("Job queued successfully:", result);
    console.log("Job ID:", result.job_id);
  } catch (error) {
    if (error instanceof RateLimitError) {
      console.error("Rate limited!");
      console.error("Error:", error.message);
      if (error.retryAt !== null) {
        console.error("Retry at:", new Date(error.retryAt));
        const waitMs = error.retryAt - Date.now();
        console.log(`Wait ${Math.ceil(waitMs / 1000)} seconds before retrying`);
      }
    } else if (error instanceof TimeoutError) {
      console.error("Timed out:", error.message);
    } else if (error instanceof EZThrottleError) {
      console.error("Error:", error.message, error.retryAt);
    }
  }

  // The hosted constructors
  const e1 = new EZThrottleError("boom");
  const e2 = new EZThrottleError("boom", Date.now());
  const e3 = new RateLimitError("slow down", Date.now() + 1000);
  const e4 = new TimeoutError("late");
  console.log(e1.retryAt, e2.retryAt, e3.retryAt, e4.message);

  await client.submitJob({
    url: "https://api.example.com",
    method: "POST",
    webhookQuorum: 1,
    regions: ["iad"],
    regionPolicy: "strict",
    executionMode: "race",
    retryPolicy: { max_retries: 2 },
    onSuccess: { url: "https://next.example.com", method: "GET" },
    onFailureTimeoutMs: 1000,
    idempotentKey: "k",
    retryAt: Date.now() + 1000,
  });
  const response = await client.request({ url: "https://api.example.com" });
  console.log(response.status);
  await client.queueAndWait({ url: "https://api.example.com", timeout: 1000, pollInterval: 100 });
}
