#!/usr/bin/env python3
"""Side-by-side table and charts from one bench/results/*.json (EZThrottle vs BullMQ, pg-boss, River).

usage: report.py RESULT.json [--readme bench/README.md]
Writes bench/results/charts/<result stem>-b3-latency.png and -b5-tenants.png (matplotlib, from the
bench venv), prints the Markdown table, and with --readme replaces the text between
<!-- sides:begin --> and <!-- sides:end --> in that README.
"""
import json, sys
from pathlib import Path

from results_json import g

res_path = Path(sys.argv[1])
readme = Path(sys.argv[sys.argv.index("--readme") + 1]) if "--readme" in sys.argv else None
R = json.loads(res_path.read_text())
raw = R["raw"]
PEERS = [("bullmq", "BullMQ + Redis"), ("pgboss", "pg-boss + PG"), ("river", "River + PG")]
NAMES = {"ezt": "EZThrottle", **dict(PEERS)}




def P(system, scen, *path):
    return g(raw.get(f"p_{system}_{scen}"), *path)


def fmt(x):
    if x is None:
        return "–"
    if isinstance(x, str):
        return x
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, int) or (isinstance(x, float) and x.is_integer() and abs(x) >= 10):
        return f"{x:,.0f}"
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    if abs(x) >= 100:
        return f"{x:.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}"
    return f"{x:.3g}"


def ratio(a, b):
    if not isinstance(a, (int, float)) or not isinstance(b, (int, float)) or isinstance(a, bool) or not b:
        return "–"
    r = a / b
    return f"{r:.2f}×" if r < 100 else f"{r:.0f}×"


rows = []


def row(label, ezt, peers, better="", ratios=True):
    """peers: {system: value or str}; better: 'higher'/'lower' (for the reader)."""
    cells = [fmt(ezt)]
    for s, _ in PEERS:
        v = peers.get(s)
        cells += [fmt(v), ratio(ezt, v) if ratios else ""]
    rows.append(f"| {label}{' ↑' if better == 'higher' else ' ↓' if better == 'lower' else ''} | " + " | ".join(cells) + " |")


def section(title):
    rows.append(f"| **{title}** |" + " |" * (1 + 2 * len(PEERS)))


# ---- B1 admission
# EZThrottle: sides.py's B1 (run next to the peers' in time) when present, else scenario 1.
SIDE_B1 = raw.get("p_ezt_b1") is not None and "error" not in raw.get("p_ezt_b1", {})
eb = max([x for x in (g(raw, "s1_batch_c1", "jobs_per_s"), g(raw, "s1_batch_c2", "jobs_per_s")) if x] or [None])
E1 = {
    "serial": lambda k: P("ezt", "b1", "serial", "ack", k) if SIDE_B1 else g(raw, "s1_serial", "ack", k),
    "c64": lambda k: P("ezt", "b1", "c64", "ack", k) if SIDE_B1 else g(raw, "s1_admit", "ack", k),
    "c64rate": (P("ezt", "b1", "c64", "jobs_per_s") if SIDE_B1 else g(raw, "s1_admit", "jobs_per_s")),
    "bulk": (P("ezt", "b1", "bulk_best_jobs_per_s") if SIDE_B1 else eb),
    "cpu": (P("ezt", "b1", "store_cpu_s_per_1k") if SIDE_B1 else g(R, "derived", "admission_cpu_s_per_1k")),
    "ccpu": P("ezt", "b1", "client_cpu_s_per_1k") if SIDE_B1 else None,
    "hwm": (P("ezt", "b1", "store_hwm_mb") if SIDE_B1 else g(raw, "s1_proc_after", "hwm_mb")),
}
section("B1 admission (no workers running)")
row("serial ack p50 (ms)", E1["serial"]("p50_ms"), {s: P(s, "b1", "serial", "ack", "p50_ms") for s, _ in PEERS}, "lower")
row("serial ack p99 (ms)", E1["serial"]("p99_ms"), {s: P(s, "b1", "serial", "ack", "p99_ms") for s, _ in PEERS}, "lower")
row("serial ack p99.9 (ms)", E1["serial"]("p999_ms"), {s: P(s, "b1", "serial", "ack", "p999_ms") for s, _ in PEERS}, "lower")
row("64 concurrent: jobs/s", E1["c64rate"], {s: P(s, "b1", "c64", "jobs_per_s") for s, _ in PEERS}, "higher")
row("64 concurrent: ack p50 (ms)", E1["c64"]("p50_ms"), {s: P(s, "b1", "c64", "ack", "p50_ms") for s, _ in PEERS}, "lower")
row("64 concurrent: ack p99 (ms)", E1["c64"]("p99_ms"), {s: P(s, "b1", "c64", "ack", "p99_ms") for s, _ in PEERS}, "lower")
row("bulk 1000/call, best of 1-2 callers: jobs/s", E1["bulk"], {s: P(s, "b1", "bulk_best_jobs_per_s") for s, _ in PEERS}, "higher")
row("CPU-s per 1k, 64 conc. (EZT server; peer's store)", E1["cpu"], {s: P(s, "b1", "store_cpu_s_per_1k") for s, _ in PEERS}, "lower")
row("CPU-s per 1k, 64 conc. (client: loadgen; peer's producer)", E1["ccpu"], {s: P(s, "b1", "client_cpu_s_per_1k") for s, _ in PEERS}, "lower")
row("peak memory MB (EZT/Redis VmHWM; PG peak PSS sum)", E1["hwm"],
    {"bullmq": P("bullmq", "b1", "store_hwm_mb"), "pgboss": P("pgboss", "b1", "store_peak_pss_mb"),
     "river": P("river", "b1", "store_peak_pss_mb")}, "lower")

