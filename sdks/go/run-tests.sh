#!/usr/bin/env bash
# The Go SDK's checks: gofmt, go vet (which also compiles internal/hostedcompat, the hosted
# 1.2.0 examples, and bench/sdk-overhead/go), then go test against the real server binary
# (EZTHROTTLE_BIN, default <repo>/target/debug/ezthrottle) and scripts/demo/target.py, including
# the shared case suite (EZT_SDK_CASES_DIR, default <repo>/testdata/sdk-cases). Needs Go 1.19+
# (Debian 12's golang-go will do); no module downloads (the SDK has no dependencies). Extra
# arguments go to `go test`.
set -euo pipefail
cd "$(dirname "$0")"
export GOPROXY=off GOWORK=off
unformatted=$(gofmt -l . ../../bench/sdk-overhead/go)
if [ -n "$unformatted" ]; then
	echo "gofmt would change: $unformatted" >&2
	exit 1
fi
go vet ./...
(cd ../../bench/sdk-overhead/go && go vet ./...)
# -v so the shared suite prints one line per case (ok <name> / FAIL <name>); the RUN/PAUSE/CONT
# bookkeeping is dropped.
go test -count=1 -v "$@" ./... 2>&1 | grep -v -E '^=== (RUN|PAUSE|CONT|NAME)'
