#!/usr/bin/env python3
"""Retention soak: does the database file stop growing at a steady job rate?

Runs the release server with `[retention] finished_jobs = "1m"` (purge every 10 s) and feeds it
single submissions at a steady rate (default 200 jobs/s, 5 minutes) against a local 200-OK
target, sampling the size of ezthrottle.db and its WAL, the job count and the server's RSS every
few seconds. Writes bench/results/<UTC date>-<sha>-soak-retention.{json,md}.

    bench/soak-retention.py [--rate 200] [--duration 300] [--sample 10] [--no-build]

Verdict: the database "stops growing" when its largest size in the last third of the run is no
more than 10 % above its largest size in the middle third (once retention has started purging,
the file holds about one minute of jobs, and freed pages are reused or handed back).
"""
import argparse
import datetime
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "bench")
SRV_PORT, TGT_PORT = 18490, 18491


def build():
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "ezthrottle"], cwd=ROOT, check=True)
    env = dict(os.environ, CARGO_TARGET_DIR=os.path.join(BENCH, "loadgen", "target"))
    subprocess.run(["cargo", "build", "--release", "-q"], cwd=os.path.join(BENCH, "loadgen"), env=env, check=True)


def rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def size(path):
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def job_count(db):
    try:
        c = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            return c.execute("SELECT COUNT(*) FROM jobs").fetchone()[0]
        finally:
            c.close()
    except sqlite3.Error:
        return None


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=float, default=200)
    ap.add_argument("--duration", type=int, default=300)
    ap.add_argument("--sample", type=float, default=10)
    ap.add_argument("--retention", default="1m")
    ap.add_argument("--interval", default="10s")
    ap.add_argument("--no-build", action="store_true")
    a = ap.parse_args()
    if not a.no_build:
        build()
    work = tempfile.mkdtemp(prefix="ezt-soak.")  # on the real disk: fsync must be real
    ezt = os.path.join(work, "ezthrottle")
    lg = os.path.join(work, "ezt-loadgen")
    shutil.copy(os.path.join(ROOT, "target", "release", "ezthrottle"), ezt)
    shutil.copy(os.path.join(BENCH, "loadgen", "target", "release", "ezt-loadgen"), lg)
    data = os.path.join(work, "data")
    db = os.path.join(data, "ezthrottle.db")
    cfg = os.path.join(work, "soak.toml")
    with open(cfg, "w") as f:
        f.write(f'[lanes.hosts."127.0.0.1:{TGT_PORT}"]\nrate = 100000.0\nburst = 1000\nmax_in_flight = 256\n'
                f'[retention]\nfinished_jobs = "{a.retention}"\ninterval = "{a.interval}"\n')
    procs = []
    try:
        tgt = subprocess.Popen([lg, "target", "--ports", str(TGT_PORT)], stderr=subprocess.DEVNULL,
                               stdout=subprocess.DEVNULL)
        procs.append(tgt)
        log = open(os.path.join(work, "server.log"), "w")
        srv = subprocess.Popen([ezt, "serve", "--listen", f"127.0.0.1:{SRV_PORT}", "--data-dir", data,
                                "--allow-cidr", "127.0.0.1/32", "--config", cfg],
                               stdout=subprocess.PIPE, stderr=log, text=True,
                               env=dict(os.environ, NO_COLOR="1"))
        procs.append(srv)
        key = srv.stdout.readline().strip()
        deadline = time.time() + 60
        while "listening on http://" not in open(os.path.join(work, "server.log")).read():
            if srv.poll() is not None or time.time() > deadline:
                sys.exit("server did not start:\n" + open(os.path.join(work, "server.log")).read())
            time.sleep(0.05)
        prod = subprocess.Popen([lg, "steady", "--server", f"http://127.0.0.1:{SRV_PORT}", "--key", key,
                                 "--rate", str(a.rate), "--duration", str(a.duration),
                                 "--target-url", f"http://127.0.0.1:{TGT_PORT}/soak", "--prefix", "soak"],
                                stdout=subprocess.PIPE, text=True)
        procs.append(prod)
        t0 = time.time()
        samples = []
        while True:
            t = time.time() - t0
            samples.append({"t_s": round(t, 1), "db_bytes": size(db), "wal_bytes": size(db + "-wal"),
                            "jobs": job_count(db), "rss_kib": rss_kib(srv.pid)})
            print(json.dumps(samples[-1]), file=sys.stderr)
            if prod.poll() is not None and t > a.duration:
                break
            time.sleep(a.sample)
        produced = json.loads(prod.stdout.read() or "{}")
        purges = []
        for line in open(os.path.join(work, "server.log")):
            if "retention: purged" in line:
                m = re.search(r"jobs=(\d+) ms=(\d+)", line)
                if m:
                    purges.append({"jobs": int(m.group(1)), "ms": int(m.group(2))})
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    p.kill()
    n = len(samples)
    mid = samples[n // 3: 2 * n // 3] or samples
    last = samples[2 * n // 3:] or samples
    mid_max = max(s["db_bytes"] for s in mid)
    last_max = max(s["db_bytes"] for s in last)
    stops = last_max <= mid_max * 1.10
    sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                         text=True).stdout.strip() or "nogit"
    day = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
    base = os.path.join(BENCH, "results", f"{day}-{sha}-soak-retention")
    result = {"rate": a.rate, "duration_s": a.duration, "retention": a.retention, "interval": a.interval,
              "producer": produced, "purges": purges, "samples": samples,
              "db_max_middle_third": mid_max, "db_max_last_third": last_max,
              "stops_growing": stops}
    with open(base + ".json", "w") as f:
        json.dump(result, f, indent=1)
    with open(base + ".md", "w") as f:
        f.write(f"# Retention soak {day} {sha}\n\n{a.rate:g} jobs/s for {a.duration} s, retention "
                f"{a.retention}, purge every {a.interval}; acked {produced.get('acked')}.\n\n"
                "| t (s) | db (MiB) | wal (MiB) | jobs | RSS (MiB) |\n|---:|---:|---:|---:|---:|\n")
        for s in samples:
            rss = f"{s['rss_kib'] / 1024:.1f}" if s["rss_kib"] else "-"
            f.write(f"| {s['t_s']:.0f} | {s['db_bytes'] / 2**20:.2f} | {s['wal_bytes'] / 2**20:.2f} | "
                    f"{s['jobs']} | {rss} |\n")
        if purges:
            f.write(f"\n{len(purges)} purge passes, {sum(p['jobs'] for p in purges)} jobs; a pass "
                    f"(batches of 500 with pauses) took at most {max(p['ms'] for p in purges)} ms. "
                    f"Admission ack p99 {produced.get('ack', {}).get('p99_ms')} ms, max "
                    f"{produced.get('ack', {}).get('max_ms')} ms.\n")
        f.write(f"\nLargest db in the middle third {mid_max / 2**20:.2f} MiB, in the last third "
                f"{last_max / 2**20:.2f} MiB: {'stops growing' if stops else 'STILL GROWING'}.\n")
    print(json.dumps({k: v for k, v in result.items() if k != "samples"}, indent=1))
    shutil.rmtree(work, ignore_errors=True)
    return 0 if stops else 1


if __name__ == "__main__":
    sys.exit(main())
