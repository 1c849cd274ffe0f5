// The native client against the real binary: submit/get/wait/events/cancel/retry/batch/list,
// typed errors, the environment, webhook secrets, and a signed webhook verified end to end.

import assert from "node:assert/strict";
import { once } from "node:events";
import { createServer } from "node:http";
import { after, before, describe, test } from "node:test";
import {
  AuthenticationError,
  ConflictError,
  EZThrottle,
  EZThrottleError,
  JobFailedError,
  NotFoundError,
  TimeoutError,
  ValidationError,
  httpStatusOf,
  tryVerifyWithSecrets,
  verifyStandardWebhook,
  verifyWebhookSignature,
} from "ezthrottle";
import { startAll, token } from "./support.mjs";

let env;
let client;
before(async () => {
  env = await startAll();
  client = new EZThrottle({ apiKey: env.server.key, baseUrl: env.server.url });
});
after(() => env?.stop());

/** A key of a tenant of its own (webhook secrets are per tenant). */
async function tenantClient(options = {}) {
  const name = `t${token()}`;
  await env.server.cli("tenants", "create", name);
  const key = (await env.server.cli("keys", "create", "--tenant", name)).trim();
  return new EZThrottle({ apiKey: key, baseUrl: env.server.url, ...options });
}

/** A webhook receiver on loopback; `next()` resolves with the next delivery. */
async function receiver() {
  const waiting = [];
  const got = [];
  const srv = createServer((req, res) => {
    const chunks = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", () => {
      const delivery = { headers: req.headers, body: Buffer.concat(chunks) };
      const w = waiting.shift();
      if (w) w(delivery);
      else got.push(delivery);
      res.writeHead(200, { "content-type": "application/json" }).end("{}");
    });
  });
  srv.listen(0, "127.0.0.1");
  await once(srv, "listening");
  return {
    url: `http://127.0.0.1:${srv.address().port}/hook`,
    next: () => (got.length ? Promise.resolve(got.shift()) : new Promise((r) => waiting.push(r))),
    close: () => new Promise((r) => srv.close(r)),
  };
}

describe("configuration", () => {
  test("reads EZTHROTTLE_API_KEY and EZTHROTTLE_URL", async () => {
    const saved = { key: process.env.EZTHROTTLE_API_KEY, url: process.env.EZTHROTTLE_URL };
    process.env.EZTHROTTLE_API_KEY = env.server.key;
    process.env.EZTHROTTLE_URL = env.server.url + "/";
    try {
      const c = new EZThrottle();
      assert.equal(c.baseUrl, env.server.url);
      const answer = await c.submit({ url: `${env.target.url}/ok?env=${token()}` });
      assert.match(answer.job_id, /^job_/);
    } finally {
      for (const [k, v] of [["EZTHROTTLE_API_KEY", saved.key], ["EZTHROTTLE_URL", saved.url]]) {
        if (v === undefined) delete process.env[k];
        else process.env[k] = v;
      }
    }
  });

  test("no key anywhere is a clear error", () => {
    const saved = process.env.EZTHROTTLE_API_KEY;
    delete process.env.EZTHROTTLE_API_KEY;
    try {
      assert.throws(() => new EZThrottle({ baseUrl: env.server.url }), /EZTHROTTLE_API_KEY/);
    } finally {
      if (saved !== undefined) process.env.EZTHROTTLE_API_KEY = saved;
    }
  });
});

