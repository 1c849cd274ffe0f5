#!/usr/bin/env bash
# A/B of admission with 64 clients (B1's c64 case) between two server binaries, alternating
# A B A B … on fresh data dirs, so a drift in machine speed hits both alike:
#   bench/ab-admit.sh BIN_A BIN_B [ROUNDS=5] [N=40000]
# Prints one JSON line per run and a last line with each side's medians (jobs/s, p99 ack, server CPU
# seconds per 1k jobs: the figure that holds up best on a busy machine) and their B/A ratios. Jobs are scheduled 1 h ahead (never dispatched), as in B1; both servers
# run on their defaults (one lane), so binaries from before a configuration key existed work too.
set -euo pipefail
A=$1 B=$2 ROUNDS=${3:-5} N=${4:-40000}
BENCH=$(cd "$(dirname "$0")" && pwd)
LG="$BENCH/loadgen/target/release/ezt-loadgen"
[[ -x "$LG" ]] || (cd "$BENCH/loadgen" && cargo build --release -q)
PORT=${EZT_BENCH_PORT:-18490}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/ezt-ab.XXXXXX")
PID=""
trap '[[ -n "$PID" ]] && kill -9 "$PID" 2>/dev/null; rm -rf "$WORK"' EXIT
run() { # BIN LABEL
  rm -rf "$WORK/data" "$WORK/log" "$WORK/out"; mkdir -p "$WORK/data"  # the old log must not answer the wait below
  "$1" serve --listen "127.0.0.1:$PORT" --data-dir "$WORK/data" --allow-cidr 127.0.0.1/32 \
    >"$WORK/out" 2>"$WORK/log" &
  PID=$!
  local i=0
  until grep -qs "listening on" "$WORK/log"; do
    i=$((i + 1))
    if ((i > 400)) || ! kill -0 "$PID" 2>/dev/null; then
      echo "$2 ($1) did not start after $i checks:" >&2; tail -n 5 "$WORK/log" "$WORK/out" >&2; exit 1
    fi
    sleep 0.05
  done
  local key; key=$(head -1 "$WORK/out")
  "$LG" admit --server "http://127.0.0.1:$PORT" --key "$key" --n "$N" --c 64 \
    --target-url "http://127.0.0.1:18499/never" --prefix "ab$RANDOM" \
    >"$WORK/run.json"
  local ticks; ticks=$(awk '{print $14 + $15}' "/proc/$PID/stat")
  python3 -c "import json,sys; d=json.load(open('$WORK/run.json')); d['side']='$2'; d['server_cpu_s']=$ticks/$(getconf CLK_TCK); print(json.dumps(d))"
  kill -TERM "$PID"; wait "$PID" 2>/dev/null || true; PID=""
}
for _ in $(seq 1 "$ROUNDS"); do run "$A" A; run "$B" B; done | tee "$WORK/runs.jsonl"
python3 - "$WORK/runs.jsonl" <<'PY'
import json, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1])]
def col(side, *keys):
    out = []
    for r in runs:
        if r["side"] != side: continue
        v = r
        for k in keys: v = v.get(k) if isinstance(v, dict) else None
        if v is not None: out.append(v)
    return out
rate_key = next(k for k in ("jobs_per_s", "rate", "throughput") if k in runs[0])
res = {}
for s in "AB":
    n = col(s, "accepted_202")
    cpu = [c / a * 1000 for c, a in zip(col(s, "server_cpu_s"), n) if a]
    res[s] = {"jobs_per_s": statistics.median(col(s, rate_key)),
              "ack_p99_ms": statistics.median(col(s, "ack", "p99_ms")),
              "server_cpu_s_per_1k": round(statistics.median(cpu), 4)}
ratio = {k: round(res["B"][k] / res["A"][k], 3) for k in res["A"]}
print(json.dumps({"median": res, "ratio_B_over_A": ratio}))
PY
