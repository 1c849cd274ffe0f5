// The shared SDK case suite (testdata/sdk-cases/, format in its README): every case runs through
// this SDK against the real binary and the demo target, one test (one output line) per case.
// EZT_SDK_CASES_DIR overrides where the files are read from.

import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { after, before, describe, test } from "node:test";
import {
  EZThrottle,
  EZThrottleError,
  IdempotentStrategy,
  Step,
  StepType,
  httpStatusOf,
  tryVerifyWithSecrets,
  verifyWebhookSignature,
} from "ezthrottle";
import { REPO, startAll, token } from "./support.mjs";

const CASES_DIR = process.env.EZT_SDK_CASES_DIR
  ? resolve(process.env.EZT_SDK_CASES_DIR)
  : join(REPO, "testdata", "sdk-cases");

function load(name) {
  const path = join(CASES_DIR, name);
  if (!existsSync(path)) {
    throw new Error(`${path} is missing: the shared case suite must be present (or set EZT_SDK_CASES_DIR)`);
  }
  return JSON.parse(readFileSync(path, "utf8"));
}

const { cases } = load("cases.json");
const vectors = load("verify-vectors.json");

// ------------------------------------------------------------------------------ placeholders

const PLACEHOLDER = /\$\{([^}]+)\}/g;

function lookup(name, vars) {
  const now = /^now_ms(?:\+(\d+))?$/.exec(name);
  if (now) return Date.now() + Number(now[1] ?? 0);
  if (Object.hasOwn(vars, name)) return vars[name];
  throw new Error(`unknown placeholder \${${name}}`);
}

function substitute(value, vars) {
  if (typeof value === "string") {
    const whole = /^\$\{([^}]+)\}$/.exec(value);
    if (whole) return lookup(whole[1], vars);
    return value.replace(PLACEHOLDER, (_, name) => String(lookup(name, vars)));
  }
  if (Array.isArray(value)) return value.map((v) => substitute(v, vars));
  if (value && typeof value === "object") {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, substitute(v, vars)]));
  }
  return value;
}

// ------------------------------------------------------------------------------ matching

function subsetMismatch(expected, actual, path = "$") {
  if (typeof expected === "string") {
    if (expected === "<any>") return actual === undefined ? `${path}: missing` : null;
    if (expected === "<string>") return typeof actual === "string" ? null : `${path}: not a string: ${JSON.stringify(actual)}`;
    if (expected === "<number>") return typeof actual === "number" ? null : `${path}: not a number: ${JSON.stringify(actual)}`;
    const prefix = /^<prefix:(.*)>$/s.exec(expected);
    if (prefix) {
      return typeof actual === "string" && actual.startsWith(prefix[1])
        ? null
        : `${path}: ${JSON.stringify(actual)} does not start with ${JSON.stringify(prefix[1])}`;
    }
  }
  if (Array.isArray(expected)) {
    if (!Array.isArray(actual)) return `${path}: not an array: ${JSON.stringify(actual)}`;
    if (actual.length !== expected.length) {
      return `${path}: ${actual.length} elements, expected ${expected.length}: ${JSON.stringify(actual).slice(0, 300)}`;
    }
    for (let i = 0; i < expected.length; i++) {
      const m = subsetMismatch(expected[i], actual[i], `${path}[${i}]`);
      if (m) return m;
    }
    return null;
  }
  if (expected !== null && typeof expected === "object") {
    if (actual === null || typeof actual !== "object" || Array.isArray(actual)) {
      return `${path}: not an object: ${JSON.stringify(actual)}`;
    }
    for (const [k, v] of Object.entries(expected)) {
      if (!(k in actual)) return `${path}.${k}: missing (have ${Object.keys(actual).join(", ")})`;
      const m = subsetMismatch(v, actual[k], `${path}.${k}`);
      if (m) return m;
    }
    return null;
  }
  return expected === actual ? null : `${path}: ${JSON.stringify(actual)}, expected ${JSON.stringify(expected)}`;
}