describe("jobs", () => {
  test("submit answers 202 queued, wait answers the final view with the target's response", async () => {
    const answer = await client.submit({
      url: `${env.target.url}/ok?t=${token()}`,
      method: "post",
      body: "hello",
      metadata: { order: "42" },
    });
    assert.equal(answer.status, "queued");
    assert.equal(httpStatusOf(answer), 202);
    const job = await client.wait(answer.job_id, { timeoutS: 30 });
    assert.equal(job.state, "succeeded");
    assert.equal(job.spec.method, "POST");
    assert.equal(job.response.status_code, 200);
    assert.equal(JSON.parse(job.response.body).body, "hello");
    assert.deepEqual(job.metadata, { order: "42" });
    assert.deepEqual((await client.get(answer.job_id)).state, "succeeded");
  });

  test("torrent races the call now and answers the target's response with its legs", async () => {
    const got = await client.torrent({ url: `${env.target.url}/ok?t=${token()}`, method: "POST", body: "now", idempotent_key: "race-1" });
    assert.equal(got.status_code, 200);
    assert.equal(JSON.parse(got.body).body, "now");
    assert.equal(got.idempotent_key, "race-1");
    assert.equal(got.attempts.length, 1);
    assert.equal(got.attempts[0].outcome, "won");
  });

  test("submit with wait answers the final view", async () => {
    const job = await client.submit({ url: `${env.target.url}/ok?t=${token()}` }, { wait: 30 });
    assert.ok("state" in job, JSON.stringify(job));
    assert.equal(job.state, "succeeded");
  });

  test("stream answers the target's response once the job succeeded", async () => {
    const r = await client.stream("post", `${env.target.url}/flaky?s=${token()}`, { json: { a: 1 }, timeout: "60s" });
    assert.equal(r.status, 200);
    assert.equal(r.headers.get("content-type"), "application/json");
    assert.equal(r.json().body, '{"a":1}');
    assert.equal(r.job.attempts.length, 2);
    assert.equal(r.job.spec.headers.find(([k]) => k.toLowerCase() === "content-type")[1], "application/json");
  });

  test("stream throws JobFailedError with the final view when the job failed", async () => {
    const err = await client
      .stream("GET", `${env.target.url}/fail?s=${token()}`, { retry_policy: { max_retries: 0, max_reroutes: 0 } })
      .catch((e) => e);
    assert.ok(err instanceof JobFailedError, String(err));
    assert.equal(err.job.state, "failed");
    assert.equal(err.status, 500);
    assert.equal(err.code, "retries_exhausted");
  });

  test("wait runs out on a delayed job: TimeoutError carrying the last view", async () => {
    const answer = await client.submit({
      url: `${env.target.url}/ok?t=${token()}`,
      retry_at: Date.now() + 3_600_000,
    });
    const started = Date.now();
    const err = await client.wait(answer.job_id, { timeoutS: 0.3 }).catch((e) => e);
    assert.ok(err instanceof TimeoutError, String(err));
    assert.ok(err instanceof EZThrottleError);
    assert.equal(err.job.job_id, answer.job_id);
    assert.equal(err.job.state, "scheduled");
    assert.ok(Date.now() - started >= 250);
    const cancelled = await client.cancel(answer.job_id);
    assert.equal(cancelled.state, "cancelled");
    const again = await client.cancel(answer.job_id).catch((e) => e);
    assert.ok(again instanceof ConflictError, String(again));
    assert.equal(again.status, 409);
    assert.equal(again.code, "conflict");
  });

  test("events iterate in order and end after the final event, whose data is the view", async () => {
    const answer = await client.submit({ url: `${env.target.url}/flaky?t=${token()}` });
    const seen = [];
    let last;
    for await (const ev of client.events(answer.job_id)) {
      if (ev.event !== "position") seen.push(ev.event);
      last = ev;
    }
    assert.deepEqual(seen, ["queued", "dispatching", "attempt", "dispatching", "attempt", "succeeded"]);
    assert.equal(last.data.attempts.length, 2);
    assert.equal(last.data.attempts[0].status_code, 429);
  });

  test("breaking out of events closes the stream", async () => {
    const answer = await client.submit({
      url: `${env.target.url}/ok?t=${token()}`,
      retry_at: Date.now() + 3_600_000,
    });
    for await (const ev of client.events(answer.job_id)) {
      assert.equal(ev.event, "queued");
      break;
    }
    await client.cancel(answer.job_id);
  });

  test("an aborted events stream rejects with the abort reason", async () => {
    const answer = await client.submit({
      url: `${env.target.url}/ok?t=${token()}`,
      retry_at: Date.now() + 3_600_000,
    });
    const ctl = new AbortController();
    const reason = new Error("stop");
    const err = await (async () => {
      for await (const ev of client.events(answer.job_id, { signal: ctl.signal })) {
        if (ev.event === "queued") ctl.abort(reason);
      }
    })().catch((e) => e);
    assert.equal(err, reason);
    await client.cancel(answer.job_id);
  });

  test("retry re-queues a failed job as a new series", async () => {
    const answer = await client.submit({
      url: `${env.target.url}/fail?t=${token()}`,
      retry_policy: { max_retries: 0, max_reroutes: 0 },
    });
    const failed = await client.wait(answer.job_id, { timeoutS: 30 });
    assert.equal(failed.state, "failed");
    const requeued = await client.retry(answer.job_id);
    assert.equal(requeued.series, 2);
  });

  test("batch answers per spec, in order", async () => {
    const t = token();
    const results = await client.batch([
      { url: `${env.target.url}/ok?b=1&t=${t}` },
      { url: "ftp://example.com/x" },
    ]);
    assert.equal(results.length, 2);
    assert.match(results[0].job_id, /^job_/);
    assert.equal(results[1].error.code, "invalid_field");
    assert.equal(results[1].error.field, "url");
  });

  test("list pages through the tenant's jobs", async () => {
    const c = await tenantClient();
    const ids = [];
    for (let i = 0; i < 3; i++) {
      ids.push((await c.submit({ url: `${env.target.url}/ok?l=${i}&t=${token()}` })).job_id);
    }
    const listed = [];
    for await (const job of c.list({ limit: 2 })) listed.push(job.job_id);
    assert.deepEqual(listed.sort(), ids.sort());
  });
});