# ---- B2 drain
section("B2 drain (preloaded, concurrency 100, no rate limit)")
row("jobs", P("ezt", "b2", "n"), {s: P(s, "b2", "n") for s, _ in PEERS}, ratios=False)
row("time to last arrival (s)", P("ezt", "b2", "secs_to_last_arrival"), {s: P(s, "b2", "secs_to_last_arrival") for s, _ in PEERS}, "lower")
row("jobs/s", P("ezt", "b2", "jobs_per_s"), {s: P(s, "b2", "jobs_per_s") for s, _ in PEERS}, "higher")
row("CPU-s per 1k (server; store + worker)", P("ezt", "b2", "cpu_s_per_1k"), {s: P(s, "b2", "cpu_s_per_1k") for s, _ in PEERS}, "lower")

# ---- B3 steady state
rates = [r["rate"] for r in (P("ezt", "b3", "rates") or [])] or [1000, 5000, 10000]
section(f"B3 steady state, open loop ({P('ezt', 'b3', 'duration_s') or '?'} s per rate), enqueue → arrival")


def b3(system, rate, *path):
    for r in P(system, "b3", "rates") or []:
        if r["rate"] == rate:
            return g(r, *path)
    return None


def b3cell(system, rate, key):
    v = b3(system, rate, "latency", key)
    if v is None:
        return None
    miss = b3(system, rate, "missing_after_wait") or 0
    ach = b3(system, rate, "producer", "achieved_rate")
    if miss or (ach is not None and ach < 0.95 * rate):
        return f"{fmt(v)} (sent {fmt(ach)}/s, {fmt(miss)} late)" if miss else f"{fmt(v)} (sent {fmt(ach)}/s)"
    return v


for rate in rates:
    for k, lab in (("p50_ms", "p50"), ("p99_ms", "p99")):
        ev = b3("ezt", rate, "latency", k)
        cells = {s: b3cell(s, rate, k) for s, _ in PEERS}
        rows.append(f"| {rate:,}/s offered: {lab} (ms) ↓ | {fmt(b3cell('ezt', rate, k))} | " + " | ".join(
            f"{fmt(cells[s])} | {ratio(ev, b3(s, rate, 'latency', k))}" for s, _ in PEERS) + " |")
row("highest rate with p99 < 100 ms (jobs/s)", P("ezt", "b3", "best_rate_p99_under_100ms") or "none",
    {s: P(s, "b3", "best_rate_p99_under_100ms") or ("none" if P(s, "b3") else None) for s, _ in PEERS}, "higher")