function at(value, dotted) {
  let v = value;
  for (const seg of dotted.split(".")) {
    if (v === null || v === undefined) break;
    v = Array.isArray(v) && /^\d+$/.test(seg) ? v[Number(seg)] : v[seg];
  }
  if (v === undefined) throw new Error(`nothing at ${dotted} in ${JSON.stringify(value).slice(0, 300)}`);
  return v;
}

// ------------------------------------------------------------------------------ ops

const HOSTED_STEP_ARGS = new Set([
  "url", "method", "headers", "body", "metadata", "type", "idempotent_strategy", "idempotent_key",
  "webhooks", "regions", "fallback_on_error", "retry", "retry_policy", "execution_mode",
  "region_policy", "webhook_quorum",
]); // prettier-ignore

function hostedStep(client, args) {
  const unknown = Object.keys(args).filter((k) => !HOSTED_STEP_ARGS.has(k));
  if (unknown.length) throw new Error(`hosted_step: unknown args ${unknown.join(", ")}`);
  const types = { performance: StepType.PERFORMANCE, frugal: StepType.FRUGAL };
  const strategies = { hash: IdempotentStrategy.HASH, unique: IdempotentStrategy.UNIQUE };
  if (!(args.type in types)) throw new Error(`hosted_step: unknown type ${args.type}`);
  const step = new Step(client).url(args.url).type(types[args.type]);
  if (args.method) step.method(args.method);
  if (args.headers) step.headers(args.headers);
  if (args.body !== undefined) step.body(args.body);
  if (args.metadata) step.metadata(args.metadata);
  if (args.idempotent_strategy) {
    if (!(args.idempotent_strategy in strategies)) throw new Error(`unknown strategy ${args.idempotent_strategy}`);
    step.idempotentStrategy(strategies[args.idempotent_strategy]);
  }
  if (args.idempotent_key) step.idempotentKey(args.idempotent_key);
  if (args.webhooks) step.webhooks(args.webhooks);
  if (args.regions) step.regions(args.regions);
  if (args.execution_mode) step.executionMode(args.execution_mode);
  if (args.region_policy) step.regionPolicy(args.region_policy);
  if (args.webhook_quorum !== undefined) step.webhookQuorum(args.webhook_quorum);
  if (args.fallback_on_error) step.fallbackOnError(args.fallback_on_error);
  const policy = args.retry_policy ?? args.retry;
  if (policy) step.retryPolicy(policy);
  return step.execute();
}

async function runOp(op, args, clients) {
  const { native, hosted } = clients;
  switch (op) {
    case "submit": {
      const { wait, ...spec } = args;
      const result = wait === undefined ? await native.submit(spec) : await native.submit(spec, { wait });
      return { result, status: httpStatusOf(result) };
    }
    case "get":
      return { result: await native.get(args.job_id) };
    case "wait":
      return { result: await native.wait(args.job_id, { timeoutS: args.timeout_s }) };
    case "cancel":
      return { result: await native.cancel(args.job_id) };
    case "retry":
      return { result: await native.retry(args.job_id) };
    case "batch":
      return { result: { results: await native.batch(args.jobs) } };
    case "events": {
      const events = [];
      for await (const ev of native.events(args.job_id)) {
        if (ev.event !== "position") events.push(ev.event);
      }
      return { result: { events } };
    }
    case "hosted_step": {
      const result = await hostedStep(hosted, args);
      return { result, status: httpStatusOf(result) };
    }
    case "raw": {
      const r = await native.raw(args.method, args.path, { headers: args.headers, body: args.body });
      return { result: { status: r.status, json: r.json }, status: r.status, json: r.json };
    }
    default:
      throw new Error(`unknown op ${JSON.stringify(op)}`);
  }
}

const EXPECT_KEYS = new Set(["ok", "error", "json", "status"]);

