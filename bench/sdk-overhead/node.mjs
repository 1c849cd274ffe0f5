#!/usr/bin/env node
// Submit overhead of the Node SDK: N submits through `client.submit()` and N through a bare
// `fetch` of the same request, interleaved (SDK, raw, SDK, …) against one server in the same run,
// after a warm-up. Jobs (to a loopback URL: no DNS lookup) are delayed an hour (`retry_at`) and keyed
// uniquely, so the server stores
// them without running them and neither side deduplicates. Prints one JSON object.
//
//   node bench/sdk-overhead/node.mjs [N]          # default 1000
//
// The server: EZTHROTTLE_URL + EZTHROTTLE_API_KEY if set, else it starts
// $EZTHROTTLE_BIN (default target/debug/ezthrottle) on a temporary data dir and stops it after.
// Needs the SDK's dist/ (committed in sdks/node).
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const repo = resolve(dirname(fileURLToPath(import.meta.url)), "..", "..");
const { EZThrottle, VERSION } = await import(pathToFileURL(join(repo, "sdks/node/dist/esm/index.js")).href);
const N = Number(process.argv[2] ?? 1000);
const WARMUP = 50;

async function startServer() {
  const bin = resolve(process.env.EZTHROTTLE_BIN ?? join(repo, "target/debug/ezthrottle"));
  const dataDir = mkdtempSync(join(tmpdir(), "ezt-bench-node-"));
  const proc = spawn(bin, ["serve", "--listen", "127.0.0.1:0", "--allow-cidr", "127.0.0.1/32", "--data-dir", dataDir], {
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, NO_COLOR: "1" },
  });
  let out = "";
  let log = "";
  const info = await new Promise((res, rej) => {
    let url = null;
    const check = () => url && out.includes("\n") && res({ url, key: out.trim().split("\n")[0] });
    proc.stdout.on("data", (d) => ((out += d), check()));
    proc.stderr.on("data", (d) => {
      log += d;
      const m = /listening on (http:\/\/[0-9.]+:[0-9]+)/.exec(log);
      if (m && !url) ((url = m[1]), check());
    });
    proc.once("exit", (c) => rej(new Error(`server exited ${c}: ${log}`)));
  });
  return {
    ...info,
    binary: bin,
    stop: async () => {
      proc.removeAllListeners("exit");
      const exited = new Promise((r) => proc.once("exit", r));
      proc.kill("SIGTERM");
      await exited;
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

function stats(samples) {
  const s = [...samples].sort((a, b) => a - b);
  const q = (p) => s[Math.min(s.length - 1, Math.ceil(p * s.length) - 1)];
  const r = (x) => Math.round(x * 1000) / 1000;
  return { n: s.length, median_ms: r(q(0.5)), p99_ms: r(q(0.99)), mean_ms: r(s.reduce((a, b) => a + b, 0) / s.length) };
}

const server = process.env.EZTHROTTLE_URL && process.env.EZTHROTTLE_API_KEY
  ? { url: process.env.EZTHROTTLE_URL.replace(/\/+$/, ""), key: process.env.EZTHROTTLE_API_KEY, binary: null, stop: async () => {} }
  : await startServer();
try {
  const client = new EZThrottle({ apiKey: server.key, baseUrl: server.url });
  const run = Math.random().toString(16).slice(2, 10);
  const retryAt = Date.now() + 3_600_000;
  const spec = (side, i) => ({
    url: `http://127.0.0.1:9/submit?side=${side}&i=${i}&run=${run}`,
    method: "POST",
    body: '{"amount": 1000}',
    retry_at: retryAt,
    idempotent_key: `${run}-${side}-${i}`,
  });
  const viaSdk = async (i) => {
    const t = performance.now();
    const a = await client.submit(spec("sdk", i));
    const dt = performance.now() - t;
    if (!a.job_id) throw new Error("no job id");
    return dt;
  };
  const viaFetch = async (i) => {
    const t = performance.now();
    const res = await fetch(`${server.url}/api/v1/jobs`, {
      method: "POST",
      headers: { Authorization: `Bearer ${server.key}`, "Content-Type": "application/json" },
      body: JSON.stringify(spec("raw", i)),
    });
    const a = await res.json();
    const dt = performance.now() - t;
    if (res.status !== 202 || !a.job_id) throw new Error(`raw submit: ${res.status}`);
    return dt;
  };
  for (let i = 0; i < WARMUP; i++) {
    await viaSdk(-1 - i);
    await viaFetch(-1 - i);
  }
  const sdk = [];
  const raw = [];
  for (let i = 0; i < N; i++) {
    sdk.push(await viaSdk(i));
    raw.push(await viaFetch(i));
  }
  const s = stats(sdk);
  const r = stats(raw);
  console.log(JSON.stringify({
    bench: "sdk-overhead",
    sdk: "node",
    sdk_version: VERSION,
    node: process.version,
    server_binary: server.binary,
    submits_per_side: N,
    warmup_per_side: WARMUP,
    sdk_submit: s,
    raw_fetch_submit: r,
    overhead_median_ms: Math.round((s.median_ms - r.median_ms) * 1000) / 1000,
    overhead_p99_ms: Math.round((s.p99_ms - r.p99_ms) * 1000) / 1000,
  }, null, 2));
} finally {
  await server.stop();
}
