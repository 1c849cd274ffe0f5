/**
 * Webhook signatures. Every delivery carries `X-EZThrottle-Signature: t=<unix seconds>,v1=<hex
 * HMAC-SHA256(secret, "<t>.<raw body>")>`, one `v1=` per active secret (primary, then secondary).
 * The functions and their reason strings are the hosted SDK's; `code` adds a structured reason.
 */
import { WebhookVerificationError } from "./errors.js";
export { WebhookVerificationError };
/** Structured reasons, shared with the other SDKs' test vectors. */
export type VerificationCode = "valid" | "no_signature" | "malformed" | "too_old" | "too_new" | "mismatch";
/** `reason` is the hosted string: `valid`, `no_signature_header`, `missing_v1_signature`,
 * `timestamp_expired (diff=<n>s, tolerance=<n>s)`, `signature_mismatch`,
 * `verification_error: <details>`; with two secrets `valid_primary`, `valid_secondary`,
 * `both_secrets_failed (primary: <reason>)`. */
export interface VerificationResult {
    verified: boolean;
    reason: string;
    code?: VerificationCode;
}
/** The hosted default tolerance, seconds either side of now. */
export declare const DEFAULT_TOLERANCE = 300;
type Payload = Buffer | Uint8Array | string;
/** A signature header for `payload` (to test your own receiver): `t=<timestamp>,v1=…` with one
 * `v1` per secret, as the server sends it. `timestamp` defaults to now (unix seconds). */
export declare function signWebhook(payload: Payload, secrets: string | string[], timestamp?: number): string;
/**
 * Verify the `X-EZThrottle-Signature` header of a delivery against one secret.
 *
 * @param payload - the raw request body (Buffer or string), not re-serialised JSON
 * @param signatureHeader - the header's value
 * @param secret - your webhook secret
 * @param tolerance - seconds the timestamp may be away from now (default 300)
 * @param now - unix seconds to compare with (default: the clock); for tests
 */
export declare function verifyWebhookSignature(payload: Payload, signatureHeader: string | null | undefined, secret: string, tolerance?: number, now?: number): VerificationResult;
/**
 * Like `verifyWebhookSignature`, but throws `WebhookVerificationError` (message
 * `Webhook signature verification failed: <reason>`, `.reason` the hosted string) unless valid.
 */
export declare function verifyWebhookSignatureStrict(payload: Payload, signatureHeader: string | null | undefined, secret: string, tolerance?: number, now?: number): void;
/**
 * Verify with the primary secret, then the secondary (during a rotation): `valid_primary`,
 * `valid_secondary`, or `both_secrets_failed (primary: <the primary's reason>)`.
 */
export declare function tryVerifyWithSecrets(payload: Payload, signatureHeader: string | null | undefined, primarySecret: string, secondarySecret?: string | null, tolerance?: number, now?: number): VerificationResult;
/** The `webhook-signature` value the server sends for these secrets (to test a receiver). */
export declare function signStandardWebhook(payload: Payload, secrets: string | string[], msgId: string, timestamp: number): string;
/**
 * Verify a delivery's Standard Webhooks headers (`webhook-id`, `webhook-timestamp`,
 * `webhook-signature`; names case-insensitive; a `Headers` or Node's `req.headers`). `reason`
 * and `code` are the structured reason: `valid`, `no_signature`, `malformed`, `too_old`,
 * `too_new`, `mismatch`.
 */
export declare function verifyStandardWebhook(payload: Payload, headers: Headers | Record<string, string | string[] | undefined>, secret: string, tolerance?: number, now?: number): VerificationResult;
