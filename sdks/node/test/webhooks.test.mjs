// testdata/webhook-signatures.json (signatures made by Python's hmac, independent of every SDK):
// both schemes signed and verified; `code` is the structured reason the vectors list.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, test } from "node:test";
import {
  WebhookVerificationError,
  signStandardWebhook,
  signWebhook,
  tryVerifyWithSecrets,
  verifyStandardWebhook,
  verifyWebhookSignature,
  verifyWebhookSignatureStrict,
} from "ezthrottle";
import { REPO } from "./support.mjs";

const data = JSON.parse(readFileSync(join(REPO, "testdata", "webhook-signatures.json"), "utf8"));

describe("signing", () => {
  for (const v of data.sign) {
    test(v.name, () => {
      assert.equal(signWebhook(v.body, v.secrets, v.timestamp), v.ezthrottle_signature);
      assert.equal(signStandardWebhook(v.body, v.secrets, v.msg_id, v.timestamp), v.webhook_signature);
    });
  }
});

describe("verifying", () => {
  for (const v of data.verify) {
    test(`${v.scheme}: ${v.name}`, () => {
      assert.equal(v.secrets.length, 1, "one secret per vector");
      const r =
        v.scheme === "standard"
          ? verifyStandardWebhook(
              v.body,
              { "webhook-id": v.msg_id, "webhook-timestamp": String(v.timestamp), "webhook-signature": v.header },
              v.secrets[0],
              data.tolerance_s,
              v.now,
            )
          : verifyWebhookSignature(v.body, v.header, v.secrets[0], data.tolerance_s, v.now);
      assert.equal(r.verified, v.valid, JSON.stringify(r));
      assert.equal(r.code, v.reason ?? "valid");
    });
  }

  test("Headers objects work for the standard scheme, and a whsec_ secret is base64", () => {
    const secret = "whsec_" + Buffer.from("a-binary-key-0001").toString("base64");
    const sig = signStandardWebhook("{}", secret, "dlv_1", 1732406400);
    const h = new Headers({ "Webhook-Id": "dlv_1", "Webhook-Timestamp": "1732406400", "Webhook-Signature": sig });
    assert.equal(verifyStandardWebhook("{}", h, secret, 300, 1732406400).reason, "valid");
    // the same key bytes given as text verify too; other bytes do not
    assert.equal(verifyStandardWebhook("{}", h, "a-binary-key-0001", 300, 1732406400).reason, "valid");
    assert.equal(verifyStandardWebhook("{}", h, "a-binary-key-0002", 300, 1732406400).reason, "mismatch");
    assert.equal(verifyStandardWebhook("{}", h, secret, 300, 1732406400 + 301).reason, "too_old");
  });

  test("the strict variant throws the hosted message with the reason", () => {
    const header = signWebhook("{}", "secret-0000000001", 1732406400);
    assert.doesNotThrow(() => verifyWebhookSignatureStrict("{}", header, "secret-0000000001", 300, 1732406400));
    assert.throws(
      () => verifyWebhookSignatureStrict("{}", header, "secret-0000000002", 300, 1732406400),
      (e) =>
        e instanceof WebhookVerificationError &&
        e.message === "Webhook signature verification failed: signature_mismatch" &&
        e.reason === "signature_mismatch",
    );
  });

  test("a missing timestamp reads as 0 (hosted), code malformed", () => {
    const r = verifyWebhookSignature("{}", "v1=abc", "s", 300, 1000);
    assert.deepEqual(r, { verified: false, reason: "timestamp_expired (diff=1000s, tolerance=300s)", code: "malformed" });
    assert.equal(tryVerifyWithSecrets("{}", "", "a", "b").reason, "both_secrets_failed (primary: no_signature_header)");
  });
});
