// Every operation of the server's API (openapi.json in the repository) has its client method, so
// a new endpoint cannot land without the SDK noticing.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { EZThrottle } from "ezthrottle";
import { REPO } from "./support.mjs";

const METHODS = {
  "GET /api/v1/jobs": ["list", "listPage"],
  "POST /api/v1/jobs": ["submit", "submitJob", "stream"],
  "POST /api/v1/jobs/batch": ["batch"],
  "GET /api/v1/jobs/{id}": ["get"],
  "POST /api/v1/jobs/{id}/cancel": ["cancel"],
  "GET /api/v1/jobs/{id}/events": ["events"],
  "POST /api/v1/jobs/{id}/retry": ["retry"],
  "GET /api/v1/jobs/{id}/wait": ["wait", "queueAndWait"],
  "POST /api/v1/jobs/{id}/webhooks/redeliver": ["redeliverWebhooks"],
  "POST /api/v1/proxy": ["submitJob"],
  "GET /api/v1/webhook-secrets": ["getWebhookSecret"],
  "POST /api/v1/webhook-secrets": ["createWebhookSecret"],
  "DELETE /api/v1/webhook-secrets": ["deleteWebhookSecret"],
  "POST /api/v1/webhook-secrets/rotate": ["rotateWebhookSecret"],
  "GET /api/v1/lanes": ["lanes"],
  "PUT /api/v1/lanes/{host}/limits": ["pinLaneLimits"],
  "POST /api/v1/workflows": ["submitWorkflow"],
  "GET /api/v1/workflows/{id}": ["getWorkflow"],
  "GET /api/v1/workflows/{id}/events": ["workflowEvents"],
  "POST /api/v1/workflows/{id}/cancel": ["cancelWorkflow"],
  "POST /api/v1/workflows/{id}/resume": ["resumeWorkflow"],
  "POST /api/v1/workflows/{id}/restart": ["restartWorkflow"],
  "POST /api/v1/torrent": ["torrent"],
};
// Operator endpoints, not the SDK's business.
const NOT_SDK = new Set(["GET /healthz", "GET /readyz", "GET /metrics", "GET /openapi.json"]);

test("every API operation in openapi.json has a client method", () => {
  const spec = JSON.parse(readFileSync(join(REPO, "openapi.json"), "utf8"));
  const ops = Object.entries(spec.paths).flatMap(([path, item]) =>
    Object.keys(item)
      .filter((m) => ["get", "post", "put", "patch", "delete"].includes(m))
      .map((m) => `${m.toUpperCase()} ${path}`),
  );
  assert.ok(ops.length > 0);
  const missing = ops.filter((op) => !NOT_SDK.has(op) && !METHODS[op]);
  assert.deepEqual(missing, [], "operations without a client method: add them to the SDK and to METHODS");
  for (const [op, names] of Object.entries(METHODS)) {
    for (const name of names) {
      assert.equal(typeof EZThrottle.prototype[name], "function", `${op}: EZThrottle#${name}`);
    }
  }
});
