#!/usr/bin/env python3
"""B8: how much of a provider's announced limit a lane uses, per header dialect (issue 17).

usage: limits.py --ezt BIN [--quick] [--systems ezt,bullmq] [--dialects ietf,openai,...]
                 [--work DIR] [--out FILE]
       limits.py provider --dialect D --ports P1,P2,P3 --rates R1,R2,R3 --out LOG   (internal)

For each dialect a provider process of our own listens on 127.0.0.1 (one port per rate: 10, 50
and 200 requests/s per key) and keys its limit by request path (/k1, /k2: two keys). It
enforces the limit and announces it the dialect's way:

  ietf        fixed 1 s windows; RateLimit-Policy: "default";q=L;w=1 and RateLimit: r, t
  openai      per-second token bucket (L/s, capacity L: OpenAI enforces minutes in slices);
              x-ratelimit-limit-requests: 60L (per minute), -remaining-requests, -reset-requests
  anthropic   same bucket; anthropic-ratelimit-requests-limit: 60L, -remaining, -reset (RFC 3339),
              retry-after on 429
  github      same bucket (a secondary limit); x-ratelimit-limit: 3600L per hour, -remaining,
              -used, -reset (epoch s), -resource: core; retry-after on 429
  shopify     leaky bucket of 20L draining L/s; X-Shopify-Shop-Api-Call-Limit: used/20L,
              Retry-After: 2.0 on 429
  xratelimit  fixed 1 s windows; X-RateLimit-Limit: L, -Remaining, -Reset (epoch s)
  silent      fixed 1 s windows; a bare 429, no headers (EZThrottle with adaptive pacing off)
  adaptive    the silent provider, EZThrottle with adaptive pacing on (lanes.adaptive, ceiling 400)

EZThrottle runs with today's defaults (2/s, burst 1, 2 in flight per lane, retry on 429) and one
lane per key (Authorization: Bearer ...); every lane is backlogged with L x (D + 5) jobs at
once (Shopify: plus its bucket). BullMQ (bench/peers/node, private redis) runs the same backlog with its limiter set by
hand to the right number (max L per 1000 ms per queue, one queue per key, concurrency 64): what a
user must otherwise configure. Reported per (system, dialect, rate): calls, 429s per 1,000
calls (all of them, from the first call), and the share of the limit used: successful calls in
[first call + W, first call + D) / ((D - W) x L); W = 5 s (quick 2 s), D = 30 s (quick 10 s);
adaptive: D = 60 s (quick 30 s), W = D - 10 s ("within 60 s").

Writes bench/results/<UTC date>-<git short sha>-b8[-quick].json and .md. All traffic stays on
127.0.0.1. Run it on a quiet machine: it measures rates.
"""
import argparse, asyncio, json, math, os, shutil, signal, socket, subprocess, sys, tempfile, time
import urllib.request
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
PEERS = BENCH / "peers"
RATES = [10, 50, 200]
KEYS = ["k1", "k2"]
PORTS = [18501, 18502, 18503]
EZT_PORT, REDIS_PORT = 18509, 18491
DIALECTS = ["ietf", "openai", "anthropic", "github", "shopify", "xratelimit", "silent", "adaptive"]