async function runStep(step, vars, env) {
  const unknownKeys = Object.keys(step).filter((k) => !["op", "args", "expect", "save", "client"].includes(k));
  if (unknownKeys.length) throw new Error(`unknown step keys ${unknownKeys.join(", ")}`);
  const expect = substitute(step.expect ?? {}, vars);
  const badExpect = Object.keys(expect).filter((k) => !EXPECT_KEYS.has(k));
  if (badExpect.length) throw new Error(`unknown expect keys ${badExpect.join(", ")}`);
  const args = substitute(step.args ?? {}, vars);
  let clients = env.clients;
  if (step.client) {
    const unknownClient = Object.keys(step.client).filter((k) => k !== "api_key");
    if (unknownClient.length) throw new Error(`unknown client settings ${unknownClient.join(", ")}`);
    clients = env.makeClients(step.client.api_key);
  }
  const label = `${step.op} ${JSON.stringify(args).slice(0, 160)}`;
  let out;
  try {
    out = await runOp(step.op, args, clients);
  } catch (err) {
    if (expect.ok !== false || !(err instanceof EZThrottleError)) {
      throw new Error(`${label}: unexpected error: ${err?.stack ?? err}`);
    }
    if (expect.error) {
      const actual = { status: err.status, code: err.code, field: err.field };
      const want = { ...expect.error };
      const mismatch = subsetMismatch(want, actual, "error");
      if (mismatch) throw new Error(`${label}: ${mismatch} (${err.message})`);
    }
    if (expect.json !== undefined || expect.status !== undefined) {
      throw new Error(`${label}: expects json/status but the call failed as expected`);
    }
    return;
  }
  if (expect.ok === false) {
    throw new Error(`${label}: expected an error, got ${JSON.stringify(out.result).slice(0, 300)}`);
  }
  if (expect.status !== undefined && out.status !== expect.status) {
    throw new Error(`${label}: status ${out.status}, expected ${expect.status}`);
  }
  if (expect.json !== undefined) {
    const subject = step.op === "raw" ? out.json : out.result;
    const mismatch = subsetMismatch(expect.json, subject);
    if (mismatch) throw new Error(`${label}: ${mismatch}\nresult: ${JSON.stringify(subject).slice(0, 600)}`);
  }
  for (const [name, path] of Object.entries(step.save ?? {})) {
    vars[name] = at(out.result, path);
  }
}

// ------------------------------------------------------------------------------ the suite

describe("shared cases", () => {
  let env;
  before(async () => {
    const all = await startAll();
    const makeClients = (apiKey) => ({
      native: new EZThrottle({ apiKey, baseUrl: all.server.url }),
      hosted: new EZThrottle({ apiKey, tracktagsUrl: all.server.url }),
    });
    env = { all, makeClients, clients: makeClients(all.server.key) };
  });
  after(() => env?.all.stop());

  assert.ok(cases.length > 0, "cases.json has no cases");
  for (const c of cases) {
    test(c.name, async () => {
      const vars = { target: env.all.target.url, run: token() };
      for (const [i, step] of c.steps.entries()) {
        try {
          await runStep(step, vars, env);
        } catch (err) {
          err.message = `step ${i + 1}: ${err.message}`;
          throw err;
        }
      }
    });
  }
});

describe("verify vectors", () => {
  const tolerance = vectors.default_tolerance_s;
  assert.ok(vectors.vectors.length > 0);
  for (const v of vectors.vectors) {
    test(`${v.fn}: ${v.name}`, () => {
      let r;
      if (v.fn === "verify_webhook_signature") {
        r = verifyWebhookSignature(v.body, v.header, v.secret, v.tolerance ?? tolerance, v.now);
      } else if (v.fn === "try_verify_with_secrets") {
        r = tryVerifyWithSecrets(v.body, v.header, v.primary_secret, v.secondary_secret ?? undefined, v.tolerance ?? tolerance, v.now);
      } else {
        throw new Error(`unknown fn ${v.fn}`);
      }
      assert.equal(r.verified, v.valid, `valid: ${JSON.stringify(r)}`);
      if (v.reason !== undefined) assert.equal(r.reason, v.reason);
      else if (v.reason_prefix !== undefined) assert.ok(r.reason.startsWith(v.reason_prefix), r.reason);
      else throw new Error("vector has neither reason nor reason_prefix");
      assert.equal(r.code, v.code);
    });
  }
});
