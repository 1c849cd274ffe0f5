#!/usr/bin/env bash
# A/B of admission with 64 clients (B1's c64 case) between two server binaries, alternating
# A B A B … on fresh data dirs, so a drift in machine speed hits both alike:
#   bench/ab-admit.sh BIN_A BIN_B [ROUNDS=5] [N=40000]
# Prints one JSON line per run and a last line with each side's median jobs/s and p99 ack and the
# B/A ratio of the medians. Jobs are scheduled 1 h ahead (never dispatched), as in B1.
set -euo pipefail
A=$1 B=$2 ROUNDS=${3:-5} N=${4:-40000}
BENCH=$(cd "$(dirname "$0")" && pwd)
LG="$BENCH/loadgen/target/release/ezt-loadgen"
[[ -x "$LG" ]] || (cd "$BENCH/loadgen" && cargo build --release -q)
PORT=${EZT_BENCH_PORT:-18490}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/ezt-ab.XXXXXX")
PID=""
trap '[[ -n "$PID" ]] && kill -9 "$PID" 2>/dev/null; rm -rf "$WORK"' EXIT
printf '[lanes]\nmax_lanes_per_tenant = 0\n' >"$WORK/cfg.toml"
run() { # BIN LABEL
  rm -rf "$WORK/data"; mkdir -p "$WORK/data"
  "$1" serve --listen "127.0.0.1:$PORT" --data-dir "$WORK/data" --config "$WORK/cfg.toml" \
    >"$WORK/out" 2>"$WORK/log" &
  PID=$!
  for _ in $(seq 1 400); do grep -q "listening on" "$WORK/log" && break; sleep 0.05; done
  local key; key=$(head -1 "$WORK/out")
  "$LG" admit --server "http://127.0.0.1:$PORT" --key "$key" --n "$N" --c 64 \
    --target-url "http://127.0.0.1:18499/never" --prefix "ab$RANDOM" \
    | python3 -c "import json,sys; d=json.load(sys.stdin); d['side']='$2'; print(json.dumps(d))"
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
    res[s] = {"jobs_per_s": statistics.median(col(s, rate_key))}
print(json.dumps({"median": res, "ratio_B_over_A": round(res["B"]["jobs_per_s"] / res["A"]["jobs_per_s"], 3)}))
PY
