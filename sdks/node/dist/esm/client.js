/**
 * The client. Native calls (`submit`, `get`, `wait`, `events`, `cancel`, `retry`, `batch`, …) talk
 * to the server's own API; the hosted 1.4.0 methods (`submitJob`, `queueRequest`, the webhook
 * secret calls, `forwardOrFallback`, …) keep their names, arguments and results, and go through
 * the hosted proxy envelope when `tracktagsUrl` is set.
 */
import { EZThrottleError, JobFailedError, RateLimitError, TimeoutError, UnavailableError, UnreachableError, errorFromAnswer, parseRetryAfter, } from "./errors.js";
import { readEvents } from "./sse.js";
import { Transport, anySignal, durationMs, resolveSettings, wireDuration } from "./transport.js";
import { FINAL_STATES, } from "./types.js";
/** The server holds one long-poll at most this long; longer waits are several polls. */
const MAX_POLL_MS = 300_000;
/** Extra time an HTTP read may take beyond the server-side hold. */
const POLL_SLACK_MS = 30_000;
/** The server sends a keep-alive comment every 15 s: a minute of silence is a dead stream. */
const EVENTS_IDLE_MS = 60_000;
/** Time after a `stream()` job's own timeout for the server to record it `expired`. */
const STREAM_GRACE_MS = 30_000;
const statusOfAnswer = new WeakMap();
/** The HTTP status the server gave a `submitJob` / `Step.execute()` answer (inside the hosted
 * envelope: 201 new job, 200 duplicate; natively 202 / 200). `undefined` for local results. */
export function httpStatusOf(result) {
    return statusOfAnswer.get(result);
}
function remember(value, status) {
    statusOfAnswer.set(value, status);
    return value;
}
function jobPath(jobId, suffix = "") {
    if (typeof jobId !== "string" || jobId === "") {
        throw new TypeError(`job id must be a non-empty string, not ${JSON.stringify(jobId)}`);
    }
    return `/api/v1/jobs/${encodeURIComponent(jobId)}${suffix}`;
}
function workflowPath(workflowId, suffix = "") {
    if (typeof workflowId !== "string" || !workflowId.startsWith("wf_")) {
        throw new TypeError(`not a workflow id: ${JSON.stringify(workflowId)}`);
    }
    return `/api/v1/workflows/${encodeURIComponent(workflowId)}${suffix}`;
}
/** The last event of a run's `/events` stream. */
const WORKFLOW_FINAL_EVENTS = new Set(["workflow.completed", "workflow.failed", "workflow.cancelled"]);
function isFinal(state) {
    return FINAL_STATES.includes(state);
}
function wireWebhooks(hooks) {
    return hooks.map(({ hasQuorumVote, has_quorum_vote, ...rest }) => {
        const vote = has_quorum_vote ?? hasQuorumVote;
        return vote === undefined ? { ...rest } : { ...rest, has_quorum_vote: vote };
    });
}
/** The wire spec (snake_case) of a hosted camelCase payload, nested jobs included; only what is
 * set is sent, so the server's defaults apply to the rest. */
