// The hosted 1.4.0 index's exported types and interfaces, used as a typed caller would.
import EZThrottleDefault, {
  EZThrottle,
  Step,
  StepType,
  IdempotentStrategy,
  type EZThrottleConfig,
  type FallbackTrigger,
  type IStep,
  type JobPayload,
  type RetryPolicy,
  type SubmitJobParams,
  type VerificationResult,
  type WebhookConfig,
} from "ezthrottle";

const config: EZThrottleConfig = { apiKey: "k", tracktagsUrl: "https://t", ezthrottleUrl: "https://e" };
const client: EZThrottle = new EZThrottleDefault(config);
const hook: WebhookConfig = { url: "https://h", regions: ["iad"], has_quorum_vote: true };
const policy: RetryPolicy = { max_retries: 1, max_reroutes: 1, retry_codes: [429], reroute_codes: [500] };
const trigger: FallbackTrigger = { type: "on_timeout", timeout_ms: 1000 };
const payload: JobPayload = {
  url: "https://x",
  method: "GET",
  webhooks: [hook],
  webhookQuorum: 1,
  regionPolicy: "fallback",
  executionMode: "fanout",
  retryPolicy: policy,
  fallbackJob: { url: "https://y", method: "GET" },
};
const params: SubmitJobParams = { ...payload };
const step: IStep = new Step(client)
  .type(StepType.FRUGAL)
  .idempotentStrategy(IdempotentStrategy.UNIQUE)
  .timeout(1000)
  .localTimeout(500)
  .retryAt(Date.now())
  .onFailureTimeout(5000)
  .onFailure(new Step(), 1000);
const built: JobPayload = new Step().url("https://x")._buildJobPayload();
const chain: JobPayload | null = new Step().url("https://x")._buildFallbackChain();
const v: VerificationResult = { verified: true, reason: "valid" };

export async function run(): Promise<unknown> {
  const job: any = await client.submitJob(params);
  const viaStep: any = await step.execute(client);
  return [job.job_id, viaStep.status, built, chain, trigger, v];
}