describe("typed errors", () => {
  test("400 invalid_field names the field", async () => {
    const err = await client
      .submit({ url: `${env.target.url}/ok`, retry_policy: { max_retries: 1000 } })
      .catch((e) => e);
    assert.ok(err instanceof ValidationError, String(err));
    assert.equal(err.status, 400);
    assert.equal(err.code, "invalid_field");
    assert.equal(err.field, "retry_policy.max_retries");
  });

  test("404 not_found and 401 unauthorized", async () => {
    const nf = await client.get("job_00000000000000000000000000").catch((e) => e);
    assert.ok(nf instanceof NotFoundError);
    assert.equal(nf.code, "not_found");
    const bad = new EZThrottle({ apiKey: "ezt_live_nope", baseUrl: env.server.url });
    const auth = await bad.get("job_00000000000000000000000000").catch((e) => e);
    assert.ok(auth instanceof AuthenticationError);
    assert.equal(auth.status, 401);
  });

  test("a bad job id is refused before any call", async () => {
    await assert.rejects(() => client.get(""), TypeError);
  });
});

describe("webhooks", () => {
  test("secrets CRUD, native", async () => {
    const c = await tenantClient();
    await assert.rejects(() => c.getWebhookSecret(), NotFoundError);
    await assert.rejects(() => c.createWebhookSecret("short"), /at least 16/);
    const created = await c.createWebhookSecret("primary-secret-000001");
    assert.equal(created.has_secondary, false);
    assert.ok(!JSON.stringify(created).includes("primary-secret-000001"));
    const rotated = await c.rotateWebhookSecret("primary-secret-000002");
    assert.equal(rotated.has_secondary, true);
    assert.equal((await c.getWebhookSecret()).has_secondary, true);
    assert.equal((await c.deleteWebhookSecret()).deleted, true);
    await assert.rejects(() => c.getWebhookSecret(), NotFoundError);
  });

  test("a signed delivery verifies with the hosted verifiers, also across a rotation", async () => {
    const c = await tenantClient();
    const hook = await receiver();
    try {
      await c.createWebhookSecret("old-secret-0000000001");
      await c.rotateWebhookSecret("new-secret-0000000002");
      const answer = await c.submit({
        url: `${env.target.url}/ok?t=${token()}`,
        webhooks: [{ url: hook.url }],
      });
      const delivery = await hook.next();
      const sig = delivery.headers["x-ezthrottle-signature"];
      assert.equal(JSON.parse(delivery.body).job_id, answer.job_id);
      assert.deepEqual(verifyWebhookSignature(delivery.body, sig, "new-secret-0000000002"), {
        verified: true,
        reason: "valid",
        code: "valid",
      });
      assert.equal(verifyWebhookSignature(delivery.body, sig, "old-secret-0000000001").reason, "valid");
      assert.equal(
        tryVerifyWithSecrets(delivery.body, sig, "unrelated-secret-00003", "old-secret-0000000001").reason,
        "valid_secondary",
      );
      assert.equal(verifyStandardWebhook(delivery.body, delivery.headers, "new-secret-0000000002").reason, "valid");
      assert.equal(verifyStandardWebhook(delivery.body, delivery.headers, "old-secret-0000000001").reason, "valid");
      const tampered = Buffer.concat([delivery.body, Buffer.from(" ")]);
      assert.equal(verifyWebhookSignature(tampered, sig, "new-secret-0000000002").reason, "signature_mismatch");

      const again = await c.redeliverWebhooks(answer.job_id);
      assert.equal(again.job_id, answer.job_id);
      assert.deepEqual(again.deliveries, [delivery.headers["x-ezthrottle-delivery-id"]]);
      const second = await hook.next();
      assert.equal(second.headers["x-ezthrottle-delivery-id"], delivery.headers["x-ezthrottle-delivery-id"]);
      assert.equal(
        verifyWebhookSignature(second.body, second.headers["x-ezthrottle-signature"], "new-secret-0000000002").reason,
        "valid",
      );
    } finally {
      await hook.close();
    }
  });
});

