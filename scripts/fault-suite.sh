#!/usr/bin/env bash
# The fault suite in its full form (kill -9 trials 10 + 10, SIGTERM drain, disk full, hostile
# targets, clock steps), release build, one test at a time. Writes the counts to
# bench/results/fault-<date>-<sha>.json. CI runs the small form as part of scripts/test-all.sh.
#
# Needs root (tmpfs mount) and libfaketime (apt-get install libfaketime); EZT_SKIP_PRIVILEGED=1
# skips those two tests instead of failing them. EZT_FAULT_SEED=N replays the random kill points.
#
# The filter is `::fault_` (module path), not `fault_`: the latter also matches
# e2e_limits::default_lane_….
set -euo pipefail
cd "$(dirname "$0")/.."

sha=$(git rev-parse --short HEAD)
dirty=$(git status --porcelain --untracked-files=no | grep -vc ' bench/results/' || true)
date=$(date -u +%Y-%m-%d)
out="bench/results/fault-$date-$sha.json"
lines=$(mktemp)
log=$(mktemp)
trap 'rm -f "$lines" "$log"' EXIT

start=$(date +%s)
set +e
EZT_FAULT_FULL=1 EZT_FAULT_OUT="$lines" \
  cargo test --release --locked -p ezthrottle --test it -- ::fault_ --test-threads=1 --nocapture \
  2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
seconds=$(( $(date +%s) - start ))
summary=$(grep -E '^test result:' "$log" | tail -1 || true)

{
  printf '{\n "suite": "ezthrottle-fault",\n "full": true,\n "git_sha": "%s",\n' "$sha"
  printf ' "dirty_files": %s,\n "utc": "%s",\n' "$dirty" "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  printf ' "cpus": %s,\n "exit_status": %s,\n "seconds": %s,\n' "$(nproc)" "$status" "$seconds"
  printf ' "cargo_summary": "%s",\n "tests": [\n' "${summary//\"/\\\"}"
  sep=""
  while IFS= read -r line; do
    printf '%s  %s' "$sep" "$line"
    sep=$',\n'
  done < "$lines"
  printf '\n ]\n}\n'
} > "$out"
echo "wrote $out" >&2
exit "$status"
