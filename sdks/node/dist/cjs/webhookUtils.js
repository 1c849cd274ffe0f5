"use strict";
/**
 * Webhook signatures. Every delivery carries `X-EZThrottle-Signature: t=<unix seconds>,v1=<hex
 * HMAC-SHA256(secret, "<t>.<raw body>")>`, one `v1=` per active secret (primary, then secondary).
 * The functions and their reason strings are the hosted SDK's; `code` adds a structured reason.
 */
Object.defineProperty(exports, "__esModule", { value: true });
exports.DEFAULT_TOLERANCE = exports.WebhookVerificationError = void 0;
exports.signWebhook = signWebhook;
exports.verifyWebhookSignature = verifyWebhookSignature;
exports.verifyWebhookSignatureStrict = verifyWebhookSignatureStrict;
exports.tryVerifyWithSecrets = tryVerifyWithSecrets;
exports.signStandardWebhook = signStandardWebhook;
exports.verifyStandardWebhook = verifyStandardWebhook;
const node_crypto_1 = require("node:crypto");
const errors_js_1 = require("./errors.js");
Object.defineProperty(exports, "WebhookVerificationError", { enumerable: true, get: function () { return errors_js_1.WebhookVerificationError; } });
/** The hosted default tolerance, seconds either side of now. */
exports.DEFAULT_TOLERANCE = 300;
function bytes(payload) {
    // Signatures cover the exact bytes sent: re-serialising parsed JSON would break them.
    return typeof payload === "string" ? Buffer.from(payload, "utf8") : Buffer.from(payload);
}
function hexSignature(secret, timestamp, payload) {
    return (0, node_crypto_1.createHmac)("sha256", secret)
        .update(`${timestamp}.`)
        .update(bytes(payload))
        .digest("hex");
}
/** A signature header for `payload` (to test your own receiver): `t=<timestamp>,v1=…` with one
 * `v1` per secret, as the server sends it. `timestamp` defaults to now (unix seconds). */
function signWebhook(payload, secrets, timestamp = Math.floor(Date.now() / 1000)) {
    const list = typeof secrets === "string" ? [secrets] : secrets;
    const t = String(Math.floor(timestamp));
    return [`t=${t}`, ...list.map((s) => `v1=${hexSignature(s, t, payload)}`)].join(",");
}
/** The hosted text and code when `sent` is further than `tolerance` seconds from `current`. */
function expiry(sent, current, tolerance) {
    const diff = Math.abs(current - sent);
    if (diff <= tolerance)
        return null;
    return {
        reason: `timestamp_expired (diff=${diff}s, tolerance=${tolerance}s)`,
        code: sent < current ? "too_old" : "too_new",
    };
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
function verifyWebhookSignature(payload, signatureHeader, secret, tolerance = exports.DEFAULT_TOLERANCE, now) {
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
        const current = Math.floor(now ?? Date.now() / 1000);
        if (timestamp === null) {
            // The hosted SDK reads a missing timestamp as 0, which is always expired.
            const expired = expiry(0, current, tolerance);
            if (expired)
                return fail(expired.reason, "malformed");
            throw new Error("missing timestamp");
        }
        const ts = timestamp;
        if (!/^\d+$/.test(ts)) {
            throw new Error(`invalid timestamp ${JSON.stringify(ts)}: expected unix seconds`);
        }
        const expired = expiry(Number(ts), current, tolerance);
        if (expired)
            return fail(expired.reason, expired.code);
        const expected = Buffer.from(hexSignature(secret, ts, payload), "utf8");
        for (const sig of signatures) {
            const given = Buffer.from(sig, "utf8");
            if (given.length === expected.length && (0, node_crypto_1.timingSafeEqual)(given, expected)) {
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
function verifyWebhookSignatureStrict(payload, signatureHeader, secret, tolerance = exports.DEFAULT_TOLERANCE, now) {
    const { verified, reason } = verifyWebhookSignature(payload, signatureHeader, secret, tolerance, now);
    if (!verified) {
        throw new errors_js_1.WebhookVerificationError(`Webhook signature verification failed: ${reason}`, reason);
    }
}
/**
 * Verify with the primary secret, then the secondary (during a rotation): `valid_primary`,
 * `valid_secondary`, or `both_secrets_failed (primary: <the primary's reason>)`.
 */
function tryVerifyWithSecrets(payload, signatureHeader, primarySecret, secondarySecret, tolerance = exports.DEFAULT_TOLERANCE, now) {
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
// ------------------------------------------------------------------------------ Standard Webhooks
/** A `whsec_` secret is base64 (the Standard Webhooks convention); any other secret is used as
 * its UTF-8 bytes, which is how the server signs with it. */
function standardKey(secret) {
    return secret.startsWith("whsec_")
        ? Buffer.from(secret.slice("whsec_".length), "base64")
        : Buffer.from(secret, "utf8");
}
function standardSignature(secret, msgId, timestamp, payload) {
    return (0, node_crypto_1.createHmac)("sha256", standardKey(secret))
        .update(`${msgId}.${timestamp}.`)
        .update(bytes(payload))
        .digest();
}
function header(headers, name) {
    if (typeof headers.get === "function")
        return headers.get(name);
    for (const [k, v] of Object.entries(headers)) {
        if (k.toLowerCase() === name)
            return Array.isArray(v) ? (v[0] ?? null) : (v ?? null);
    }
    return null;
}
/** The `webhook-signature` value the server sends for these secrets (to test a receiver). */
function signStandardWebhook(payload, secrets, msgId, timestamp) {
    const list = typeof secrets === "string" ? [secrets] : secrets;
    const t = String(Math.floor(timestamp));
    return list.map((s) => `v1,${standardSignature(s, msgId, t, payload).toString("base64")}`).join(" ");
}
/**
 * Verify a delivery's Standard Webhooks headers (`webhook-id`, `webhook-timestamp`,
 * `webhook-signature`; names case-insensitive; a `Headers` or Node's `req.headers`). `reason`
 * and `code` are the structured reason: `valid`, `no_signature`, `malformed`, `too_old`,
 * `too_new`, `mismatch`.
 */
function verifyStandardWebhook(payload, headers, secret, tolerance = exports.DEFAULT_TOLERANCE, now) {
    const no = (code) => fail(code, code);
    const msgId = header(headers, "webhook-id");
    const ts = header(headers, "webhook-timestamp")?.trim() ?? null;
    const sigHeader = header(headers, "webhook-signature");
    if (!sigHeader)
        return no("no_signature");
    if (!msgId || ts === null || !/^\d+$/.test(ts))
        return no("malformed");
    const sigs = sigHeader
        .split(" ")
        .filter((p) => p.startsWith("v1,"))
        .map((p) => p.slice("v1,".length));
    if (sigs.length === 0)
        return no("no_signature");
    const expired = expiry(Number(ts), Math.floor(now ?? Date.now() / 1000), tolerance);
    if (expired)
        return no(expired.code);
    const want = standardSignature(secret, msgId, ts, payload);
    let ok = false;
    for (const sig of sigs) {
        const got = Buffer.from(sig, "base64");
        if (got.length === want.length && (0, node_crypto_1.timingSafeEqual)(got, want))
            ok = true;
    }
    return ok ? { verified: true, reason: "valid", code: "valid" } : no("mismatch");
}
