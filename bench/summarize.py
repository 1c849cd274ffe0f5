#!/usr/bin/env python3
"""Merge the per-scenario JSON from bench/run.sh into one result file and check the targets.

usage: summarize.py OUT_DIR RESULT_FILE QUICK SHA DIRTY_FILES
Prints a markdown table (the one in bench/README.md) on stdout.
"""
import json, os, platform, sys, time
from pathlib import Path

out, result, quick, sha, dirty = sys.argv[1:6]
d = {p.stem: json.loads(p.read_text()) for p in sorted(Path(out).glob("*.json"))}
g = lambda k, *path, default=None: _get(d.get(k), path, default)


def _get(v, path, default):
    for p in path:
        if v is None:
            return default
        v = v[p] if isinstance(v, list) else v.get(p)
    return default if v is None else v


checks = []


def check(name, value, target, ok, unit=""):
    if value is None:  # scenario not run (--only)
        return
    checks.append({"metric": name, "value": value, "target": target,
                   "met": bool(ok) if value is not None else None, "unit": unit})


adm = g("s1_admit", "jobs_per_s")
sq1 = g("s1_sqlite_1", "rows_per_s")
batch = max(g("s1_batch_c1", "jobs_per_s", default=0), g("s1_batch_c2", "jobs_per_s", default=0)) or None
ratio = round(adm / sq1, 2) if adm and sq1 else None
check("admission jobs/s (64 clients)", adm, ">= 30000", adm and adm >= 30000, "jobs/s")
check("admission / bare SQLite 1-row txn", ratio, ">= 5x", ratio and ratio >= 5, "x")
check("batch jobs/s (1000 per call)", batch, ">= 150000", batch and batch >= 150000, "jobs/s")
pk50 = g("s2_pickup", "submit_to_arrival", "p50_ms"); pk99 = g("s2_pickup", "submit_to_arrival", "p99_ms")
check("pickup p50 (submit -> arrival)", pk50, "<= 2 ms", pk50 is not None and pk50 <= 2, "ms")
check("pickup p99 (submit -> arrival)", pk99, "<= 10 ms", pk99 is not None and pk99 <= 10, "ms")
for lane in g("s3_limiter", "lanes", default=[]):
    r = lane.get("rate")
    check(f"limiter {r:g}/s: windows over rate+burst", lane.get("windows_over_limit"), "0",
          lane.get("windows_over_limit") == 0, "windows")
    check(f"limiter {r:g}/s: achieved/rate", lane.get("achieved_ratio"), ">= 0.99",
          (lane.get("achieved_ratio") or 0) >= 0.99, "ratio")
jm = g("s4_backlog", "jain_mean")
check("fairness Jain (mean of 1 s windows)", jm, ">= 0.99", jm is not None and jm >= 0.99)
qw = g("s4_wait", "quiet_wait", "p95_ms"); qs = g("s4_solo", "quiet_wait", "p95_ms")
qr = round(qw / qs, 2) if qw is not None and qs else None
check("quiet p95 wait / solo p95", qr, "<= 1.2x", qr is not None and qr <= 1.2, "x")
idle = g("s5_idle", "rss_mb")
check("idle RSS", idle, "<= 30 MB", idle is not None and idle <= 30, "MB")
big_n = g("s5_load", "accepted")
loaded = max(g("s5_loaded", "rss_mb", default=0), g("s5_loaded", "hwm_mb", default=0)) or None
check(f"RSS (HWM) with {big_n} queued", loaded, "<= 1024 MB", loaded is not None and loaded <= 1024, "MB")
if big_n == 100000:
    check("RSS (HWM) with 100k queued", loaded, "<= 150 MB", loaded is not None and loaded <= 150, "MB")
rs = g("s5_restart", "ready_s")
check("restart to /readyz after kill -9", rs, "<= 15 s", rs is not None and rs <= 15, "s")

cpu_before, cpu_after = g("s1_proc_before", "cpu_s"), g("s1_proc_after", "cpu_s")
derived = {
    "admission_cpu_s_per_1k": round((cpu_after - cpu_before) / (g("s1_admit", "n") / 1000), 4)
    if cpu_after is not None and cpu_before is not None else None,
    "admission_vs_sqlite_1row": ratio,
}
res = {
    "suite": "ezthrottle-bench", "quick": quick == "1", "git_sha": sha, "dirty_files_outside_bench": int(dirty),
    "utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    "host": {"cpus": os.cpu_count(), "loadavg_at_end": os.getloadavg(), "kernel": platform.release()},
    "targets": checks, "derived": derived, "raw": d,
}
Path(result).write_text(json.dumps(res, indent=1))

print("| metric | value | target | met |\n|---|---|---|---|")
for c in checks:
    met = {True: "met", False: "**missed**", None: "n/a"}[c["met"]]
    print(f"| {c['metric']} | {c['value']} {c['unit'] if c['unit'] not in ('x', 'ratio') else ''} | {c['target']} | {met} |")
