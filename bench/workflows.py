#!/usr/bin/env python3
"""Workflow benchmarks (issue 14), on demand; prints one JSON object.

    bench/workflows.py [--bin target/release/ezthrottle] [--n 2000] [--workflows 10000]

1. `pickup`: plain submit → the target sees the call (one job at a time), p50/p99 ms.
2. `child`: a job with `on_success`: the parent's call reaches the target → the child's call
   reaches it (the parent's outcome, the child created in that transaction, its lane, its call),
   p50/p99 ms, in the same run as 1. `step`: the same for a two-step workflow (a → b).
3. `workflows`: W three-step workflows (a → b → c, b reads a's status) submitted by 16 clients;
   completed per second (submit of the first → the target sees the last step) and server CPU
   per workflow (utime + stime from /proc over the phase).

The target is a small threaded HTTP server in this process that stamps arrivals with
`time.monotonic_ns()`; everything runs on 127.0.0.1. A fresh data dir per run (on disk, so
fsync is real). Smoke check: `--n 20 --workflows 50`.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

arrivals: dict[str, int] = {}
arrived: "queue.Queue[str]" = queue.Queue()
lock = threading.Lock()


class Target(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Python's http.server writes the head and the body in two sends; with Nagle on, the body
    # waits for the client's ACK of the head, which a keep-alive client delays (Linux: 40 ms).
    # That stall was the 42.7 ms "parent final -> child call" of 2254dab: the parent's answer
    # reached the server 40 ms late. `--target-nagle` keeps it to show the difference.
    disable_nagle_algorithm = True

    def _any(self) -> None:
        n = int(self.headers.get("Content-Length", "0"))
        if n:
            self.rfile.read(n)
        mark = self.path.rsplit("/", 1)[-1]
        now = time.monotonic_ns()
        with lock:
            arrivals.setdefault(mark, now)
        arrived.put(mark)
        body = b'{"ok":true}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _any

    def log_message(self, *a: object) -> None:
        pass


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def api(base: str, key: str, method: str, path: str, body: object | None = None) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(base + path, data=data, method=method)
    req.add_header("Authorization", f"Bearer {key}")
    req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.loads(r.read())


def wait_for(mark: str, timeout: float = 30.0) -> int:
    deadline = time.monotonic() + timeout
    while True:
        with lock:
            if mark in arrivals:
                return arrivals[mark]
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(mark)
        try:
            arrived.get(timeout=min(left, 0.5))
        except queue.Empty:
            pass


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return round(xs[min(len(xs) - 1, int(p / 100 * len(xs)))], 3)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="target/release/ezthrottle")
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--workflows", type=int, default=10000)
    ap.add_argument("--target-nagle", action="store_true", help="the target keeps Nagle on (the old stall)")
    ap.add_argument("--gap-ms", type=float, default=0.0, help="idle time before each latency sample")
    args = ap.parse_args()
    Target.disable_nagle_algorithm = not args.target_nagle

    target = ThreadingHTTPServer(("127.0.0.1", 0), Target)
    threading.Thread(target=target.serve_forever, daemon=True).start()
    turl = f"http://127.0.0.1:{target.server_address[1]}"
    work = tempfile.mkdtemp(prefix="ezt-bench-wf-", dir=os.getcwd() + "/target")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    # Lanes fast enough not to be what is measured.
    conf = os.path.join(work, "config.toml")
    with open(conf, "w") as f:
        f.write("[lanes.default]\nrate = 100000.0\nburst = 1000\nmax_in_flight = 256\n")
    srv = subprocess.Popen(
        [args.bin, "serve", "--data-dir", f"{work}/data", "--listen", f"127.0.0.1:{port}",
         "--allow-cidr", "127.0.0.1/32", "--config", conf],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env={**os.environ, "EZTHROTTLE_LOG": "warn"},
    )
    try:
        key = ""
        for _ in range(300):
            try:
                urllib.request.urlopen(base + "/healthz", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        key = subprocess.check_output(
            [args.bin, "keys", "create", "--tenant", "default", "--data-dir", f"{work}/data"], text=True
        ).strip()
        out: dict[str, object] = {"n": args.n, "workflows": args.workflows}

        pickup, child = [], []
        for i in range(args.n):
            # `--gap-ms`: let the server go idle before each sample (an idle server's pickup).
            time.sleep(args.gap_ms / 1000)
            t0 = time.monotonic_ns()
            api(base, key, "POST", "/api/v1/jobs", {"url": f"{turl}/p{i}"})
            pickup.append((wait_for(f"p{i}") - t0) / 1e6)
            time.sleep(args.gap_ms / 1000)
            api(base, key, "POST", "/api/v1/jobs", {
                "url": f"{turl}/parent{i}", "on_success": {"url": f"{turl}/child{i}"}})
            child.append((wait_for(f"child{i}") - wait_for(f"parent{i}")) / 1e6)
        out["pickup_ms"] = {"p50": pct(pickup, 50), "p99": pct(pickup, 99), "mean": round(statistics.mean(pickup), 3)}
        out["parent_to_child_ms"] = {"p50": pct(child, 50), "p99": pct(child, 99), "mean": round(statistics.mean(child), 3)}

        step = []
        for i in range(args.n):
            api(base, key, "POST", "/api/v1/workflows", {"steps": [
                {"name": "a", "url": f"{turl}/sa{i}"},
                {"name": "b", "url": f"{turl}/sb{i}", "depends_on": ["a"]},
            ]})
            step.append((wait_for(f"sb{i}") - wait_for(f"sa{i}")) / 1e6)
            time.sleep(args.gap_ms / 1000)
        out["step_to_step_ms"] = {"p50": pct(step, 50), "p99": pct(step, 99), "mean": round(statistics.mean(step), 3)}

        def one(i: int) -> None:
            api(base, key, "POST", "/api/v1/workflows", {"steps": [
                {"name": "a", "url": f"{turl}/wa{i}"},
                {"name": "b", "url": f"{turl}/wb{i}?from={{{{steps.a.response.status}}}}", "depends_on": ["a"]},
                {"name": "c", "url": f"{turl}/wc{i}", "method": "POST", "depends_on": ["b"],
                 "body": "{\"b\": {{steps.b.response.body.ok}}}"},
            ]})

        cpu0, t0 = cpu_seconds(srv.pid), time.monotonic_ns()
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(one, range(args.workflows)))
        last = max(wait_for(f"wc{i}", 600) for i in range(args.workflows))
        secs = (last - t0) / 1e9
        cpu = cpu_seconds(srv.pid) - cpu0
        out["workflows_per_s"] = round(args.workflows / secs, 1)
        out["cpu_ms_per_workflow"] = round(cpu * 1000 / args.workflows, 3)
        out["workflows_phase_s"] = round(secs, 2)
        print(json.dumps(out))
    finally:
        srv.terminate()
        srv.wait()
        target.shutdown()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
