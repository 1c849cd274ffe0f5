/**
 * The hosted SDK's fluent builder: `new Step(client).url(…).method("POST")….execute()`.
 *
 * PERFORMANCE (the default) submits the job. FRUGAL calls the target from here first; on a
 * status listed in `fallbackOnError` (default 429, 500, 502, 503, 504) or a network error it tries
 * its FRUGAL fallback steps locally, then hands the call to EZThrottle.
 */

import { randomUUID } from "node:crypto";
import type { EZThrottle } from "./client.js";
import { toJobSpec } from "./client.js";
import { IdempotentStrategy } from "./idempotentStrategy.js";
import { StepType } from "./stepType.js";
import type {
  FallbackTrigger,
  IStep,
  JobPayload,
  JobSpec,
  RetryPolicy,
  StepResult,
  WebhookConfig,
} from "./types.js";

interface FallbackStep {
  step: Step;
  trigger: Partial<FallbackTrigger>;
}

export class Step implements IStep {
  private client: EZThrottle | null;
  private _stepType: StepType = StepType.PERFORMANCE;
  private _url: string | null = null;
  private _method = "GET";
  private _headers: Record<string, string> = {};
  private _body: string | null = null;
  private _metadata: Record<string, any> = {};
  private _webhooks: WebhookConfig[] = [];
  private _webhookQuorum = 1;
  private _regions: string[] | null = null;
  private _regionPolicy: "fallback" | "strict" = "fallback";
  private _executionMode: "race" | "fanout" = "race";
  private _retryPolicy: RetryPolicy | null = null;
  private _retryAt: number | null = null;
  private _idempotentKey: string | null = null;
  private _idempotentStrategy: IdempotentStrategy = IdempotentStrategy.HASH;
  private _fallbackOnError: number[] = [429, 500, 502, 503, 504];
  private _localTimeout = 30_000;
  private _fallbackSteps: FallbackStep[] = [];
  private _onSuccessStep: Step | null = null;
  private _onFailureStep: Step | null = null;
  private _onFailureTimeoutMs: number | null = null;

  constructor(client: EZThrottle | null = null) {
    this.client = client;
  }

  /** `StepType.PERFORMANCE` (default) or `StepType.FRUGAL`. */
  type(stepType: StepType): this {
    if (stepType !== StepType.PERFORMANCE && stepType !== StepType.FRUGAL) {
      throw new TypeError(`unknown step type ${JSON.stringify(stepType)}`);
    }
    this._stepType = stepType;
    return this;
  }

  url(url: string): this {
    this._url = url;
    return this;
  }

  method(method: string): this {
    this._method = method.toUpperCase();
    return this;
  }

  headers(headers: Record<string, string>): this {
    this._headers = headers;
    return this;
  }

  body(body: string): this {
    this._body = body;
    return this;
  }

  metadata(metadata: Record<string, any>): this {
    this._metadata = metadata;
    return this;
  }

  webhooks(webhooks: WebhookConfig[]): this {
    this._webhooks = webhooks;
    return this;
  }

  webhookQuorum(quorum: number): this {
    this._webhookQuorum = quorum;
    return this;
  }

  regions(regions: string[]): this {
    this._regions = regions;
    return this;
  }

  regionPolicy(policy: "fallback" | "strict"): this {
    this._regionPolicy = policy;
    return this;
  }

  executionMode(mode: "race" | "fanout"): this {
    this._executionMode = mode;
    return this;
  }

  retryPolicy(policy: RetryPolicy): this {
    this._retryPolicy = policy;
    return this;
  }

  /** Earliest time of the first call, ms since the epoch. */
  retryAt(timestampMs: number): this {
    this._retryAt = timestampMs;
    return this;
  }

  idempotentKey(key: string): this {
    this._idempotentKey = key;
    return this;
  }

  idempotentStrategy(strategy: IdempotentStrategy): this {
    this._idempotentStrategy = strategy;
    return this;
  }

  /** (FRUGAL) statuses of the local call that hand it to EZThrottle. */
  fallbackOnError(codes: number[]): this {
    this._fallbackOnError = codes;
    return this;
  }

  /** (FRUGAL) timeout of the local call in ms (default 30000). */
  timeout(ms: number): this {
    this._localTimeout = ms;
    return this;
  }

  /** @deprecated use `timeout()` */
  localTimeout(ms: number): this {
    return this.timeout(ms);
  }

  /** A fallback job, run on the listed error codes or after a timeout (ms). */
  fallback(
    step: Step,
    options: { triggerOnError?: number[] | null; triggerOnTimeout?: number | null } = {},
  ): this {
    const { triggerOnError = null, triggerOnTimeout = null } = options;
    let trigger: Partial<FallbackTrigger> = {};
    if (triggerOnError) trigger = { type: "on_error", codes: triggerOnError };
    else if (triggerOnTimeout) trigger = { type: "on_timeout", timeout_ms: triggerOnTimeout };
    this._fallbackSteps.push({ step, trigger });
    return this;
  }

  onSuccess(step: Step): this {
    this._onSuccessStep = step;
    return this;
  }

