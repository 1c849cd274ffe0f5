/**
 * The hosted SDK's fluent builder: `new Step(client).url(…).method("POST")….execute()`.
 *
 * PERFORMANCE (the default) submits the job. FRUGAL calls the target from here first; on a
 * status listed in `fallbackOnError` (default 429, 500, 502, 503, 504) or a network error it tries
 * its FRUGAL fallback steps locally, then hands the call to EZThrottle.
 */
import type { EZThrottle } from "./client.js";
import { IdempotentStrategy } from "./idempotentStrategy.js";
import { StepType } from "./stepType.js";
import type { IStep, JobPayload, JobSpec, RetryPolicy, StepResult, WebhookConfig } from "./types.js";
export declare class Step implements IStep {
    private client;
    private _stepType;
    private _url;
    private _method;
    private _headers;
    private _body;
    private _metadata;
    private _webhooks;
    private _webhookQuorum;
    private _regions;
    private _regionPolicy;
    private _executionMode;
    private _retryPolicy;
    private _retryAt;
    private _idempotentKey;
    private _idempotentStrategy;
    private _fallbackOnError;
    private _localTimeout;
    private _fallbackSteps;
    private _onSuccessStep;
    private _onFailureStep;
    private _onFailureTimeoutMs;
    constructor(client?: EZThrottle | null);
    /** `StepType.PERFORMANCE` (default) or `StepType.FRUGAL`. */
    type(stepType: StepType): this;
    url(url: string): this;
    method(method: string): this;
    headers(headers: Record<string, string>): this;
    body(body: string): this;
    metadata(metadata: Record<string, any>): this;
    webhooks(webhooks: WebhookConfig[]): this;
    webhookQuorum(quorum: number): this;
    regions(regions: string[]): this;
    regionPolicy(policy: "fallback" | "strict"): this;
    executionMode(mode: "race" | "fanout"): this;
    retryPolicy(policy: RetryPolicy): this;
    /** Earliest time of the first call, ms since the epoch. */
    retryAt(timestampMs: number): this;
    idempotentKey(key: string): this;
    idempotentStrategy(strategy: IdempotentStrategy): this;
    /** (FRUGAL) statuses of the local call that hand it to EZThrottle. */
    fallbackOnError(codes: number[]): this;
    /** (FRUGAL) timeout of the local call in ms (default 30000). */
    timeout(ms: number): this;
    /** @deprecated use `timeout()` */
    localTimeout(ms: number): this;
    /** A fallback job, run on the listed error codes or after a timeout (ms). */
    fallback(step: Step, options?: {
        triggerOnError?: number[] | null;
        triggerOnTimeout?: number | null;
    }): this;
    onSuccess(step: Step): this;
    onFailure(step: Step, timeoutMs?: number | null): this;
    onFailureTimeout(ms: number): this;
    /** The hosted SDK's payload (camelCase); a UNIQUE step gets a fresh key on every call. */
    _buildJobPayload(): JobPayload;
    /** The fallbacks as one nested `fallbackJob` chain, first fallback outermost. */
    _buildFallbackChain(): JobPayload | null;
    /** The exact body `POST /api/v1/jobs` gets (snake_case, as in docs/api.md). */
    toPayload(): JobSpec;
    /** Runs the step: PERFORMANCE submits; FRUGAL calls locally first (see the class comment). */
    execute(client?: EZThrottle | null): Promise<StepResult>;
    private forward;
    /** The local call; never carries the EZThrottle key. */
    private callLocally;
    private tryLocalFallbacks;
    private executeFrugal;
}
