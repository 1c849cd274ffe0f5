#!/usr/bin/env node
// Peer side of the side-by-side benchmark: BullMQ (+ Redis) and pg-boss (+ PostgreSQL).
//
//   node peer.js <bullmq|pgboss> <cmd> [--flag value]...
//
// cmds (each prints one JSON object on stdout, diagnostics on stderr):
//   setup   --queues q1,q2            empty / create the queues
//   admit   --n --c --queue --url --prefix [--acked FILE]   single enqueues from C concurrent loops;
//           ack latency per call; SIGTERM stops it early (crash trials) and writes the acked keys
//   bulk    --n --batch --c --queue --url --prefix [--mix fair]   addBulk / insert in batches
//   steady  --rate --duration --queue --url --prefix [--tenants t1,t2]   open-loop single enqueues
//   work    --queues q1,q2 --concurrency 100 [--limits 10,100,1000]   workers until SIGTERM; prints
//           {"ready":true} once consuming. Every job makes a real HTTP POST (~300 B JSON) to its
//           url with headers Idempotency-Key (job key) and X-Tenant.
//
// Job keys are "<prefix>.<i>.<enqueue CLOCK_MONOTONIC ns>": the analysis reads the enqueue time
// from the key and the arrival time from the shared target's log (process.hrtime is
// CLOCK_MONOTONIC on Linux, like the target's clock).
'use strict';
const http = require('http');
const fs = require('fs');

const system = process.argv[2];
const cmd = process.argv[3];
const args = {};
for (let i = 4; i < process.argv.length; i += 2) args[process.argv[i].replace(/^--/, '')] = process.argv[i + 1];
const num = (k, d) => (args[k] === undefined ? d : Number(args[k]));
const REDIS_PORT = Number(process.env.REDIS_PORT || 18491);
const PG_URL = process.env.PG_URL || 'postgres://postgres@127.0.0.1:18492/bench';

const CRASH = process.env.BENCH_CRASH === '1'; // B7: shorter stall/expiry timeouts so recovery fits the trial
// Store crashes (B7) surface as errors from idle pool clients; keep going like a long-lived service would.
process.on('uncaughtException', (e) => console.error('uncaught:', e.message));
process.on('unhandledRejection', (e) => console.error('unhandled rejection:', e && e.message));

const monoNs = () => process.hrtime.bigint();
function payload(i) {
  let s = `{"order_id":${i},"customer":"cust-${String(i % 997331).padStart(6, '0')}","currency":"EUR","amount_cents":${(i * 7919) % 100000},"items":[{"sku":"A-1","qty":2},{"sku":"B-7","qty":1}],"note":"`;
  while (s.length + 2 < 300) s += 'x';
  return s + '"}';
}
function pct(sorted, p) {
  if (!sorted.length) return 0;
  const i = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(Math.max(i - 1, 0), sorted.length - 1)];
}
function latMs(ns) {
  const v = Float64Array.from(ns).sort();
  const ms = (x) => Math.round(x / 1e3) / 1e3;
  const mean = v.length ? v.reduce((a, b) => a + b, 0) / v.length : 0;
  return { n: v.length, p50_ms: ms(pct(v, 50)), p95_ms: ms(pct(v, 95)), p99_ms: ms(pct(v, 99)),
    p999_ms: ms(pct(v, 99.9)), max_ms: ms(v.length ? v[v.length - 1] : 0), mean_ms: ms(mean) };
}
const tenantOf = (i, mix, list, def) => {
  if (mix === 'fair') { const r = i % 90; return r < 81 ? 't0' : `t${r - 80}`; } // 90% noisy t0, 1/90 each t1..t9
  if (list) return list[i % list.length];
  return def || 't0';
};
const keyOf = (prefix, i) => `${prefix}.${i}.${monoNs()}`;
const jobData = (key, tenant, url, i) => ({ k: key, t: tenant, u: url, b: payload(i) });

// ---- the job handler's HTTP call ---------------------------------------------------------------
const agent = new http.Agent({ keepAlive: true, maxSockets: 256 });
function post(d) {
  return new Promise((resolve, reject) => {
    const u = new URL(d.u);
    const body = Buffer.from(d.b);
    const req = http.request({ host: u.hostname, port: u.port, path: u.pathname, method: 'POST', agent,
      headers: { 'content-type': 'application/json', 'content-length': body.length, 'idempotency-key': d.k, 'x-tenant': d.t } },
    (res) => { res.resume(); res.on('end', () => (res.statusCode < 300 ? resolve() : reject(new Error(`HTTP ${res.statusCode}`)))); });
    req.on('error', reject);
    req.end(body);
  });
}