  onFailure(step: Step, timeoutMs: number | null = null): this {
    this._onFailureStep = step;
    if (timeoutMs) this._onFailureTimeoutMs = timeoutMs;
    return this;
  }

  onFailureTimeout(ms: number): this {
    this._onFailureTimeoutMs = ms;
    return this;
  }

  /** The hosted SDK's payload (camelCase); a UNIQUE step gets a fresh key on every call. */
  _buildJobPayload(): JobPayload {
    if (!this._url) throw new Error("URL is required");
    const p: JobPayload = { url: this._url, method: this._method };
    if (Object.keys(this._headers).length > 0) p.headers = this._headers;
    if (this._body) p.body = this._body;
    if (Object.keys(this._metadata).length > 0) p.metadata = this._metadata;
    if (this._webhooks.length > 0) p.webhooks = this._webhooks;
    if (this._webhookQuorum !== 1) p.webhookQuorum = this._webhookQuorum;
    if (this._regions) p.regions = this._regions;
    if (this._regionPolicy !== "fallback") p.regionPolicy = this._regionPolicy;
    if (this._executionMode !== "race") p.executionMode = this._executionMode;
    if (this._retryPolicy) p.retryPolicy = this._retryPolicy;
    if (this._retryAt !== null) p.retryAt = this._retryAt;
    if (this._idempotentKey) p.idempotentKey = this._idempotentKey;
    else if (this._idempotentStrategy === IdempotentStrategy.UNIQUE) p.idempotentKey = randomUUID();
    const chain = this._buildFallbackChain();
    if (chain) p.fallbackJob = chain;
    if (this._onSuccessStep) p.onSuccess = this._onSuccessStep._buildJobPayload();
    if (this._onFailureStep) p.onFailure = this._onFailureStep._buildJobPayload();
    if (this._onFailureTimeoutMs !== null) p.onFailureTimeoutMs = this._onFailureTimeoutMs;
    return p;
  }

  /** The fallbacks as one nested `fallbackJob` chain, first fallback outermost. */
  _buildFallbackChain(): JobPayload | null {
    let chain: JobPayload | null = null;
    for (let i = this._fallbackSteps.length - 1; i >= 0; i--) {
      const { step, trigger } = this._fallbackSteps[i]!;
      const job = step._buildJobPayload();
      job.trigger = trigger;
      if (chain) job.fallbackJob = chain;
      chain = job;
    }
    return chain;
  }

  /** The exact body `POST /api/v1/jobs` gets (snake_case, as in docs/api.md). */
  toPayload(): JobSpec {
    return toJobSpec(this._buildJobPayload());
  }

  /** Runs the step: PERFORMANCE submits; FRUGAL calls locally first (see the class comment). */
  async execute(client: EZThrottle | null = null): Promise<StepResult> {
    const c = client ?? this.client;
    if (!c) throw new Error("Client is required. Pass client to execute() or Step(client)");
    if (this._stepType === StepType.FRUGAL) return this.executeFrugal(c);
    return this.forward(c);
  }

  private async forward(client: EZThrottle): Promise<StepResult> {
    const answer = await client.submitJob(this._buildJobPayload());
    return answer as unknown as StepResult;
  }

  /** The local call; never carries the EZThrottle key. */
  private async callLocally(): Promise<Response> {
    if (!this._url) throw new Error("URL is required");
    const init: RequestInit = {
      method: this._method,
      headers: this._headers,
      signal: AbortSignal.timeout(this._localTimeout),
    };
    if (this._body !== null) init.body = this._body;
    return fetch(this._url, init);
  }

  private async tryLocalFallbacks(
    client: EZThrottle,
    errorCode: number | null,
  ): Promise<StepResult | null> {
    for (const { step, trigger } of this._fallbackSteps) {
      const applies =
        !trigger.type ||
        trigger.type === "on_timeout" ||
        (errorCode !== null && (trigger.codes ?? []).includes(errorCode));
      if (!applies || step._stepType !== StepType.FRUGAL) continue;
      try {
        const result = await step.execute(client);
        if (result.status === "success") return result;
      } catch {
        // this fallback failed too: try the next one
      }
    }
    return null;
  }

  private async executeFrugal(client: EZThrottle): Promise<StepResult> {
    let response: Response;
    try {
      response = await this.callLocally();
    } catch {
      // No answer (refused, reset, timed out): the fallbacks, then EZThrottle.
      return (await this.tryLocalFallbacks(client, null)) ?? this.forward(client);
    }
    if (response.status >= 200 && response.status < 300) {
      const text = await response.text();
      const next = this._onSuccessStep;
      if (next) {
        // Not awaited, as in the hosted SDK; a failure of the follow-up is not this step's.
        setImmediate(() => {
          next.execute(client).catch(() => undefined);
        });
      }
      return { status: "success", executed_locally: true, status_code: response.status, response: text };
    }
    await response.body?.cancel().catch(() => undefined);
    if (this._fallbackOnError.includes(response.status)) {
      return (await this.tryLocalFallbacks(client, response.status)) ?? this.forward(client);
    }
    return {
      status: "failed",
      executed_locally: true,
      status_code: response.status,
      error: `Request failed: ${response.status}`,
    };
  }
}
