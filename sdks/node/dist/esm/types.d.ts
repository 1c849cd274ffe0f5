/**
 * Types. The first half is the hosted 1.4.0 SDK's (camelCase options, `JobPayload`, `IStep`);
 * the second is the server's own wire format (snake_case, as in docs/api.md), which the native
 * calls take and return unchanged.
 */
import type { IdempotentStrategy } from "./idempotentStrategy.js";
import type { StepType } from "./stepType.js";
/** A webhook to deliver the outcome to. `hasQuorumVote` is accepted as the camelCase spelling. */
export interface WebhookConfig {
    url: string;
    regions?: string[];
    has_quorum_vote?: boolean;
    hasQuorumVote?: boolean;
}
/** Per-job retry behaviour (server defaults: 3, 2, [429, 503], [500, 502, 504]). */
export interface RetryPolicy {
    max_retries?: number;
    max_reroutes?: number;
    retry_codes?: number[];
    reroute_codes?: number[];
}
/** When a fallback job runs. */
export interface FallbackTrigger {
    type: "on_error" | "on_timeout";
    codes?: number[];
    timeout_ms?: number;
}
/** The hosted SDK's job description (camelCase); `submitJob` turns it into the wire spec. */
export interface JobPayload {
    url: string;
    method: string;
    headers?: Record<string, string>;
    body?: string;
    metadata?: Record<string, any>;
    webhooks?: WebhookConfig[];
    webhookQuorum?: number;
    regions?: string[];
    regionPolicy?: "fallback" | "strict";
    executionMode?: "race" | "fanout";
    retryPolicy?: RetryPolicy;
    fallbackJob?: JobPayload;
    onSuccess?: JobPayload;
    onFailure?: JobPayload;
    onFailureTimeoutMs?: number;
    idempotentKey?: string;
    retryAt?: number;
    /** A fallback job's trigger (set by `Step.fallback`). */
    trigger?: Partial<FallbackTrigger>;
}
/** `submitJob`'s options (the hosted SDK's); only what is set is sent. */
export interface SubmitJobParams {
    url: string;
    method?: string;
    headers?: Record<string, string>;
    body?: string;
    metadata?: Record<string, any>;
    webhooks?: WebhookConfig[];
    webhookQuorum?: number;
    regions?: string[];
    regionPolicy?: "fallback" | "strict";
    executionMode?: "race" | "fanout";
    retryPolicy?: RetryPolicy;
    fallbackJob?: JobPayload;
    onSuccess?: JobPayload;
    onFailure?: JobPayload;
    onFailureTimeoutMs?: number;
    idempotentKey?: string;
    retryAt?: number;
    /** How long the server keeps trying (`"90s"`, `"1h"`, or seconds). Native extension. */
    timeout?: Duration;
}
/** Client settings. Every field is optional: `apiKey` falls back to `EZTHROTTLE_API_KEY`, the
 * server URL to `baseUrl`, then `EZTHROTTLE_URL`, then `tracktagsUrl`, then
 * `http://127.0.0.1:8080`. */
