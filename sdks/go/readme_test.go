package ezthrottle_test

// The README's quick start is run as written: its Go block becomes a program in a fresh
// module that requires this one through a replace directive, as a user would do it.

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// quickStart is the first ```go block after the "## Quick start" heading.
func quickStart(t *testing.T) string {
	t.Helper()
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, after, ok := strings.Cut(string(readme), "\n## Quick start\n")
	if !ok {
		t.Fatal("README.md has no '## Quick start' section")
	}
	_, block, ok := strings.Cut(after, "\n```go\n")
	if !ok {
		t.Fatal("the quick start has no ```go block")
	}
	code, _, ok := strings.Cut(block, "\n```\n")
	if !ok {
		t.Fatal("the quick start's ```go block is not closed")
	}
	return code + "\n"
}

func TestReadmeQuickStartRuns(t *testing.T) {
	t.Parallel()
	code := quickStart(t)
	self, err := filepath.Abs(".")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	gomod := "module quickstart\n\ngo 1.19\n\nrequire github.com/ezthrottle/ezthrottle/sdks/go v0.0.0\n\n" +
		"replace github.com/ezthrottle/ezthrottle/sdks/go => " + self + "\n"
	if err := os.WriteFile(filepath.Join(dir, "go.mod"), []byte(gomod), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "main.go"), []byte(code), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "run", ".")
	cmd.Dir = dir
	// A tenant of its own: the quick start sets that tenant's webhook secret.
	cmd.Env = append(os.Environ(),
		"EZTHROTTLE_URL="+env.url,
		"EZTHROTTLE_API_KEY="+newTenantKey(t),
		"TARGET_URL="+env.target+"/anything?from=readme",
		"GOPROXY=off", "GOFLAGS=-mod=mod", "GOWORK=off",
	)
	var out, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("the quick start failed: %v\nstdout:\n%s\nstderr:\n%s", err, out.String(), stderr.String())
	}
	want := regexp.MustCompile(`(?m)^job job_\S+ succeeded 200\nwebhook verified: success 200\n$`)
	if !want.MatchString(out.String()) {
		t.Fatalf("the quick start printed:\n%s\nstderr:\n%s", out.String(), stderr.String())
	}
}
