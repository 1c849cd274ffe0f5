#!/usr/bin/env bash
# Webhook delivery benchmark (issue 4): deliveries/s and job-end-to-receipt latency, beside a
# direct POST loop to the same receiver in the same run. Usage: bench/webhooks.sh [jobs]
# Writes bench/results/webhooks-<UTC date>-<git sha>.json.
set -euo pipefail
BENCH=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$BENCH")
N=${1:-20000}
(cd "$ROOT" && cargo build --release -q -p ezthrottle)
(cd "$BENCH/webhooks" && CARGO_TARGET_DIR="$BENCH/webhooks/target" cargo build --release -q)
SHA=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo nogit)
OUT="$BENCH/results/webhooks-$(date -u +%Y-%m-%d)-$SHA.json"
"$BENCH/webhooks/target/release/ezt-webhook-bench" "$ROOT/target/release/ezthrottle" "$N" "$OUT"
echo "wrote $OUT" >&2
