#!/usr/bin/env bash
# What the tests need beyond the Rust toolchain, installed only when missing (a no-op on a machine
# that has them, so scripts/test-all.sh runs it every time):
# - Python packages: `standardwebhooks` (webhook signatures verified by an independent
#   implementation) and the Python SDK's own dev dependencies (httpx, pytest, mypy…), with the SDK
#   installed editable from sdks/python;
# - the hosted service's Python package, unmodified, from PyPI into target/hosted-sdk (never on the
#   default path: it is also called `ezthrottle`), to prove POST /api/v1/proxy serves it as is;
# - schemathesis (scripts/test-openapi-fuzz.sh: schema-driven fuzzing of /openapi.json), pinned;
# - libfaketime (the fault suite's clock steps), from Debian's packages;
# - PostgreSQL's server binaries (initdb, pg_ctl, postgres), from Debian's `postgresql`: the
#   PostgreSQL store's tests start their own throwaway server with scripts/pg.sh. No system
#   cluster is created or started.
set -euo pipefail
cd "$(dirname "$0")/.."
HOSTED_SDK_VERSION=1.3.0
SCHEMATHESIS_VERSION=4.32.5
pip_install() { PIP_ROOT_USER_ACTION=ignore python3 -m pip install --quiet --disable-pip-version-check "$@"; }

python3 -c 'import standardwebhooks' 2>/dev/null || pip_install standardwebhooks
# The fuzz script's checks and config keys are those of schemathesis 4; another version may differ.
[ "$(python3 -c 'import schemathesis; print(schemathesis.__version__)' 2>/dev/null)" = "$SCHEMATHESIS_VERSION" ] \
  || pip_install "schemathesis==$SCHEMATHESIS_VERSION"
if [ -f sdks/python/pyproject.toml ]; then
  python3 - <<'PY' 2>/dev/null || pip_install -e 'sdks/python[dev]'
import importlib.metadata as md, pathlib
import ezthrottle, httpx, pytest, mypy  # noqa: F401
# The installed `ezthrottle` must be this checkout's SDK, not a stale or hosted copy.
assert pathlib.Path(ezthrottle.__file__).resolve().is_relative_to(pathlib.Path("sdks/python").resolve())
PY
fi
if [ ! -f "target/hosted-sdk/ezthrottle-$HOSTED_SDK_VERSION.stamp" ]; then
  rm -rf target/hosted-sdk
  pip_install --no-warn-conflicts --target target/hosted-sdk "ezthrottle==$HOSTED_SDK_VERSION"
  touch "target/hosted-sdk/ezthrottle-$HOSTED_SDK_VERSION.stamp"
fi

have_faketime() {
  for f in /usr/lib/*/faketime/libfaketimeMT.so.1 /usr/lib/faketime/libfaketimeMT.so.1; do
    [ -e "$f" ] && return 0
  done
  return 1
}
if ! have_faketime; then
  sudo_=""
  [ "$(id -u)" -eq 0 ] || sudo_="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo_ apt-get update -qq && $sudo_ apt-get install -y -qq libfaketime >/dev/null
fi

# What scripts/pg.sh looks for, in the same order.
have_postgres() {
  local d
  if command -v pg_config >/dev/null 2>&1; then
    d=$(pg_config --bindir 2>/dev/null || true)
    [ -n "$d" ] && [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ] && return 0
  fi
  for d in /usr/lib/postgresql/*/bin; do
    [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ] && return 0
  done
  command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1
}
if ! have_postgres; then
  sudo_=""
  [ "$(id -u)" -eq 0 ] || sudo_="sudo"
  export DEBIAN_FRONTEND=noninteractive
  # The tests make their own clusters: keep the package from creating and starting one.
  if [ ! -e /etc/postgresql-common/createcluster.conf ]; then
    $sudo_ mkdir -p /etc/postgresql-common
    echo "create_main_cluster = false" | $sudo_ tee /etc/postgresql-common/createcluster.conf >/dev/null
  fi
  # Keep that file without a question (dpkg's and ucf's "confold"; CI has no terminal).
  $sudo_ apt-get update -qq && $sudo_ env DEBIAN_FRONTEND=noninteractive UCF_FORCE_CONFFOLD=1 \
    apt-get install -y -qq -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
    postgresql >/dev/null
fi

# The Go SDK's suite: any Go 1.19+ (Debian 12's golang-go is 1.19).
if [ -f sdks/go/go.mod ] && ! command -v go >/dev/null 2>&1; then
  sudo_=""
  [ "$(id -u)" -eq 0 ] || sudo_="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo_ apt-get update -qq && $sudo_ apt-get install -y -qq golang-go >/dev/null
fi

# The Node SDK's suite: Node 18+ with npm (its own dev dependencies come from npm in run-tests.sh).
if [ -f sdks/node/package.json ] && { ! command -v npm >/dev/null 2>&1 \
  || [ "$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)" -lt 18 ]; }; then
  sudo_=""
  [ "$(id -u)" -eq 0 ] || sudo_="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo_ apt-get update -qq && $sudo_ apt-get install -y -qq nodejs npm >/dev/null
fi
