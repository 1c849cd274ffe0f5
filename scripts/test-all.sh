#!/usr/bin/env bash
# The whole test suite: formatting, lints, and every test (unit, property, store conformance,
# system tests that run the real binary over loopback, and the SDKs' suites against that binary).
# Installs what the tests need first when it is missing (scripts/test-deps.sh). Used by CI as is.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/test-deps.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
# The SDKs run against the binary the system tests just used.
cargo build --locked -p ezthrottle
export EZTHROTTLE_BIN="$PWD/target/debug/ezthrottle"
if [ -f sdks/python/run-tests.sh ]; then
  bash sdks/python/run-tests.sh
fi
if [ -f sdks/node/run-tests.sh ]; then
  bash sdks/node/run-tests.sh
fi
if [ -f sdks/go/run-tests.sh ]; then
  bash sdks/go/run-tests.sh
fi
# The README's tour, pasted as a newcomer would (ports 8080, 9000, 9001).
bash scripts/test-readme-tour.sh
# Schema-driven fuzzing of every operation in /openapi.json: zero failures, zero 5xx. A fixed seed
# keeps the test command repeatable; run `scripts/test-openapi-fuzz.sh` without one (a random seed)
# to explore further, and pin any failure it finds as a test.
bash scripts/test-openapi-fuzz.sh "${FUZZ_SEED:-18637}"
