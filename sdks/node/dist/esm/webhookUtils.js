/**
 * Webhook signatures. Every delivery carries `X-EZThrottle-Signature: t=<unix seconds>,v1=<hex
 * HMAC-SHA256(secret, "<t>.<raw body>")>`, one `v1=` per active secret (primary, then secondary).
 * The functions and their reason strings are the hosted SDK's; `code` adds a structured reason.
 */
import { createHmac, timingSafeEqual } from "node:crypto";
import { WebhookVerificationError } from "./errors.js";
export { WebhookVerificationError };
/** The hosted default tolerance, seconds either side of now. */
export const DEFAULT_TOLERANCE = 300;
function bytes(payload) {
    // Signatures cover the exact bytes sent: re-serialising parsed JSON would break them.
    return typeof payload === "string" ? Buffer.from(payload, "utf8") : Buffer.from(payload);
}
function hexSignature(secret, timestamp, payload) {
    return createHmac("sha256", secret)
        .update(`${timestamp}.`)
        .update(bytes(payload))
        .digest("hex");
}
/** A signature header for `payload` (to test your own receiver): `t=<timestamp>,v1=…` with one
 * `v1` per secret, as the server sends it. `timestamp` defaults to now (unix seconds). */
export function signWebhook(payload, secrets, timestamp = Math.floor(Date.now() / 1000)) {
    const list = typeof secrets === "string" ? [secrets] : secrets;
    const t = String(Math.floor(timestamp));
    return [`t=${t}`, ...list.map((s) => `v1=${hexSignature(s, t, payload)}`)].join(",");
}
function fail(reason, code) {
    return { verified: false, reason, code };
}
/**
 * Verify the `X-EZThrottle-Signature` header of a delivery against one secret.
 *
 * @param payload - the raw request body (Buffer or string), not re-serialised JSON
 * @param signatureHeader - the header's value
 * @param secret - your webhook secret
 * @param tolerance - seconds the timestamp may be away from now (default 300)
 * @param now - unix seconds to compare with (default: the clock); for tests
 */
export function verifyWebhookSignature(payload, signatureHeader, secret, tolerance = DEFAULT_TOLERANCE, now) {
    if (!signatureHeader)
        return fail("no_signature_header", "no_signature");
    try {
        let timestamp = null;
        const signatures = [];
        let emptyV1 = false;
        for (const part of signatureHeader.split(",")) {
            const eq = part.indexOf("=");
            if (eq < 0)
                continue;
            const key = part.slice(0, eq).trim();
            const value = part.slice(eq + 1).trim();
            if (key === "t")
                timestamp = value;
            else if (key === "v1" && value === "")
                emptyV1 = true;
            else if (key === "v1")
                signatures.push(value);
        }
        if (signatures.length === 0) {
            return fail("missing_v1_signature", emptyV1 ? "mismatch" : "no_signature");
        }
        const ts = timestamp ?? "0";
        if (!/^\d+$/.test(ts)) {
            throw new Error(`invalid timestamp ${JSON.stringify(ts)}: expected unix seconds`);
        }
        const current = Math.floor(now ?? Date.now() / 1000);
        const sent = Number(ts);
        const diff = Math.abs(current - sent);
        if (diff > tolerance) {
            return fail(`timestamp_expired (diff=${diff}s, tolerance=${tolerance}s)`, sent < current ? "too_old" : "too_new");
        }
        const expected = Buffer.from(hexSignature(secret, ts, payload), "utf8");
        for (const sig of signatures) {
            const given = Buffer.from(sig, "utf8");
            if (given.length === expected.length && timingSafeEqual(given, expected)) {
                return { verified: true, reason: "valid", code: "valid" };
            }
        }
        return fail("signature_mismatch", "mismatch");
    }
    catch (err) {
        const details = err instanceof Error ? err.message : String(err);
        return fail(`verification_error: ${details}`, "malformed");
    }
}
/**
 * Like `verifyWebhookSignature`, but throws `WebhookVerificationError` (message
 * `Webhook signature verification failed: <reason>`, `.reason` the hosted string) unless valid.
 */
export function verifyWebhookSignatureStrict(payload, signatureHeader, secret, tolerance = DEFAULT_TOLERANCE, now) {
    const { verified, reason } = verifyWebhookSignature(payload, signatureHeader, secret, tolerance, now);
    if (!verified) {
        throw new WebhookVerificationError(`Webhook signature verification failed: ${reason}`, reason);
    }
}
/**
 * Verify with the primary secret, then the secondary (during a rotation): `valid_primary`,
 * `valid_secondary`, or `both_secrets_failed (primary: <the primary's reason>)`.
 */
export function tryVerifyWithSecrets(payload, signatureHeader, primarySecret, secondarySecret, tolerance = DEFAULT_TOLERANCE, now) {
    const primary = verifyWebhookSignature(payload, signatureHeader, primarySecret, tolerance, now);
    if (primary.verified)
        return { verified: true, reason: "valid_primary", code: "valid" };
    if (secondarySecret) {
        const secondary = verifyWebhookSignature(payload, signatureHeader, secondarySecret, tolerance, now);
        if (secondary.verified)
            return { verified: true, reason: "valid_secondary", code: "valid" };
    }
    return {
        verified: false,
        reason: `both_secrets_failed (primary: ${primary.reason})`,
        ...(primary.code ? { code: primary.code } : {}),
    };
}
