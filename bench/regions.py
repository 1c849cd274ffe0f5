#!/usr/bin/env python3
"""Regions benchmarks (issue 15): three EZThrottle nodes of regions r1/r2/r3 on one PostgreSQL,
side by side in one run.

    bench/regions.py [--bin target/release/ezthrottle] [--quick] [--only a,b,c]
                     [--n-torrent 2000] [--n-cancel 300] [--n-tail 1000] [--n-handoff 1000]
                     [--concurrency 16] [--keep]

Starts everything it uses and stops it again: one private PostgreSQL 15 (bench/cluster.py's and
bench/sides.py's helpers: initdb under target/, fsync=on, synchronous_commit=on), the nodes n2/n3/n4
of regions r1/r2/r3 on 127.0.0.2-4 (each sending from its own address, one cluster secret), and
targets of ours (`regions.py target`, asyncio, HTTP/1.1 keep-alive) that add a delay by source
address and log, per request, its arrival, its answer and the moment its connection closed
before the answer (a cancelled leg), on CLOCK_MONOTONIC. Each target's port is chosen so that
its lane is placed on n2 (r1) (rendezvous, as the nodes compute it), and every call goes to n2:
the lane's owner, so no measurement includes a forward to the owner.

a. TORRENT vs a direct call to the same target, interleaved, from one client (Python
   http.client, one keep-alive connection to the target and one to n2): TORRENT with
   `regions: ["r1"]` (the call made by n2 itself); added latency p50/p99 (goal: <= 1 ms p99).
   Also TORRENT over r1,r2,r3 (all fast). Loser cancellation: TORRENT over r1,r2,r3 with r1
   answering after 20 ms (so every leg reaches the target first) and r2 and r3 after 300 ms:
   from the winner's answer (at the target) to the moment each slow leg's connection was
   closed (at the target), p50/p99.
b. Tail latency when one region (r2) adds a random 50-500 ms: queued GET jobs submitted with
   `?wait=30s` (submit -> final), `--concurrency` clients: a single-region job in r2, one in r1,
   a raced job (`regions: [r2, r1, r3]`, `execution_mode: race`, r2 first: its legs leave
   together) and the same as a POST (not idempotent: it hedges, the next leg after the lane's
   p95 in r2) p50/p99/p999. The same through TORRENT (r2 alone vs r2,r1,r3).
   `raced_legs_per_job` / `hedged_legs_per_job` (from the target's log) count the legs sent.
   The nodes run with `--hedge-budget-percent` (default here 300: every raced job may race all
   three regions; the product's default, 20 %, lets about one job in five race at this load).
c. Hand-off overhead: a queued job whose only region is r2 (n2 hands the call to n3) vs one
   in r1 (n2 calls itself), interleaved, one at a time: submit -> arrival at the target
   p50/p99 and the difference.

Writes bench/results/<UTC date>-<sha>-regions[-quick][-onlyX].json and prints a markdown table.
All traffic stays on loopback; the machine is shared (the load average is recorded per phase).
"""
from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))
import cluster  # noqa: E402  (nodes on one PostgreSQL)
import sides  # noqa: E402  (PostgreSQL, percentiles, /proc)

REGIONS = ["r1", "r2", "r3"]
NODE_IDS = ["n2", "n3", "n4"]
IPS = cluster.IPS
PAYLOAD = "x" * 280
PORT_RANGE = range(18700, 19000)


def log(*a: object) -> None:
    print(f"== {time.strftime('%H:%M:%S', time.gmtime())} regions:", *a, file=sys.stderr, flush=True)


def mono_ns() -> int:
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC)


# ---------------------------------------------------------------------------------------------
# the target: `regions.py target --port P [--delay-from IP=LO[-HI] ...]`

