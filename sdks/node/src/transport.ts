/**
 * HTTP to the EZThrottle server: the key, timeouts, retries with backoff and full jitter, and
 * mapping answers to typed errors. Uses the global `fetch` (Node >= 18) unless given another.
 */

import { EZThrottleError, UnreachableError, errorFromAnswer, parseRetryAfter } from "./errors.js";
import type { Duration } from "./types.js";

export const VERSION = "2.0.0";
export const DEFAULT_BASE_URL = "http://127.0.0.1:8080";
const USER_AGENT = `ezthrottle-node/${VERSION}`;

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

/** A `Retry-After` longer than this is not waited for: the error goes to the caller. */
const MAX_RETRY_AFTER_S = 60;

/** Statuses after which nothing was done, so any call may be sent again. */
const REFUSED = new Set([429, 503]);
/** Statuses after which an idempotent call may be sent again. */
const TRANSIENT = new Set([500, 502, 504]);

export function resolveSettings(apiKey?: string, baseUrl?: string, hostedUrl?: string) {
  const key = apiKey || process.env.EZTHROTTLE_API_KEY;
  if (!key) {
    throw new Error("apiKey is required: pass { apiKey } or set EZTHROTTLE_API_KEY");
  }
  const url = baseUrl || process.env.EZTHROTTLE_URL || hostedUrl || DEFAULT_BASE_URL;
  return { apiKey: key, baseUrl: url.replace(/\/+$/, "") };
}

/** Milliseconds in a duration (numbers are seconds). */
export function durationMs(d: Duration): number {
  if (typeof d === "number") {
    if (!Number.isFinite(d) || d < 0) throw new RangeError(`not a duration: ${d}`);
    return d * 1000;
  }
  const units: Record<string, number> = {
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
    const unit = m ? units[m[2]!] : undefined;
    if (!m || unit === undefined) {
      throw new RangeError(`not a duration: ${JSON.stringify(d)} (use e.g. "250ms", "90s", "1h")`);
    }
    total += Number(m[1]) * unit;
    pos = part.lastIndex;
  }
  if (pos === 0) throw new RangeError(`not a duration: ${JSON.stringify(d)}`);
  return total;
}

/** A duration as the server reads it: strings pass through (the server judges them). */
export function wireDuration(d: Duration): string {
  return typeof d === "string" ? d : `${Math.max(0, Math.round(durationMs(d)))}ms`;
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const t = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(t);
      reject(signal!.reason);
    };
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

/** A signal that aborts when any of the given ones does (`AbortSignal.any` needs Node 20). */
export function anySignal(...signals: (AbortSignal | undefined)[]): AbortSignal | undefined {
  const given = signals.filter((s): s is AbortSignal => s !== undefined);
  if (given.length <= 1) return given[0];
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
function socketCode(err: unknown): string | null {
  let e: unknown = err;
  for (let i = 0; i < 4 && e && typeof e === "object"; i++) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === "string" && /^E[A-Z_]+$/.test(code)) return code;
    e = (e as { cause?: unknown }).cause;
  }
  return null;
}

export class Transport {
  readonly baseUrl: string;
  private readonly opts: TransportOptions;

  constructor(opts: TransportOptions) {
    this.opts = opts;
    this.baseUrl = opts.baseUrl;
  }

  private url(call: Call): string {
    const u = new URL(/^https?:\/\//.test(call.path) ? call.path : this.baseUrl + call.path);
    for (const [k, v] of Object.entries(call.query ?? {})) {
      if (v !== undefined) u.searchParams.set(k, String(v));
    }
    return u.toString();
  }

  /** Retries a call may get after its first try. */
  get maxRetries(): number {
    return this.opts.maxRetries;
  }

  /** Waits before retry number `n` (0-based); `false` when `Retry-After` is too long to wait. */
  async backoff(n: number, retryAfterS: number | null, signal?: AbortSignal): Promise<boolean> {
    if (retryAfterS !== null && retryAfterS > MAX_RETRY_AFTER_S) return false;
    await sleep(this.delay(n, retryAfterS), signal);
    return true;
  }

  /** Full-jitter backoff for retry number `n` (0-based), or the server's `Retry-After`. */
  private delay(n: number, retryAfterS: number | null): number {
    if (retryAfterS !== null) return retryAfterS * 1000;
    const cap = Math.min(this.opts.retryMaxDelayMs, this.opts.retryBaseDelayMs * 2 ** n);
    return Math.random() * cap;
  }

  /** Sends a call, retrying as its kind allows; answers the last response (any status). Throws
   * `UnreachableError` when no answer came back, and the caller's abort reason on abort. */
  async send(call: Call): Promise<Response> {
    const url = this.url(call);
    const headers: Record<string, string> = {
      "User-Agent": USER_AGENT,
      Accept: "application/json",
      Authorization: `Bearer ${this.opts.apiKey}`,
      ...call.headers,
    };
    let body: string | undefined;
    if (call.json !== undefined) {
      body = JSON.stringify(call.json);
      headers["Content-Type"] = "application/json";
    } else if (call.rawBody !== undefined) {
      body = call.rawBody;
    }
    const tries = call.retries === false ? 1 : this.opts.maxRetries + 1;
    for (let n = 0; ; n++) {
      const last = n + 1 >= tries;
      const ms = call.timeoutMs ?? this.opts.timeoutMs;
      const timeout = ms > 0 ? AbortSignal.timeout(ms) : undefined;
      const signal = anySignal(call.signal, timeout);
      let res: Response;
      try {
        res = await this.opts.fetch(url, { method: call.method, headers, body, signal });
      } catch (err) {
        if (call.signal?.aborted) throw call.signal.reason;
        const timedOut = timeout?.aborted ?? false;
        if (!call.idempotent || last) {
          const code = timedOut ? "timeout" : socketCode(err) ?? "unreachable";
          const what = timedOut ? "timed out" : `unreachable (${code})`;
          throw new UnreachableError(`EZThrottle server ${what}: ${call.method} ${url}`, {
            code,
            cause: err,
          });
        }
        await sleep(this.delay(n, null), call.signal);
        continue;
      }
      const retryable = REFUSED.has(res.status) || (call.idempotent && TRANSIENT.has(res.status));
      if (!retryable || last) return res;
      const after = parseRetryAfter(res.headers.get("retry-after"));
      if (after !== null && after > MAX_RETRY_AFTER_S) return res;
      await res.body?.cancel().catch(() => undefined);
      await sleep(this.delay(n, after), call.signal);
    }
  }

  /** Sends a call and answers its JSON; a non-2xx answer throws its typed error. */
  async json<T>(call: Call): Promise<T> {
    const res = await this.send(call);
    const text = await res.text();
    if (!res.ok) throw errorFromAnswer(res.status, text, res.headers.get("retry-after"));
    try {
      return JSON.parse(text) as T;
    } catch (err) {
      throw new EZThrottleError(`unreadable answer from the server (not JSON): ${text.slice(0, 200)}`, {
        status: res.status,
        cause: err,
      });
    }
  }
}
