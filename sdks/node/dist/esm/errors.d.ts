/**
 * Errors. Every error the server answers becomes an `EZThrottleError` subclass carrying the
 * API's `code` and `field`, so callers branch on them without parsing messages.
 *
 * The hosted 1.4.0 names stay: `EZThrottleError(message, retryAt)`, `RateLimitError(message,
 * retryAt)`, `TimeoutError(message)` and `WebhookVerificationError(message)` construct as before.
 */
import type { Job } from "./types.js";
/** What an error knows beyond its message; every field is optional. */
export interface ErrorDetails {
    /** HTTP status the server answered; `null` when no answer came back. */
    status?: number | null;
    /** The API's error code (`invalid_field`, `not_found`, …), or the socket's (`ECONNREFUSED`). */
    code?: string | null;
    /** The request field the server blamed (`url`, `retry_policy.max_retries`, …). */
    field?: string | null;
    /** Seconds to wait before trying again, from `Retry-After`. */
    retryAfter?: number | null;
    /** Earliest time to try again, ms since the epoch (the hosted SDK's field). */
    retryAt?: number | null;
    /** The parsed error body, when there was one. */
    body?: unknown;
    /** The underlying error (a network failure, say). */
    cause?: unknown;
}
/** Base class of every error the client throws for an API call. */
export declare class EZThrottleError extends Error {
    status: number | null;
    code: string | null;
    field: string | null;
    retryAfter: number | null;
    retryAt: number | null;
    body: unknown;
    /** `details` may be the hosted SDK's second argument, `retryAt` (ms since the epoch). */
    constructor(message: string, details?: ErrorDetails | number | null);
}
/** 400, 413, 422: refused as written; `field` names the culprit. `code === "not_supported"`
 * means this server does not offer the feature yet. */
export declare class ValidationError extends EZThrottleError {
    constructor(message: string, details?: ErrorDetails | null);
}
/** 401/403: missing or unknown API key. */
export declare class AuthenticationError extends EZThrottleError {
    constructor(message: string, details?: ErrorDetails | null);
}
/** 404: no such job (or another tenant's), or no webhook secret. */
export declare class NotFoundError extends EZThrottleError {
    constructor(message: string, details?: ErrorDetails | null);
}
/** 409: e.g. cancelling a job that is already final. */
export declare class ConflictError extends EZThrottleError {
    constructor(message: string, details?: ErrorDetails | null);
}
/** 429: quota or waiter limit; try again after `retryAfter` seconds (`retryAt` ms epoch). */
export declare class RateLimitError extends EZThrottleError {
    /** `details` may be the hosted SDK's second argument, `retryAt` (ms since the epoch). */
    constructor(message: string, details?: ErrorDetails | number | null);
}
/** The native name for a 429; the same class as the hosted `RateLimitError`. */
export declare const RateLimitedError: typeof RateLimitError;
export type RateLimitedError = RateLimitError;
/** 502/503/504: the server stored nothing (disk full, store down); safe to try again later. */
export declare class UnavailableError extends EZThrottleError {
    constructor(message: string, details?: ErrorDetails | null);
}
/** No answer from the EZThrottle server (refused, reset, timed out). `code` is the socket's
 * (`ECONNREFUSED`, `ECONNRESET`, …) or `timeout`; `status` is `null`. This is what
 * `forwardOrFallback` treats as "EZThrottle is down". */
export declare class UnreachableError extends EZThrottleError {
    constructor(message: string, details?: ErrorDetails | null);
}
/** The job was not final within the caller's timeout; `job` is its last view (hosted name). */
export declare class TimeoutError extends EZThrottleError {
    job: Job | null;
    constructor(message: string, job?: Job | null);
}
/** A `stream()` call's job ended `failed`, `expired` or `cancelled`; `job` is the final view,
 * `code` the job's error code, `status` the target's last status (if it answered). */
export declare class JobFailedError extends EZThrottleError {
    job: Job;
    constructor(job: Job);
}
/** A webhook's signature did not verify; `reason` is the hosted reason string. */
export declare class WebhookVerificationError extends Error {
    reason: string;
    constructor(message: string, reason?: string);
}
/** `Retry-After` in seconds: delta-seconds or an HTTP date; `null` when absent or unreadable. */
export declare function parseRetryAfter(value: string | null | undefined, now?: number): number | null;
/** The typed error for a non-2xx answer: `{"error": {"code", "field", "message"}}` if present. */
export declare function errorFromAnswer(status: number, text: string, retryAfterHeader: string | null): EZThrottleError;
