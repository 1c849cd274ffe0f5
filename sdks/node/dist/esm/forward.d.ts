/**
 * Hand a call to EZThrottle from existing code without restructuring its error handling: the
 * wrapped function returns `{ forward: ForwardRequest }` (on a 429, a network error, …) and the
 * wrapper submits it as a `Step` (FRUGAL unless `stepType` says otherwise).
 */
import type { EZThrottle } from "./client.js";
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
/** Runs `fn`; if it answers `{ forward }`, executes that call through EZThrottle and answers the
 * step's result, else answers `fn`'s result unchanged. */
export declare function executeWithForwarding<T>(client: EZThrottle, fn: () => Promise<T | {
    forward: ForwardRequest;
}>): Promise<T | any>;
/** `fn` wrapped with `executeWithForwarding`. */
export declare function withAutoForward<TArgs extends any[], TReturn>(client: EZThrottle, fn: (...args: TArgs) => Promise<TReturn | {
    forward: ForwardRequest;
}>): (...args: TArgs) => Promise<TReturn | any>;
