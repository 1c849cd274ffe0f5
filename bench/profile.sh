#!/usr/bin/env bash
# Profiles the EZThrottle server with perf under one benchmark load (127.0.0.1 only).
#   bench/profile.sh admit    # 64 clients, single-job admission (B1), nothing dispatched
#   bench/profile.sh batch    # 1000-job batches, 2 callers (B1 bulk)
#   bench/profile.sh steady [RATE]   # open loop at RATE jobs/s (default 5000) with dispatch (B3)
# Needs `perf` (apt linux-perf) and the release binaries that run.sh builds. Writes
# /tmp/ezt-profile-<mode>.txt (perf report, flat by self time, and by caller "children").
set -euo pipefail
BENCH=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$BENCH")
MODE=${1:-admit}; RATE=${2:-5000}
command -v perf >/dev/null || { apt-get install -y -qq linux-perf >/dev/null; }
EZT="$ROOT/target/release/ezthrottle"; LG="$BENCH/loadgen/target/release/ezt-loadgen"
W=$(mktemp -d /tmp/ezt-prof.XXXXXX); PORT=18470; TPORT=18471
trap 'kill $SRV $TGT 2>/dev/null || true; [[ -n "${KEEP:-}" ]] && echo "kept $W" >&2 || rm -rf "$W"' EXIT
printf '[lanes.default]\nrate = 2.0\nburst = 1\nmax_in_flight = 2\n[lanes.hosts."127.0.0.1:%s"]\nrate = 1000000.0\nburst = 1000\nmax_in_flight = 100\n' "$TPORT" >"$W/c.toml"
"$LG" target --ports "$TPORT" >/dev/null 2>&1 & TGT=$!
"$EZT" serve --listen "127.0.0.1:$PORT" --data-dir "$W/data" --allow-cidr 127.0.0.1/32 --config "$W/c.toml" >"$W/out" 2>"$W/log" & SRV=$!
for _ in $(seq 200); do grep -q "listening on" "$W/log" 2>/dev/null && break; sleep 0.05; done
KEY=$(head -1 "$W/out"); S="http://127.0.0.1:$PORT"; T="http://127.0.0.1:$TPORT/p"
case $MODE in
  admit) LOAD=("$LG" admit --server "$S" --key "$KEY" --n 150000 --c 64 --target-url "$T") ;;
  batch) LOAD=("$LG" batch --server "$S" --key "$KEY" --n 400000 --batch 1000 --c 2 --target-url "$T") ;;
  steady) LOAD=("$LG" steady --server "$S" --key "$KEY" --rate "$RATE" --duration 12 --target-url "$T") ;;
  *) echo "mode: admit|batch|steady" >&2; exit 2 ;;
esac
"${LOAD[@]}" >"$W/load.json" & L=$!
sleep 1.5
perf record -F 999 -g --call-graph dwarf,16384 -p "$SRV" -o "$W/perf.data" -- sleep 6 2>/dev/null >/dev/null
wait $L; cat "$W/load.json"
OUT=/tmp/ezt-profile-$MODE.txt
{ echo "# CPU by thread (share of samples)"; perf report -i "$W/perf.data" --no-children --sort comm --stdio -g none 2>/dev/null | grep '%' | head -12
  echo "# self time, flat"; perf report -i "$W/perf.data" --no-children --sort comm,symbol --stdio -g none 2>/dev/null | grep '%' | head -45
  echo "# inclusive (children), EZThrottle and SQLite frames"; perf report -i "$W/perf.data" --children --sort comm,symbol --stdio -g none 2>/dev/null | grep '%' | grep -E 'ezt_|sqlite3|rusqlite|hyper|serde|axum|walFrames|savepoint|Savepoint|subjournal|fdatasync|tokio::runtime::task' | head -60
} >"$OUT"
echo "profile: $OUT" >&2
