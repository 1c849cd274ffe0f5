// The native API as a strict TypeScript caller uses it; the @ts-expect-error lines must stay
// errors (tsc fails if one of them compiles), so the types refuse what the server would.
import {
  EZThrottle,
  EZThrottleError,
  RateLimitError,
  Step,
  StepType,
  TimeoutError,
  ValidationError,
  type AttemptLeg,
  type BatchItem,
  type Job,
  type LegOutcome,
  type JobEvent,
  type SubmitResult,
} from "ezthrottle";

const client = new EZThrottle({ apiKey: "k", baseUrl: "http://127.0.0.1:8080", maxRetries: 0 });

export async function native(): Promise<void> {
  const answer: SubmitResult = await client.submit({
    url: "https://api.example.com",
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: "{}",
    metadata: { order: "42" },
    webhooks: [{ url: "https://app.example.com/hook", has_quorum_vote: true }],
    retry_policy: { max_retries: 5, retry_codes: [429] },
    timeout: "90s",
    retry_at: Date.now() + 1000,
    idempotent_key: "k1",
  });
  const held: SubmitResult | Job = await client.submit({ url: "https://x" }, { wait: "30s" });
  if ("state" in held) console.log(held.response?.status_code);

  const job: Job = await client.wait(answer.job_id, { timeoutS: 30 });
  const first = job.attempts[0];
  console.log(job.state, job.spec.method, job.spec.headers[0]?.[1], first?.decision, job.webhook_quorum?.state);
  // Cluster mode: where an attempt ran, why it moved, and a race's legs.
  const legs: AttemptLeg[] = first?.legs ?? [];
  const won: LegOutcome | undefined = legs.find((l) => l.outcome === "won")?.outcome;
  console.log(first?.region, first?.node, first?.reason, won, legs[0]?.status_code, legs[0]?.latency_ms);
  for await (const ev of client.events(answer.job_id)) {
    const e: JobEvent = ev;
    console.log(e.event);
  }
  const results: BatchItem[] = await client.batch([{ url: "https://a" }, { url: "https://b" }]);
  for (const r of results) console.log("error" in r ? r.error.code : r.job_id);
  for await (const j of client.list({ state: "failed", limit: 10 })) console.log(j.job_id);
  const streamed = await client.stream("POST", "https://api.example.com", { json: { a: 1 }, timeout: "2m", metadata: { k: "v" } });
  console.log(streamed.status, streamed.headers.get("content-type"), streamed.text, streamed.job.state);
  const raw = await client.raw("GET", "/healthz");
  console.log(raw.status, raw.json);

  try {
    await client.cancel(answer.job_id);
  } catch (err) {
    if (err instanceof ValidationError) console.log(err.field);
    else if (err instanceof RateLimitError) console.log(err.retryAfter, err.retryAt);
    else if (err instanceof TimeoutError) console.log(err.job?.state);
    else if (err instanceof EZThrottleError) console.log(err.status, err.code);
  }
}

export function refused(): void {
  // @ts-expect-error url is required
  void client.submit({ method: "GET" });
  // @ts-expect-error methods of the spec are the wire's snake_case
  void client.submit({ url: "https://x", retryPolicy: { max_retries: 1 } });
  // @ts-expect-error stream takes the url as its own argument
  void client.stream("GET", "https://x", { url: "https://y" });
  // @ts-expect-error job states are a closed set
  void client.list({ state: "done" });
  // @ts-expect-error step types are the enum
  new Step(client).type("fast");
  // @ts-expect-error region policy is fallback | strict
  new Step(client).regionPolicy("nearest");
  // @ts-expect-error a leg's outcome is a closed set
  const outcome: LegOutcome = "winner";
  void outcome;
  void new Step(client).type(StepType.FRUGAL);
}
