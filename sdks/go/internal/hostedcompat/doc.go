// Package hostedcompat is a compile check: code written for the hosted EZThrottle Go SDK 1.2.0
// (github.com/rjpruitt16/ezthrottle-go) — the examples of its README, its examples/example.go
// and its test-app — retyped in the subdirectories with only the import path changed to
// github.com/ezthrottle/ezthrottle/sdks/go. `go vet ./...` builds them all, so a hosted name
// or signature that this SDK lost breaks the build.
//
// What had to change besides the import path, and why:
//   - github.com/gin-gonic/gin and github.com/google/uuid are replaced by the tiny stand-ins in
//     ./gin and ./uuid (this module has no dependencies); the code using them is unchanged.
//   - README snippets that are not whole programs are wrapped in functions, with `_ = x` for
//     variables a snippet declares but never reads, and the imports they use but omit
//     (strings, context in the legacy example) are added: they would not compile against the
//     hosted SDK either.
//
// against-hosted.sh checks the other direction (needs the hosted source and the Go module
// proxy): the same files, import path changed back, compile against the hosted SDK itself.
//
// quickstart.go (RunHostedQuickStart) is a hosted-style program the tests run against the
// real server: Step builder → job succeeded → signed webhook verified, using hosted names only.
package hostedcompat