class TargetProto(asyncio.Protocol):
    """Minimal HTTP/1.1 server: one request at a time per connection, keep-alive."""

    def __init__(self, st: dict):
        self.st, self.buf, self.tr, self.pending = st, b"", None, None

    def connection_made(self, tr):  # type: ignore[override]
        self.tr = tr
        self.ip = tr.get_extra_info("peername")[0]

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while self.pending is None:
            head_end = self.buf.find(b"\r\n\r\n")
            if head_end < 0:
                return
            head = self.buf[:head_end].decode("latin-1").split("\r\n")
            headers = {}
            for line in head[1:]:
                k, _, v = line.partition(":")
                headers[k.strip().lower()] = v.strip()
            n = int(headers.get("content-length", "0") or 0)
            if len(self.buf) < head_end + 4 + n:
                return
            self.buf = self.buf[head_end + 4 + n:]
            method, path = head[0].split(" ")[:2]
            self.request(method, path, headers)

    def request(self, method: str, path: str, headers: dict) -> None:
        st = self.st
        if path.startswith("/_dump"):
            body = json.dumps(st["log"]).encode()
            if "reset=1" in path:
                st["log"] = []
            self.answer(body, "application/json")
            return
        entry = [mono_ns(), self.ip, path, headers.get("idempotency-key"), None, None]
        st["log"].append(entry)
        lo_hi = st["delays"].get(self.ip)
        delay = random.uniform(*lo_hi) / 1000 if lo_hi else 0.0
        if delay <= 0:
            self.answer(b"ok", "text/plain")
            entry[4] = mono_ns()
            return
        loop = asyncio.get_running_loop()

        def later() -> None:
            self.pending = None
            self.answer(b"ok", "text/plain")
            entry[4] = mono_ns()
            self.data_received(b"")

        self.pending = (entry, loop.call_later(delay, later))

    def answer(self, body: bytes, ctype: str) -> None:
        assert self.tr is not None
        self.tr.write(b"HTTP/1.1 200 OK\r\ncontent-type: " + ctype.encode() + b"\r\ncontent-length: "
                      + str(len(body)).encode() + b"\r\n\r\n" + body)

    def connection_lost(self, exc) -> None:  # type: ignore[override]
        if self.pending is not None:
            entry, handle = self.pending
            handle.cancel()
            entry[5] = mono_ns()  # the caller went away before the answer: a cut leg
            self.pending = None


def serve_target(port: int, delay_from: list[str]) -> None:
    delays = {}
    for d in delay_from:
        ip, _, ms = d.partition("=")
        lo, _, hi = ms.partition("-")
        delays[ip] = (float(lo), float(hi or lo))
    st = {"log": [], "delays": delays}

    async def main() -> None:
        loop = asyncio.get_running_loop()
        srv = await loop.create_server(lambda: TargetProto(st), "127.0.0.1", port, reuse_address=True, backlog=1024)
        stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        async with srv:
            await stop.wait()

    asyncio.run(main())


class Target:
    """A `regions.py target` process."""

    def __init__(self, port: int, delay_from: list[str] | None = None):
        self.port = port
        cmd = [sys.executable, str(Path(__file__).resolve()), "target", "--port", str(port)]
        for d in delay_from or []:
            cmd += ["--delay-from", d]
        self.p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        sides.wait_port(port)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def dump(self, reset: bool = True) -> list[list]:
        q = "?reset=1" if reset else ""
        with urllib.request.urlopen(self.url("/_dump" + q), timeout=60) as r:
            return json.loads(r.read())

    def stop(self) -> None:
        self.p.send_signal(signal.SIGTERM)
        try:
            self.p.wait(10)
        except subprocess.TimeoutExpired:
            self.p.kill()


# ---------------------------------------------------------------------------------------------
# placement and clients

M64 = (1 << 64) - 1


def weight(node: str, lane: str) -> int:
    """`ezt_runtime::fence::weight`: FNV-1a of node, 0xff, lane; then SplitMix64's finaliser."""
    h = 0xCBF29CE484222325
    for b in node.encode() + b"\xff" + lane.encode():
        h ^= b
        h = (h * 0x100000001B3) & M64
    h ^= h >> 30
    h = (h * 0xBF58476D1CE4E5B9) & M64
    h ^= h >> 27
    h = (h * 0x94D049BB133111EB) & M64
    return h ^ (h >> 31)


