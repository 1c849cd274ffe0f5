"use strict";
/**
 * HTTP to the EZThrottle server: the key, timeouts, retries with backoff and full jitter, and
 * mapping answers to typed errors. Uses the global `fetch` (Node >= 18) unless given another.
 */
Object.defineProperty(exports, "__esModule", { value: true });
exports.Transport = exports.DEFAULT_BASE_URL = exports.VERSION = void 0;
exports.resolveSettings = resolveSettings;
exports.durationMs = durationMs;
exports.wireDuration = wireDuration;
exports.anySignal = anySignal;
const errors_js_1 = require("./errors.js");
exports.VERSION = "2.0.0";
exports.DEFAULT_BASE_URL = "http://127.0.0.1:8080";
const USER_AGENT = `ezthrottle-node/${exports.VERSION}`;
/** A `Retry-After` longer than this is not waited for: the error goes to the caller. */
const MAX_RETRY_AFTER_S = 60;
/** Statuses after which nothing was done, so any call may be sent again. */
const REFUSED = new Set([429, 503]);
/** Statuses after which an idempotent call may be sent again. */
const TRANSIENT = new Set([500, 502, 504]);
function resolveSettings(apiKey, baseUrl, hostedUrl) {
    const key = apiKey || process.env.EZTHROTTLE_API_KEY;
    if (!key) {
        throw new Error("apiKey is required: pass { apiKey } or set EZTHROTTLE_API_KEY");
    }
    const url = baseUrl || process.env.EZTHROTTLE_URL || hostedUrl || exports.DEFAULT_BASE_URL;
    return { apiKey: key, baseUrl: url.replace(/\/+$/, "") };
}
/** Milliseconds in a duration (numbers are seconds). */
function durationMs(d) {
    if (typeof d === "number") {
        if (!Number.isFinite(d) || d < 0)
            throw new RangeError(`not a duration: ${d}`);
        return d * 1000;
    }
    const units = {
        ms: 1, s: 1000, sec: 1000, secs: 1000, m: 60_000, min: 60_000, mins: 60_000,
        h: 3_600_000, hr: 3_600_000, hrs: 3_600_000, d: 86_400_000,
    }; // prettier-ignore
    const s = d.trim().toLowerCase();
    const part = /\s*(\d+(?:\.\d+)?)\s*([a-z]+)\s*/y;
    let total = 0;
    let pos = 0;
    while (pos < s.length) {
        part.lastIndex = pos;
        const m = part.exec(s);
        const unit = m ? units[m[2]] : undefined;
        if (!m || unit === undefined) {
            throw new RangeError(`not a duration: ${JSON.stringify(d)} (use e.g. "250ms", "90s", "1h")`);
        }
        total += Number(m[1]) * unit;
        pos = part.lastIndex;
    }
    if (pos === 0)
        throw new RangeError(`not a duration: ${JSON.stringify(d)}`);
    return total;
}
/** A duration as the server reads it: strings pass through (the server judges them). */
function wireDuration(d) {
    return typeof d === "string" ? d : `${Math.max(0, Math.round(durationMs(d)))}ms`;
}
function sleep(ms, signal) {
    return new Promise((resolve, reject) => {
        if (signal?.aborted)
            return reject(signal.reason);
        const t = setTimeout(() => {
            signal?.removeEventListener("abort", onAbort);
            resolve();
        }, ms);
        const onAbort = () => {
            clearTimeout(t);
            reject(signal.reason);
        };
        signal?.addEventListener("abort", onAbort, { once: true });
    });
}
/** A signal that aborts when any of the given ones does (`AbortSignal.any` needs Node 20). */
function anySignal(...signals) {
    const given = signals.filter((s) => s !== undefined);
    if (given.length <= 1)
        return given[0];
    const ctl = new AbortController();
    for (const s of given) {
        if (s.aborted) {
            ctl.abort(s.reason);
            break;
        }
        s.addEventListener("abort", () => ctl.abort(s.reason), { once: true });
    }
    return ctl.signal;
}
/** The socket-level code of a fetch failure (`ECONNREFUSED`, …), if there is one. */
function socketCode(err) {
    let e = err;
    for (let i = 0; i < 4 && e && typeof e === "object"; i++) {
        const code = e.code;
        if (typeof code === "string" && /^E[A-Z_]+$/.test(code))
            return code;
        e = e.cause;
    }
    return null;
}
class Transport {
    baseUrl;
    opts;
    constructor(opts) {
        this.opts = opts;
        this.baseUrl = opts.baseUrl;
    }
    url(call) {
        const u = new URL(/^https?:\/\//.test(call.path) ? call.path : this.baseUrl + call.path);
        for (const [k, v] of Object.entries(call.query ?? {})) {
            if (v !== undefined)
                u.searchParams.set(k, String(v));
        }
        return u.toString();
    }
    /** Retries a call may get after its first try. */
    get maxRetries() {
        return this.opts.maxRetries;
    }
    /** Waits before retry number `n` (0-based); `false` when `Retry-After` is too long to wait. */
    async backoff(n, retryAfterS, signal) {
        if (retryAfterS !== null && retryAfterS > MAX_RETRY_AFTER_S)
            return false;
        await sleep(this.delay(n, retryAfterS), signal);
        return true;
    }
    /** Full-jitter backoff for retry number `n` (0-based), or the server's `Retry-After`. */
    delay(n, retryAfterS) {
        if (retryAfterS !== null)
            return retryAfterS * 1000;
        const cap = Math.min(this.opts.retryMaxDelayMs, this.opts.retryBaseDelayMs * 2 ** n);
        return Math.random() * cap;
    }
    /** Sends a call, retrying as its kind allows; answers the last response (any status). Throws
     * `UnreachableError` when no answer came back, and the caller's abort reason on abort. */
    async send(call) {
        const url = this.url(call);
        const headers = {
            "User-Agent": USER_AGENT,
            Accept: "application/json",
            Authorization: `Bearer ${this.opts.apiKey}`,
            ...call.headers,
        };
        let body;
        if (call.json !== undefined) {
            body = JSON.stringify(call.json);
            headers["Content-Type"] = "application/json";
        }
        else if (call.rawBody !== undefined) {
            body = call.rawBody;
        }
        const tries = call.retries === false ? 1 : this.opts.maxRetries + 1;
        for (let n = 0;; n++) {
            const last = n + 1 >= tries;
            const ms = call.timeoutMs ?? this.opts.timeoutMs;
            const timeout = ms > 0 ? AbortSignal.timeout(ms) : undefined;
            const signal = anySignal(call.signal, timeout);
            let res;
            try {
                res = await this.opts.fetch(url, { method: call.method, headers, body, signal });
            }
            catch (err) {
                if (call.signal?.aborted)
                    throw call.signal.reason;
                const timedOut = timeout?.aborted ?? false;
                if (!call.idempotent || last) {
                    const code = timedOut ? "timeout" : socketCode(err) ?? "unreachable";
                    const what = timedOut ? "timed out" : `unreachable (${code})`;
                    throw new errors_js_1.UnreachableError(`EZThrottle server ${what}: ${call.method} ${url}`, {
                        code,
                        cause: err,
                    });
                }
                await sleep(this.delay(n, null), call.signal);
                continue;
            }
            const retryable = REFUSED.has(res.status) || (call.idempotent && TRANSIENT.has(res.status));
            if (!retryable || last)
                return res;
            const after = (0, errors_js_1.parseRetryAfter)(res.headers.get("retry-after"));
            if (after !== null && after > MAX_RETRY_AFTER_S)
                return res;
            await res.body?.cancel().catch(() => undefined);
            await sleep(this.delay(n, after), call.signal);
        }
    }
    /** Sends a call and answers its JSON; a non-2xx answer throws its typed error. */
    async json(call) {
        const res = await this.send(call);
        const text = await res.text();
        if (!res.ok)
            throw (0, errors_js_1.errorFromAnswer)(res.status, text, res.headers.get("retry-after"));
        try {
            return JSON.parse(text);
        }
        catch (err) {
            throw new errors_js_1.EZThrottleError(`unreadable answer from the server (not JSON): ${text.slice(0, 200)}`, {
                status: res.status,
                cause: err,
            });
        }
    }
}
exports.Transport = Transport;
