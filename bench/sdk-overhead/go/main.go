// Command sdk-overhead measures what the Go SDK adds to a submit: n submits through
// Client.Submit and n through plain net/http (same server, same kind of body, one keep-alive
// connection each, alternating so both see the same server state), and prints the median and
// p99 latency of each as JSON.
//
//	go run . -n 1000                       # starts $EZTHROTTLE_BIN (default <repo>/target/debug/ezthrottle)
//	go run . -url http://127.0.0.1:8080 -key ezt_live_…
//
// Jobs are submitted with retry_at an hour ahead and distinct URLs, so the server stores each
// one and runs none of them during the measurement. The URLs are on 127.0.0.1: a server given
// with -url must allow it (--allow-cidr 127.0.0.1/32), as the one this starts does.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strings"
	"sync"
	"time"

	ezthrottle "github.com/ezthrottle/ezthrottle/sdks/go"
)

func main() {
	n := flag.Int("n", 1000, "submits per side")
	warm := flag.Int("warmup", 50, "unmeasured submits per side first")
	base := flag.String("url", os.Getenv("EZTHROTTLE_URL"), "server URL (empty: start $EZTHROTTLE_BIN)")
	key := flag.String("key", os.Getenv("EZTHROTTLE_API_KEY"), "API key (with -url)")
	flag.Parse()

	if *base == "" {
		stop, u, k, err := startServer()
		must(err)
		cleanup = stop // must() runs it too: os.Exit skips deferred calls
		defer stop()
		*base, *key = u, k
	}

	client := ezthrottle.NewClient(*key, ezthrottle.WithBaseURL(*base), ezthrottle.WithMaxRetries(0))
	raw := &http.Client{}
	later := time.Now().Add(time.Hour).UnixMilli()
	ctx := context.Background()

	viaSDK := func(i int) error {
		_, err := client.Submit(ctx, ezthrottle.JobSpec{
			URL: fmt.Sprintf("http://127.0.0.1:9/sdk?i=%d", i), Method: "POST", Body: `{"n":1}`, RetryAt: later,
		})
		return err
	}
	viaRaw := func(i int) error {
		body, err := json.Marshal(map[string]any{
			"url": fmt.Sprintf("http://127.0.0.1:9/raw?i=%d", i), "method": "POST", "body": `{"n":1}`, "retry_at": later,
		})
		if err != nil {
			return err
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, *base+"/api/v1/jobs", bytes.NewReader(body))
		if err != nil {
			return err
		}
		req.Header.Set("Authorization", "Bearer "+*key)
		req.Header.Set("Content-Type", "application/json")
		resp, err := raw.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		data, err := io.ReadAll(resp.Body)
		if err != nil {
			return err
		}
		if resp.StatusCode != http.StatusAccepted {
			return fmt.Errorf("raw submit: %d %s", resp.StatusCode, data)
		}
		var out struct {
			JobID string `json:"job_id"`
		}
		return json.Unmarshal(data, &out)
	}

	run := time.Now().UnixNano()
	for i := 0; i < *warm; i++ {
		must(viaSDK(int(run) + i))
		must(viaRaw(int(run) + i))
	}
	sdk := make([]time.Duration, 0, *n)
	rawT := make([]time.Duration, 0, *n)
	for i := 0; i < *n; i++ {
		id := int(run) + *warm + i
		t0 := time.Now()
		must(viaSDK(id))
		t1 := time.Now()
		must(viaRaw(id))
		t2 := time.Now()
		sdk = append(sdk, t1.Sub(t0))
		rawT = append(rawT, t2.Sub(t1))
	}
	s, r := stats(sdk), stats(rawT)
	out := map[string]any{
		"n":                  *n,
		"sdk":                s,
		"raw_net_http":       r,
		"overhead_median_us": s["median_us"] - r["median_us"],
		"overhead_p99_us":    s["p99_us"] - r["p99_us"],
		"go":                 runtime.Version(),
		"gomaxprocs":         runtime.GOMAXPROCS(0),
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	must(enc.Encode(out))
}

func stats(d []time.Duration) map[string]float64 {
	sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
	at := func(q float64) float64 {
		i := int(q*float64(len(d)-1) + 0.5)
		return float64(d[i].Microseconds())
	}
	return map[string]float64{"median_us": at(0.5), "p99_us": at(0.99), "min_us": at(0), "max_us": at(1)}
}

// cleanup stops the server this run started, if any.
var cleanup = func() {}

func must(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "sdk-overhead:", err)
		cleanup()
		os.Exit(1)
	}
}

var listening = regexp.MustCompile(`listening on (http://[0-9.]+:[0-9]+)`)

// startServer runs the binary on a fresh data dir and returns its URL and first key.
func startServer() (stop func(), url, key string, err error) {
	bin := os.Getenv("EZTHROTTLE_BIN")
	if bin == "" {
		bin, _ = filepath.Abs("../../../target/debug/ezthrottle")
	}
	dir, err := os.MkdirTemp("", "ezt-bench-")
	if err != nil {
		return nil, "", "", err
	}
	cmd := exec.Command(bin, "serve", "--listen", "127.0.0.1:0", "--allow-cidr", "127.0.0.1/32", "--data-dir", dir)
	stdout, _ := cmd.StdoutPipe()
	stderr, _ := cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		os.RemoveAll(dir)
		return nil, "", "", fmt.Errorf("starting %s: %w", bin, err)
	}
	var once sync.Once
	stop = func() {
		once.Do(func() {
			_ = cmd.Process.Signal(os.Interrupt)
			_ = cmd.Wait()
			os.RemoveAll(dir)
		})
	}
	urlCh := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			if m := listening.FindStringSubmatch(sc.Text()); m != nil {
				urlCh <- m[1]
			}
		}
	}()
	keyCh := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		if sc.Scan() {
			keyCh <- strings.TrimSpace(sc.Text())
		}
		_, _ = io.Copy(io.Discard, stdout)
	}()
	timeout := time.After(60 * time.Second)
	for url == "" || key == "" {
		select {
		case url = <-urlCh:
		case key = <-keyCh:
		case <-timeout:
			stop()
			return nil, "", "", fmt.Errorf("the server did not start within 60s")
		}
	}
	return stop, url, key, nil
}