def log(*a):
    print(f"== {time.strftime('%H:%M:%S', time.gmtime())} b8:", *a, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# the provider (own process, asyncio, HTTP/1.1 keep-alive)

class Limits:
    """One key's limit state; `call(now)` -> (status, headers)."""

    def __init__(self, dialect, rate):
        self.d, self.L = dialect, rate
        self.window, self.count = None, 0  # fixed windows
        self.tokens, self.at = float(rate), None  # token bucket
        self.level = 0.0  # leaky bucket
        self.used_total, self.start = 0, None

    def fixed(self, now):
        w = int(now)
        if w != self.window:
            self.window, self.count = w, 0
        ok = self.count < self.L
        if ok:
            self.count += 1
        return ok, w + 1 - now

    def bucket(self, now):
        if self.at is not None:
            self.tokens = min(float(self.L), self.tokens + (now - self.at) * self.L)
        self.at = now
        ok = self.tokens >= 1.0
        if ok:
            self.tokens -= 1.0
        return ok

    def call(self, now):
        d, L = self.d, self.L
        if self.start is None:
            self.start = int(now)
        if d in ("ietf", "xratelimit", "silent", "adaptive"):
            ok, left = self.fixed(now)
            rem = max(0, L - self.count)
            if d == "ietf":
                h = [("RateLimit-Policy", f'"default";q={L};w=1'),
                     ("RateLimit", f'"default";r={rem if ok else 0};t={max(1, math.ceil(left))}')]
            elif d == "xratelimit":
                h = [("X-RateLimit-Limit", str(L)), ("X-RateLimit-Remaining", str(rem if ok else 0)),
                     ("X-RateLimit-Reset", str(self.window + 1))]
            else:
                h = []
            return (200 if ok else 429), h
        if d in ("openai", "anthropic", "github"):
            ok = self.bucket(now)
            if ok:
                self.used_total += 1
            full_in = (L - self.tokens) / L
            if d == "openai":
                h = [("x-ratelimit-limit-requests", str(60 * L)),
                     ("x-ratelimit-remaining-requests", str(int(self.tokens * 60))),
                     ("x-ratelimit-reset-requests", f"{full_in:.3f}s"),
                     ("x-ratelimit-limit-tokens", "150000"), ("x-ratelimit-remaining-tokens", "149000"),
                     ("x-ratelimit-reset-tokens", "6m0s")]
            elif d == "anthropic":
                at = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now + full_in)) + \
                    f".{int(((now + full_in) % 1) * 1000):03d}Z"
                h = [("anthropic-ratelimit-requests-limit", str(60 * L)),
                     ("anthropic-ratelimit-requests-remaining", str(int(self.tokens * 60))),
                     ("anthropic-ratelimit-requests-reset", at)]
                if not ok:
                    h.append(("retry-after", "1"))
            else:
                h = [("x-ratelimit-limit", str(3600 * L)),
                     ("x-ratelimit-remaining", str(max(0, 3600 * L - self.used_total))),
                     ("x-ratelimit-used", str(self.used_total)),
                     ("x-ratelimit-reset", str(self.start + 3600)), ("x-ratelimit-resource", "core")]
                if not ok:
                    h.append(("retry-after", "1"))
            return (200 if ok else 429), h
        if d == "shopify":
            size = 20 * L
            if self.at is not None:
                self.level = max(0.0, self.level - (now - self.at) * L)
            self.at = now
            ok = self.level + 1 <= size
            if ok:
                self.level += 1
            h = [("X-Shopify-Shop-Api-Call-Limit", f"{math.ceil(self.level)}/{size}")]
            if not ok:
                h.append(("Retry-After", "2.0"))
            return (200 if ok else 429), h
        raise ValueError(d)


def provider(args):
    rates = dict(zip(map(int, args.ports.split(",")), map(int, args.rates.split(","))))
    state, rows = {}, []

    async def handle(reader, writer, port):
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                path = lines[0].split(" ")[1]
                n = 0
                for ln in lines[1:]:
                    if ln.lower().startswith("content-length:"):
                        n = int(ln.split(":", 1)[1])
                if n:
                    await reader.readexactly(n)
                now = time.time()
                key = (port, path)
                if key not in state:
                    state[key] = Limits(args.dialect, rates[port])
                status, hs = state[key].call(now)
                rows.append((time.monotonic_ns(), port, path, status))
                body = b"{}"
                out = [f"HTTP/1.1 {status} {'OK' if status == 200 else 'Too Many Requests'}",
                       "Content-Type: application/json", f"Content-Length: {len(body)}"]
                out += [f"{k}: {v}" for k, v in hs]
                writer.write(("\r\n".join(out) + "\r\n\r\n").encode() + body)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def main():
        servers = [await asyncio.start_server(lambda r, w, p=p: handle(r, w, p), "127.0.0.1", p) for p in rates]
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        print("ready", flush=True)
        await stop.wait()
        for s in servers:
            s.close()
        with open(args.out, "w") as f:
            for r in rows:
                f.write("\t".join(map(str, r)) + "\n")

    asyncio.run(main())


# ---------------------------------------------------------------------------------------------
# orchestration

def wait_port(port, timeout=60):
    t = time.time() + timeout
    while time.time() < t:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


class Provider:
    def __init__(self, work, dialect):
        self.out = work / f"provider-{dialect}.tsv"
        self.p = subprocess.Popen([sys.executable, __file__, "provider", "--dialect", dialect,
                                   "--ports", ",".join(map(str, PORTS)), "--rates", ",".join(map(str, RATES)),
                                   "--out", str(self.out)], stdout=subprocess.PIPE, text=True)
        assert self.p.stdout.readline().strip() == "ready"

    def stop(self):
        self.p.send_signal(signal.SIGTERM)
        self.p.wait(60)
        rows = []
        for ln in self.out.read_text().splitlines():
            t, port, path, status = ln.split("\t")
            rows.append((int(t), int(port), path, int(status)))
        return rows


