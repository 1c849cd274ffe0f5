/**
 * The client. Native calls (`submit`, `get`, `wait`, `events`, `cancel`, `retry`, `batch`, …) talk
 * to the server's own API; the hosted 1.4.0 methods (`submitJob`, `queueRequest`, the webhook
 * secret calls, `forwardOrFallback`, …) keep their names, arguments and results, and go through
 * the hosted proxy envelope when `tracktagsUrl` is set.
 */
import { type BatchItem, type Duration, type EZThrottleConfig, type Job, type JobEvent, type JobPage, type JobPayload, type JobSpec, type JobState, type Lane, type LanePin, type RawResponse, type StreamOptions, type StreamResponse, type SubmitJobParams, type SubmitResult, type TorrentResult, type TorrentSpec, type WorkflowSpec, type WorkflowSubmitted, type WorkflowView, type WebhookSecrets } from "./types.js";
/** The HTTP status the server gave a `submitJob` / `Step.execute()` answer (inside the hosted
 * envelope: 201 new job, 200 duplicate; natively 202 / 200). `undefined` for local results. */
export declare function httpStatusOf(result: object): number | undefined;
/** Options of `submit`. */
export interface SubmitOptions {
    /** Hold the answer until the job is final or this long passed (seconds or `"30s"`); a job that
     * ended in time comes back as its final view (check `"state" in answer`). */
    wait?: Duration;
    signal?: AbortSignal;
}
/** Options of `list`. */
export interface ListOptions {
    state?: JobState;
    lane?: string;
    /** ms since the epoch */
    createdAfter?: number;
    /** jobs per page */
    limit?: number;
    cursor?: string;
}
/** The wire spec (snake_case) of a hosted camelCase payload, nested jobs included; only what is
 * set is sent, so the server's defaults apply to the rest. */
