#!/usr/bin/env python3
"""Side-by-side markdown table of several bench/results/*.json files: compare.py A.json B.json ..."""
import json, sys
runs = [json.load(open(f)) for f in sys.argv[1:]]
def g(r, *p):
    v = r["raw"]
    for k in p:
        if v is None: return None
        v = v[k] if isinstance(v, list) else v.get(k)
    return v
def fmt(x):
    if x is None: return "–"
    if isinstance(x, float):
        return f"{x:,.0f}" if x >= 1000 else (f"{x:.3g}" if x < 10 else f"{x:.1f}")
    return f"{x:,}" if isinstance(x, int) else str(x)
rows = []
def row(name, fn, target="", ok=None):
    vals = []
    for r in runs:
        try: vals.append(fn(r))
        except Exception: vals.append(None)
    met = ""
    if ok:
        m = [ok(v) for v in vals if v is not None]
        met = "/".join("met" if x else "**missed**" for x in m)
    rows.append(f"| {name} | " + " | ".join(fmt(v) for v in vals) + f" | {target} | {met} |")
L = lambda r, i: g(r, "s3_limiter", "lanes", i)
row("1 serial ack p50 / p99 (ms)", lambda r: f"{g(r,'s1_serial','ack','p50_ms')} / {g(r,'s1_serial','ack','p99_ms')}", "p50 ≤ 0.4")
row("1 admission, 64 clients (jobs/s)", lambda r: g(r,'s1_admit','jobs_per_s'), "≥ 30,000", lambda v: v >= 30000)
row("1 admission ack p50 / p99 / p999 (ms)", lambda r: f"{g(r,'s1_admit','ack','p50_ms')} / {g(r,'s1_admit','ack','p99_ms')} / {g(r,'s1_admit','ack','p999_ms')}")
row("1 bare SQLite WAL FULL, 1 row/txn (rows/s)", lambda r: g(r,'s1_sqlite_1','rows_per_s'))
row("1 admission ÷ bare SQLite 1 row/txn", lambda r: round(g(r,'s1_admit','jobs_per_s')/g(r,'s1_sqlite_1','rows_per_s'),2), "≥ 5×", lambda v: v >= 5)
row("1 bare SQLite, 1000 rows/txn (rows/s)", lambda r: g(r,'s1_sqlite_1000','rows_per_s'))
row("1 batch 1000/call, 1 caller (jobs/s)", lambda r: g(r,'s1_batch_c1','jobs_per_s'))
row("1 batch 1000/call, 2 callers (jobs/s)", lambda r: g(r,'s1_batch_c2','jobs_per_s'), "≥ 150,000", lambda v: v >= 150000)
row("1 server CPU-s per 1k admitted (64 clients)", lambda r: r["derived"]["admission_cpu_s_per_1k"])
row("2 pickup submit→arrival p50 (ms)", lambda r: g(r,'s2_pickup','submit_to_arrival','p50_ms'), "≤ 2", lambda v: v <= 2)
row("2 pickup submit→arrival p99 (ms)", lambda r: g(r,'s2_pickup','submit_to_arrival','p99_ms'), "≤ 10", lambda v: v <= 10)
row("2 pickup ack→arrival p50 / p99 (ms)", lambda r: f"{g(r,'s2_pickup','ack_to_arrival','p50_ms')} / {g(r,'s2_pickup','ack_to_arrival','p99_ms')}")
row("2 direct call p50 / p99 (ms)", lambda r: f"{g(r,'s2_pickup','direct','latency','p50_ms')} / {g(r,'s2_pickup','direct','latency','p99_ms')}")
for i, rate in enumerate([10, 100, 1000]):
    row(f"3 {rate}/s: max in any 1 s window (limit {rate+1})", lambda r, i=i: L(r,i)['max_in_1s_window'])
    row(f"3 {rate}/s: windows over rate+burst", lambda r, i=i: L(r,i)['windows_over_limit'], "0", lambda v: v == 0)
    row(f"3 {rate}/s: achieved rate ÷ configured", lambda r, i=i: L(r,i)['achieved_ratio'], "≥ 0.99", lambda v: v >= 0.99)
row("4 Jain, 1 s windows: mean / min", lambda r: f"{g(r,'s4_backlog','jain_mean')} / {g(r,'s4_backlog','jain_min')}", "mean ≥ 0.99", None)
row("4 Jain mean", lambda r: g(r,'s4_backlog','jain_mean'), "≥ 0.99", lambda v: v >= 0.99)
row("4 noisy tenant's share of completions (backlog)", lambda r: g(r,'s4_backlog','noisy_share'), "0.10")
row("4 lane throughput, pinned 200/s (backlog)", lambda r: g(r,'s4_backlog','achieved_rate'))
row("4 quiet wait p50 / p95 with noisy backlog (ms)", lambda r: f"{g(r,'s4_wait','quiet_wait','p50_ms')} / {g(r,'s4_wait','quiet_wait','p95_ms')}")
row("4 quiet wait p50 / p95 solo (ms)", lambda r: f"{g(r,'s4_solo','quiet_wait','p50_ms')} / {g(r,'s4_solo','quiet_wait','p95_ms')}")
row("4 quiet p95 ÷ solo p95", lambda r: round(g(r,'s4_wait','quiet_wait','p95_ms')/g(r,'s4_solo','quiet_wait','p95_ms'),1), "≤ 1.2×", lambda v: v <= 1.2)
row("5 idle RSS (MB)", lambda r: g(r,'s5_idle','rss_mb'), "≤ 30", lambda v: v <= 30)
row("5 queued jobs / lanes", lambda r: f"{g(r,'s5_load','accepted'):,} / {g(r,'s5_load','lanes'):,}")
row("5 load via batch (jobs/s)", lambda r: g(r,'s5_load','jobs_per_s'))
row("5 RSS / HWM after loading (MB)", lambda r: f"{g(r,'s5_loaded','rss_mb'):.0f} / {g(r,'s5_loaded','hwm_mb'):.0f}", "HWM ≤ 1024", None)
row("5 HWM after loading (MB)", lambda r: g(r,'s5_loaded','hwm_mb'), "≤ 1024", lambda v: v <= 1024)
row("5 restart after kill -9 → /readyz (s)", lambda r: round(g(r,'s5_restart','ready_s'),2), "≤ 15", lambda v: v <= 15)
row("5 recovery, logged ms", lambda r: g(r,'s5_restart','recovery_ms_logged'))
row("5 RSS / HWM after restart (MB)", lambda r: f"{g(r,'s5_restarted','rss_mb'):.0f} / {g(r,'s5_restarted','hwm_mb'):.0f}", "≤ 1024", None)
row("5 data dir size (MB)", lambda r: g(r,'s5_restart','db_dir_mb'))
print("| metric | " + " | ".join(f"{r['git_sha']}{' quick' if r['quick'] else ''}" for r in runs) + " | target | met |")
print("|---" * (len(runs) + 3) + "|")
print("\n".join(rows))