# ---- B4 limiter
section("B4 rate accuracy (backlogged lanes at 10 / 100 / 1000 per s)")
lanes = g(raw, "s3_limiter", "lanes") or []
NL = {"pgboss": "no limiter", "river": "no limiter (OSS)"}
for i, rate in enumerate([10, 100, 1000]):
    e = lanes[i] if i < len(lanes) else {}
    bl = (P("bullmq", "b4", "lanes") or [{}] * 3)[i] if P("bullmq", "b4", "lanes") else {}
    row(f"{rate}/s: max in any 1 s window (limit {rate + 1})", e.get("max_in_1s_window"), {"bullmq": bl.get("max_in_1s_window"), **NL}, "lower")
    row(f"{rate}/s: 1 s windows over rate+1", e.get("windows_over_limit"), {"bullmq": bl.get("windows_over_limit"), **NL}, "lower")
    row(f"{rate}/s: achieved ÷ configured", e.get("achieved_ratio"), {"bullmq": bl.get("achieved_ratio"), **NL})

# ---- B5 fairness
section("B5 fairness (10 tenants, t0 offers 90%)")
NLF = {"pgboss": None, "river": None}
row("Jain's index, mean of 1 s windows", g(raw, "s4_backlog", "jain_mean"), {s: P(s, "b5", "jain_mean") for s, _ in PEERS}, "higher")
row("noisy tenant's share of completions", g(raw, "s4_backlog", "noisy_share"), {s: P(s, "b5", "noisy_share") for s, _ in PEERS}, "lower")
row("lane throughput (jobs/s; EZT & BullMQ limited to 200/s)", g(raw, "s4_backlog", "achieved_rate"), {s: P(s, "b5", "achieved_rate") for s, _ in PEERS})
for k, lab in (("p50_ms", "p50"), ("p95_ms", "p95")):
    row(f"quiet tenants' wait {lab}, noisy backlog (ms)", g(raw, "s4_wait", "quiet_wait", k),
        {"bullmq": P("bullmq", "b5", "quiet_wait", "wait", k), "pgboss": "n/a (no limiter)", "river": "n/a (no limiter)"}, "lower")
    row(f"quiet wait {lab}, solo (ms)", g(raw, "s4_solo", "quiet_wait", k),
        {"bullmq": P("bullmq", "b5", "quiet_solo", "wait", k), "pgboss": "n/a", "river": "n/a"}, "lower")

# ---- B7 crash
section("B7 kill -9 during admission (workers dispatching)")
row("trials", P("ezt", "b7", "trials"), {s: P(s, "b7", "trials") for s, _ in PEERS}, ratios=False)
row("acked jobs (all trials)", P("ezt", "b7", "total_acked"), {s: P(s, "b7", "total_acked") for s, _ in PEERS}, ratios=False)
row("acked but lost", P("ezt", "b7", "total_lost_acked"), {s: P(s, "b7", "total_lost_acked") for s, _ in PEERS}, "lower")
row("duplicate deliveries", P("ezt", "b7", "total_duplicates"), {s: P(s, "b7", "total_duplicates") for s, _ in PEERS}, "lower")

section("context: other engineers' CPU use on the 2 cores just before each phase (B1 / B2 / B3 / B7)")
for sc in ("b1", "b2", "b3", "b7"):
    row(f"{sc.upper()}: busy share of the CPUs before the phase", P("ezt", sc, "quiet_gate", "busy_fraction_before"),
        {s: P(s, sc, "quiet_gate", "busy_fraction_before") for s, _ in PEERS}, ratios=False)

head = ("| metric (↑ higher is better, ↓ lower) | EZThrottle | " + " | ".join(f"{n} | ours ÷ {n.split(' ')[0]}" for _, n in PEERS) + " |\n"
        + "|---" * (2 + 2 * len(PEERS)) + "|\n")
table = head + "\n".join(rows)