export declare function toJobSpec(p: SubmitJobParams | JobPayload): JobSpec & {
    trigger?: object;
};
export declare class EZThrottle {
    /** The server every native call goes to. */
    readonly baseUrl: string;
    /** Set: `submitJob` and the secret calls use the hosted proxy envelope at this URL. */
    readonly tracktagsUrl: string | null;
    /** The `target_url` host inside the envelope. */
    readonly ezthrottleUrl: string;
    private readonly http;
    constructor(config?: EZThrottleConfig);
    /** `POST /api/v1/jobs`: the job is stored before this returns. Retried on 429/5xx/network
     * errors: a resent submission is deduplicated by its idempotent key (explicit or derived). */
    submit(spec: JobSpec, options?: SubmitOptions & {
        wait?: undefined;
    }): Promise<SubmitResult>;
    submit(spec: JobSpec, options: SubmitOptions): Promise<SubmitResult | Job>;
    /**
     * STREAM in one call: the job is stored, run by the server (rate-limited, retried on
     * 429/5xx/network errors) and this answers the target's final response once it succeeded. The
     * server holds the answer (`?wait=`, then long-polls): no client-side sleeping. A job that ends
     * `failed`/`expired`/`cancelled` throws `JobFailedError` (with `.job`).
     */
    stream(method: string, url: string, options?: StreamOptions): Promise<StreamResponse>;
    /** `POST /api/v1/jobs/batch`: up to 1,000 specs in one transaction; one result per spec, in
     * order (a submit answer, or `{error}` for a refused spec). */
    batch(jobs: JobSpec[]): Promise<BatchItem[]>;
    /** `GET /api/v1/jobs/{id}`: the job view. */
    get(jobId: string): Promise<Job>;
    /** Waits (server long-poll, no busy loop) until the job is final and answers its view; throws
     * `TimeoutError` (with `.job`, the last view) if it is not final within `timeoutS` seconds. */
    wait(jobId: string, options?: {
        timeoutS?: number;
        timeout?: Duration;
        signal?: AbortSignal;
    }): Promise<Job>;
    /** `GET /api/v1/jobs/{id}/events` as an async iterator of `{event, data, id}`: `queued`,
     * `position`, `dispatching`, `attempt`, …, then the final event (its data: the final view),
     * after which the iteration ends (a stream that ends or breaks off before it throws
     * `UnreachableError`). A late subscriber first gets the events it missed. Break out of the
     * loop (or abort `signal`) to stop early. */
    events(jobId: string, options?: {
        signal?: AbortSignal;
    }): AsyncGenerator<JobEvent>;
    /** `POST /api/v1/jobs/{id}/cancel`: ends a job that is not final (409 `ConflictError` if it
     * is); answers the view. Not resent after a lost answer (a resend would answer 409). */
    cancel(jobId: string): Promise<Job>;
    /** `POST /api/v1/jobs/{id}/retry`: re-queues a `failed`/`expired` job as a new attempt series;
     * answers the view. */
    retry(jobId: string): Promise<Job>;
    /** `POST /api/v1/jobs/{id}/webhooks/redeliver`: delivers the outcome to the webhooks again. */
    redeliverWebhooks(jobId: string): Promise<{
        job_id: string;
        deliveries: string[];
    }>;
    /** `GET /api/v1/lanes`: the caller's lanes — limits in force, where each came from, the
     * budget left, pause, queue depth, in flight (and, in cluster mode, owner node and epoch). */
    lanes(): Promise<Lane[]>;
    /** `PUT /api/v1/lanes/{host}/limits`: pins the limits of the caller's lanes to `host` (or
     * `host:port`); `{}` unpins. Answers the lanes as now pinned. */
    pinLaneLimits(host: string, pin: LanePin): Promise<Lane[]>;
    /** `POST /api/v1/workflows`: stores a static workflow (a DAG of steps, each a durable job). */
    /** `POST /api/v1/torrent`: races the call from every listed live region now and answers the
     * first 2xx (or the last answer); refused with `429 lane_paused` / `lane_busy` when the lane
     * has no permit for it. Not retried: a race is the caller's to repeat. */
    torrent(spec: TorrentSpec): Promise<TorrentResult>;
    submitWorkflow(spec: WorkflowSpec): Promise<WorkflowSubmitted>;
    /** `GET /api/v1/workflows/{id}`: the run with every step, its job, attempts and timings. */
    getWorkflow(workflowId: string): Promise<WorkflowView>;
    /** `POST /api/v1/workflows/{id}/cancel`: ends a run that is not over `cancelled` (its
     * unfinished step jobs too; no compensation runs); 409 `ConflictError` if it is over. */
    cancelWorkflow(workflowId: string): Promise<WorkflowView>;
    /** `POST /api/v1/workflows/{id}/resume`: continues a failed or cancelled run; steps that
     * succeeded keep their results, the others run again (new job ids and keys). */
    resumeWorkflow(workflowId: string): Promise<WorkflowView>;
    /** `POST /api/v1/workflows/{id}/restart`: a new run of a finished run's definition and
     * input; answers the new run's id. */
    restartWorkflow(workflowId: string): Promise<WorkflowSubmitted>;
    /** `GET /api/v1/workflows/{id}/events`: `step.started`, `workflow.page`, `step.ended`, then
     * one final `workflow.completed` / `workflow.failed` / `workflow.cancelled` whose data is the
     * run's view; ends after it. */
    workflowEvents(workflowId: string, options?: {
        signal?: AbortSignal;
    }): AsyncGenerator<JobEvent>;
    /** One page of `GET /api/v1/jobs` (newest first). */
    listPage(options?: ListOptions): Promise<JobPage>;
    /** Every job matching the filters, newest first, fetching pages as the loop goes. */
    list(options?: Omit<ListOptions, "cursor">): AsyncGenerator<Job>;
    /** Any request to the server with this client's key, once (no retries), whatever the status:
     * `{status, headers, json (null if not JSON), text}`. A string body is sent as is, anything
     * else as JSON. */
    raw(method: string, path: string, options?: {
        headers?: Record<string, string>;
        body?: unknown;
    }): Promise<RawResponse>;
    /** Through the hosted proxy envelope: answers the forwarded answer's status and parsed body;
     * a refused call throws its typed error (the status inside the envelope). A 429 or 503 inside
     * the envelope (nothing was done) is retried like one outside. */
    private envelope;
    /** The hosted SDK's submit: camelCase options, answers `{job_id, status, idempotent_key}`.
     * With `tracktagsUrl` set it goes through the hosted proxy envelope (201 new, 200 duplicate;
     * `httpStatusOf(answer)` tells which), else straight to `POST /api/v1/jobs`. */
    submitJob(params: SubmitJobParams): Promise<SubmitResult>;
    /** Deprecated hosted call: `submitJob` with a single voting webhook. */
    queueRequest(params: {
        url: string;
        webhookUrl?: string;
        method?: string;
        headers?: Record<string, string>;
        body?: string;
        metadata?: Record<string, any>;
        retryAt?: number;
    }): Promise<SubmitResult>;
    /** A plain HTTP call straight to the target (no EZThrottle, no key). */
    request(params: {
        url: string;
        method?: string;
        headers?: Record<string, string>;
        body?: string;
    }): Promise<Response>;
    /** Hosted call: submit, then wait (server long-poll) for the final view. `timeout` in ms
     * (default 300000); `pollInterval` is accepted and unused (the server holds the poll). */
    queueAndWait(params: {
        url: string;
        webhookUrl?: string;
        method?: string;
        headers?: Record<string, string>;
        body?: string;
        metadata?: Record<string, any>;
        retryAt?: number;
        timeout?: number;
        pollInterval?: number;
    }): Promise<Job>;
    /**
     * Submit through EZThrottle; if EZThrottle cannot take the call (no answer, or 503 with
     * nothing stored), run `fallback` instead (your existing direct call). Other errors
     * (validation, auth, rate limits) mean EZThrottle is working and are thrown.
     */
    forwardOrFallback<T>(fallback: () => Promise<T>, options: SubmitJobParams): Promise<SubmitResult | T>;
    private secrets;
    /** Sets the webhook signing secrets (16+ characters each); answers them masked. */
    createWebhookSecret(primarySecret: string, secondarySecret?: string): Promise<WebhookSecrets>;
    /** The secrets, masked (`{primary_secret: "****wxyz", secondary_secret, has_secondary}`);
     * `NotFoundError` when none is set. */
    getWebhookSecret(): Promise<WebhookSecrets>;
    /** Removes the secrets (deliveries are then unsigned). */
    deleteWebhookSecret(): Promise<{
        deleted: boolean;
        [key: string]: unknown;
    }>;
    /** New secret becomes primary, the old primary secondary, so deliveries are signed with both
     * while receivers switch; then `createWebhookSecret(newSecret)` retires the old one. */
    rotateWebhookSecret(newSecret: string): Promise<WebhookSecrets>;
}
