#!/usr/bin/env bash
# EZThrottle on-demand benchmark suite, side by side with BullMQ+Redis, pg-boss+PostgreSQL and
# River+PostgreSQL. Usage: bench/run.sh [--quick] [--only 1,2,...,8] [--peers bullmq,pgboss,river|none]
# Builds the server and the load generator (release), installs the peers (bench/peers/setup.sh),
# runs scenarios 1-5 against a server on a fresh data directory each time, then the side-by-side
# scenarios (bench/sides.py: 6 = B2 drain, 7 = B3 steady state, 8 = B7 crash; and the peers' B1/B4/B5
# with scenarios 1/3/4). All traffic on 127.0.0.1. Writes
# bench/results/<UTC date>-<git short sha>[-quick][-onlyN].json, a Markdown table next to it, charts
# under bench/results/charts/, and (full runs of every scenario) the table in bench/README.md.
# EZT_BENCH_BIN=/path/to/ezthrottle runs that server binary instead of this tree's build (an older
# release for a before/after comparison under the same harness); its results are named
# <date>-bin-<EZT_BENCH_LABEL, default the file name>…json.
set -euo pipefail

BENCH=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$BENCH")
ALL="1 2 3 4 5 6 7 8"
QUICK=0; ONLY="$ALL"; PEERS="bullmq,pgboss,river"
while (($#)); do
  case $1 in
    --quick) QUICK=1 ;;
    --only) ONLY=${2//,/ }; shift ;;   # e.g. --only 3,4
    --peers) PEERS=$2; shift ;;        # e.g. --peers bullmq, or none
    *) echo "usage: $0 [--quick] [--only 1,2,3,4,5,6,7,8] [--peers bullmq,pgboss,river|none]" >&2; exit 2 ;;
  esac
  shift
done
want() { [[ " $ONLY " == *" $1 "* ]]; }

if ((QUICK)); then
  ADMIT_N=20000; SERIAL_N=500; BATCH_N=50000; SQLITE_N=3000; PICKUP_N=300
  LIM_DUR=5; FAIR_DUR=2; BIG_N=100000; BIG_LANES=1000
else
  ADMIT_N=100000; SERIAL_N=2000; BATCH_N=200000; SQLITE_N=20000; PICKUP_N=2000
  LIM_DUR=60; FAIR_DUR=30; BIG_N=1000000; BIG_LANES=10000
fi

echo "== peers: install if missing (bench/peers/setup.sh)" >&2
"$BENCH/peers/setup.sh"
echo "== building (release)" >&2
[[ -n "${EZT_BENCH_BIN:-}" ]] || (cd "$ROOT" && CARGO_TARGET_DIR="$ROOT/target" cargo build --release -q -p ezthrottle)
(cd "$BENCH/loadgen" && CARGO_TARGET_DIR="$BENCH/loadgen/target" cargo build --release -q)
# What was built: the shared target/ may be rebuilt by someone else mid-run, so run private copies.
SHA=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo nogit)
[[ -n "${EZT_BENCH_BIN:-}" ]] && SHA="bin-${EZT_BENCH_LABEL:-$(basename "$EZT_BENCH_BIN")}"
DIRTY=$( (git -C "$ROOT" status --porcelain --untracked-files=no 2>/dev/null || true) | (grep -v '^.. bench/' || true) | wc -l)

# Data dirs live on the real disk (/tmp is the root ext4 here), never tmpfs: fsync must be real.
WORK=$(mktemp -d "${TMPDIR:-/tmp}/ezt-bench.XXXXXX")
cp "${EZT_BENCH_BIN:-$ROOT/target/release/ezthrottle}" "$WORK/ezthrottle"
cp "$BENCH/loadgen/target/release/ezt-loadgen" "$WORK/"
EZT="$WORK/ezthrottle"
LG="$WORK/ezt-loadgen"
OUT="$WORK/out"; mkdir -p "$OUT"
SRV_PORT=${EZT_BENCH_PORT:-18480}
SRV="http://127.0.0.1:$SRV_PORT"
NOWHERE_PORT=18481           # jobs scheduled 1 h ahead point here; never called
PICKUP_PORT=18482
LIM_PORTS=(18483 18484 18485)
FAIR_PORT=18486
SRV_PID=""; TGT_PID=""