export interface EZThrottleConfig {
    apiKey?: string;
    /** This server's URL, for every native call. */
    baseUrl?: string;
    /** Set it (as the hosted SDK's users do) to send `submitJob` and the webhook-secret calls
     * through the hosted proxy envelope (`POST <tracktagsUrl>/api/v1/proxy`). */
    tracktagsUrl?: string;
    /** The `target_url` host written inside the envelope (default: the server URL). */
    ezthrottleUrl?: string;
    /** Retries of a call after a 429/5xx/network error (default 2; 0 turns retrying off). Only
     * idempotent calls are retried after a 500/502/504 or a network error. */
    maxRetries?: number;
    /** First backoff step in ms (default 500); attempt n waits a random time in
     * [0, min(retryMaxDelayMs, retryBaseDelayMs * 2^n)] ("full jitter"). */
    retryBaseDelayMs?: number;
    /** Backoff cap in ms (default 8000); a `Retry-After` longer than 60 s is not waited for. */
    retryMaxDelayMs?: number;
    /** Per-request timeout in ms (default 30000); long-polls add their hold to it. */
    timeoutMs?: number;
    /** A `fetch` to use instead of the global one. */
    fetch?: typeof fetch;
}
/** The hosted SDK's builder interface; `Step` implements it. */
export interface IStep {
    url(url: string): this;
    method(method: string): this;
    headers(headers: Record<string, string>): this;
    body(body: string): this;
    metadata(metadata: Record<string, any>): this;
    type(type: StepType): this;
    webhooks(webhooks: WebhookConfig[]): this;
    webhookQuorum(quorum: number): this;
    regions(regions: string[]): this;
    regionPolicy(policy: "fallback" | "strict"): this;
    executionMode(mode: "race" | "fanout"): this;
    retryPolicy(policy: RetryPolicy): this;
    retryAt(timestamp: number): this;
    idempotentKey(key: string): this;
    idempotentStrategy(strategy: IdempotentStrategy): this;
    fallbackOnError(codes: number[]): this;
    timeout(ms: number): this;
    fallback(step: any, options?: {
        triggerOnError?: number[] | null;
        triggerOnTimeout?: number | null;
    }): this;
    onSuccess(step: any): this;
    onFailure(step: any): this;
    onFailureTimeout(ms: number): this;
    execute(client?: any): Promise<any>;
}
/** What `Step.execute()` answers: the submit answer when the job went to EZThrottle, or (FRUGAL,
 * run locally) `{status: "success" | "failed", executed_locally: true, status_code, …}`. */
export interface StepResult {
    status: string;
    job_id?: string;
    idempotent_key?: string;
    executed_locally?: boolean;
    status_code?: number;
    response?: string;
    error?: string;
    [key: string]: unknown;
}
/** A duration: seconds as a number, or the server's spelling (`"250ms"`, `"90s"`, `"1h"`). */
export type Duration = number | string;
/** A job as `POST /api/v1/jobs` takes it (docs/api.md); only what is set is sent. */
export interface JobSpec {
    url: string;
    method?: string;
    headers?: Record<string, string>;
    body?: string;
    metadata?: Record<string, string>;
    webhooks?: WebhookConfig[];
    webhook_quorum?: number;
    regions?: string[];
    region_policy?: "fallback" | "strict";
    execution_mode?: "race" | "fanout";
    retry_policy?: RetryPolicy;
    /** How long to keep trying, e.g. `"90s"`; the server's default is 24 h. */
    timeout?: string;
    retry_at?: number;
    idempotent_key?: string;
    fallback_job?: JobSpec & {
        trigger?: Partial<FallbackTrigger>;
    };
    on_success?: JobSpec;
    on_failure?: JobSpec;
    on_failure_timeout_ms?: number;
}
/** The submit answer: `queued` (stored, will run), `racing` (hosted envelope, regions listed in
 * race mode) or `duplicate` (a job with that key exists; its id is answered). */
export interface SubmitResult {
    job_id: string;
    status: "queued" | "racing" | "duplicate" | (string & {});
    idempotent_key: string;
}
export type JobState = "queued" | "scheduled" | "running" | "succeeded" | "failed" | "expired" | "cancelled";
/** The states a job never leaves. */
export declare const FINAL_STATES: readonly JobState[];
/** One call to the target. */
export interface Attempt {
    n: number;
    series: number;
    at: number;
    region: string;
    status_code: number | null;
    error: string | null;
    latency_ms: number | null;
    decision: "success" | "retry" | "reroute" | "fail" | "interrupted" | (string & {});
    wait_ms: number | null;
    /** Which link of a `fallback_job` chain made the call (absent: the job itself). */
    link?: number;
    /** The chain link the job moved to after this attempt, if it moved. */
    next_link?: number;
    /** Cluster mode: the node that made the call (a raced attempt: the winner's). */
    node?: string;
    /** Why the attempt ran where it did, when it moved (`reroute: 502 from r1`). */
    reason?: string;
    /** A raced (`execution_mode: "race"`) or fanout attempt: each region's leg. */
    legs?: AttemptLeg[];
}
/** How a raced leg ended; `refused` was not sent (no lane permit or hedge budget). */
export type LegOutcome = "won" | "lost" | "cancelled" | "error" | "refused";
/** One region's leg of a raced or fanout attempt. */
export interface AttemptLeg {
    region: string;
    /** The node that made the call (absent: the region had no live node). */
    node?: string;
    status_code: number | null;
    error?: string;
    latency_ms: number;
    decision: "success" | "retry" | "reroute" | "fail" | "interrupted" | (string & {});
    /** A raced leg's outcome (absent for a fanout leg). */
    outcome?: LegOutcome;
}
/** The target's final answer; headers are `[name, value]` pairs in order. */
export interface JobResponse {
    status_code: number;
    headers: [string, string][];
    body: string;
    body_truncated?: boolean;
}
/** The spec as a job view shows it: every default filled in, headers as `[name, value]` pairs
 * (credentials `[redacted]`). */
