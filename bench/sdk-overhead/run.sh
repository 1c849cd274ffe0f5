#!/usr/bin/env bash
# Submit overhead of the three SDKs against a raw HTTP call, each measured side by side (1,000
# interleaved submits per side, median and p99), one after the other against the same server
# binary ($EZTHROTTLE_BIN, default target/release/ezthrottle, built if missing). Writes
# bench/results/<UTC date>-sdk-overhead.json.
set -euo pipefail
BENCH=$(cd "$(dirname "$0")/.." && pwd)
ROOT=$(dirname "$BENCH")
N=${1:-1000}
export EZTHROTTLE_BIN=${EZTHROTTLE_BIN:-$ROOT/target/release/ezthrottle}
[[ -x "$EZTHROTTLE_BIN" ]] || (cd "$ROOT" && cargo build --release -q -p ezthrottle)
OUT="$BENCH/results/$(date -u +%Y-%m-%d)-sdk-overhead.json"
py=$(python3 "$BENCH/sdk-overhead/python.py" "$N")
node=$(node "$BENCH/sdk-overhead/node.mjs" "$N")
go=$(cd "$BENCH/sdk-overhead/go" && go run . -n "$N")
python3 - "$OUT" <<PY
import json, sys
runs = {"python": json.loads('''$py'''), "node": json.loads('''$node'''), "go": json.loads('''$go''')}
json.dump(runs, open(sys.argv[1], "w"), indent=2)
for k, v in runs.items():
    print(k, "overhead median", v.get("overhead_median_ms", v.get("overhead_median_us")), "p99", v.get("overhead_p99_ms", v.get("overhead_p99_us")))
PY
echo "wrote $OUT"