cleanup() {
  [[ -n "$SRV_PID" ]] && kill -9 "$SRV_PID" 2>/dev/null || true
  [[ -n "$TGT_PID" ]] && kill "$TGT_PID" 2>/dev/null || true
  [[ -z "${KEEP_WORK:-}" ]] && rm -rf "$WORK" || echo "work dir kept: $WORK" >&2
}
trap cleanup EXIT

log() { echo "== $(date -u +%H:%M:%S) $*" >&2; }

# write_config FILE [PORT RATE BURST MIF]...
write_config() {
  local f=$1; shift
  # No per-tenant lane cap: scenario 5 spreads one tenant over BIG_LANES (10,000) lanes.
  # (Binaries from before that key existed have no cap and would refuse it.)
  { echo '[lanes]'; "$EZT" serve --help 2>/dev/null | grep -q MAX_LANES_PER_TENANT && echo 'max_lanes_per_tenant = 0'
    echo '[lanes.default]'; echo 'rate = 2.0'; echo 'burst = 1'; echo 'max_in_flight = 2'
    while (($#)); do
      printf '[lanes.hosts."127.0.0.1:%s"]\nrate = %s\nburst = %s\nmax_in_flight = %s\n' "$1" "$2" "$3" "$4"
      shift 4
    done; } >"$f"
}

# start_server NAME CONFIG [reuse [DATA_NAME]]  -> sets SRV_PID, KEY (first-start key, if printed)
start_server() {
  local name=$1 cfg=$2 data="$WORK/data-${4:-$1}"
  if [[ "${3:-}" != reuse ]]; then rm -rf "$data"; mkdir -p "$data"; fi
  "$EZT" serve --listen "127.0.0.1:$SRV_PORT" --data-dir "$data" --allow-cidr 127.0.0.1/32 \
    --config "$cfg" >"$WORK/$name.stdout" 2>>"$WORK/$name.log" &
  SRV_PID=$!
  local i
  for i in $(seq 1 1200); do
    grep -q "listening on http://" "$WORK/$name.log" 2>/dev/null && break
    kill -0 "$SRV_PID" 2>/dev/null || { echo "server $name died:" >&2; tail -20 "$WORK/$name.log" >&2; exit 1; }
    sleep 0.05
  done
  if [[ "${3:-}" != reuse ]] && [[ -s "$WORK/$name.stdout" ]]; then KEY=$(head -1 "$WORK/$name.stdout"); fi
}

stop_server() {
  [[ -z "$SRV_PID" ]] && return
  kill -TERM "$SRV_PID" 2>/dev/null || true
  for _ in $(seq 1 100); do kill -0 "$SRV_PID" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$SRV_PID" 2>/dev/null || true
  wait "$SRV_PID" 2>/dev/null || true
  SRV_PID=""
}

procstat() { "$LG" procstat --pid "$SRV_PID"; }

# ------------------------------------------------------------------------------------------
if want 1; then
log "scenario 1: admission (jobs scheduled 1 h ahead, so the lane never dispatches)"
write_config "$WORK/s1.toml"
start_server s1 "$WORK/s1.toml"
TGT_URL="http://127.0.0.1:$NOWHERE_PORT/admission"
"$LG" admit --server "$SRV" --key "$KEY" --n "$SERIAL_N" --c 1 --target-url "$TGT_URL" --prefix serial >"$OUT/s1_serial.json"
procstat >"$OUT/s1_proc_before.json"
"$LG" admit --server "$SRV" --key "$KEY" --n "$ADMIT_N" --c 64 --target-url "$TGT_URL" --prefix c64 >"$OUT/s1_admit.json"
procstat >"$OUT/s1_proc_after.json"
stop_server
for c in 1 2; do
  start_server "s1b$c" "$WORK/s1.toml"
  "$LG" batch --server "$SRV" --key "$KEY" --n "$BATCH_N" --batch 1000 --c "$c" --target-url "$TGT_URL" >"$OUT/s1_batch_c$c.json"
  procstat >"$OUT/s1_batch_c${c}_proc.json"
  stop_server
done
log "scenario 1: bare SQLite baseline"
"$LG" sqlite-baseline --dir "$WORK" --n "$SQLITE_N" --rows-per-txn 1 >"$OUT/s1_sqlite_1.json"
"$LG" sqlite-baseline --dir "$WORK" --n "$((SQLITE_N * 10))" --rows-per-txn 1000 >"$OUT/s1_sqlite_1000.json"

# ------------------------------------------------------------------------------------------
fi
if want 2; then
log "scenario 2: pickup latency"
write_config "$WORK/s2.toml" "$PICKUP_PORT" 1000000.0 1000 1000
start_server s2 "$WORK/s2.toml"
"$LG" pickup --server "$SRV" --key "$KEY" --port "$PICKUP_PORT" --n "$PICKUP_N" >"$OUT/s2_pickup.json"
stop_server

# ------------------------------------------------------------------------------------------
fi
if want 3 || want 4; then
"$LG" target --ports "$(IFS=,; echo "${LIM_PORTS[*]}"),$FAIR_PORT" --out "$WORK/arrivals.tsv" 2>"$WORK/target.log" >/dev/null &
TGT_PID=$!
sleep 0.5
fi
if want 3; then
log "scenario 3: limiter accuracy (${LIM_DUR}s)"
write_config "$WORK/s3.toml" "${LIM_PORTS[0]}" 10.0 1 64 "${LIM_PORTS[1]}" 100.0 1 64 "${LIM_PORTS[2]}" 1000.0 1 64
start_server s3 "$WORK/s3.toml"
"$LG" limiter --server "$SRV" --key "$KEY" --ports "$(IFS=,; echo "${LIM_PORTS[*]}")" --rates 10,100,1000 \
  --burst 1 --duration "$LIM_DUR" >"$OUT/s3_limiter.json"
procstat >"$OUT/s3_proc.json"
stop_server

# ------------------------------------------------------------------------------------------
fi
if want 4; then
log "scenario 4: fairness (${FAIR_DUR}s per phase)"
write_config "$WORK/s4.toml" "$FAIR_PORT" 200.0 1 64
fair_server() { # fresh server with 10 paid tenants t0..t9 -> KEYS
  local name=$1 data="$WORK/data-$1" i k
  rm -rf "$data"; mkdir -p "$data"
  KEYS=""
  for i in $(seq 0 9); do
    "$EZT" tenants create "t$i" --tier paid --data-dir "$data" --config "$WORK/s4.toml" >/dev/null 2>&1
    k=$("$EZT" keys create --tenant "t$i" --data-dir "$data" --config "$WORK/s4.toml" 2>/dev/null | head -1)
    KEYS="${KEYS:+$KEYS,}$k"
  done
  start_server "$name" "$WORK/s4.toml" reuse
}
for mode in backlog wait solo; do
  fair_server "s4$mode"
  "$LG" fair --server "$SRV" --keys "$KEYS" --port "$FAIR_PORT" --rate 200 --duration "$FAIR_DUR" --mode "$mode" >"$OUT/s4_$mode.json"
  stop_server
done
fi
if [[ -n "$TGT_PID" ]]; then kill -TERM "$TGT_PID" 2>/dev/null || true; wait "$TGT_PID" 2>/dev/null || true; TGT_PID=""; fi

# ------------------------------------------------------------------------------------------
if want 5; then
log "scenario 5: footprint, $BIG_N scheduled jobs over $BIG_LANES lanes, kill -9 and restart"
write_config "$WORK/s5.toml"
start_server s5 "$WORK/s5.toml"
sleep 2
procstat >"$OUT/s5_idle.json"
"$LG" batch --server "$SRV" --key "$KEY" --n "$BIG_N" --batch 1000 --c 2 --lanes "$BIG_LANES" \
  --target-url "http://127.0.0.1:$NOWHERE_PORT/big" --prefix big >"$OUT/s5_load.json"
sleep 3
procstat >"$OUT/s5_loaded.json"
DBSIZE=$(du -sm "$WORK/data-s5" | cut -f1)
kill -9 "$SRV_PID"; wait "$SRV_PID" 2>/dev/null || true; SRV_PID=""
T0=$(date +%s%N)
start_server s5r "$WORK/s5.toml" reuse s5
READY=""
for _ in $(seq 1 6000); do
  if curl -fsS -o /dev/null "$SRV/readyz" 2>/dev/null; then READY=$(date +%s%N); break; fi
  sleep 0.01
done
T_LOG=$(date +%s%N)
RECOVERED=$(grep "recovered waiting jobs" "$WORK/s5r.log" | tail -1 | sed 's/\x1b\[[0-9;]*m//g' || true)
sleep 3
procstat >"$OUT/s5_restarted.json"
RSS_SERIES=$(for _ in 1 2 3; do "$LG" procstat --pid "$SRV_PID" | jq -c .rss_mb; sleep 1; done | paste -sd, -)
python3 - "$OUT/s5_restart.json" "$T0" "${READY:-0}" "$T_LOG" "$RECOVERED" "$DBSIZE" "$RSS_SERIES" <<'EOF'
import json, re, sys
out, t0, ready, tlog, line, db, series = sys.argv[1:]
jobs = re.search(r"jobs[=:\" ]+(\d+)", line); ms = re.search(r"\bms[=:\" ]+(\d+)", line)
json.dump({"ready_s": (int(ready) - int(t0)) / 1e9 if int(ready) else None,
           "recovered_line": line.strip()[-200:], "recovered_jobs": int(jobs.group(1)) if jobs else None,
           "recovery_ms_logged": int(ms.group(1)) if ms else None, "db_dir_mb": int(db),
           "rss_mb_series_after": [float(x) for x in series.split(",") if x]}, open(out, "w"))
EOF
stop_server
fi

# ------------------------------------------------------------------------------------------
# Side by side: B2 drain (6), B3 steady state (7), B7 crash (8) for EZThrottle and the peers; the
# peers' B1 (with 1), B4 (with 3) and B5 (with 4). EZThrottle's B1/B4/B5 are scenarios 1/3/4 above.
SC=""
want 1 && SC+=",b1"; want 6 && SC+=",b2"; want 7 && SC+=",b3"; want 3 && SC+=",b4"; want 4 && SC+=",b5"; want 8 && SC+=",b7"
SYSTEMS="ezt"; [[ "$PEERS" != none ]] && SYSTEMS+=",$PEERS"
if [[ -n "$SC" ]]; then
  log "side by side: ${SC#,} for $SYSTEMS"
  python3 "$BENCH/sides.py" --work "$WORK" --out "$OUT" --ezt "$EZT" --lg "$LG" --systems "$SYSTEMS" \
    --scenarios "${SC#,}" $( ((QUICK)) && echo --quick)
fi

# ------------------------------------------------------------------------------------------
mkdir -p "$BENCH/results"
SUFFIX=""; ((QUICK)) && SUFFIX="-quick"; [[ "$ONLY" != "$ALL" ]] && SUFFIX="$SUFFIX-only${ONLY// /}"
RESULT="$BENCH/results/$(date -u +%Y-%m-%d)-$SHA$SUFFIX.json"
python3 "$BENCH/summarize.py" "$OUT" "$RESULT" "$QUICK" "$SHA" "$DIRTY"
log "wrote $RESULT"
# Side-by-side table + charts; a full run of every scenario also refreshes bench/README.md.
RARGS=()
((QUICK == 0)) && [[ "$ONLY" == "$ALL" && "$PEERS" == "bullmq,pgboss,river" ]] && RARGS=(--readme "$BENCH/README.md")
"$BENCH/.venv/bin/python" "$BENCH/report.py" "$RESULT" "${RARGS[@]}" >"${RESULT%.json}.md"
log "wrote ${RESULT%.json}.md and charts in $BENCH/results/charts/"
