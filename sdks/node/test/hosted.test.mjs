// The hosted 1.4.0 surface (Step, StepType, IdempotentStrategy, forwardOrFallback,
// executeWithForwarding, the envelope, secrets through it) against the real binary, and the
// client's retries against a local server that misbehaves on purpose.

import assert from "node:assert/strict";
import { once } from "node:events";
import { createServer } from "node:http";
import { createRequire } from "node:module";
import { after, before, describe, test } from "node:test";
import EZThrottleDefault, {
  EZThrottle,
  IdempotentStrategy,
  RateLimitError,
  Step,
  StepType,
  UnavailableError,
  UnreachableError,
  ValidationError,
  executeWithForwarding,
  httpStatusOf,
  withAutoForward,
} from "ezthrottle";
import { freePort, startAll, token } from "./support.mjs";

let env;
let native;
let hosted;
before(async () => {
  env = await startAll();
  native = new EZThrottle({ apiKey: env.server.key, baseUrl: env.server.url });
  hosted = new EZThrottle({ apiKey: env.server.key, tracktagsUrl: env.server.url });
});
after(() => env?.stop());

/** A local server answering from `script` (one function per request, the last repeats);
 * `hits` counts requests. */
async function scripted(script) {
  const state = { hits: 0, bodies: [] };
  const srv = createServer((req, res) => {
    const chunks = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", () => {
      state.bodies.push(Buffer.concat(chunks).toString());
      const fn = script[Math.min(state.hits, script.length - 1)];
      state.hits++;
      fn(res, req);
    });
  });
  srv.listen(0, "127.0.0.1");
  await once(srv, "listening");
  state.url = `http://127.0.0.1:${srv.address().port}`;
  state.close = () => new Promise((r) => srv.close(r));
  return state;
}

const json = (status, body, headers = {}) => (res) =>
  res.writeHead(status, { "content-type": "application/json", ...headers }).end(JSON.stringify(body));
const submitted = json(202, { job_id: "job_x", status: "queued", idempotent_key: "k" });
const unavailable = json(503, { error: { code: "unavailable", message: "store down" } }, { "retry-after": "0" });

describe("package shape", () => {
  test("CommonJS require and the default export give the same names", () => {
    const cjs = createRequire(import.meta.url)("ezthrottle");
    for (const name of ["EZThrottle", "Step", "StepType", "IdempotentStrategy", "verifyWebhookSignature",
      "tryVerifyWithSecrets", "verifyWebhookSignatureStrict", "WebhookVerificationError",
      "executeWithForwarding", "withAutoForward", "EZThrottleError", "RateLimitError", "TimeoutError"]) {
      assert.ok(cjs[name] !== undefined && cjs[name] !== null, name);
    } // prettier-ignore
    assert.equal(typeof cjs.EZThrottle, "function");
    assert.equal(cjs.default, cjs.EZThrottle);
    assert.equal(cjs.StepType.PERFORMANCE, "performance");
    assert.equal(EZThrottleDefault, EZThrottle);
    assert.equal(StepType.FRUGAL, "frugal");
    assert.equal(IdempotentStrategy.UNIQUE, "unique");
  });
});