export interface JobSpecView {
    url: string;
    method: string;
    headers: [string, string][];
    body: string | null;
    metadata: Record<string, string>;
    regions: string[];
    retry_policy: Required<RetryPolicy>;
    timeout_ms: number;
    retry_at: number | null;
    webhooks?: {
        url: string;
        regions?: string[];
        has_quorum_vote: boolean;
    }[];
    webhook_quorum: number;
    region_policy: "fallback" | "strict";
    execution_mode: "race" | "fanout";
    [key: string]: unknown;
}
/** Webhook delivery progress of a job: voting acknowledgements needed and received. */
export interface QuorumState {
    required: number;
    acknowledged: number;
    state: string;
    [key: string]: unknown;
}
/** `GET /api/v1/jobs/{id}`: the job, its attempts and outcome. */
export interface Job {
    job_id: string;
    state: JobState;
    lane: string;
    idempotent_key: string;
    spec: JobSpecView;
    metadata: Record<string, string>;
    created_at: number;
    updated_at: number;
    run_at: number | null;
    deadline_at: number | null;
    finished_at: number | null;
    attempt_count: number;
    series: number;
    attempts: Attempt[];
    response: JobResponse | null;
    error: {
        code: string;
        message: string;
    } | null;
    webhooks: Record<string, unknown>[];
    webhook_quorum: QuorumState | null;
    parent_id: string | null;
    children: string[];
}
/** One result of `batch`, in request order: a submit answer or that spec's error. */
export type BatchItem = SubmitResult | {
    error: {
        code: string;
        field?: string;
        message: string;
    };
};
/** One page of `GET /api/v1/jobs`. */
export interface JobPage {
    jobs: Job[];
    next_cursor: string | null;
}
/** One Server-Sent Event of `GET /api/v1/jobs/{id}/events`: `queued`, `position`,
 * `dispatching`, `attempt`, then `succeeded`/`failed`/`expired`/`cancelled` (data: the final
 * view). `data` is the parsed JSON (the raw text when it is not JSON). */
export interface JobEvent {
    event: string;
    data: any;
    id: string | null;
}
/** The webhook secrets, masked. */
export interface WebhookSecrets {
    primary_secret: string;
    secondary_secret: string | null;
    has_secondary: boolean;
    [key: string]: unknown;
}
/** `raw`'s answer. */
export interface RawResponse {
    status: number;
    headers: Headers;
    json: any;
    text: string;
}
/** `stream()`'s options: the job fields (snake_case) besides url and method, plus the body as
 * `json` (serialised, `Content-Type` set) or `body` (text), and `timeout` (default `"5m"`): how
 * long the server keeps trying, and how long the call waits. */
