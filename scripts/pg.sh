#!/usr/bin/env bash
# A throwaway PostgreSQL for tests and local clusters: no Docker, no system service.
#
#   scripts/pg.sh start DIR    initdb into DIR/data (once), start on a free port of 127.0.0.1 and
#                              a unix socket in DIR; prints the URL. A no-op (prints the URL) when
#                              DIR's server is already running; a restart keeps its port if free.
#   scripts/pg.sh stop DIR     fast shutdown (sessions are ended, nothing committed is lost).
#   scripts/pg.sh crash DIR    immediate shutdown (`pg_ctl stop -m immediate`: no checkpoint, crash
#                              recovery at the next start), for fault tests.
#   scripts/pg.sh url DIR      prints postgres://ezt@127.0.0.1:PORT/postgres of DIR's server.
#   scripts/pg.sh attach DIR   start, print the URL, then wait until stdin closes; then stop and
#                              remove DIR. Tests run it with a pipe on stdin, so the server goes
#                              away with the test process however that process ends.
#
# Trust authentication on the socket and on 127.0.0.1 only (the server listens nowhere else);
# fsync and synchronous_commit on, as in production, since a 202 means "committed".
# As root (CI), initdb refuses to run: the server then runs as the `postgres` user (or
# EZT_PG_USER), which owns DIR. As any other user it runs as that user.
set -euo pipefail

cmd=${1:-}
dir=${2:-}
if [ -z "$cmd" ] || [ -z "$dir" ]; then
  echo "usage: $0 start|stop|url|attach DIR" >&2
  exit 2
fi

bindir() {
  local d
  if command -v pg_config >/dev/null 2>&1; then
    d=$(pg_config --bindir 2>/dev/null || true)
    if [ -n "$d" ] && [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ]; then echo "$d"; return; fi
  fi
  for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
    if [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ]; then echo "$d"; return; fi
  done
  if command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
    dirname "$(command -v initdb)"; return
  fi
  echo "pg.sh: PostgreSQL binaries (initdb, pg_ctl) not found; install Debian's postgresql (scripts/test-deps.sh does)" >&2
  exit 3
}

BIN=$(bindir)
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
data="$dir/data"
log="$dir/postgres.log"

# Who runs the server: ourselves, or (as root) an unprivileged user owning DIR.
as_owner() { "$@"; }
if [ "$(id -u)" -eq 0 ]; then
  owner=${EZT_PG_USER:-postgres}
  if ! id "$owner" >/dev/null 2>&1; then
    echo "pg.sh: running as root needs the user '$owner' (Debian's postgresql package creates it)" >&2
    exit 3
  fi
  chown "$owner" "$dir"
  chmod 700 "$dir"
  if command -v runuser >/dev/null 2>&1; then
    as_owner() { runuser -u "$owner" -- "$@"; }
  else
    as_owner() { su -s /bin/sh "$owner" -c "$(printf '%q ' "$@")"; }
  fi
fi

port_of() { [ -f "$dir/port" ] && cat "$dir/port"; }
url() { echo "postgres://ezt@127.0.0.1:$(port_of)/postgres"; }
running() { [ -f "$data/postmaster.pid" ] && as_owner "$BIN/pg_ctl" -D "$data" status >/dev/null 2>&1; }

free_port() {
  local p
  for _ in $(seq 1 50); do
    p=$((20000 + RANDOM % 40000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "$p"; return; fi
  done
  echo "pg.sh: no free port found" >&2
  exit 4
}

start() {
  if running; then url; return; fi
  if [ ! -f "$data/PG_VERSION" ]; then
    as_owner "$BIN/initdb" -D "$data" -U ezt --auth=trust --encoding=UTF8 --locale=C >"$dir/initdb.log" 2>&1 \
      || { cat "$dir/initdb.log" >&2; exit 5; }
  fi
  local tries=0 port
  while :; do
    # A restart keeps its port (and so its URL) when the port is still free.
    port=""
    if [ "$tries" -eq 0 ] && [ -f "$dir/port" ]; then
      port=$(cat "$dir/port")
      if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then port=""; fi
    fi
    [ -n "$port" ] || port=$(free_port)
    if as_owner "$BIN/pg_ctl" -D "$data" -l "$log" -w -t 60 start -o \
      "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=on -c synchronous_commit=on -c max_connections=300" \
      >/dev/null 2>&1; then
      echo "$port" >"$dir/port"
      break
    fi
    tries=$((tries + 1))
    if [ "$tries" -ge 5 ]; then
      echo "pg.sh: PostgreSQL did not start; its log:" >&2
      tail -n 30 "$log" >&2 || true
      exit 5
    fi
  done
  url
}

stop() {
  if running; then
    as_owner "$BIN/pg_ctl" -D "$data" -m fast -w -t 60 stop >/dev/null
  fi
}

crash() {
  if running; then
    as_owner "$BIN/pg_ctl" -D "$data" -m immediate -w -t 60 stop >/dev/null
  fi
}

case "$cmd" in
  start) start ;;
  stop) stop ;;
  crash) crash ;;
  url)
    running || { echo "pg.sh: no server running in $dir" >&2; exit 1; }
    url
    ;;
  attach)
    start
    # Until our reader (the test process) goes away; then the server and its files go too.
    cat >/dev/null || true
    stop
    rm -rf "$dir"
    ;;
  *)
    echo "usage: $0 start|stop|crash|url|attach DIR" >&2
    exit 2
    ;;
esac