describe("Step", () => {
  test("the payload is the wire format, workflows nested, webhook votes spelled the server's way", () => {
    const p = new Step(native)
      .url("https://api.example.com/charge")
      .method("post")
      .webhooks([{ url: "https://app.example.com/hook", hasQuorumVote: false }])
      .webhookQuorum(0)
      .retryPolicy({ max_retries: 5 })
      .fallback(new Step().url("https://backup.example.com"), { triggerOnError: [500] })
      .fallback(new Step().url("https://second.example.com"), { triggerOnTimeout: 5000 })
      .onSuccess(new Step().url("https://next.example.com").idempotentKey("n1"))
      .onFailure(new Step().url("https://alert.example.com"), 60000)
      .toPayload();
    assert.deepEqual(p, {
      url: "https://api.example.com/charge",
      method: "POST",
      webhooks: [{ url: "https://app.example.com/hook", has_quorum_vote: false }],
      webhook_quorum: 0,
      retry_policy: { max_retries: 5 },
      fallback_job: {
        url: "https://backup.example.com",
        method: "GET",
        trigger: { type: "on_error", codes: [500] },
        fallback_job: {
          url: "https://second.example.com",
          method: "GET",
          trigger: { type: "on_timeout", timeout_ms: 5000 },
        },
      },
      on_success: { url: "https://next.example.com", method: "GET", idempotent_key: "n1" },
      on_failure: { url: "https://alert.example.com", method: "GET" },
      on_failure_timeout_ms: 60000,
    });
  });

  test("UNIQUE gives every execution its own key; HASH leaves the key to the server", () => {
    const step = new Step().url("https://x.example.com").idempotentStrategy(IdempotentStrategy.UNIQUE);
    const a = step.toPayload().idempotent_key;
    const b = step.toPayload().idempotent_key;
    assert.match(a, /^[0-9a-f-]{36}$/);
    assert.notEqual(a, b);
    assert.equal(new Step().url("https://x.example.com").toPayload().idempotent_key, undefined);
  });

  test("no client and no url are clear errors", async () => {
    await assert.rejects(() => new Step().url("https://x.example.com").execute(), /Client is required/);
    await assert.rejects(() => new Step(native).execute(), /URL is required/);
  });

  test("PERFORMANCE through the envelope: 201 new, 200 duplicate (202 accepted from older servers)", async () => {
    const key = `perf-${token()}`;
    const make = () => new Step(hosted).url(`${env.target.url}/ok?t=${key}`).type(StepType.PERFORMANCE).idempotentKey(key);
    const first = await make().execute();
    assert.match(first.job_id, /^job_/);
    assert.ok([201, 202].includes(httpStatusOf(first)), String(httpStatusOf(first)));
    const second = await make().execute();
    assert.equal(second.job_id, first.job_id);
    assert.equal(second.status, "duplicate");
    assert.equal(httpStatusOf(second), 200);
    assert.equal((await native.wait(first.job_id, { timeoutS: 30 })).state, "succeeded");
  });

  test("a refused job inside the envelope is the typed error of the inner answer", async () => {
    const err = await new Step(hosted).url("ftp://example.com/x").execute().catch((e) => e);
    assert.ok(err instanceof ValidationError, String(err));
    assert.equal(err.status, 400);
    assert.equal(err.field, "url");
  });

  test("FRUGAL: local success never reaches the server; an unlisted error stays local", async () => {
    const ok = await new Step(hosted).url(`${env.target.url}/ok?f=${token()}`).type(StepType.FRUGAL).execute();
    assert.equal(ok.status, "success");
    assert.equal(ok.executed_locally, true);
    assert.equal(JSON.parse(ok.response).path.startsWith("/ok"), true);
    assert.equal(httpStatusOf(ok), undefined);
    const failed = await new Step(hosted)
      .url(`${env.target.url}/fail?f=${token()}`)
      .type(StepType.FRUGAL)
      .fallbackOnError([429])
      .execute();
    assert.deepEqual(failed, { status: "failed", executed_locally: true, status_code: 500, error: "Request failed: 500" });
  });

  test("FRUGAL: a listed error tries the local FRUGAL fallback first", async () => {
    const result = await new Step(hosted)
      .url(`${env.target.url}/fail?f=${token()}`)
      .type(StepType.FRUGAL)
      .fallback(new Step().url(`${env.target.url}/ok?backup=${token()}`).type(StepType.FRUGAL), { triggerOnError: [500] })
      .execute();
    assert.equal(result.status, "success");
    assert.match(JSON.parse(result.response).path, /^\/ok\?backup=/);
  });

  test("FRUGAL: a network error hands the call to EZThrottle", async () => {
    const dead = `http://127.0.0.1:${await freePort()}/gone?f=${token()}`;
    const result = await new Step(native).url(dead).type(StepType.FRUGAL).retryPolicy({ max_retries: 0, max_reroutes: 0 }).execute();
    assert.match(result.job_id, /^job_/);
    const job = await native.wait(result.job_id, { timeoutS: 30 });
    assert.equal(job.state, "failed");
    assert.equal(job.attempts[0].status_code, null);
  });
});

