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
export class EZThrottleError extends Error {
  status: number | null;
  code: string | null;
  field: string | null;
  retryAfter: number | null;
  retryAt: number | null;
  body: unknown;

  /** `details` may be the hosted SDK's second argument, `retryAt` (ms since the epoch). */
  constructor(message: string, details: ErrorDetails | number | null = null) {
    const d: ErrorDetails = typeof details === "number" ? { retryAt: details } : details ?? {};
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

/** 400, 413, 422: refused as written; `field` names the culprit. `code === "not_supported"`
 * means this server does not offer the feature yet. */
export class ValidationError extends EZThrottleError {
  constructor(message: string, details: ErrorDetails | null = null) {
    super(message, details);
    this.name = "ValidationError";
  }
}

/** 401/403: missing or unknown API key. */
export class AuthenticationError extends EZThrottleError {
  constructor(message: string, details: ErrorDetails | null = null) {
    super(message, details);
    this.name = "AuthenticationError";
  }
}

/** 404: no such job (or another tenant's), or no webhook secret. */
export class NotFoundError extends EZThrottleError {
  constructor(message: string, details: ErrorDetails | null = null) {
    super(message, details);
    this.name = "NotFoundError";
  }
}

/** 409: e.g. cancelling a job that is already final. */
export class ConflictError extends EZThrottleError {
  constructor(message: string, details: ErrorDetails | null = null) {
    super(message, details);
    this.name = "ConflictError";
  }
}

/** 429: quota or waiter limit; try again after `retryAfter` seconds (`retryAt` ms epoch). */
export class RateLimitError extends EZThrottleError {
  /** `details` may be the hosted SDK's second argument, `retryAt` (ms since the epoch). */
  constructor(message: string, details: ErrorDetails | number | null = null) {
    super(message, details);
    this.name = "RateLimitError";
  }
}

/** The native name for a 429; the same class as the hosted `RateLimitError`. */
export const RateLimitedError = RateLimitError;
export type RateLimitedError = RateLimitError;

/** 502/503/504: the server stored nothing (disk full, store down); safe to try again later. */
export class UnavailableError extends EZThrottleError {
  constructor(message: string, details: ErrorDetails | null = null) {
    super(message, details);
    this.name = "UnavailableError";
  }
}

/** No answer from the EZThrottle server (refused, reset, timed out). `code` is the socket's
 * (`ECONNREFUSED`, `ECONNRESET`, …) or `timeout`; `status` is `null`. This is what
 * `forwardOrFallback` treats as "EZThrottle is down". */
export class UnreachableError extends EZThrottleError {
  constructor(message: string, details: ErrorDetails | null = null) {
    super(message, details);
    this.name = "UnreachableError";
  }
}

/** The job was not final within the caller's timeout; `job` is its last view (hosted name). */
export class TimeoutError extends EZThrottleError {
  job: Job | null;

  constructor(message: string, job: Job | null = null) {
    super(message, { code: "timeout" });
    this.name = "TimeoutError";
    this.job = job;
  }
}

/** A `stream()` call's job ended `failed`, `expired` or `cancelled`; `job` is the final view,
 * `code` the job's error code, `status` the target's last status (if it answered). */
export class JobFailedError extends EZThrottleError {
  job: Job;

  constructor(job: Job) {
    const err = job.error ?? { code: job.state, message: `job ${job.state}` };
    super(`job ${job.job_id} ended ${job.state}: ${err.message}`, {
      status: job.response?.status_code ?? null,
      code: err.code,
    });
    this.name = "JobFailedError";
    this.job = job;
  }
}

/** A webhook's signature did not verify; `reason` is the hosted reason string. */
export class WebhookVerificationError extends Error {
  reason: string;

  constructor(message: string, reason = "signature_mismatch") {
    super(message);
    this.name = "WebhookVerificationError";
    this.reason = reason;
  }
}

type ErrorClass = new (message: string, details: ErrorDetails | null) => EZThrottleError;

const BY_STATUS: Record<number, ErrorClass> = {
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
export function parseRetryAfter(value: string | null | undefined, now = Date.now()): number | null {
  if (value == null || value.trim() === "") return null;
  const v = value.trim();
  if (/^\d+(\.\d+)?$/.test(v)) return Number(v);
  const when = Date.parse(v);
  return Number.isNaN(when) ? null : Math.max(0, (when - now) / 1000);
}

/** The typed error for a non-2xx answer: `{"error": {"code", "field", "message"}}` if present. */
export function errorFromAnswer(
  status: number,
  text: string,
  retryAfterHeader: string | null,
): EZThrottleError {
  let body: unknown = text;
  let code: string | null = null;
  let field: string | null = null;
  let message = text.trim() || `HTTP ${status}`;
  try {
    body = JSON.parse(text);
    const err = (body as { error?: unknown } | null)?.error;
    if (err && typeof err === "object") {
      const e = err as { code?: unknown; field?: unknown; message?: unknown };
      if (typeof e.code === "string") code = e.code;
      if (typeof e.field === "string" && e.field !== "") field = e.field;
      if (typeof e.message === "string" && e.message !== "") message = e.message;
    } else if (typeof err === "string") {
      message = err;
    }
  } catch {
    // not JSON: the text is the message
  }
  const cls = BY_STATUS[status] ?? EZThrottleError;
  const details: ErrorDetails = {
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