# ---- charts
charts = []
try:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    cdir = res_path.parent / "charts"
    cdir.mkdir(exist_ok=True)
    stem = res_path.stem
    colors = {"ezt": "#d62728", "bullmq": "#1f77b4", "pgboss": "#2ca02c", "river": "#9467bd"}
    # B3: enqueue -> arrival percentiles per system, one panel per offered rate
    pk = [("p50_ms", "p50"), ("p90_ms", "p90"), ("p95_ms", "p95"), ("p99_ms", "p99"), ("p999_ms", "p99.9")]
    fig, axes = plt.subplots(1, len(rates), figsize=(5 * len(rates), 4), sharey=True)
    for ax, rate in zip(axes if len(rates) > 1 else [axes], rates):
        for s in ["ezt"] + [p for p, _ in PEERS]:
            ys = [b3(s, rate, "latency", k) for k, _ in pk]
            if any(y is not None for y in ys):
                ach = b3(s, rate, "producer", "achieved_rate")
                miss = b3(s, rate, "missing_after_wait") or 0
                lab = NAMES[s] + ("" if (ach or 0) >= 0.95 * rate and not miss else f" (sent {ach:,.0f}/s{', %d late' % miss if miss else ''})")
                ax.plot([l for _, l in pk], [y if y is not None else float("nan") for y in ys], "o-", color=colors[s], label=lab)
        ax.set_yscale("log")
        ax.axhline(100, color="grey", ls=":", lw=1)
        ax.set_title(f"B3: {rate:,} jobs/s offered")
        ax.set_xlabel("percentile")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    (axes[0] if len(rates) > 1 else axes).set_ylabel("enqueue → target arrival (ms, log)")
    fig.tight_layout()
    f3 = cdir / f"{stem}-b3-latency.png"
    fig.savefig(f3, dpi=90)
    plt.close(fig)
    charts.append(f3)
    # B5: per-tenant throughput over time
    series = [("ezt", g(raw, "s4_backlog", "counts_per_window"))] + [(s, P(s, "b5", "counts_per_window")) for s, _ in PEERS]
    series = [(s, c) for s, c in series if c]
    if series:
        fig, axes = plt.subplots(1, len(series), figsize=(4.5 * len(series), 3.8), squeeze=False)
        for ax, (s, counts) in zip(axes[0], series):
            xs = list(range(1, len(counts) + 1))
            share = lambda c, t: c[t] / max(1, sum(c))
            ax.plot(xs, [share(c, 0) for c in counts], color="black", lw=2, label="t0 (noisy, offers 90%)")
            for t in range(1, 10):
                ax.plot(xs, [share(c, t) for c in counts], lw=0.8, alpha=0.8, label="t1..t9 (quiet, 1.1% each)" if t == 1 else None)
            ax.axhline(0.1, color="grey", ls=":", lw=1)
            rate = sum(sum(c) for c in counts) / len(counts)
            ax.set_title(NAMES[s] + (" (lane 200/s)" if s in ("ezt", "bullmq") else " (no limiter)") + f", {rate:,.0f} jobs/s", fontsize=9)
            ax.set_xlabel("second")
            ax.set_ylim(0, 1)
            ax.grid(True, alpha=0.3)
        axes[0][0].set_ylabel("tenant's share of completions per 1 s")
        axes[0][0].legend(fontsize=7)
        fig.suptitle("B5: per-tenant throughput over time", fontsize=10)
        fig.tight_layout()
        f5 = cdir / f"{stem}-b5-tenants.png"
        fig.savefig(f5, dpi=90)
        plt.close(fig)
        charts.append(f5)
except ImportError:
    print("matplotlib not available: no charts (run bench/peers/setup.sh)", file=sys.stderr)

md = (f"Result `{res_path.name}` (git {R.get('git_sha')}, {'quick' if R.get('quick') else 'full'} run, {R.get('utc')}). "
      "Ratios are ours ÷ peer: above 1 means EZThrottle is higher (better for ↑ rows, worse for ↓ rows).\n\n" + table + "\n")
for c in charts:
    md += f"\n![{c.stem}](results/charts/{c.name})\n"
print(md)
if readme:
    t = readme.read_text()
    b, e = "<!-- sides:begin -->", "<!-- sides:end -->"
    if b in t and e in t:
        t = t[: t.index(b) + len(b)] + "\n" + md + t[t.index(e):]
    else:
        t += f"\n{b}\n{md}{e}\n"
    readme.write_text(t)