def placed_on(port: int) -> str:
    lane = f"job:127.0.0.1:{port}"
    return max(NODE_IDS, key=lambda n: (weight(n, lane), n))


def ports_on_n2(k: int) -> list[int]:
    out = []
    for p in PORT_RANGE:
        if placed_on(p) != "n2":
            continue
        try:
            socket.create_connection(("127.0.0.1", p), 0.05).close()
            continue  # taken
        except OSError:
            out.append(p)
        if len(out) == k:
            return out
    raise RuntimeError("no free target ports placed on n2")


class Client:
    """One keep-alive HTTP/1.1 connection (reconnects if the server closed it)."""

    def __init__(self, base: str, key: str | None = None):
        host, port = base.removeprefix("http://").split(":")
        self.host, self.port, self.key = host, int(port), key
        self.c = http.client.HTTPConnection(self.host, self.port, timeout=60)

    def post(self, path: str, body: dict | str) -> tuple[int, bytes, int]:
        data = body if isinstance(body, str) else json.dumps(body)
        headers = {"content-type": "application/json"}
        if self.key:
            headers["authorization"] = f"Bearer {self.key}"
        for attempt in (0, 1):
            t0 = mono_ns()
            try:
                self.c.request("POST", path, data, headers)
                r = self.c.getresponse()
                out = r.read()
                return r.status, out, mono_ns() - t0
            except (http.client.HTTPException, OSError):
                self.c.close()
                self.c = http.client.HTTPConnection(self.host, self.port, timeout=60)
                if attempt:
                    raise
        raise AssertionError("unreachable")


def lat(ns: list[int]) -> dict:
    return sides.lat_ms(ns)


def r3(x: float | None) -> float | None:
    return None if x is None else round(x, 3)


def diff(a: dict, b: dict, k: str) -> float | None:
    return None if a.get(k) is None or b.get(k) is None else r3(a[k] - b[k])


class Ctx:
    """What cluster.Nodes needs: pg, work, bin, config."""

    def __init__(self, args: argparse.Namespace, work: Path, ports: dict[str, int]):
        self.args, self.work = args, work
        self.bin = str(Path(args.bin).resolve())
        sides.PG_PORT = cluster.PG_PORT
        self.pg = sides.Postgres(work)
        self.config = work / "regions.toml"
        # The hedge budget (extra race legs per first leg of a lane, percent): every raced job of
        # series b races all three regions only if it allows 200 %; the nodes' default (20 %)
        # lets about one job in five race under this load.
        text = f"[executor]\nhedge_budget_percent = {args.hedge_budget_percent}\n[lanes]\nmax_lanes_per_tenant = 100000\n"
        for p in ports.values():
            text += f'[lanes.hosts."127.0.0.1:{p}"]\nrate = 1000000.0\nburst = 1000\nmax_in_flight = 1000\n'
        self.config.write_text(text)


# ---------------------------------------------------------------------------------------------
# a. TORRENT vs direct, and loser cancellation

