#!/usr/bin/env bash
# The Node SDK's checks: install the pinned dev tools (typescript, @types/node), type-check the
# sources and the hosted-1.4.0 compatibility examples (tsc --strict), then run every test against
# the committed dist/ (test/dist.test.mjs rebuilds src/ elsewhere and fails if dist/ is stale:
# `npm run build` and commit it) and the real server binary (EZTHROTTLE_BIN, default
# <repo>/target/debug/ezthrottle) and the demo target. EZT_SDK_CASES_DIR overrides where the
# shared case suite is read from (default <repo>/testdata/sdk-cases).
set -euo pipefail
cd "$(dirname "$0")"
npm ci --prefer-offline --no-audit --no-fund --loglevel=error
node node_modules/typescript/bin/tsc -p tsconfig.json --noEmit --strict
node node_modules/typescript/bin/tsc -p test/hosted-compat/tsconfig.json
node node_modules/typescript/bin/tsc -p test/typing/tsconfig.json
node --test "$@" test/*.test.mjs
