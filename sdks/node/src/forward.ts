/**
 * Hand a call to EZThrottle from existing code without restructuring its error handling: the
 * wrapped function returns `{ forward: ForwardRequest }` (on a 429, a network error, …) and the
 * wrapper submits it as a `Step` (FRUGAL unless `stepType` says otherwise).
 */

import type { EZThrottle } from "./client.js";
import { Step } from "./step.js";
import { StepType } from "./stepType.js";
import type { WebhookConfig } from "./types.js";

/** A call to forward to EZThrottle. */
export interface ForwardRequest {
  url: string;
  method?: string;
  headers?: Record<string, string>;
  body?: string;
  idempotentKey?: string;
  metadata?: Record<string, any>;
  webhooks?: WebhookConfig[];
  regions?: string[];
  fallbackOnError?: number[];
  stepType?: StepType;
}

function isForward(value: unknown): value is { forward: ForwardRequest } {
  return typeof value === "object" && value !== null && "forward" in value;
}

/** Runs `fn`; if it answers `{ forward }`, executes that call through EZThrottle and answers the
 * step's result, else answers `fn`'s result unchanged. */
export async function executeWithForwarding<T>(
  client: EZThrottle,
  fn: () => Promise<T | { forward: ForwardRequest }>,
): Promise<T | any> {
  const result = await fn();
  if (!isForward(result)) return result;
  const f = result.forward;
  const step = new Step(client).url(f.url).method(f.method ?? "GET");
  if (f.headers) step.headers(f.headers);
  if (f.body) step.body(f.body);
  if (f.idempotentKey) step.idempotentKey(f.idempotentKey);
  if (f.metadata) step.metadata(f.metadata);
  if (f.webhooks) step.webhooks(f.webhooks);
  if (f.regions) step.regions(f.regions);
  step.type(f.stepType ?? StepType.FRUGAL);
  if (f.fallbackOnError && f.fallbackOnError.length > 0) step.fallbackOnError(f.fallbackOnError);
  return step.execute();
}

/** `fn` wrapped with `executeWithForwarding`. */
export function withAutoForward<TArgs extends any[], TReturn>(
  client: EZThrottle,
  fn: (...args: TArgs) => Promise<TReturn | { forward: ForwardRequest }>,
): (...args: TArgs) => Promise<TReturn | any> {
  return (...args: TArgs) => executeWithForwarding(client, () => fn(...args));
}