def phase_torrent(ctx: Ctx, nodes: cluster.Nodes, plain: Target, slow: Target, res: dict) -> None:
    n, n_cancel = ctx.args.n_torrent, ctx.args.n_cancel
    owner = Client(nodes.bases[0], nodes.key)
    direct = Client(f"http://127.0.0.1:{plain.port}")
    one = lambda i: {"url": plain.url(f"/a{i}"), "method": "POST", "body": PAYLOAD, "regions": ["r1"]}
    three = lambda i: {"url": plain.url(f"/a3-{i}"), "method": "POST", "body": PAYLOAD, "regions": REGIONS}
    log(f"a: TORRENT vs direct, {n} each, interleaved")
    for i in range(50):  # warm-up: connections, the lane's claim
        direct.post(f"/warm{i}", PAYLOAD)
        owner.post("/api/v1/torrent", one(f"w{i}"))
        owner.post("/api/v1/torrent", three(f"w{i}"))
    d_ns, t_ns, t3_ns, bad = [], [], [], 0
    for i in range(n):
        st, _, ns = direct.post(f"/d{i}", PAYLOAD)
        d_ns.append(ns)
        st, body, ns = owner.post("/api/v1/torrent", one(i))
        ok = st == 200 and json.loads(body).get("status_code") == 200
        bad += not ok
        t_ns.append(ns)
        if i % 4 == 0:
            st, body, ns = owner.post("/api/v1/torrent", three(i))
            bad += not (st == 200 and json.loads(body).get("status_code") == 200)
            t3_ns.append(ns)
    plain.dump()
    d, t, t3 = lat(d_ns), lat(t_ns), lat(t3_ns)
    out: dict = {"n": n, "direct": d, "torrent_r1": t, "torrent_r1_r2_r3": t3, "errors": bad,
                 "added_p50_ms": diff(t, d, "p50_ms"), "added_p99_ms": diff(t, d, "p99_ms")}
    out["goal_added_p99_le_1ms"] = {"value": out["added_p99_ms"], "target": 1.0,
                                    "met": out["added_p99_ms"] is not None and out["added_p99_ms"] <= 1.0}

    log(f"a: loser cancellation, {n_cancel} races (r1 answers after 20 ms, r2 and r3 after 300 ms)")
    slow.dump()
    won_by = {}
    for i in range(n_cancel):
        st, body, _ = owner.post("/api/v1/torrent", {"url": slow.url(f"/c{i}"), "method": "POST", "body": PAYLOAD,
                                                     "regions": REGIONS, "idempotent_key": f"cancel-{i}"})
        if st == 200:
            v = json.loads(body)
            won_by[v.get("region")] = won_by.get(v.get("region"), 0) + 1
    time.sleep(0.5)  # legs cut at the end of the last race are logged by now
    entries = slow.dump()
    by_key: dict[str, list] = {}
    for e in entries:
        by_key.setdefault(e[3] or e[2], []).append(e)
    cut_ns, not_cut, never = [], 0, 0
    for legs in by_key.values():
        win = [e for e in legs if e[1] == IPS[0] and e[4] is not None]
        if not win:
            continue
        never += len(REGIONS) - len({e[1] for e in legs})
        for e in legs:
            if e[1] == IPS[0]:
                continue
            if e[5] is not None:
                cut_ns.append(e[5] - win[0][4])
            else:
                not_cut += 1
    out["cancel"] = {"races": n_cancel, "won_by_region": won_by, "slow_legs_cut": len(cut_ns),
                     "slow_legs_not_cut": not_cut, "slow_legs_cut_before_reaching_target": never,
                     "win_to_closed": lat(cut_ns)}
    out["load1"] = cluster.load1()
    res["torrent"] = out


# ---------------------------------------------------------------------------------------------
# b. tail latency with one slow region

def run_many(fn, n: int, conc: int) -> list:
    with ThreadPoolExecutor(conc) as ex:
        return list(ex.map(fn, range(n)))