describe("hosted helpers", () => {
  test("executeWithForwarding forwards a { forward } answer and passes others through", async () => {
    const passthrough = await executeWithForwarding(hosted, async () => ({ direct: true }));
    assert.deepEqual(passthrough, { direct: true });
    const t = token();
    const forwarded = await executeWithForwarding(hosted, async () => ({
      forward: { url: `${env.target.url}/fail?fw=${t}`, idempotentKey: `fw-${t}`, stepType: StepType.PERFORMANCE },
    }));
    assert.match(forwarded.job_id, /^job_/);
    assert.equal(forwarded.idempotent_key, `fw-${t}`);
    const wrapped = withAutoForward(hosted, async (n) => ({ n }));
    assert.deepEqual(await wrapped(3), { n: 3 });
  });

  test("forwardOrFallback: the fallback runs only when EZThrottle cannot take the call", async () => {
    const down = new EZThrottle({ apiKey: "k", baseUrl: `http://127.0.0.1:${await freePort()}`, maxRetries: 0 });
    assert.equal(await down.forwardOrFallback(async () => "direct", { url: "https://x.example.com" }), "direct");
    const up = await native.forwardOrFallback(async () => "direct", { url: `${env.target.url}/ok?ff=${token()}` });
    assert.match(up.job_id, /^job_/);
    await assert.rejects(
      () => native.forwardOrFallback(async () => "direct", { url: "ftp://x.example.com" }),
      ValidationError,
    );
  });

  test("secrets through the envelope", async () => {
    const name = `t${token()}`;
    await env.server.cli("tenants", "create", name);
    const key = (await env.server.cli("keys", "create", "--tenant", name)).trim();
    const c = new EZThrottle({ apiKey: key, tracktagsUrl: env.server.url });
    const created = await c.createWebhookSecret("envelope-secret-0001");
    assert.equal(created.has_secondary, false);
    assert.equal((await c.rotateWebhookSecret("envelope-secret-0002")).has_secondary, true);
    assert.equal((await c.getWebhookSecret()).has_secondary, true);
    await c.deleteWebhookSecret();
    await assert.rejects(() => c.getWebhookSecret(), (e) => e.status === 404 && e.code === "not_found");
  });

  test("queueAndWait waits for the final view", async () => {
    const job = await native.queueAndWait({ url: `${env.target.url}/ok?qw=${token()}`, timeout: 30_000 });
    assert.equal(job.state, "succeeded");
  });
});