export type StreamOptions = Omit<JobSpec, "url" | "method" | "body" | "timeout"> & {
    json?: unknown;
    body?: string;
    timeout?: Duration;
    signal?: AbortSignal;
};
/** The target's answer to a `stream()` call, and the job that got it. */
export interface StreamResponse {
    status: number;
    headers: Headers;
    text: string;
    /** The body parsed as JSON (throws if it is not JSON). */
    json(): any;
    job: Job;
}
/** Where a lane's value came from (`GET /api/v1/lanes`). */
export interface LaneSource {
    /** `default`, `config`, `header`, `adaptive`, `tenant` or `derived`. */
    kind: string;
    header?: string | null;
    window_s?: number | null;
    learned_at?: number | null;
}
/** A tenant's pin of its own lane's limits (`PUT /api/v1/lanes/{host}/limits`); `{}` unpins. */
export interface LanePin {
    rate?: number | null;
    burst?: number | null;
    max_in_flight?: number | null;
    adaptive?: boolean | null;
    adaptive_ceiling?: number | null;
}
/** One of the caller's lanes: limits in force, where each came from, budget, pause, queue. */
export interface Lane {
    lane: string;
    key: {
        host: string;
        credential_fingerprint: string | null;
    };
    rate: number;
    burst: number;
    max_in_flight: number;
    remaining: number | null;
    paused_until: number | null;
    sources: {
        rate: LaneSource | null;
        burst: LaneSource | null;
        max_in_flight: LaneSource | null;
        pause: LaneSource | null;
    };
    adaptive: boolean;
    pin: (LanePin & {
        pinned_at?: number;
    }) | null;
    queue_depth: number;
    in_flight: number;
    /** Cluster mode: the node dispatching the lane and its epoch (`null` on one node). */
    owner_node: string | null;
    epoch: number | null;
}
/** Where a workflow run stands. */
export type RunStatus = "running" | "compensating" | "succeeded" | "failed" | "compensation_failed" | "cancelled";
/** A workflow step: job fields plus `name`, `depends_on`, `critical`, `non_blocking`, `retry`,
 * `compensate`, `paginate` (see docs/workflows.md). */
export interface WorkflowStep extends Partial<JobSpec> {
    name: string;
    depends_on?: string[];
    critical?: boolean;
    non_blocking?: boolean;
    retry?: Duration;
    compensate?: Partial<JobSpec>;
    paginate?: Record<string, unknown>;
    [field: string]: unknown;
}
/** `POST /api/v1/workflows` body. */
export interface WorkflowSpec {
    name: string;
    input?: unknown;
    steps: WorkflowStep[];
    /** Receive the run's signed `workflow.page`, `workflow.completed`, `workflow.failed` and
     * `workflow.cancelled` events. */
    webhooks?: WebhookConfig[];
    /** The tenant's runs with this key are one run (a second submit answers it, `duplicate`). */
    idempotent_key?: string;
}
/** `POST /api/v1/workflows` (and `/restart`) answer. */
export interface WorkflowSubmitted {
    workflow_id: string;
    status: "running" | "duplicate";
}
/** `POST /api/v1/torrent`: one call raced from every listed live region now (no queue, no
 * retries); every leg takes a permit of the call's lane. */
export interface TorrentSpec {
    url: string;
    method?: string;
    headers?: Record<string, string>;
    body?: string;
    /** Regions to race from (default: the answering node's). */
    regions?: string[];
    /** A duration (`"2s"`) or milliseconds; default 10 s. */
    timeout?: string | number;
    /** Sent as `Idempotency-Key` on every leg (default: a fresh one). */
    idempotent_key?: string;
}
/** One leg of a race. */
export interface TorrentLeg {
    region: string;
    node?: string;
    outcome: "won" | "lost" | "cancelled" | "error";
    status_code?: number;
    error?: {
        code: string;
        message: string;
    };
    latency_ms: number;
}
/** The race's answer: the first 2xx, else the last answer that arrived. */
export interface TorrentResult {
    region?: string;
    node?: string;
    status_code?: number;
    headers?: [string, string][];
    body?: string;
    body_truncated?: boolean;
    latency_ms: number;
    idempotent_key: string;
    attempts: TorrentLeg[];
    error?: {
        code: string;
        message: string;
    };
}
/** `GET /api/v1/workflows/{id}`: the run with every step. */
export interface WorkflowView {
    workflow_id: string;
    name: string;
    status: RunStatus;
    idempotent_key: string | null;
    /** Times the run was resumed. */
    resumes: number;
    steps: Array<Record<string, unknown>>;
    /** Deliveries of the run's webhook events (`series` 1 + resumes: its end; from 10,000,000:
     * a page), oldest first. */
    webhooks: Array<Record<string, unknown>>;
    warnings: unknown[];
    created_at: number;
    updated_at: number;
}
