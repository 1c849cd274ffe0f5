#!/usr/bin/env python3
"""Before/after table of EZThrottle's B1/B2/B3 over alternating quick runs:
    ab_table.py --before A1.json A2.json ... --after B1.json B2.json ...
Each row lists every run's value, the median of each side and after ÷ before of the medians (for
latency and CPU rows below 1 is better, for rates above 1)."""
import json, statistics, sys

from results_json import g


def b3(r, rate, k):
    for x in g(r["raw"], "p_ezt_b3", "rates") or []:
        if x["rate"] == rate:
            return g(x, "latency", k)


def bulk(r):
    v = [g(r["raw"], f"s1_batch_c{c}", "jobs_per_s") or 0 for c in (1, 2)]
    return max(v) or None


METRICS = [
    ("B1 serial ack p50 (ms)", lambda r: g(r["raw"], "p_ezt_b1", "serial", "ack", "p50_ms")),
    ("B1 serial ack p99 (ms)", lambda r: g(r["raw"], "p_ezt_b1", "serial", "ack", "p99_ms")),
    ("B1 64 clients (jobs/s)", lambda r: g(r["raw"], "p_ezt_b1", "c64", "jobs_per_s")),
    ("B1 64 clients ack p99 (ms)", lambda r: g(r["raw"], "p_ezt_b1", "c64", "ack", "p99_ms")),
    ("B1 64 clients, 20k jobs (jobs/s)", lambda r: g(r["raw"], "s1_admit", "jobs_per_s")),
    ("B1 bulk 1000/call, best (jobs/s)", bulk),
    ("B2 drain (jobs/s)", lambda r: g(r["raw"], "p_ezt_b2", "jobs_per_s")),
    ("B2 CPU-s per 1k", lambda r: g(r["raw"], "p_ezt_b2", "cpu_s_per_1k")),
    ("B3 1k/s p50 (ms)", lambda r: b3(r, 1000, "p50_ms")),
    ("B3 1k/s p99 (ms)", lambda r: b3(r, 1000, "p99_ms")),
    ("B3 5k/s p50 (ms)", lambda r: b3(r, 5000, "p50_ms")),
    ("B3 5k/s p99 (ms)", lambda r: b3(r, 5000, "p99_ms")),
]


def main(argv):
    i = argv.index("--after")
    before = [json.load(open(f)) for f in argv[argv.index("--before") + 1:i]]
    after = [json.load(open(f)) for f in argv[i + 1:]]
    print(f"| metric | before: {len(before)} runs | after: {len(after)} runs | median after ÷ before |")
    print("|---|---|---|---|")
    for name, fn in METRICS:
        cells, meds = [], []
        for runs in (before, after):
            vals = [v for v in (fn(r) for r in runs) if v is not None]
            med = statistics.median(vals) if vals else None
            meds.append(med)
            cells.append(", ".join(f"{v:g}" for v in vals) + (f" (median {med:g})" if med is not None else ""))
        ratio = f"{meds[1] / meds[0]:.2f}" if None not in meds and meds[0] else "–"
        print(f"| {name} | {cells[0]} | {cells[1]} | {ratio} |")


if __name__ == "__main__":
    main(sys.argv[1:])
