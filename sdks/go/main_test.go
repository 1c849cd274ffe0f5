package ezthrottle_test

// The harness: every test in this package talks to the real server binary (EZTHROTTLE_BIN,
// default <repo>/target/debug/ezthrottle) and to scripts/demo/target.py, both started here on
// loopback. A missing binary fails the run; nothing is skipped.

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	ezthrottle "github.com/ezthrottle/ezthrottle/sdks/go"
)

var env struct {
	bin     string
	dataDir string
	url     string // the server, http://127.0.0.1:<port>
	key     string // an API key of the default tenant
	target  string // scripts/demo/target.py, http://127.0.0.1:<port>
	repo    string
}

func TestMain(m *testing.M) {
	code, err := run(m)
	if err != nil {
		fmt.Fprintln(os.Stderr, "sdks/go tests: "+err.Error())
		os.Exit(2)
	}
	os.Exit(code)
}

func run(m *testing.M) (int, error) {
	repo, err := filepath.Abs("../..")
	if err != nil {
		return 0, err
	}
	env.repo = repo
	env.bin = os.Getenv("EZTHROTTLE_BIN")
	if env.bin == "" {
		env.bin = filepath.Join(repo, "target", "debug", "ezthrottle")
	}
	if st, err := os.Stat(env.bin); err != nil || st.IsDir() {
		return 0, fmt.Errorf("the ezthrottle binary is not at %s: build it (cargo build -p ezthrottle) or set EZTHROTTLE_BIN", env.bin)
	}
	tmp, err := os.MkdirTemp("", "ezt-go-")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(tmp)
	env.dataDir = filepath.Join(tmp, "data")

	stopServer, err := startServer(tmp)
	if err != nil {
		return 0, err
	}
	defer stopServer()
	stopTarget, err := startTarget(tmp)
	if err != nil {
		return 0, err
	}
	defer stopTarget()
	return m.Run(), nil
}

var listening = regexp.MustCompile(`listening on (http://[0-9.]+:[0-9]+)`)

func startServer(tmp string) (func(), error) {
	cmd := exec.Command(env.bin, "serve", "--listen", "127.0.0.1:0", "--allow-cidr", "127.0.0.1/32", "--data-dir", env.dataDir)
	// Every test calls the one demo target, so with one tenant they share a lane: a faster
	// default lane than the 2/s keeps the suite short (no case depends on the lane rate).
	cmd.Env = append(os.Environ(), "NO_COLOR=1", "EZTHROTTLE_LANES_DEFAULT_RATE=50",
		"EZTHROTTLE_LANES_DEFAULT_BURST=20", "EZTHROTTLE_LANES_DEFAULT_MAX_IN_FLIGHT=16")
	dieWithUs(cmd)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	logFile, err := os.Create(filepath.Join(tmp, "server.log"))
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	stop := func() {
		_ = cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		logFile.Close()
	}
	addr := make(chan string, 1)
	go func() {
		// The address is an event in the log; the rest of the log keeps flowing to a file.
		sc := bufio.NewScanner(stderr)
		sent := false
		for sc.Scan() {
			fmt.Fprintln(logFile, sc.Text())
			if m := listening.FindStringSubmatch(sc.Text()); m != nil && !sent {
				sent = true
				addr <- m[1]
			}
		}
		if !sent {
			close(addr)
		}
	}()
	keyCh := make(chan string, 1)
	go func() {
		// First start prints the default tenant's new key alone on stdout.
		sc := bufio.NewScanner(stdout)
		first := true
		for sc.Scan() {
			if first {
				first = false
				keyCh <- strings.TrimSpace(sc.Text())
			}
		}
		if first {
			close(keyCh)
		}
		_, _ = io.Copy(io.Discard, stdout)
	}()
	timeout := time.After(60 * time.Second)
	select {
	case u, ok := <-addr:
		if !ok {
			stop()
			return nil, fmt.Errorf("the server exited before listening; log in %s", logFile.Name())
		}
		env.url = u
	case <-timeout:
		stop()
		return nil, fmt.Errorf("the server did not start listening within 60s")
	}
	select {
	case k, ok := <-keyCh:
		if !ok || k == "" {
			stop()
			return nil, fmt.Errorf("the server printed no API key")
		}
		env.key = k
	case <-timeout:
		stop()
		return nil, fmt.Errorf("the server printed no API key within 60s")
	}
	return stop, nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func startTarget(tmp string) (func(), error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	logFile, err := os.Create(filepath.Join(tmp, "target.log"))
	if err != nil {
		return nil, err
	}
	cmd := exec.Command("python3", filepath.Join(env.repo, "scripts", "demo", "target.py"), fmt.Sprint(port))
	cmd.Stdout, cmd.Stderr = logFile, logFile
	dieWithUs(cmd)
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting scripts/demo/target.py: %w", err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	stop := func() {
		_ = cmd.Process.Kill()
		<-exited
		logFile.Close()
	}
	env.target = fmt.Sprintf("http://127.0.0.1:%d", port)
	// No readiness event exists: poll the port, with a deadline.
	deadline := time.Now().Add(30 * time.Second)
	for {
		conn, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second)
		if err == nil {
			conn.Close()
			return stop, nil
		}
		select {
		case <-exited:
			return nil, fmt.Errorf("scripts/demo/target.py exited; log in %s", logFile.Name())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			stop()
			return nil, fmt.Errorf("scripts/demo/target.py did not listen within 30s")
		}
	}
}

// cli runs a subcommand of the binary on the test server's store.
func cli(t testing.TB, args ...string) string {
	t.Helper()
	cmd := exec.Command(env.bin, append(args, "--data-dir", env.dataDir)...)
	cmd.Env = append(os.Environ(), "NO_COLOR=1")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("ezthrottle %v: %v\n%s", args, err, stderr.String())
	}
	return strings.TrimSpace(string(out))
}

var tenantSeq atomic.Int64

// newTenantKey is a key of a fresh tenant (its own jobs, its own webhook secret).
func newTenantKey(t testing.TB) string {
	t.Helper()
	name := fmt.Sprintf("go%d%d", time.Now().UnixNano()%1_000_000_000, tenantSeq.Add(1))
	cli(t, "tenants", "create", name)
	return cli(t, "keys", "create", "--tenant", name)
}

// newClient is a client of the test server (the default tenant unless a key is given).
func newClient(t testing.TB, opts ...ezthrottle.ClientOption) *ezthrottle.Client {
	t.Helper()
	return ezthrottle.NewClient(env.key, append([]ezthrottle.ClientOption{ezthrottle.WithBaseURL(env.url)}, opts...)...)
}

func tenantClient(t testing.TB, opts ...ezthrottle.ClientOption) *ezthrottle.Client {
	t.Helper()
	return ezthrottle.NewClient(newTenantKey(t), append([]ezthrottle.ClientOption{ezthrottle.WithBaseURL(env.url)}, opts...)...)
}

// uniq is a target URL no other test uses (so hashes and lanes never collide).
func uniq(t testing.TB, path string) string {
	t.Helper()
	return fmt.Sprintf("%s%s?t=%s-%d", env.target, path, strings.ReplaceAll(t.Name(), "/", "."), time.Now().UnixNano())
}

func ctxT(t testing.TB) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	t.Cleanup(cancel)
	return ctx
}