describe("retries", () => {
  test("503 with Retry-After is retried until it goes through", async () => {
    const s = await scripted([unavailable, unavailable, submitted]);
    try {
      const c = new EZThrottle({ apiKey: "k", baseUrl: s.url });
      const answer = await c.submit({ url: "https://x.example.com" });
      assert.equal(answer.job_id, "job_x");
      assert.equal(s.hits, 3);
      assert.equal(s.bodies[0], s.bodies[2]);
    } finally {
      await s.close();
    }
  });

  test("maxRetries: 0 turns retrying off; the error carries retryAfter", async () => {
    const s = await scripted([unavailable, submitted]);
    try {
      const c = new EZThrottle({ apiKey: "k", baseUrl: s.url, maxRetries: 0 });
      const err = await c.submit({ url: "https://x.example.com" }).catch((e) => e);
      assert.ok(err instanceof UnavailableError, String(err));
      assert.equal(err.retryAfter, 0);
      assert.equal(s.hits, 1);
    } finally {
      await s.close();
    }
  });

  test("gives up after maxRetries, and a long Retry-After is not waited for", async () => {
    const s = await scripted([unavailable]);
    const long = await scripted([json(429, { error: { code: "quota_exceeded", message: "slow down" } }, { "retry-after": "120" })]);
    try {
      const c = new EZThrottle({ apiKey: "k", baseUrl: s.url, maxRetries: 2 });
      await assert.rejects(() => c.get("job_x"), UnavailableError);
      assert.equal(s.hits, 3);
      const started = Date.now();
      const err = await new EZThrottle({ apiKey: "k", baseUrl: long.url }).get("job_x").catch((e) => e);
      assert.ok(err instanceof RateLimitError, String(err));
      assert.equal(err.retryAfter, 120);
      assert.equal(err.code, "quota_exceeded");
      assert.ok(err.retryAt > Date.now() + 100_000);
      assert.equal(long.hits, 1);
      assert.ok(Date.now() - started < 5_000);
    } finally {
      await s.close();
      await long.close();
    }
  });

  test("500 is retried for idempotent calls only (get, submit), never for cancel", async () => {
    const boom = json(500, { error: { code: "internal", message: "boom" } });
    const view = json(200, { job_id: "job_x", state: "queued" });
    const s = await scripted([boom, view]);
    try {
      const c = new EZThrottle({ apiKey: "k", baseUrl: s.url, retryBaseDelayMs: 1 });
      assert.equal((await c.get("job_x")).job_id, "job_x");
      assert.equal(s.hits, 2);
    } finally {
      await s.close();
    }
    const s2 = await scripted([boom, view]);
    try {
      const c = new EZThrottle({ apiKey: "k", baseUrl: s2.url, retryBaseDelayMs: 1 });
      const err = await c.cancel("job_x").catch((e) => e);
      assert.equal(err.status, 500);
      assert.equal(s2.hits, 1);
    } finally {
      await s2.close();
    }
  });

  test("a dropped connection is retried for submit; no server at all is UnreachableError", async () => {
    const s = await scripted([(res) => res.socket.destroy(), submitted]);
    try {
      const c = new EZThrottle({ apiKey: "k", baseUrl: s.url, retryBaseDelayMs: 1 });
      assert.equal((await c.submit({ url: "https://x.example.com" })).job_id, "job_x");
      assert.equal(s.hits, 2);
    } finally {
      await s.close();
    }
    const dead = new EZThrottle({ apiKey: "k", baseUrl: `http://127.0.0.1:${await freePort()}`, retryBaseDelayMs: 1 });
    const err = await dead.get("job_x").catch((e) => e);
    assert.ok(err instanceof UnreachableError, String(err));
    assert.equal(err.code, "ECONNREFUSED");
    assert.equal(err.status, null);
  });

  test("a 503 inside the hosted envelope is retried; a 400 inside it is not", async () => {
    const inner = (status, body, headers = {}) =>
      json(200, { status: "allowed", forwarded_response: { status_code: status, headers, body: JSON.stringify(body) } });
    const s = await scripted([
      inner(503, { error: { code: "unavailable", message: "store down" } }, { "retry-after": "0" }),
      inner(201, { job_id: "job_e", status: "queued", idempotent_key: "k" }),
    ]);
    try {
      const c = new EZThrottle({ apiKey: "k", tracktagsUrl: s.url });
      const answer = await new Step(c).url("https://x.example.com").execute();
      assert.equal(answer.job_id, "job_e");
      assert.equal(httpStatusOf(answer), 201);
      assert.equal(s.hits, 2);
      const sent = JSON.parse(s.bodies[0]);
      assert.equal(sent.target_url, `${s.url}/api/v1/jobs`);
      assert.deepEqual(JSON.parse(sent.body), { url: "https://x.example.com", method: "GET" });
    } finally {
      await s.close();
    }
    const bad = await scripted([inner(400, { error: { code: "invalid_field", field: "url", message: "bad" } })]);
    try {
      const c = new EZThrottle({ apiKey: "k", tracktagsUrl: bad.url });
      const err = await c.submitJob({ url: "https://x.example.com" }).catch((e) => e);
      assert.ok(err instanceof ValidationError, String(err));
      assert.equal(err.field, "url");
      assert.equal(bad.hits, 1);
    } finally {
      await bad.close();
    }
  });

  test("an event stream that ends before the final event is UnreachableError", async () => {
    const s = await scripted([
      (res) => res.writeHead(200, { "content-type": "text/event-stream" }).end('event: queued\ndata: {"job_id":"job_x"}\n\n'),
    ]);
    try {
      const c = new EZThrottle({ apiKey: "k", baseUrl: s.url });
      const seen = [];
      const err = await (async () => {
        for await (const ev of c.events("job_x")) seen.push(ev.event);
      })().catch((e) => e);
      assert.deepEqual(seen, ["queued"]);
      assert.ok(err instanceof UnreachableError, String(err));
      assert.match(err.message, /ended before the job was final/);
    } finally {
      await s.close();
    }
  });

  test("a request that outlives timeoutMs is UnreachableError code timeout", async () => {
    const s = await scripted([() => undefined]);
    try {
      const c = new EZThrottle({ apiKey: "k", baseUrl: s.url, timeoutMs: 200, maxRetries: 0 });
      const err = await c.get("job_x").catch((e) => e);
      assert.ok(err instanceof UnreachableError, String(err));
      assert.equal(err.code, "timeout");
    } finally {
      s.close();
    }
  });
});