export function toJobSpec(p) {
    if (!p || typeof p.url !== "string" || p.url === "") {
        throw new TypeError("url is required (a non-empty string)");
    }
    const spec = {
        url: p.url,
        method: (p.method ?? "GET").toUpperCase(),
    };
    if (p.headers && Object.keys(p.headers).length > 0)
        spec.headers = p.headers;
    if (p.body)
        spec.body = p.body;
    if (p.metadata && Object.keys(p.metadata).length > 0)
        spec.metadata = p.metadata;
    if (p.webhooks && p.webhooks.length > 0)
        spec.webhooks = wireWebhooks(p.webhooks);
    if (p.webhookQuorum !== undefined && p.webhookQuorum !== 1)
        spec.webhook_quorum = p.webhookQuorum;
    if (p.regions)
        spec.regions = p.regions;
    if (p.regionPolicy && p.regionPolicy !== "fallback")
        spec.region_policy = p.regionPolicy;
    if (p.executionMode && p.executionMode !== "race")
        spec.execution_mode = p.executionMode;
    if (p.retryPolicy)
        spec.retry_policy = p.retryPolicy;
    if (p.fallbackJob)
        spec.fallback_job = toJobSpec(p.fallbackJob);
    if (p.onSuccess)
        spec.on_success = toJobSpec(p.onSuccess);
    if (p.onFailure)
        spec.on_failure = toJobSpec(p.onFailure);
    if (p.onFailureTimeoutMs !== undefined)
        spec.on_failure_timeout_ms = p.onFailureTimeoutMs;
    if (p.idempotentKey)
        spec.idempotent_key = p.idempotentKey;
    if (p.retryAt !== undefined)
        spec.retry_at = p.retryAt;
    if ("timeout" in p && p.timeout !== undefined)
        spec.timeout = wireDuration(p.timeout);
    if ("trigger" in p && p.trigger && Object.keys(p.trigger).length > 0)
        spec.trigger = p.trigger;
    return spec;
}
export class EZThrottle {
    /** The server every native call goes to. */
    baseUrl;
    /** Set: `submitJob` and the secret calls use the hosted proxy envelope at this URL. */
    tracktagsUrl;
    /** The `target_url` host inside the envelope. */
    ezthrottleUrl;
    http;
    constructor(config = {}) {
        const hosted = config.tracktagsUrl ? config.tracktagsUrl.replace(/\/+$/, "") : null;
        const { apiKey, baseUrl } = resolveSettings(config.apiKey, config.baseUrl, hosted ?? undefined);
        this.baseUrl = baseUrl;
        this.tracktagsUrl = hosted;
        this.ezthrottleUrl = (config.ezthrottleUrl ?? baseUrl).replace(/\/+$/, "");
        const fetchFn = config.fetch ?? globalThis.fetch;
        if (typeof fetchFn !== "function") {
            throw new Error("no fetch: Node >= 18 has a global fetch, or pass { fetch }");
        }
        this.http = new Transport({
            apiKey,
            baseUrl,
            maxRetries: Math.max(0, Math.floor(config.maxRetries ?? 2)),
            retryBaseDelayMs: config.retryBaseDelayMs ?? 500,
            retryMaxDelayMs: config.retryMaxDelayMs ?? 8_000,
            timeoutMs: config.timeoutMs ?? 30_000,
            fetch: fetchFn.bind(globalThis),
        });
    }
    async submit(spec, options = {}) {
        if (!spec || typeof spec.url !== "string")
            throw new TypeError("spec.url is required");
        const call = { method: "POST", path: "/api/v1/jobs", json: spec, idempotent: true };
        if (options.signal)
            call.signal = options.signal;
        if (options.wait !== undefined) {
            const hold = Math.min(durationMs(options.wait), MAX_POLL_MS);
            call.query = { wait: wireDuration(options.wait) };
            call.timeoutMs = hold + POLL_SLACK_MS;
        }
        const res = await this.http.send(call);
        const text = await res.text();
        if (!res.ok)
            throw errorFromAnswer(res.status, text, res.headers.get("retry-after"));
        return remember(JSON.parse(text), res.status);
    }
    /**
     * STREAM in one call: the job is stored, run by the server (rate-limited, retried on
     * 429/5xx/network errors) and this answers the target's final response once it succeeded. The
     * server holds the answer (`?wait=`, then long-polls): no client-side sleeping. A job that ends
     * `failed`/`expired`/`cancelled` throws `JobFailedError` (with `.job`).
     */
    async stream(method, url, options = {}) {
        const { json, body, timeout = "5m", signal, headers, ...fields } = options;
        const spec = { ...fields, url, method: method.toUpperCase(), timeout: wireDuration(timeout) };
        const hdrs = { ...headers };
        if (json !== undefined) {
            spec.body = JSON.stringify(json);
            if (!Object.keys(hdrs).some((h) => h.toLowerCase() === "content-type")) {
                hdrs["Content-Type"] = "application/json";
            }
        }
        else if (body !== undefined) {
            spec.body = body;
        }
        if (Object.keys(hdrs).length > 0)
            spec.headers = hdrs;
        const total = durationMs(timeout);
        const deadline = Date.now() + total + STREAM_GRACE_MS;
        const opts = { wait: `${Math.min(total, MAX_POLL_MS)}ms` };
        if (signal)
            opts.signal = signal;
        const answer = await this.submit(spec, opts);
        let job;
        if ("state" in answer) {
            job = answer; // the server answered with the final view
        }
        else {
            const waitOpts = {
                timeout: Math.max(deadline - Date.now(), 0) / 1000,
            };
            if (signal)
                waitOpts.signal = signal;
            job = await this.wait(answer.job_id, waitOpts);
        }
        if (job.state !== "succeeded" || job.response === null)
            throw new JobFailedError(job);
        const r = job.response;
        return {
            status: r.status_code,
            headers: new Headers(r.headers),
            text: r.body,
            json: () => JSON.parse(r.body),
            job,
        };
    }
    /** `POST /api/v1/jobs/batch`: up to 1,000 specs in one transaction; one result per spec, in
     * order (a submit answer, or `{error}` for a refused spec). */
    async batch(jobs) {
        if (!Array.isArray(jobs))
            throw new TypeError("jobs must be an array of job specs");
        const out = await this.http.json({
            method: "POST",
            path: "/api/v1/jobs/batch",
            json: { jobs },
            idempotent: true,
        });
        return out.results;
    }
    /** `GET /api/v1/jobs/{id}`: the job view. */
    async get(jobId) {
        return this.http.json({ method: "GET", path: jobPath(jobId), idempotent: true });
    }
    /** Waits (server long-poll, no busy loop) until the job is final and answers its view; throws
     * `TimeoutError` (with `.job`, the last view) if it is not final within `timeoutS` seconds. */
    async wait(jobId, options = {}) {
        const total = durationMs(options.timeout ?? options.timeoutS ?? 30);
        const deadline = Date.now() + total;
        for (;;) {
            const hold = Math.min(Math.max(deadline - Date.now(), 0), MAX_POLL_MS);
            const call = {
                method: "GET",
                path: jobPath(jobId, "/wait"),
                query: { timeout: `${Math.round(hold)}ms` },
                idempotent: true,
                timeoutMs: hold + POLL_SLACK_MS,
            };
            if (options.signal)
                call.signal = options.signal;
            const job = await this.http.json(call);
            if (isFinal(job.state))
                return job;
            if (Date.now() >= deadline) {
                throw new TimeoutError(`job ${jobId} is still ${job.state} after ${total / 1000}s`, job);
            }
        }
    }
    /** `GET /api/v1/jobs/{id}/events` as an async iterator of `{event, data, id}`: `queued`,
     * `position`, `dispatching`, `attempt`, …, then the final event (its data: the final view),
     * after which the iteration ends (a stream that ends or breaks off before it throws
     * `UnreachableError`). A late subscriber first gets the events it missed. Break out of the
     * loop (or abort `signal`) to stop early. */
    async *events(jobId, options = {}) {
        const idle = new AbortController();
        let timer;
        const touch = () => {
            clearTimeout(timer);
            timer = setTimeout(() => idle.abort(new UnreachableError("event stream idle for 60 s", {
                code: "timeout",
            })), EVENTS_IDLE_MS);
        };
        touch();
        try {
            const signal = anySignal(options.signal, idle.signal);
            let res;
            try {
                res = await this.http.send({
                    method: "GET",
                    path: jobPath(jobId, "/events"),
                    headers: { Accept: "text/event-stream" },
                    idempotent: true,
                    timeoutMs: 0,
                    signal,
                });
            }
            catch (err) {
                throw idle.signal.aborted && !options.signal?.aborted ? idle.signal.reason : err;
            }
            if (!res.ok) {
                throw errorFromAnswer(res.status, await res.text(), res.headers.get("retry-after"));
            }
            try {
                for await (const ev of readEvents(res.body ?? new ReadableStream(), touch)) {
                    yield ev;
                    if (isFinal(ev.event))
                        return;
                }
            }
            catch (err) {
                if (options.signal?.aborted)
                    throw options.signal.reason;
                if (idle.signal.aborted)
                    throw idle.signal.reason;
                throw new UnreachableError(`event stream of ${jobId} broke off`, {
                    code: "unreachable",
                    cause: err,
                });
            }
            throw new UnreachableError(`event stream of ${jobId} ended before the job was final`, {
                code: "unreachable",
            });
        }
        finally {
            clearTimeout(timer);
        }
    }
    /** `POST /api/v1/jobs/{id}/cancel`: ends a job that is not final (409 `ConflictError` if it
     * is); answers the view. Not resent after a lost answer (a resend would answer 409). */
    async cancel(jobId) {
        return this.http.json({ method: "POST", path: jobPath(jobId, "/cancel"), idempotent: false });
    }
    /** `POST /api/v1/jobs/{id}/retry`: re-queues a `failed`/`expired` job as a new attempt series;
     * answers the view. */
    async retry(jobId) {
        return this.http.json({ method: "POST", path: jobPath(jobId, "/retry"), idempotent: false });
    }
    /** `POST /api/v1/jobs/{id}/webhooks/redeliver`: delivers the outcome to the webhooks again. */
    async redeliverWebhooks(jobId) {
        return this.http.json({ method: "POST", path: jobPath(jobId, "/webhooks/redeliver"), idempotent: false });
    }
    /** `GET /api/v1/lanes`: the caller's lanes — limits in force, where each came from, the
     * budget left, pause, queue depth, in flight (and, in cluster mode, owner node and epoch). */
    async lanes() {
        const out = await this.http.json({ method: "GET", path: "/api/v1/lanes", idempotent: true });
        return out.lanes;
    }
    /** `PUT /api/v1/lanes/{host}/limits`: pins the limits of the caller's lanes to `host` (or
     * `host:port`); `{}` unpins. Answers the lanes as now pinned. */
    async pinLaneLimits(host, pin) {
        const out = await this.http.json({
            method: "PUT",
            path: `/api/v1/lanes/${encodeURIComponent(host)}/limits`,
            json: pin,
            idempotent: true,
        });
        return out.lanes;
    }
    /** `POST /api/v1/workflows`: stores a static workflow (a DAG of steps, each a durable job). */
    /** `POST /api/v1/torrent`: races the call from every listed live region now and answers the
     * first 2xx (or the last answer); refused with `429 lane_paused` / `lane_busy` when the lane
     * has no permit for it. Not retried: a race is the caller's to repeat. */
    async torrent(spec) {
        return this.http.json({ method: "POST", path: "/api/v1/torrent", json: spec, idempotent: false });
    }
    async submitWorkflow(spec) {
        return this.http.json({ method: "POST", path: "/api/v1/workflows", json: spec, idempotent: false });
    }
    /** `GET /api/v1/workflows/{id}`: the run with every step, its job, attempts and timings. */
    async getWorkflow(workflowId) {
        return this.http.json({
            method: "GET",
            path: `/api/v1/workflows/${encodeURIComponent(workflowId)}`,
            idempotent: true,
        });
    }
    /** `POST /api/v1/workflows/{id}/cancel`: ends a run that is not over `cancelled` (its
     * unfinished step jobs too; no compensation runs); 409 `ConflictError` if it is over. */
    async cancelWorkflow(workflowId) {
        return this.http.json({ method: "POST", path: workflowPath(workflowId, "/cancel"), idempotent: false });
    }
    /** `POST /api/v1/workflows/{id}/resume`: continues a failed or cancelled run; steps that
     * succeeded keep their results, the others run again (new job ids and keys). */
    async resumeWorkflow(workflowId) {
        return this.http.json({ method: "POST", path: workflowPath(workflowId, "/resume"), idempotent: false });
    }
    /** `POST /api/v1/workflows/{id}/restart`: a new run of a finished run's definition and
     * input; answers the new run's id. */
    async restartWorkflow(workflowId) {
        return this.http.json({ method: "POST", path: workflowPath(workflowId, "/restart"), idempotent: false });
    }
    /** `GET /api/v1/workflows/{id}/events`: `step.started`, `workflow.page`, `step.ended`, then
     * one final `workflow.completed` / `workflow.failed` / `workflow.cancelled` whose data is the
     * run's view; ends after it. */
    async *workflowEvents(workflowId, options = {}) {
        const idle = new AbortController();
        let timer;
        const touch = () => {
            clearTimeout(timer);
            timer = setTimeout(() => idle.abort(new UnreachableError("event stream idle for 60 s", {
                code: "timeout",
            })), EVENTS_IDLE_MS);
        };
        touch();
        try {
            const signal = anySignal(options.signal, idle.signal);
            let res;
            try {
                res = await this.http.send({
                    method: "GET",
                    path: workflowPath(workflowId, "/events"),
                    headers: { Accept: "text/event-stream" },
                    idempotent: true,
                    timeoutMs: 0,
                    signal,
                });
            }
            catch (err) {
                throw idle.signal.aborted && !options.signal?.aborted ? idle.signal.reason : err;
            }
            if (!res.ok) {
                throw errorFromAnswer(res.status, await res.text(), res.headers.get("retry-after"));
            }
            try {
                for await (const ev of readEvents(res.body ?? new ReadableStream(), touch)) {
                    yield ev;
                    if (WORKFLOW_FINAL_EVENTS.has(ev.event))
                        return;
                }
            }
            catch (err) {
                if (options.signal?.aborted)
                    throw options.signal.reason;
                if (idle.signal.aborted)
                    throw idle.signal.reason;
                throw new UnreachableError(`event stream of ${workflowId} broke off`, {
                    code: "unreachable",
                    cause: err,
                });
            }
            throw new UnreachableError(`event stream of ${workflowId} ended before the run was over`, {
                code: "unreachable",
            });
        }
        finally {
            clearTimeout(timer);
        }
    }
    /** One page of `GET /api/v1/jobs` (newest first). */
    listPage(options = {}) {
        return this.http.json({
            method: "GET",
            path: "/api/v1/jobs",
            query: {
                state: options.state,
                lane: options.lane,
                created_after: options.createdAfter,
                limit: options.limit,
                cursor: options.cursor,
            },
            idempotent: true,
        });
    }
    /** Every job matching the filters, newest first, fetching pages as the loop goes. */
    async *list(options = {}) {
        let cursor;
        do {
            const page = await this.listPage(cursor === undefined ? options : { ...options, cursor });
            yield* page.jobs;
            cursor = page.next_cursor ?? undefined;
        } while (cursor !== undefined);
    }
    /** Any request to the server with this client's key, once (no retries), whatever the status:
     * `{status, headers, json (null if not JSON), text}`. A string body is sent as is, anything
     * else as JSON. */
    async raw(method, path, options = {}) {
        const call = { method: method.toUpperCase(), path, idempotent: false, retries: false };
        const headers = { ...options.headers };
        if (typeof options.body === "string") {
            call.rawBody = options.body;
            if (!Object.keys(headers).some((h) => h.toLowerCase() === "content-type")) {
                headers["Content-Type"] = "application/json";
            }
        }
        else if (options.body !== undefined) {
            call.json = options.body;
        }
        call.headers = headers;
        const res = await this.http.send(call);
        const text = await res.text();
        let json = null;
        try {
            json = text === "" ? null : JSON.parse(text);
        }
        catch {
            json = null;
        }
        return { status: res.status, headers: res.headers, json, text };
    }
    // ---------------------------------------------------------------------------- hosted API
    /** Through the hosted proxy envelope: answers the forwarded answer's status and parsed body;
     * a refused call throws its typed error (the status inside the envelope). A 429 or 503 inside
     * the envelope (nothing was done) is retried like one outside. */
    async envelope(method, path, payload, idempotent) {
        for (let n = 0;; n++) {
            const res = await this.http.send({
                method: "POST",
                path: `${this.tracktagsUrl}/api/v1/proxy`,
                json: {
                    scope: "customer",
                    metric_name: "",
                    target_url: `${this.ezthrottleUrl}${path}`,
                    method,
                    headers: payload === undefined ? {} : { "Content-Type": "application/json" },
                    body: payload === undefined ? "" : JSON.stringify(payload),
                },
                idempotent,
            });
            const text = await res.text();
            if (res.status === 429) {
                const err = errorFromAnswer(429, text, res.headers.get("retry-after"));
                throw new RateLimitError(`Rate limited: ${err.message}`, {
                    status: 429,
                    code: err.code,
                    retryAfter: parseRetryAfter(res.headers.get("retry-after")),
                    body: err.body,
                });
            }
            if (res.status !== 200) {
                throw errorFromAnswer(res.status, text, res.headers.get("retry-after"));
            }
            const answer = JSON.parse(text);
            if (answer.status !== "allowed") {
                throw new EZThrottleError(`Request denied: ${answer.error ?? "Unknown error"}`, {
                    status: res.status,
                    code: "denied",
                    body: answer,
                });
            }
            const fwd = answer.forwarded_response ?? {};
            const status = fwd.status_code ?? 0;
            const body = fwd.body ?? "";
            if (status >= 200 && status < 300) {
                return { status, json: body === "" ? {} : JSON.parse(body) };
            }
            const retryAfter = fwd.headers?.["retry-after"] ?? null;
            const refused = status === 429 || status === 503;
            if (!refused || n >= this.http.maxRetries || !(await this.http.backoff(n, parseRetryAfter(retryAfter)))) {
                throw errorFromAnswer(status, body, retryAfter);
            }
        }
    }
    /** The hosted SDK's submit: camelCase options, answers `{job_id, status, idempotent_key}`.
     * With `tracktagsUrl` set it goes through the hosted proxy envelope (201 new, 200 duplicate;
     * `httpStatusOf(answer)` tells which), else straight to `POST /api/v1/jobs`. */
    async submitJob(params) {
        const spec = toJobSpec(params);
        if (this.tracktagsUrl === null)
            return this.submit(spec);
        const { status, json } = await this.envelope("POST", "/api/v1/jobs", spec, true);
        return remember(json, status);
    }
    /** Deprecated hosted call: `submitJob` with a single voting webhook. */
    queueRequest(params) {
        const { webhookUrl, ...rest } = params;
        const webhooks = webhookUrl ? [{ url: webhookUrl, has_quorum_vote: true }] : undefined;
        return this.submitJob(webhooks ? { ...rest, webhooks } : rest);
    }
    /** A plain HTTP call straight to the target (no EZThrottle, no key). */
    request(params) {
        const init = { method: (params.method ?? "GET").toUpperCase() };
        if (params.headers)
            init.headers = params.headers;
        if (params.body !== undefined)
            init.body = params.body;
        return fetch(params.url, init);
    }
    /** Hosted call: submit, then wait (server long-poll) for the final view. `timeout` in ms
     * (default 300000); `pollInterval` is accepted and unused (the server holds the poll). */
    async queueAndWait(params) {
        const { timeout = 300_000, pollInterval: _unused, ...rest } = params;
        const answer = await this.queueRequest(rest);
        if (!answer.job_id)
            throw new EZThrottleError("No job_id in response");
        return this.wait(answer.job_id, { timeout: timeout / 1000 });
    }
    /**
     * Submit through EZThrottle; if EZThrottle cannot take the call (no answer, or 503 with
     * nothing stored), run `fallback` instead (your existing direct call). Other errors
     * (validation, auth, rate limits) mean EZThrottle is working and are thrown.
     */
    async forwardOrFallback(fallback, options) {
        try {
            return await this.submitJob(options);
        }
        catch (err) {
            if (err instanceof UnreachableError || err instanceof UnavailableError)
                return fallback();
            throw err;
        }
    }
    // ---------------------------------------------------------------------------- webhook secrets
    secrets(method, suffix, payload) {
        const path = `/api/v1/webhook-secrets${suffix}`;
        if (this.tracktagsUrl !== null) {
            return this.envelope(method, path, payload, method !== "POST" || suffix === "").then((a) => a.json);
        }
        const call = { method, path, idempotent: method !== "POST" || suffix === "" };
        if (payload !== undefined)
            call.json = payload;
        return this.http.json(call);
    }
    /** Sets the webhook signing secrets (16+ characters each); answers them masked. */
    async createWebhookSecret(primarySecret, secondarySecret) {
        if (typeof primarySecret !== "string" || primarySecret.length < 16) {
            throw new Error("primarySecret must be at least 16 characters");
        }
        if (secondarySecret !== undefined && secondarySecret.length < 16) {
            throw new Error("secondarySecret must be at least 16 characters");
        }
        const payload = { primary_secret: primarySecret };
        if (secondarySecret)
            payload.secondary_secret = secondarySecret;
        return this.secrets("POST", "", payload);
    }
    /** The secrets, masked (`{primary_secret: "****wxyz", secondary_secret, has_secondary}`);
     * `NotFoundError` when none is set. */
    async getWebhookSecret() {
        return this.secrets("GET", "");
    }
    /** Removes the secrets (deliveries are then unsigned). */
    async deleteWebhookSecret() {
        return this.secrets("DELETE", "");
    }
    /** New secret becomes primary, the old primary secondary, so deliveries are signed with both
     * while receivers switch; then `createWebhookSecret(newSecret)` retires the old one. */
    async rotateWebhookSecret(newSecret) {
        if (typeof newSecret !== "string" || newSecret.length < 16) {
            throw new Error("newSecret must be at least 16 characters");
        }
        return this.secrets("POST", "/rotate", { new_secret: newSecret });
    }
}
