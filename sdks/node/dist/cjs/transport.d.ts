/**
 * HTTP to the EZThrottle server: the key, timeouts, retries with backoff and full jitter, and
 * mapping answers to typed errors. Uses the global `fetch` (Node >= 18) unless given another.
 */
import type { Duration } from "./types.js";
export declare const VERSION = "2.0.0";
export declare const DEFAULT_BASE_URL = "http://127.0.0.1:8080";
/** One request to the server. */
export interface Call {
    method: string;
    /** Path (with any query) below the base URL, or an absolute URL. */
    path: string;
    query?: Record<string, string | number | undefined>;
    /** Sent as JSON. */
    json?: unknown;
    /** Sent as is (instead of `json`). */
    rawBody?: string;
    headers?: Record<string, string>;
    /** Safe to send twice: retried after 500/502/504 and network errors too. */
    idempotent: boolean;
    /** Overrides the client's per-request timeout (ms); 0: none (event streams). */
    timeoutMs?: number;
    /** `false`: one try, whatever happens (raw calls). */
    retries?: boolean;
    signal?: AbortSignal;
}
export interface TransportOptions {
    apiKey: string;
    baseUrl: string;
    maxRetries: number;
    retryBaseDelayMs: number;
    retryMaxDelayMs: number;
    timeoutMs: number;
    fetch: typeof fetch;
}
export declare function resolveSettings(apiKey?: string, baseUrl?: string, hostedUrl?: string): {
    apiKey: string;
    baseUrl: string;
};
/** Milliseconds in a duration (numbers are seconds). */
export declare function durationMs(d: Duration): number;
/** A duration as the server reads it: strings pass through (the server judges them). */
export declare function wireDuration(d: Duration): string;
/** A signal that aborts when any of the given ones does (`AbortSignal.any` needs Node 20). */
export declare function anySignal(...signals: (AbortSignal | undefined)[]): AbortSignal | undefined;
export declare class Transport {
    readonly baseUrl: string;
    private readonly opts;
    constructor(opts: TransportOptions);
    private url;
    /** Retries a call may get after its first try. */
    get maxRetries(): number;
    /** Waits before retry number `n` (0-based); `false` when `Retry-After` is too long to wait. */
    backoff(n: number, retryAfterS: number | null, signal?: AbortSignal): Promise<boolean>;
    /** Full-jitter backoff for retry number `n` (0-based), or the server's `Retry-After`. */
    private delay;
    /** Sends a call, retrying as its kind allows; answers the last response (any status). Throws
     * `UnreachableError` when no answer came back, and the caller's abort reason on abort. */
    send(call: Call): Promise<Response>;
    /** Sends a call and answers its JSON; a non-2xx answer throws its typed error. */
    json<T>(call: Call): Promise<T>;
}