describe("lanes and workflows", () => {
  test("lanes() lists the caller's lane; pinLaneLimits pins and {} unpins", async () => {
    const c = await tenantClient();
    const job = await c.submit({ url: `${env.target.url}/ok?lane=${token()}` }, { wait: 30 });
    assert.equal(job.state, "succeeded");
    const host = new URL(env.target.url).host;
    const lanes = await c.lanes();
    const mine = lanes.find((l) => l.key.host === host);
    assert.ok(mine, JSON.stringify(lanes));
    assert.equal(mine.owner_node, null, "one node: no owner");
    const pinned = await c.pinLaneLimits(host, { rate: 5, burst: 2 });
    assert.equal(pinned[0].rate, 5);
    assert.equal(pinned[0].sources.rate?.kind, "tenant");
    assert.equal(pinned[0].pin?.rate, 5);
    const unpinned = await c.pinLaneLimits(host, {});
    assert.equal(unpinned[0].pin, null);
    await assert.rejects(c.pinLaneLimits("no-such-host.example", { rate: 1 }), (e) => e instanceof NotFoundError && e.field === "host");
  });

  test("submitWorkflow runs the steps; getWorkflow shows them", async () => {
    const run = await client.submitWorkflow({
      name: `two-steps-${token()}`,
      input: { order: "42" },
      steps: [
        { name: "charge", url: `${env.target.url}/charge?o={{input.order}}&t=${token()}`, method: "POST" },
        { name: "email", url: `${env.target.url}/email?t=${token()}`, depends_on: ["charge"] },
      ],
    });
    assert.equal(run.status, "running");
    // Each step is a job: await the jobs (server long-poll); a step's end and the release of
    // the next are one transaction, so the next job is in the view once the first is final.
    for (const name of ["charge", "email"]) {
      const step = (await client.getWorkflow(run.workflow_id)).steps.find((s) => s.name === name);
      assert.ok(step?.job_id, `${name}: ${JSON.stringify(step)}`);
      assert.equal((await client.wait(String(step.job_id), { timeoutS: 30 })).state, "succeeded");
    }
    const view = await client.getWorkflow(run.workflow_id);
    assert.equal(view.status, "succeeded", JSON.stringify(view));
    assert.deepEqual(view.steps.map((s) => s.name), ["charge", "email"]);
    await assert.rejects(client.getWorkflow("wf_nope"), (e) => e instanceof EZThrottleError && e.status >= 400 && e.status < 500);
    await assert.rejects(client.submitWorkflow({ name: "bad", steps: [{ name: "a", url: "ftp://x" }] }), (e) => e instanceof ValidationError);
  });

  test("workflowEvents ends with the run; cancel, resume and restart", async () => {
    const key = `order-${token()}`;
    const spec = { name: "keyed", idempotent_key: key, steps: [{ name: "only", url: `${env.target.url}/ok?t=${token()}` }] };
    const run = await client.submitWorkflow(spec);
    assert.deepEqual(await client.submitWorkflow(spec), { workflow_id: run.workflow_id, status: "duplicate" });
    const events = [];
    for await (const ev of client.workflowEvents(run.workflow_id)) events.push(ev);
    assert.deepEqual(events.map((e) => e.event), ["step.started", "step.ended", "workflow.completed"]);
    const view = events[2].data;
    assert.equal(view.status, "succeeded");
    await assert.rejects(client.cancelWorkflow(run.workflow_id), (e) => e instanceof ConflictError);
    await assert.rejects(client.resumeWorkflow(run.workflow_id), (e) => e instanceof ConflictError);
    const again = await client.restartWorkflow(run.workflow_id);
    assert.notEqual(again.workflow_id, run.workflow_id);
    const later = await client.submitWorkflow({
      name: "later",
      steps: [{ name: "later", url: `${env.target.url}/ok?t=${token()}`, retry_at: Date.now() + 30 * 86_400_000 }],
    });
    const cancelled = await client.cancelWorkflow(later.workflow_id);
    assert.equal(cancelled.status, "cancelled");
    const resumed = await client.resumeWorkflow(later.workflow_id);
    assert.equal(resumed.resumes, 1);
    await assert.rejects(client.cancelWorkflow("job_x"), TypeError);
  });
});
