#!/usr/bin/env bash
# Checks the other direction: the retyped examples here also compile against the hosted SDK
# itself, so they are hosted code and not code bent to fit this SDK. Not part of run-tests.sh:
# it needs the hosted source and github.com/google/uuid from the Go module proxy.
#
#   internal/hostedcompat/against-hosted.sh /path/to/ezthrottle-go-at-v1.2.0
set -euo pipefail
hosted=$(cd "${1:?usage: against-hosted.sh HOSTED_SDK_SOURCE_DIR (the v1.2.0 tree)}" && pwd)
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp -r "$here"/{gin,uuid,quickstart,legacy,example,testapp,readme} "$work"/
mkdir "$work/root" && cp "$here/quickstart.go" "$work/root/"
grep -rl 'sdks/go' "$work" | xargs sed -i \
	-e 's|"github.com/ezthrottle/ezthrottle/sdks/go/internal/hostedcompat/|"hc/|' \
	-e 's|ezthrottle "github.com/ezthrottle/ezthrottle/sdks/go"|ezthrottle "github.com/rjpruitt16/ezthrottle-go"|'
# The hosted tree's own test-app and examples are separate programs: leave them out.
mkdir "$work/hosted" && (cd "$hosted" && tar --exclude=./test-app --exclude=./examples -cf - .) | tar -xf - -C "$work/hosted"
printf 'module hc\n\ngo 1.21\n\nrequire github.com/rjpruitt16/ezthrottle-go v1.2.0\n\nreplace github.com/rjpruitt16/ezthrottle-go => ./hosted\n' >"$work/go.mod"
cd "$work" && GOFLAGS=-mod=mod go vet ./... && echo "the hostedcompat examples compile against the hosted SDK at $hosted"