def analyse(rows, D, W):
    """Per (rate, key): calls, 429s, share of the limit used in [first + W, first + D)."""
    out = []
    for port, L in zip(PORTS, RATES):
        for k in KEYS:
            mine = [r for r in rows if r[1] == port and r[2] == f"/{k}"]
            if not mine:
                out.append({"rate": L, "key": k, "calls": 0, "throttled": 0, "share": 0.0})
                continue
            t0 = min(r[0] for r in mine)
            lo, hi = t0 + W * 1e9, t0 + D * 1e9
            ok = sum(1 for r in mine if r[3] == 200 and lo <= r[0] < hi)
            thr = sum(1 for r in mine if r[3] == 429)
            out.append({"rate": L, "key": k, "calls": len(mine), "throttled": thr,
                        "per_1000": round(1000 * thr / len(mine), 2), "share": round(ok / ((D - W) * L), 3)})
    return out


def backlog(dialect, L, D):
    """Jobs per lane: enough for D s at the limit plus 5 s, plus Shopify's bucket (20 L), which
    a client may empty at once."""
    return L * (D + 5) + (20 * L if dialect == "shopify" else 0)


def post_json(url, key, body):
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as r:
        return r.status, json.loads(r.read())


def run_ezt(a, work, dialect, D):
    data = work / f"ezt-{dialect}"
    shutil.rmtree(data, ignore_errors=True)
    data.mkdir(parents=True)
    cfg = data / "config.toml"
    extra = '[lanes.adaptive]\nhosts = ["127.0.0.1"]\nceiling = 400.0\n' if dialect == "adaptive" else ""
    cfg.write_text('[lanes.default]\nrate = 2.0\nburst = 1\nmax_in_flight = 2\n' + extra)
    logf = open(work / f"ezt-{dialect}.log", "w")
    p = subprocess.Popen([a.ezt, "serve", "--listen", f"127.0.0.1:{EZT_PORT}", "--data-dir", str(data),
                          "--allow-cidr", "127.0.0.1/32", "--config", str(cfg)],
                         stdout=subprocess.PIPE, stderr=logf, text=True)
    key = p.stdout.readline().strip()
    wait_port(EZT_PORT)
    prov = Provider(work, "silent" if dialect == "adaptive" else dialect)
    try:
        base = f"http://127.0.0.1:{EZT_PORT}/api/v1/jobs/batch"
        jobs = []
        for port, L in zip(PORTS, RATES):
            for k in KEYS:
                for i in range(backlog(dialect, L, D)):
                    jobs.append({"url": f"http://127.0.0.1:{port}/{k}", "method": "POST",
                                 "headers": {"Authorization": f"Bearer {dialect}-{L}-{k}"},
                                 "body": json.dumps({"i": i}), "idempotent_key": f"{dialect}-{L}-{k}-{i}"})
        # Interleave the lanes so every lane's first job is admitted in the first batch.
        jobs.sort(key=lambda j: int(j["idempotent_key"].rsplit("-", 1)[1]))
        t_sub = time.time()
        for i in range(0, len(jobs), 1000):
            s, _ = post_json(base, key, {"jobs": jobs[i:i + 1000]})
            assert s == 202, s
        log(f"ezt {dialect}: {len(jobs)} jobs admitted in {time.time() - t_sub:.1f} s; running {D} s")
        time.sleep(D + 1)
        lanes = None
        try:
            req = urllib.request.Request(f"http://127.0.0.1:{EZT_PORT}/api/v1/lanes",
                                         headers={"Authorization": f"Bearer {key}"})
            with urllib.request.urlopen(req, timeout=30) as r:
                lanes = json.loads(r.read())["lanes"]
        except Exception as e:  # the view is informative only
            log("lanes view failed:", e)
    finally:
        rows = prov.stop()
        p.terminate()
        p.wait(30)
    learned = [{"lane": l["lane"], "rate": l["rate"], "burst": l["burst"], "max_in_flight": l["max_in_flight"],
                "source": l["sources"]["rate"]} for l in (lanes or [])]
    return rows, learned


class Redis:
    def __init__(self, work):
        self.dir = work / "redis"

    def start(self):
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir.mkdir(parents=True)
        self.p = subprocess.Popen(["redis-server", "--port", str(REDIS_PORT), "--bind", "127.0.0.1", "--dir", str(self.dir),
                                   "--appendonly", "yes", "--appendfsync", "always", "--save", "",
                                   "--logfile", str(self.dir / "redis.log")], stdout=subprocess.DEVNULL)
        wait_port(REDIS_PORT)

    def stop(self):
        self.p.terminate()
        self.p.wait(30)


def node(*args, **kw):
    return subprocess.run(["node", str(PEERS / "node" / "peer.js"), "bullmq", *args], capture_output=True,
                          text=True, check=True, env={**os.environ, "REDIS_PORT": str(REDIS_PORT)}, **kw)


