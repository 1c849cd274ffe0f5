#!/usr/bin/env bash
# Type-checks the SDK and runs its tests against the real server binary
# (EZTHROTTLE_BIN, default <repo>/target/debug/ezthrottle). Assumes
# `python3 -m pip install -e 'sdks/python[dev]'` and a built binary.
set -euo pipefail
cd "$(dirname "$0")"
python3 -m mypy --strict ezthrottle
python3 -m pytest -q "$@"