// ---- backends ----------------------------------------------------------------------------------
async function backend() {
  if (system === 'bullmq') {
    const { Queue, Worker } = require('bullmq');
    const connection = { host: '127.0.0.1', port: REDIS_PORT, maxRetriesPerRequest: null };
    const queues = {};
    const q = (name) => {
      if (!queues[name]) {
        queues[name] = new Queue(name, { connection, defaultJobOptions: { attempts: 4, backoff: { type: 'exponential', delay: 1000 } } });
        queues[name].on('error', (e) => console.error('queue error', e.message));
      }
      return queues[name];
    };
    return {
      async setup(names) { for (const n of names) { await q(n).obliterate({ force: true }); } },
      add: (name, data) => q(name).add('call', data),
      addBulk: (name, datas) => q(name).addBulk(datas.map((data) => ({ name: 'call', data }))),
      async work(names, concurrency, limits) {
        const ws = names.map((n, i) => {
          const opts = { connection, concurrency };
          if (CRASH) Object.assign(opts, { lockDuration: 10000, stalledInterval: 5000 }); // defaults 30 s / 30 s
          if (limits && limits[i]) opts.limiter = { max: limits[i], duration: 1000 };
          const w = new Worker(n, async (job) => post(job.data), opts);
          w.on('error', (e) => console.error('worker error', e.message));
          return w;
        });
        await Promise.all(ws.map((w) => w.waitUntilReady()));
        return async () => { await Promise.all(ws.map((w) => w.close())); };
      },
      async close() { await Promise.all(Object.values(queues).map((x) => x.close())); },
    };
  }
  if (system === 'pgboss') {
    const PgBoss = require('pg-boss');
    const boss = new PgBoss({ connectionString: PG_URL, max: num('pool', 70), schema: 'pgboss', supervise: cmd === 'work', schedule: false, migrate: true,
      ...(CRASH ? { maintenanceIntervalSeconds: 2 } : {}) });
    boss.on('error', (e) => console.error('pg-boss error', e.message));
    await boss.start();
    const created = new Set();
    const ensure = async (name) => { if (!created.has(name)) { await boss.createQueue(name, { name, retryLimit: 3 }); created.add(name); } };
    return {
      async setup(names) { for (const n of names) { await ensure(n); await boss.purgeQueue(n); } },
      async add(name, data) { await ensure(name); const id = await boss.send(name, data, { retryLimit: 3, ...(CRASH ? { expireInSeconds: 10 } : {}) }); if (!id) throw new Error('send returned null'); return id; },
      async addBulk(name, datas) { await ensure(name); return boss.insert(datas.map((data) => ({ name, data, retryLimit: 3 }))); },
      async work(names, concurrency) {
        // pg-boss 10 has no per-worker concurrency: each work() loop fetches batchSize jobs, runs the
        // handler, completes them, then sleeps (pollingInterval - elapsed) unless notified by a send
        // from this process. Concurrency 100 = `loops` loops x batchSize jobs run concurrently.
        const loops = num('loops', 4);
        const batchSize = Math.ceil(num('batch', 250));
        const perLoop = Math.max(1, Math.floor(concurrency / loops));
        for (const n of names) {
          await ensure(n);
          for (let l = 0; l < loops; l++) {
            await boss.work(n, { batchSize, pollingIntervalSeconds: num('poll', 0.5) }, async (jobs) => {
              let idx = 0;
              const lane = async () => { while (idx < jobs.length) { const j = jobs[idx++]; await post(j.data); } };
              await Promise.all(Array.from({ length: Math.min(perLoop, jobs.length) }, lane));
            });
          }
        }
        return async () => { await boss.stop({ graceful: false, wait: true }).catch(() => {}); };
      },
      async close() { await boss.stop({ graceful: false, wait: true }).catch(() => {}); },
    };
  }
  throw new Error(`unknown system ${system}`);
}

