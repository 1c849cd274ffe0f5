"use strict";
/**
 * Errors. Every error the server answers becomes an `EZThrottleError` subclass carrying the
 * API's `code` and `field`, so callers branch on them without parsing messages.
 *
 * The hosted 1.4.0 names stay: `EZThrottleError(message, retryAt)`, `RateLimitError(message,
 * retryAt)`, `TimeoutError(message)` and `WebhookVerificationError(message)` construct as before.
 */
Object.defineProperty(exports, "__esModule", { value: true });
exports.WebhookVerificationError = exports.JobFailedError = exports.TimeoutError = exports.UnreachableError = exports.UnavailableError = exports.RateLimitedError = exports.RateLimitError = exports.ConflictError = exports.NotFoundError = exports.AuthenticationError = exports.ValidationError = exports.EZThrottleError = void 0;
exports.parseRetryAfter = parseRetryAfter;
exports.errorFromAnswer = errorFromAnswer;
/** Base class of every error the client throws for an API call. */
class EZThrottleError extends Error {
    status;
    code;
    field;
    retryAfter;
    retryAt;
    body;
    /** `details` may be the hosted SDK's second argument, `retryAt` (ms since the epoch). */
    constructor(message, details = null) {
        const d = typeof details === "number" ? { retryAt: details } : details ?? {};
        super(message, d.cause === undefined ? undefined : { cause: d.cause });
        this.name = "EZThrottleError";
        this.status = d.status ?? null;
        this.code = d.code ?? null;
        this.field = d.field ?? null;
        this.retryAfter = d.retryAfter ?? null;
        this.retryAt =
            d.retryAt ?? (d.retryAfter != null ? Date.now() + Math.round(d.retryAfter * 1000) : null);
        this.body = d.body;
    }
}
exports.EZThrottleError = EZThrottleError;
/** 400, 413, 422: refused as written; `field` names the culprit. `code === "not_supported"`
 * means this server does not offer the feature yet. */
class ValidationError extends EZThrottleError {
    constructor(message, details = null) {
        super(message, details);
        this.name = "ValidationError";
    }
}
exports.ValidationError = ValidationError;
/** 401/403: missing or unknown API key. */
class AuthenticationError extends EZThrottleError {
    constructor(message, details = null) {
        super(message, details);
        this.name = "AuthenticationError";
    }
}
exports.AuthenticationError = AuthenticationError;
/** 404: no such job (or another tenant's), or no webhook secret. */
class NotFoundError extends EZThrottleError {
    constructor(message, details = null) {
        super(message, details);
        this.name = "NotFoundError";
    }
}
exports.NotFoundError = NotFoundError;
/** 409: e.g. cancelling a job that is already final. */
class ConflictError extends EZThrottleError {
    constructor(message, details = null) {
        super(message, details);
        this.name = "ConflictError";
    }
}
exports.ConflictError = ConflictError;
/** 429: quota or waiter limit; try again after `retryAfter` seconds (`retryAt` ms epoch). */
class RateLimitError extends EZThrottleError {
    /** `details` may be the hosted SDK's second argument, `retryAt` (ms since the epoch). */
    constructor(message, details = null) {
        super(message, details);
        this.name = "RateLimitError";
    }
}
exports.RateLimitError = RateLimitError;
/** The native name for a 429; the same class as the hosted `RateLimitError`. */
exports.RateLimitedError = RateLimitError;
/** 502/503/504: the server stored nothing (disk full, store down); safe to try again later. */
class UnavailableError extends EZThrottleError {
    constructor(message, details = null) {
        super(message, details);
        this.name = "UnavailableError";
    }
}
exports.UnavailableError = UnavailableError;
/** No answer from the EZThrottle server (refused, reset, timed out). `code` is the socket's
 * (`ECONNREFUSED`, `ECONNRESET`, …) or `timeout`; `status` is `null`. This is what
 * `forwardOrFallback` treats as "EZThrottle is down". */
class UnreachableError extends EZThrottleError {
    constructor(message, details = null) {
        super(message, details);
        this.name = "UnreachableError";
    }
}
exports.UnreachableError = UnreachableError;
/** The job was not final within the caller's timeout; `job` is its last view (hosted name). */
class TimeoutError extends EZThrottleError {
    job;
    constructor(message, job = null) {
        super(message, { code: "timeout" });
        this.name = "TimeoutError";
        this.job = job;
    }
}
exports.TimeoutError = TimeoutError;
/** A `stream()` call's job ended `failed`, `expired` or `cancelled`; `job` is the final view,
 * `code` the job's error code, `status` the target's last status (if it answered). */
class JobFailedError extends EZThrottleError {
    job;
    constructor(job) {
        const err = job.error ?? { code: job.state, message: `job ${job.state}` };
        super(`job ${job.job_id} ended ${job.state}: ${err.message}`, {
            status: job.response?.status_code ?? null,
            code: err.code,
        });
        this.name = "JobFailedError";
        this.job = job;
    }
}
exports.JobFailedError = JobFailedError;
/** A webhook's signature did not verify; `reason` is the hosted reason string. */
class WebhookVerificationError extends Error {
    reason;
    constructor(message, reason = "signature_mismatch") {
        super(message);
        this.name = "WebhookVerificationError";
        this.reason = reason;
    }
}
exports.WebhookVerificationError = WebhookVerificationError;
const BY_STATUS = {
    400: ValidationError,
    401: AuthenticationError,
    403: AuthenticationError,
    404: NotFoundError,
    409: ConflictError,
    413: ValidationError,
    422: ValidationError,
    429: RateLimitError,
    502: UnavailableError,
    503: UnavailableError,
    504: UnavailableError,
};
/** `Retry-After` in seconds: delta-seconds or an HTTP date; `null` when absent or unreadable. */
function parseRetryAfter(value, now = Date.now()) {
    if (value == null || value.trim() === "")
        return null;
    const v = value.trim();
    if (/^\d+(\.\d+)?$/.test(v))
        return Number(v);
    const when = Date.parse(v);
    return Number.isNaN(when) ? null : Math.max(0, (when - now) / 1000);
}
/** The typed error for a non-2xx answer: `{"error": {"code", "field", "message"}}` if present. */
function errorFromAnswer(status, text, retryAfterHeader) {
    let body = text;
    let code = null;
    let field = null;
    let message = text.trim() || `HTTP ${status}`;
    try {
        body = JSON.parse(text);
        const err = body?.error;
        if (err && typeof err === "object") {
            const e = err;
            if (typeof e.code === "string")
                code = e.code;
            if (typeof e.field === "string" && e.field !== "")
                field = e.field;
            if (typeof e.message === "string" && e.message !== "")
                message = e.message;
        }
        else if (typeof err === "string") {
            message = err;
        }
    }
    catch {
        // not JSON: the text is the message
    }
    const cls = BY_STATUS[status] ?? EZThrottleError;
    const details = {
        status,
        code,
        field,
        retryAfter: parseRetryAfter(retryAfterHeader),
        body,
    };
    const where = [code && `code=${code}`, field && `field=${field}`, `status=${status}`]
        .filter(Boolean)
        .join(", ");
    return new cls(`${message} (${where})`, details);
}
