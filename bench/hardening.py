#!/usr/bin/env python3
"""Hardening measurements (issue 11, items 1-2), stdlib only, loopback only, bounded.

For each binary given (e.g. the baseline and this tree's release build):

  rss   RSS of the server before and after 20,000 `GET /jobs/{unknown}/wait?timeout=1ms` and
        5,000 waits on a job that is already final (target: back within 5 MB of the start).
  fds   The server started under `ulimit -n 1024`; 1,100 idle TCP connections are opened and
        held, then /healthz is probed on fresh connections (p50/p99/max, failures) and due jobs
        are submitted to a local target (target: healthz < 100 ms, every due job runs).

Usage: bench/hardening.py NAME=PATH [NAME=PATH ...] [--out bench/results/hardening-DATE.json]
"""

import argparse
import datetime
import http.client
import http.server
import json
import os
import random
import resource
import socket
import subprocess
import sys
import tempfile
import threading
import time

ULID = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def rand_ulid():
    return "job_" + "".join(random.choice(ULID[:8] if i == 0 else ULID) for i in range(26))


class Target(http.server.ThreadingHTTPServer):
    daemon_threads = True


class OkHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        body = b'{"ok":true}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a):
        pass


def start_target():
    srv = Target(("127.0.0.1", 0), OkHandler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


class Server:
    """The binary under `ulimit -n {nofile}`, its address and first API key."""

    def __init__(self, binary, nofile=None):
        self.dir = tempfile.mkdtemp(prefix="ezt-hardening-")
        cfg = os.path.join(self.dir, "config.toml")
        with open(cfg, "w") as f:
            f.write("[lanes.default]\nrate = 200.0\nburst = 20\nmax_in_flight = 16\n")
        self.log = open(os.path.join(self.dir, "server.log"), "w+")
        out = os.path.join(self.dir, "server.out")
        limit = f"ulimit -n {nofile} && " if nofile else ""
        self.proc = subprocess.Popen(
            ["bash", "-c", f'{limit}exec "$0" "$@"', binary, "serve", "--listen", "127.0.0.1:0",
             "--allow-cidr", "127.0.0.1/32", "--config", cfg, "--data-dir", self.dir],
            stdout=open(out, "w"), stderr=self.log, stdin=subprocess.DEVNULL,
            env={**os.environ, "NO_COLOR": "1", "EZTHROTTLE_LOG": "warn,ezthrottle=info"})
        deadline = time.time() + 30
        self.addr = None
        while time.time() < deadline and self.addr is None:
            with open(self.log.name) as f:
                for line in f:
                    if "listening on http://" in line:
                        rest = line.split("listening on http://", 1)[1]
                        self.addr = "".join(c for c in rest.split()[0] if c.isdigit() or c in ".:")
            time.sleep(0.05)
        if not self.addr:
            raise RuntimeError("server did not start: " + open(self.log.name).read())
        self.host, port = self.addr.rsplit(":", 1)
        self.port = int(port)
        self.key = open(out).read().strip()

    def rss_kb(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def conn(self, timeout=10):
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout)

    def request(self, method, path, body=None, timeout=10, conn=None):
        c = conn or self.conn(timeout)
        headers = {"Authorization": f"Bearer {self.key}"}
        if body is not None:
            body = json.dumps(body)
            headers["Content-Type"] = "application/json"
        c.request(method, path, body=body, headers=headers)
        r = c.getresponse()
        data = r.read()
        if conn is None:
            c.close()
        try:
            return r.status, json.loads(data)
        except ValueError:
            return r.status, data.decode(errors="replace")

    def metric(self, name):
        s, text = self.request("GET", "/metrics")
        for line in str(text).splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        return None

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def hammer(server, paths, threads=8):
    """GETs every path over `threads` keep-alive connections; returns status counts."""
    counts = {}
    lock = threading.Lock()
    chunks = [paths[i::threads] for i in range(threads)]

    def run(chunk):
        c = server.conn()
        local = {}
        for p in chunk:
            try:
                s, _ = server.request("GET", p, conn=c)
            except (OSError, http.client.HTTPException):
                c.close()
                c = server.conn()
                s = "error"
            local[s] = local.get(s, 0) + 1
        c.close()
        with lock:
            for k, v in local.items():
                counts[k] = counts.get(k, 0) + v

    ts = [threading.Thread(target=run, args=(ch,)) for ch in chunks]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return {str(k): v for k, v in counts.items()}


def settle(server, seconds=2.0):
    time.sleep(seconds)
    return server.rss_kb()


def measure_rss(binary, target):
    srv = Server(binary)
    try:
        url = f"http://127.0.0.1:{target.server_port}/ok"
        s, sub = srv.request("POST", "/api/v1/jobs?wait=10s", {"url": url})
        job = sub.get("job_id")
        # Warm-up: the same kinds of requests, few, so lazily built state is counted in the start.
        hammer(srv, [f"/api/v1/jobs/{rand_ulid()}/wait?timeout=1ms" for _ in range(200)])
        hammer(srv, [f"/api/v1/jobs/{job}/wait?timeout=1ms" for _ in range(200)])
        start = settle(srv)
        t0 = time.time()
        unknown = hammer(srv, [f"/api/v1/jobs/{rand_ulid()}/wait?timeout=1ms" for _ in range(20000)])
        t_unknown = time.time() - t0
        after_unknown = settle(srv)
        final = hammer(srv, [f"/api/v1/jobs/{job}/wait?timeout=1ms" for _ in range(5000)])
        after_final = settle(srv)
        return {
            "rss_start_kb": start,
            "rss_after_20000_unknown_kb": after_unknown,
            "rss_after_5000_final_kb": after_final,
            "growth_unknown_mb": round((after_unknown - start) / 1024, 2),
            "growth_total_mb": round((after_final - start) / 1024, 2),
            "unknown_statuses": unknown,
            "final_statuses": final,
            "unknown_seconds": round(t_unknown, 2),
            "event_subscriptions_after": srv.metric("ezthrottle_event_subscriptions"),
        }
    finally:
        srv.stop()


def measure_fds(binary, target, idle_n=1100, probes=200, jobs=50):
    srv = Server(binary, nofile=1024)
    held = []
    try:
        # Jobs queued before the flood and due while it is held (the "a queued job failed").
        url = f"http://127.0.0.1:{target.server_port}/ok"
        due_at = int(time.time() * 1000) + 4000
        queued = []
        for i in range(20):
            s, b = srv.request("POST", "/api/v1/jobs",
                               {"url": url, "idempotent_key": f"early-{i}", "retry_at": due_at})
            queued.append(b["job_id"])
        refused = 0
        for _ in range(idle_n):
            try:
                s = socket.create_connection((srv.host, srv.port), timeout=2)
                held.append(s)
            except OSError:
                refused += 1
        time.sleep(0.5)
        lat, failures, consecutive = [], 0, 0
        for _ in range(probes):
            t0 = time.perf_counter()
            try:
                c = http.client.HTTPConnection(srv.host, srv.port, timeout=2)
                c.request("GET", "/healthz")
                ok = c.getresponse().status == 200
                c.close()
            except (OSError, http.client.HTTPException):
                ok = False
            dt = (time.perf_counter() - t0) * 1000
            if ok:
                lat.append(dt)
                consecutive = 0
            else:
                failures += 1
                consecutive += 1
                if consecutive >= 5:
                    break  # the server is not answering: do not wait out every probe
        lat.sort()
        pct = lambda q: round(lat[min(len(lat) - 1, int(q * len(lat)))], 2) if lat else None
        time.sleep(max(0.0, due_at / 1000 + 2 - time.time()))  # the early jobs are due by now
        ids, submit_errors = [], 0
        for i in range(jobs):
            try:
                s, b = srv.request("POST", "/api/v1/jobs", {"url": url, "idempotent_key": f"fd-{i}"},
                                   timeout=5)
                if s == 202:
                    ids.append(b["job_id"])
                else:
                    submit_errors += 1
            except (OSError, http.client.HTTPException):
                submit_errors += 1
        deadline = time.time() + 60

        def final_states(job_ids):
            """Waits on each job (long-poll) until the shared deadline; counts the states seen."""
            counts = {}
            for j in job_ids:
                left = max(1, int(deadline - time.time()))
                try:
                    s, b = srv.request("GET", f"/api/v1/jobs/{j}/wait?timeout={left}s", timeout=left + 5)
                    st = b.get("state", f"http_{s}") if isinstance(b, dict) else f"http_{s}"
                except (OSError, http.client.HTTPException):
                    st = "no_answer"
                counts[st] = counts.get(st, 0) + 1
            return counts

        early_states = final_states(queued)
        states = final_states(ids)
        still_open = 0
        for s in held:
            s.setblocking(False)
            try:
                still_open += 1 if s.recv(1) else 0
            except BlockingIOError:
                still_open += 1
            except OSError:
                pass
        log = open(srv.log.name).read()
        return {
            "idle_connections_opened": len(held),
            "idle_connect_refused": refused,
            "idle_still_open_at_end": still_open,
            "healthz_probes": len(lat) + failures,
            "healthz_failures": failures,
            "healthz_p50_ms": pct(0.50),
            "healthz_p99_ms": pct(0.99),
            "healthz_max_ms": round(lat[-1], 2) if lat else None,
            "jobs_submitted": len(ids),
            "job_submit_errors": submit_errors,
            "job_states": states,
            "jobs_queued_before_flood": len(queued),
            "queued_before_flood_states": early_states,
            "too_many_open_files_in_log": log.count("Too many open files"),
        }
    finally:
        for s in held:
            s.close()
        srv.stop()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("binaries", nargs="+", help="NAME=PATH")
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # the client holds 1,100 sockets
    target = start_target()
    results = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(), "runs": {}}
    for spec in a.binaries:
        name, path = spec.split("=", 1)
        print(f"== {name}: {path}", file=sys.stderr)
        rss = measure_rss(path, target)
        print(json.dumps(rss), file=sys.stderr)
        fds = measure_fds(path, target)
        print(json.dumps(fds), file=sys.stderr)
        results["runs"][name] = {"binary": path, "rss": rss, "fds": fds}
    out = a.out or f"bench/results/hardening-{datetime.date.today().isoformat()}.json"
    with open(out, "w") as f:
        json.dump(results, f, indent=2)
        f.write("\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