def phase_tail(ctx: Ctx, nodes: cluster.Nodes, jittery: Target, res: dict) -> None:
    n, conc = ctx.args.n_tail, ctx.args.concurrency
    local = threading.local()

    def client() -> Client:
        if not hasattr(local, "c"):
            local.c = Client(nodes.bases[0], nodes.key)
        return local.c

    def job(name: str, regions: list[str], race: bool, method: str = "GET"):
        def one(i: int) -> tuple[int, bool]:
            spec = {"url": jittery.url(f"/{name}-{i}"), "method": method, "regions": regions,
                    "idempotent_key": f"{name}-{i}-{random.getrandbits(48)}"}
            if method == "POST":
                spec["body"] = PAYLOAD
            if race:
                spec["execution_mode"] = "race"
            st, body, ns = client().post("/api/v1/jobs?wait=30s", spec)
            ok = st in (200, 201, 202) and b"succeeded" in body
            return ns, ok
        return one

    def torrent(name: str, regions: list[str]):
        def one(i: int) -> tuple[int, bool]:
            st, body, ns = client().post("/api/v1/torrent", {"url": jittery.url(f"/{name}-{i}"), "method": "POST",
                                                            "body": PAYLOAD, "regions": regions})
            return ns, st == 200 and json.loads(body).get("status_code") == 200
        return one

    series = [("job_single_r2", job("js2", ["r2"], False)), ("job_single_r1", job("js1", ["r1"], False)),
              ("job_raced_r2_r1_r3", job("jr", ["r2", "r1", "r3"], True)),
              ("job_hedged_post_r2_r1_r3", job("jh", ["r2", "r1", "r3"], True, "POST")),
              ("torrent_single_r2", torrent("ts2", ["r2"])), ("torrent_raced_r2_r1_r3", torrent("tr", ["r2", "r1", "r3"]))]
    out: dict = {"n": n, "concurrency": conc, "slow_region": "r2 (+ uniform 50-500 ms at the target)"}
    run_many(job("warm", ["r1"], False), 20, 4)
    jittery.dump()
    for name, fn in series:
        log(f"b: {name}, {n} jobs, {conc} clients")
        got = run_many(fn, n, conc)
        out[name] = lat([ns for ns, _ in got])
        out[name]["not_succeeded"] = sum(1 for _, ok in got if not ok)
    legs: dict[str, set] = {}
    hedged: dict[str, set] = {}
    for e in jittery.dump():
        if e[2].startswith("/jr-"):
            legs.setdefault(e[2], set()).add(e[1])
        if e[2].startswith("/jh-"):
            hedged.setdefault(e[2], set()).add(e[1])
    out["raced_legs_per_job"] = r3(sum(len(v) for v in legs.values()) / len(legs)) if legs else None
    out["hedged_legs_per_job"] = r3(sum(len(v) for v in hedged.values()) / len(hedged)) if hedged else None
    out["hedge_budget_percent"] = ctx.args.hedge_budget_percent
    out["raced_queued_jobs_race"] = bool(legs) and out["raced_legs_per_job"] > 1.0
    out["load1"] = cluster.load1()
    res["tail"] = out


# ---------------------------------------------------------------------------------------------
# c. hand-off overhead

def phase_handoff(ctx: Ctx, nodes: cluster.Nodes, plain: Target, res: dict) -> None:
    n = ctx.args.n_handoff
    c = Client(nodes.bases[0], nodes.key)
    log(f"c: hand-off (r2 via n3) vs local (r1), {n} jobs each, interleaved")
    sent: dict[str, int] = {}
    bad = 0
    for i in range(-20, n):  # 20 of each as warm-up
        for kind, regions in (("local", ["r1"]), ("handoff", ["r2"])):
            path = f"/{kind}-{i}"
            sent[path] = mono_ns()
            st, body, _ = c.post("/api/v1/jobs?wait=30s", {"url": plain.url(path), "method": "POST", "body": PAYLOAD,
                                                          "regions": regions, "idempotent_key": f"h{path}-{random.getrandbits(48)}"})
            bad += not (st in (200, 201, 202) and b"succeeded" in body)
    arrivals = {e[2]: e for e in plain.dump()}
    out: dict = {"n": n, "errors": bad}
    for kind, ip in (("local", IPS[0]), ("handoff", IPS[1])):
        ns = [arrivals[p][0] - t0 for p, t0 in sent.items()
              if p.startswith(f"/{kind}-") and not p.startswith(f"/{kind}--") and p in arrivals]
        out[kind] = lat(ns)
        out[kind]["from_expected_address"] = all(arrivals[p][1] == ip for p in sent if p.startswith(f"/{kind}-") and p in arrivals)
    out["overhead_p50_ms"] = diff(out["handoff"], out["local"], "p50_ms")
    out["overhead_p99_ms"] = diff(out["handoff"], out["local"], "p99_ms")
    out["load1"] = cluster.load1()
    res["handoff"] = out


