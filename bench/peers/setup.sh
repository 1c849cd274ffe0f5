#!/usr/bin/env bash
# Installs the peers the side-by-side benchmark runs against. Only bench/ scripts call this
# (never .ci/run). Idempotent: skips what is already there.
#   - apt: redis-server, postgresql-15 (initdb/pg_ctl under /usr/lib/postgresql/15/bin)
#   - npm ci in bench/peers/node (bullmq 6.7.0, ioredis 6.0.0, pg-boss 10.4.2; lock file committed)
#   - go build bench/peers/river (River v0.51.1 + pgx v5; go.mod/go.sum committed)
#   - python venv bench/.venv with matplotlib (charts)
set -euo pipefail
BENCH=$(cd "$(dirname "$0")/.." && pwd)
PEERS="$BENCH/peers"
log() { echo "== setup: $*" >&2; }

need_apt=()
command -v redis-server >/dev/null || need_apt+=(redis-server)
[[ -x /usr/lib/postgresql/15/bin/initdb ]] || need_apt+=(postgresql-15)
if ((${#need_apt[@]})); then
  log "apt-get install ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
  # the packages start system-wide services; the bench runs its own private instances
  systemctl disable --now redis-server >/dev/null 2>&1 || service redis-server stop >/dev/null 2>&1 || true
fi

if [[ ! -d "$PEERS/node/node_modules/bullmq" || "$PEERS/node/package-lock.json" -nt "$PEERS/node/node_modules/.package-lock.json" ]]; then
  log "npm ci (bench/peers/node)"
  (cd "$PEERS/node" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
fi

if [[ ! -x "$PEERS/river/river-peer" || -n "$(find "$PEERS/river" -name '*.go' -newer "$PEERS/river/river-peer")" || "$PEERS/river/go.sum" -nt "$PEERS/river/river-peer" ]]; then
  log "go build (bench/peers/river)"
  (cd "$PEERS/river" && nice go build -o river-peer .)
fi

if [[ ! -x "$BENCH/.venv/bin/python" ]] || ! "$BENCH/.venv/bin/python" -c 'import matplotlib' 2>/dev/null; then
  log "python venv + matplotlib (bench/.venv)"
  python3 -m venv "$BENCH/.venv"
  "$BENCH/.venv/bin/pip" install -q --disable-pip-version-check 'matplotlib==3.9.2'
fi
log "ok"