def run_bullmq(work, dialect, D):
    prov = Provider(work, dialect)
    queues = [f"b8_{dialect}_{L}_{k}" for L in RATES for k in KEYS]
    limits = [str(L) for L in RATES for _ in KEYS]
    try:
        node("setup", "--queues", ",".join(queues))
        for (port, L) in zip(PORTS, RATES):
            for k in KEYS:
                node("bulk", "--n", str(backlog(dialect, L, D)), "--batch", "1000", "--queue", f"b8_{dialect}_{L}_{k}",
                     "--url", f"http://127.0.0.1:{port}/{k}", "--prefix", f"{dialect}{L}{k}")
        w = subprocess.Popen(["node", str(PEERS / "node" / "peer.js"), "bullmq", "work", "--queues", ",".join(queues),
                              "--concurrency", "64", "--limits", ",".join(limits)], stdout=subprocess.PIPE, text=True,
                             env={**os.environ, "REDIS_PORT": str(REDIS_PORT)})
        assert json.loads(w.stdout.readline()).get("ready")
        log(f"bullmq {dialect}: running {D} s")
        time.sleep(D + 1)
        w.send_signal(signal.SIGTERM)
        w.wait(60)
    finally:
        rows = prov.stop()
    return rows


def table(results):
    lines = ["| system | dialect | rate/s | calls | 429s per 1,000 | share of the limit used |", "|---|---|---|---|---|---|"]
    for r in results:
        for row in r["per_lane"]:
            lines.append(f"| {r['system']} | {r['dialect']} | {row['rate']} ({row['key']}) | {row['calls']} | "
                         f"{row.get('per_1000', 0)} | {row['share']} |")
    return "\n".join(lines)


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "provider":
        ap = argparse.ArgumentParser()
        ap.add_argument("cmd")
        ap.add_argument("--dialect", required=True)
        ap.add_argument("--ports", required=True)
        ap.add_argument("--rates", required=True)
        ap.add_argument("--out", required=True)
        return provider(ap.parse_args())
    ap = argparse.ArgumentParser()
    ap.add_argument("--ezt", required=True)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--systems", default="ezt,bullmq")
    ap.add_argument("--dialects", default=",".join(DIALECTS))
    ap.add_argument("--rates", default=",".join(map(str, RATES)),
                    help="three per-key rates (a smoke run of this script may use small ones)")
    ap.add_argument("--work")
    ap.add_argument("--out")
    a = ap.parse_args()
    RATES[:] = [int(x) for x in a.rates.split(",")]
    assert len(RATES) == len(PORTS), "three rates"
    work = Path(a.work or tempfile.mkdtemp(prefix="ezt-b8-"))
    work.mkdir(parents=True, exist_ok=True)
    D, W = (10, 2) if a.quick else (30, 5)
    results = []
    systems = a.systems.split(",")
    redis = None
    try:
        if "bullmq" in systems:
            if not shutil.which("redis-server") or not (PEERS / "node" / "node_modules" / "bullmq").is_dir():
                sys.exit("BullMQ needs redis-server and bench/peers/node/node_modules: run bench/peers/setup.sh")
            redis = Redis(work)
            redis.start()
        for dialect in a.dialects.split(","):
            d, w = ((30, 20) if a.quick else (60, 50)) if dialect == "adaptive" else (D, W)
            if "ezt" in systems:
                rows, learned = run_ezt(a, work, dialect, d)
                results.append({"system": "ezthrottle", "dialect": dialect, "duration_s": d, "warmup_s": w,
                                "per_lane": analyse(rows, d, w), "lanes": learned})
                log(json.dumps(results[-1]["per_lane"]))
            if "bullmq" in systems and dialect != "adaptive":
                rows = run_bullmq(work, dialect, D)
                results.append({"system": "bullmq (limiter set by hand)", "dialect": dialect, "duration_s": D,
                                "warmup_s": W, "per_lane": analyse(rows, D, W)})
                log(json.dumps(results[-1]["per_lane"]))
    finally:
        if redis:
            redis.stop()
        if not os.environ.get("KEEP_WORK"):
            shutil.rmtree(work, ignore_errors=True)
    sha = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                         text=True).stdout.strip()
    out = Path(a.out) if a.out else BENCH / "results" / \
        f"{time.strftime('%Y-%m-%d', time.gmtime())}-{sha}-b8{'-quick' if a.quick else ''}.json"
    doc = {"scenario": "B8 provider limits", "quick": a.quick, "git": sha, "rates": RATES, "keys": KEYS,
           "goals": {"announcing dialects": "share >= 0.9 with <= 10 per 1,000 429s",
                     "adaptive": "share >= 0.8 within 60 s with <= 50 per 1,000 429s",
                     "silent, adaptive off": "no more 429s than before (none: the 2/s default)"},
           "results": results}
    out.write_text(json.dumps(doc, indent=1) + "\n")
    out.with_suffix(".md").write_text(f"# B8 provider limits ({sha}{', quick' if a.quick else ''})\n\n" + table(results) + "\n")
    print(table(results))
    log("wrote", out)


if __name__ == "__main__":
    main()
