"use strict";
/**
 * The hosted SDK's fluent builder: `new Step(client).url(…).method("POST")….execute()`.
 *
 * PERFORMANCE (the default) submits the job. FRUGAL calls the target from here first; on a
 * status listed in `fallbackOnError` (default 429, 500, 502, 503, 504) or a network error it tries
 * its FRUGAL fallback steps locally, then hands the call to EZThrottle.
 */
Object.defineProperty(exports, "__esModule", { value: true });
exports.Step = void 0;
const node_crypto_1 = require("node:crypto");
const client_js_1 = require("./client.js");
const idempotentStrategy_js_1 = require("./idempotentStrategy.js");
const stepType_js_1 = require("./stepType.js");
class Step {
    client;
    _stepType = stepType_js_1.StepType.PERFORMANCE;
    _url = null;
    _method = "GET";
    _headers = {};
    _body = null;
    _metadata = {};
    _webhooks = [];
    _webhookQuorum = 1;
    _regions = null;
    _regionPolicy = "fallback";
    _executionMode = "race";
    _retryPolicy = null;
    _retryAt = null;
    _idempotentKey = null;
    _idempotentStrategy = idempotentStrategy_js_1.IdempotentStrategy.HASH;
    _fallbackOnError = [429, 500, 502, 503, 504];
    _localTimeout = 30_000;
    _fallbackSteps = [];
    _onSuccessStep = null;
    _onFailureStep = null;
    _onFailureTimeoutMs = null;
    constructor(client = null) {
        this.client = client;
    }
    /** `StepType.PERFORMANCE` (default) or `StepType.FRUGAL`. */
    type(stepType) {
        if (stepType !== stepType_js_1.StepType.PERFORMANCE && stepType !== stepType_js_1.StepType.FRUGAL) {
            throw new TypeError(`unknown step type ${JSON.stringify(stepType)}`);
        }
        this._stepType = stepType;
        return this;
    }
    url(url) {
        this._url = url;
        return this;
    }
    method(method) {
        this._method = method.toUpperCase();
        return this;
    }
    headers(headers) {
        this._headers = headers;
        return this;
    }
    body(body) {
        this._body = body;
        return this;
    }
    metadata(metadata) {
        this._metadata = metadata;
        return this;
    }
    webhooks(webhooks) {
        this._webhooks = webhooks;
        return this;
    }
    webhookQuorum(quorum) {
        this._webhookQuorum = quorum;
        return this;
    }
    regions(regions) {
        this._regions = regions;
        return this;
    }
    regionPolicy(policy) {
        this._regionPolicy = policy;
        return this;
    }
    executionMode(mode) {
        this._executionMode = mode;
        return this;
    }
    retryPolicy(policy) {
        this._retryPolicy = policy;
        return this;
    }
    /** Earliest time of the first call, ms since the epoch. */
    retryAt(timestampMs) {
        this._retryAt = timestampMs;
        return this;
    }
    idempotentKey(key) {
        this._idempotentKey = key;
        return this;
    }
    idempotentStrategy(strategy) {
        this._idempotentStrategy = strategy;
        return this;
    }
    /** (FRUGAL) statuses of the local call that hand it to EZThrottle. */
    fallbackOnError(codes) {
        this._fallbackOnError = codes;
        return this;
    }
    /** (FRUGAL) timeout of the local call in ms (default 30000). */
    timeout(ms) {
        this._localTimeout = ms;
        return this;
    }
    /** @deprecated use `timeout()` */
    localTimeout(ms) {
        return this.timeout(ms);
    }
    /** A fallback job, run on the listed error codes or after a timeout (ms). */
    fallback(step, options = {}) {
        const { triggerOnError = null, triggerOnTimeout = null } = options;
        let trigger = {};
        if (triggerOnError)
            trigger = { type: "on_error", codes: triggerOnError };
        else if (triggerOnTimeout)
            trigger = { type: "on_timeout", timeout_ms: triggerOnTimeout };
        this._fallbackSteps.push({ step, trigger });
        return this;
    }
    onSuccess(step) {
        this._onSuccessStep = step;
        return this;
    }
    onFailure(step, timeoutMs = null) {
        this._onFailureStep = step;
        if (timeoutMs)
            this._onFailureTimeoutMs = timeoutMs;
        return this;
    }
    onFailureTimeout(ms) {
        this._onFailureTimeoutMs = ms;
        return this;
    }
    /** The hosted SDK's payload (camelCase); a UNIQUE step gets a fresh key on every call. */
    _buildJobPayload() {
        if (!this._url)
            throw new Error("URL is required");
        const p = { url: this._url, method: this._method };
        if (Object.keys(this._headers).length > 0)
            p.headers = this._headers;
        if (this._body)
            p.body = this._body;
        if (Object.keys(this._metadata).length > 0)
            p.metadata = this._metadata;
        if (this._webhooks.length > 0)
            p.webhooks = this._webhooks;
        if (this._webhookQuorum !== 1)
            p.webhookQuorum = this._webhookQuorum;
        if (this._regions)
            p.regions = this._regions;
        if (this._regionPolicy !== "fallback")
            p.regionPolicy = this._regionPolicy;
        if (this._executionMode !== "race")
            p.executionMode = this._executionMode;
        if (this._retryPolicy)
            p.retryPolicy = this._retryPolicy;
        if (this._retryAt !== null)
            p.retryAt = this._retryAt;
        if (this._idempotentKey)
            p.idempotentKey = this._idempotentKey;
        else if (this._idempotentStrategy === idempotentStrategy_js_1.IdempotentStrategy.UNIQUE)
            p.idempotentKey = (0, node_crypto_1.randomUUID)();
        const chain = this._buildFallbackChain();
        if (chain)
            p.fallbackJob = chain;
        if (this._onSuccessStep)
            p.onSuccess = this._onSuccessStep._buildJobPayload();
        if (this._onFailureStep)
            p.onFailure = this._onFailureStep._buildJobPayload();
        if (this._onFailureTimeoutMs !== null)
            p.onFailureTimeoutMs = this._onFailureTimeoutMs;
        return p;
    }
    /** The fallbacks as one nested `fallbackJob` chain, first fallback outermost. */
    _buildFallbackChain() {
        let chain = null;
        for (let i = this._fallbackSteps.length - 1; i >= 0; i--) {
            const { step, trigger } = this._fallbackSteps[i];
            const job = step._buildJobPayload();
            job.trigger = trigger;
            if (chain)
                job.fallbackJob = chain;
            chain = job;
        }
        return chain;
    }
    /** The exact body `POST /api/v1/jobs` gets (snake_case, as in docs/api.md). */
    toPayload() {
        return (0, client_js_1.toJobSpec)(this._buildJobPayload());
    }
    /** Runs the step: PERFORMANCE submits; FRUGAL calls locally first (see the class comment). */
    async execute(client = null) {
        const c = client ?? this.client;
        if (!c)
            throw new Error("Client is required. Pass client to execute() or Step(client)");
        if (this._stepType === stepType_js_1.StepType.FRUGAL)
            return this.executeFrugal(c);
        return this.forward(c);
    }
    async forward(client) {
        const answer = await client.submitJob(this._buildJobPayload());
        return answer;
    }
    /** The local call; never carries the EZThrottle key. */
    async callLocally() {
        if (!this._url)
            throw new Error("URL is required");
        const init = {
            method: this._method,
            headers: this._headers,
            signal: AbortSignal.timeout(this._localTimeout),
        };
        if (this._body !== null)
            init.body = this._body;
        return fetch(this._url, init);
    }
    async tryLocalFallbacks(client, errorCode) {
        for (const { step, trigger } of this._fallbackSteps) {
            const applies = !trigger.type ||
                trigger.type === "on_timeout" ||
                (errorCode !== null && (trigger.codes ?? []).includes(errorCode));
            if (!applies || step._stepType !== stepType_js_1.StepType.FRUGAL)
                continue;
            try {
                const result = await step.execute(client);
                if (result.status === "success")
                    return result;
            }
            catch {
                // this fallback failed too: try the next one
            }
        }
        return null;
    }
    async executeFrugal(client) {
        let response;
        try {
            response = await this.callLocally();
        }
        catch {
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
exports.Step = Step;