# ---------------------------------------------------------------------------------------------
# report

def fmt(x: object) -> str:
    return cluster.fmt(x)


def pp(v: dict | None, *ks: str) -> str:
    v = v or {}
    return " / ".join(fmt(v.get(k)) for k in ks)


def table(res: dict) -> str:
    rows = ["| metric | value | vs | note |", "|---|---|---|---|"]
    a = res.get("torrent")
    if a:
        rows.append(f"| **a. TORRENT r1 (the owner calls)** p50 / p99 (ms) | {pp(a['torrent_r1'], 'p50_ms', 'p99_ms')} | "
                    f"direct {pp(a['direct'], 'p50_ms', 'p99_ms')} | added {fmt(a['added_p50_ms'])} / {fmt(a['added_p99_ms'])} ms; "
                    f"goal p99 ≤ 1 ms {'met' if a['goal_added_p99_le_1ms']['met'] else 'MISSED'} |")
        rows.append(f"| TORRENT r1,r2,r3 (all fast) p50 / p99 (ms) | {pp(a['torrent_r1_r2_r3'], 'p50_ms', 'p99_ms')} | | |")
        cc = a["cancel"]
        rows.append(f"| loser cancellation: win → slow leg's connection closed at the target, p50 / p99 (ms) | "
                    f"{pp(cc['win_to_closed'], 'p50_ms', 'p99_ms')} | | {cc['slow_legs_cut']} cut at the target, "
                    f"{cc['slow_legs_cut_before_reaching_target']} cut before reaching it, {cc['slow_legs_not_cut']} not cut |")
    b = res.get("tail")
    if b:
        for k in ("job_single_r2", "job_single_r1", "job_raced_r2_r1_r3", "job_hedged_post_r2_r1_r3",
                  "torrent_single_r2", "torrent_raced_r2_r1_r3"):
            if k not in b:
                continue
            rows.append(f"| **b. {k.replace('_', ' ')}** p50 / p99 / p999 (ms) | {pp(b[k], 'p50_ms', 'p99_ms', 'p999_ms')} | | "
                        f"{b[k]['not_succeeded']} not succeeded |")
        rows.append(f"| queued job legs per raced GET / hedged POST | {fmt(b['raced_legs_per_job'])} / "
                    f"{fmt(b.get('hedged_legs_per_job'))} | | hedge budget {b.get('hedge_budget_percent')} % |")
    c = res.get("handoff")
    if c:
        rows.append(f"| **c. submit → target, hand-off (r2 via n3)** p50 / p99 (ms) | {pp(c['handoff'], 'p50_ms', 'p99_ms')} | "
                    f"local {pp(c['local'], 'p50_ms', 'p99_ms')} | overhead {fmt(c['overhead_p50_ms'])} / {fmt(c['overhead_p99_ms'])} ms |")
    return "\n".join(rows)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "target":
        ap = argparse.ArgumentParser(prog="regions.py target")
        ap.add_argument("cmd")
        ap.add_argument("--port", type=int, required=True)
        ap.add_argument("--delay-from", action="append", default=[], help="IP=MS or IP=LO-HI (uniform)")
        a = ap.parse_args()
        serve_target(a.port, a.delay_from)
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin", default=str(ROOT / "target/release/ezthrottle"))
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", default="a,b,c")
    ap.add_argument("--n-torrent", type=int, default=None)
    ap.add_argument("--n-cancel", type=int, default=None)
    ap.add_argument("--n-tail", type=int, default=None)
    ap.add_argument("--n-handoff", type=int, default=None)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--hedge-budget-percent", type=int, default=300,
                    help="the nodes' executor.hedge_budget_percent (default of the product: 20)")
    ap.add_argument("--keep", action="store_true", help="keep the work dir (node logs)")
    args = ap.parse_args()
    q = args.quick
    args.n_torrent = args.n_torrent or (200 if q else 2000)
    args.n_cancel = args.n_cancel or (30 if q else 300)
    args.n_tail = args.n_tail or (48 if q else 1000)
    args.n_handoff = args.n_handoff or (100 if q else 1000)
    only = {x.strip() for x in args.only.split(",") if x.strip()}
    if not os.access(args.bin, os.X_OK):
        sys.exit(f"regions.py: {args.bin} missing (cargo build --release -p ezthrottle)")

    (ROOT / "target").mkdir(exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="ezt-bench-regions-", dir=ROOT / "target"))
    pa, pb, pc = ports_on_n2(3)
    ctx = Ctx(args, work, {"plain": pa, "slow": pb, "jittery": pc})
    sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--", ".", ":!bench"], cwd=ROOT, capture_output=True,
                           text=True).stdout.strip()
    res: dict = {"kind": "regions", "git": sha, "dirty_files_outside_bench": bool(dirty), "binary": str(args.bin),
                 "binary_version": subprocess.run([args.bin, "--version"], capture_output=True, text=True).stdout.strip(),
                 "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "quick": q, "only": sorted(only),
                 "host": {"cpus": os.cpu_count(), "load1_at_start": cluster.load1()},
                 "ports": {"plain": pa, "slow_r1_20ms_r2_r3_300ms": pb, "jittery_r2_50_500ms": pc},
                 "notes": ("One run on a shared 2-core machine: absolute numbers are one noisy sample; the "
                           "differences measured side by side, interleaved, in the same run are what counts. "
                           "Client and targets are Python (the same client for both sides of each comparison). "
                           "Three nodes n2/n3/n4 of regions r1/r2/r3 on 127.0.0.2-4, PostgreSQL 15 fsync=on; every "
                           "call goes to n2, the owner of the targets' lanes.")}
    targets: list[Target] = []
    nodes = None
    try:
        log(f"work dir {work}; targets on {pa} (plain), {pb} (r1 +20 ms, r2/r3 +300 ms), {pc} (r2 +50-500 ms)")
        ctx.pg.init()
        ctx.pg.start()
        plain = Target(pa)
        # r1 answers after 20 ms, so the other legs reach the target before the win.
        slow = Target(pb, [f"{IPS[0]}=20", f"{IPS[1]}=300", f"{IPS[2]}=300"])
        jittery = Target(pc, [f"{IPS[1]}=50-500"])
        targets = [plain, slow, jittery]
        nodes = cluster.Nodes(ctx, "regions", 3, regions=REGIONS)  # type: ignore[arg-type]
        wait_members(nodes)
        if "a" in only:
            phase_torrent(ctx, nodes, plain, slow, res)
        if "b" in only:
            phase_tail(ctx, nodes, jittery, res)
        if "c" in only:
            phase_handoff(ctx, nodes, plain, res)
    finally:
        if nodes is not None:
            nodes.stop()
        for t in targets:
            t.stop()
        ctx.pg.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    res["finished_utc"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    suffix = "-quick" if q else ""
    if only != {"a", "b", "c"}:
        suffix += "-only" + "".join(sorted(only))
    path = BENCH / "results" / f"{time.strftime('%Y-%m-%d', time.gmtime())}-{sha}-regions{suffix}.json"
    res["table_md"] = table(res)
    path.write_text(json.dumps(res, indent=1) + "\n")
    log(f"wrote {path}")
    print(res["table_md"])


def wait_members(nodes: cluster.Nodes, n: int = 3, timeout: float = 30) -> None:
    """Until n2 sees the three members alive (hand-offs need them)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            v = cluster.get_json(nodes.bases[0] + "/api/v1/cluster/nodes", cluster.ADMIN)
            if sum(1 for x in v.get("nodes", []) if x.get("alive")) >= n:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError("the three nodes never saw each other alive")


if __name__ == "__main__":
    main()