// ---- commands ----------------------------------------------------------------------------------
async function main() {
  const b = await backend();
  const queue = args.queue || 'calls';
  const url = args.url;
  const prefix = args.prefix || 'j';
  let stop = false;
  process.on('SIGTERM', () => { stop = true; });
  process.on('SIGINT', () => { stop = true; });
  let out;
  if (cmd === 'setup') {
    await b.setup((args.queues || queue).split(','));
    out = { ok: true };
  } else if (cmd === 'admit') {
    const n = num('n', 1000), c = num('c', 1);
    const lats = []; const acked = []; let next = 0, errors = 0;
    const t0 = monoNs();
    if (args.acked) {
      // crash trials: after SIGTERM, calls still pending 5 s later count as not acknowledged
      process.on('SIGTERM', () => setTimeout(() => {
        fs.writeFileSync(args.acked, acked.join('\n') + '\n');
        process.stdout.write(JSON.stringify({ acked: acked.length, errors, pending_at_exit: true }) + '\n');
        process.exit(0);
      }, 5000));
    }
    await Promise.all(Array.from({ length: c }, async () => {
      while (!stop) {
        const i = next++;
        if (i >= n) break;
        const key = keyOf(prefix, i);
        const s = monoNs();
        try {
          await b.add(queue, jobData(key, 't0', url, i));
          lats.push(Number(monoNs() - s)); acked.push(key);
        } catch (e) { if (errors++ < 3) console.error('add error', e.message); if (args.acked) { if (stop) break; await new Promise((r) => setTimeout(r, 10)); } }
      }
    }));
    const secs = Number(monoNs() - t0) / 1e9;
    if (args.acked) fs.writeFileSync(args.acked, acked.join('\n') + '\n');
    out = { n, concurrency: c, secs: Math.round(secs * 1e3) / 1e3, acked: acked.length, errors, jobs_per_s: Math.round(acked.length / secs), ack: latMs(lats) };
  } else if (cmd === 'bulk') {
    const n = num('n', 10000), batch = num('batch', 1000), c = num('c', 1);
    const tenants = args.tenants ? args.tenants.split(',') : null;
    let next = 0, ok = 0; const lats = [];
    const t0 = monoNs();
    await Promise.all(Array.from({ length: c }, async () => {
      for (;;) {
        const start = next; next += batch;
        if (start >= n) break;
        const datas = [];
        for (let i = start; i < Math.min(start + batch, n); i++) datas.push(jobData(keyOf(prefix, i), tenantOf(i, args.mix, tenants, args.tenant), url, i));
        const s = monoNs();
        await b.addBulk(queue, datas);
        lats.push(Number(monoNs() - s)); ok += datas.length;
      }
    }));
    const secs = Number(monoNs() - t0) / 1e9;
    out = { n, batch, concurrency: c, secs: Math.round(secs * 1e3) / 1e3, accepted: ok, jobs_per_s: Math.round(ok / secs), batch_latency: latMs(lats) };
  } else if (cmd === 'steady') {
    // open loop: job i is due at t0 + i/rate; at most `inflight` enqueues outstanding (then it
    // falls behind, which shows as achieved < offered).
    const rate = num('rate', 1000), dur = num('duration', 10), cap = num('inflight', 256);
    const tenants = args.tenants ? args.tenants.split(',') : null;
    const n = Math.round(rate * dur);
    const lats = []; let outstanding = 0, errors = 0, sent = 0, acked = 0, late = 0;
    const t0 = monoNs();
    const waiters = [];
    const deadline = t0 + BigInt(Math.round((dur * 1.25 + 1) * 1e9)); // a store that cannot keep up: stop offering
    for (let i = 0; i < n && !stop && monoNs() < deadline; i++) {
      const due = t0 + BigInt(Math.round((i * 1e9) / rate));
      let now = monoNs();
      if (due > now + 1000000n) await new Promise((r) => setTimeout(r, Number(due - now) / 1e6));
      else if (now - due > 50000000n) late++;
      while (outstanding >= cap) await new Promise((r) => waiters.push(r));
      const key = keyOf(prefix, i);
      const s = monoNs();
      outstanding++; sent++;
      b.add(queue, jobData(key, tenantOf(i, null, tenants, args.tenant), url, i))
        .then(() => { lats.push(Number(monoNs() - s)); acked++; })
        .catch((e) => { if (errors++ < 3) console.error('add error', e.message); })
        .finally(() => { outstanding--; const w = waiters.shift(); if (w) w(); });
      if ((i & 63) === 63) await new Promise((r) => setImmediate(r));
    }
    while (outstanding > 0) await new Promise((r) => waiters.push(r));
    const secs = Number(monoNs() - t0) / 1e9;
    out = { offered_rate: rate, duration_s: dur, sent, acked, errors, late_over_50ms: late, secs: Math.round(secs * 1e3) / 1e3,
      achieved_rate: Math.round(acked / secs), ack: latMs(lats) };
  } else if (cmd === 'work') {
    const names = (args.queues || queue).split(',');
    const limits = args.limits ? args.limits.split(',').map(Number) : null;
    const close = await b.work(names, num('concurrency', 100), limits);
    process.stdout.write(JSON.stringify({ ready: true }) + '\n');
    while (!stop) await new Promise((r) => setTimeout(r, 100));
    await close();
    out = { stopped: true };
  } else {
    throw new Error(`unknown cmd ${cmd}`);
  }
  await b.close();
  process.stdout.write(JSON.stringify(out) + '\n');
  process.exit(0);
}
main().catch((e) => { console.error(e); process.exit(1); });
