#!/usr/bin/env python3
"""Key side-by-side numbers across several full runs (repeatability): repeat.py A.json B.json ...

Each cell lists the runs' values in the order given, separated by " / "."""
import json, sys

from results_json import g

runs = [json.load(open(f)) for f in sys.argv[1:]]
SYS = [("ezt", "EZThrottle"), ("bullmq", "BullMQ"), ("pgboss", "pg-boss"), ("river", "River")]


def b3(r, s, rate, k):
    for x in g(r["raw"], f"p_{s}_b3", "rates") or []:
        if x["rate"] == rate:
            return g(x, "latency", k)


def f(v):
    if v is None:
        return "–"
    if isinstance(v, (int, float)) and abs(v) >= 100:
        return f"{v:,.0f}"
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def b1(r, s, *path):
    v = g(r["raw"], f"p_{s}_b1", *path)
    if v is None and s == "ezt":  # runs before sides.py had EZThrottle's B1: scenario 1
        fb = {("serial", "ack", "p50_ms"): ("s1_serial", "ack", "p50_ms"), ("c64", "jobs_per_s"): ("s1_admit", "jobs_per_s")}
        if path in fb:
            return g(r["raw"], *fb[path])
        if path == ("bulk_best_jobs_per_s",):
            return max(g(r["raw"], "s1_batch_c1", "jobs_per_s") or 0, g(r["raw"], "s1_batch_c2", "jobs_per_s") or 0) or None
    return v


METRICS = [
    ("B1 serial ack p50 (ms)", lambda r, s: b1(r, s, "serial", "ack", "p50_ms")),
    ("B1 64 concurrent (jobs/s)", lambda r, s: b1(r, s, "c64", "jobs_per_s")),
    ("B1 bulk (jobs/s)", lambda r, s: b1(r, s, "bulk_best_jobs_per_s")),
    ("B2 drain (jobs/s)", lambda r, s: g(r["raw"], f"p_{s}_b2", "jobs_per_s")),
    ("B3 1k/s p50 (ms)", lambda r, s: b3(r, s, 1000, "p50_ms")),
    ("B3 1k/s p99 (ms)", lambda r, s: b3(r, s, 1000, "p99_ms")),
    ("B3 5k/s p50 (ms)", lambda r, s: b3(r, s, 5000, "p50_ms")),
    ("B3 5k/s p99 (ms)", lambda r, s: b3(r, s, 5000, "p99_ms")),
    ("B7 acked lost / duplicates", lambda r, s: None if g(r["raw"], f"p_{s}_b7") is None else
     f"{g(r['raw'], f'p_{s}_b7', 'total_lost_acked')}+{g(r['raw'], f'p_{s}_b7', 'total_duplicates')}"),
]
print("| metric (runs: " + ", ".join(r["git_sha"] for r in runs) + ") | " + " | ".join(n for _, n in SYS) + " |")
print("|---" * (1 + len(SYS)) + "|")
for name, fn in METRICS:
    print(f"| {name} | " + " | ".join(" / ".join(f(fn(r, s)) for r in runs) for s, _ in SYS) + " |")
