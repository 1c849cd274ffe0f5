// River (+ PostgreSQL) peer for the side-by-side benchmark (bench/run.sh).
//
//	river-peer <cmd> [-flags]
//
// cmds (one JSON object on stdout each), same meaning as bench/peers/node/peer.js:
//
//	setup   -queues q            run River's migrations, empty river_job
//	admit   -n -c -queue -url -prefix [-acked FILE]   single Insert calls from C goroutines
//	bulk    -n -batch -c -queue -url -prefix [-mix fair]   InsertMany in batches
//	steady  -rate -duration -queue -url -prefix [-tenants t1,t2]   open-loop single inserts
//	work    -queues q -concurrency 100   workers until SIGTERM; prints {"ready":true}
//
// Every job makes a real HTTP POST (~300 B JSON) with headers Idempotency-Key and X-Tenant.
// Keys are "<prefix>.<i>.<enqueue CLOCK_MONOTONIC ns>", like the other peers.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"os/signal"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivermigrate"
	"golang.org/x/sys/unix"
)

func monoNs() int64 {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return ts.Nano()
}

func payload(i int) string {
	s := fmt.Sprintf(`{"order_id":%d,"customer":"cust-%06d","currency":"EUR","amount_cents":%d,"items":[{"sku":"A-1","qty":2},{"sku":"B-7","qty":1}],"note":"`, i, i%997331, (i*7919)%100000)
	if n := 300 - 2 - len(s); n > 0 {
		s += strings.Repeat("x", n)
	}
	return s + `"}`
}

type CallArgs struct {
	K string `json:"k"`
	T string `json:"t"`
	U string `json:"u"`
	B string `json:"b"`
}

func (CallArgs) Kind() string { return "call" }

var httpc = &http.Client{Transport: &http.Transport{MaxIdleConns: 512, MaxIdleConnsPerHost: 256}, Timeout: 30 * time.Second}

type CallWorker struct {
	river.WorkerDefaults[CallArgs]
}

func (w *CallWorker) Work(ctx context.Context, job *river.Job[CallArgs]) error {
	req, err := http.NewRequestWithContext(ctx, "POST", job.Args.U, bytes.NewReader([]byte(job.Args.B)))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Idempotency-Key", job.Args.K)
	req.Header.Set("X-Tenant", job.Args.T)
	resp, err := httpc.Do(req)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode >= 300 {
		return fmt.Errorf("HTTP %d", resp.StatusCode)
	}
	return nil
}

func latMs(ns []int64) map[string]any {
	sort.Slice(ns, func(a, b int) bool { return ns[a] < ns[b] })
	pct := func(p float64) float64 {
		if len(ns) == 0 {
			return 0
		}
		i := int(math.Ceil(p/100*float64(len(ns)))) - 1
		if i < 0 {
			i = 0
		}
		if i >= len(ns) {
			i = len(ns) - 1
		}
		return math.Round(float64(ns[i])/1e3) / 1e3
	}
	var sum float64
	for _, v := range ns {
		sum += float64(v)
	}
	mean := 0.0
	if len(ns) > 0 {
		mean = math.Round(sum/float64(len(ns))/1e3) / 1e3
	}
	return map[string]any{"n": len(ns), "p50_ms": pct(50), "p95_ms": pct(95), "p99_ms": pct(99), "p999_ms": pct(99.9), "max_ms": pct(100), "mean_ms": mean}
}

func tenantOf(i int, mix string, list []string, def string) string {
	if mix == "fair" {
		r := i % 90
		if r < 81 {
			return "t0"
		}
		return fmt.Sprintf("t%d", r-80)
	}
	if len(list) > 0 {
		return list[i%len(list)]
	}
	return def
}

func keyOf(prefix string, i int) string { return fmt.Sprintf("%s.%d.%d", prefix, i, monoNs()) }

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: river-peer <setup|admit|bulk|steady|work> [flags]")
		os.Exit(2)
	}
	cmd := os.Args[1]
	fs := flag.NewFlagSet(cmd, flag.ExitOnError)
	pgURL := fs.String("pg", envOr("PG_URL", "postgres://postgres@127.0.0.1:18492/bench"), "")
	n := fs.Int("n", 1000, "")
	c := fs.Int("c", 1, "")
	batch := fs.Int("batch", 1000, "")
	queue := fs.String("queue", "calls", "")
	queues := fs.String("queues", "", "")
	url := fs.String("url", "", "")
	prefix := fs.String("prefix", "j", "")
	acked := fs.String("acked", "", "")
	mix := fs.String("mix", "", "")
	tenantsF := fs.String("tenants", "", "")
	tenant := fs.String("tenant", "t0", "")
	rate := fs.Float64("rate", 1000, "")
	duration := fs.Float64("duration", 10, "")
	inflight := fs.Int("inflight", 256, "")
	concurrency := fs.Int("concurrency", 100, "")
	pool := fs.Int("pool", 70, "")
	_ = fs.Parse(os.Args[2:])
	var tenants []string
	if *tenantsF != "" {
		tenants = strings.Split(*tenantsF, ",")
	}

	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer cancel()
	cfg, err := pgxpool.ParseConfig(*pgURL)
	must(err)
	cfg.MaxConns = int32(*pool)
	dbPool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	must(err)
	defer dbPool.Close()
	driver := riverpgxv5.New(dbPool)
	bg := context.Background()

	var out any
	switch cmd {
	case "setup":
		m, err := rivermigrate.New(driver, nil)
		must(err)
		_, err = m.Migrate(bg, rivermigrate.DirectionUp, nil)
		must(err)
		_, err = dbPool.Exec(bg, "TRUNCATE river_job")
		must(err)
		out = map[string]any{"ok": true}
	case "admit", "bulk", "steady":
		client, err := river.NewClient(driver, &river.Config{})
		must(err)
		opts := &river.InsertOpts{Queue: *queue, MaxAttempts: 4}
		mk := func(i int, t string) CallArgs { return CallArgs{K: keyOf(*prefix, i), T: t, U: *url, B: payload(i)} }
		switch cmd {
		case "admit":
			var next atomic.Int64
			var mu sync.Mutex
			var lats []int64
			var keys []string
			var errs atomic.Int64
			t0 := time.Now()
			var wg sync.WaitGroup
			for w := 0; w < *c; w++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					var myl []int64
					var myk []string
					for ctx.Err() == nil {
						i := int(next.Add(1) - 1)
						if i >= *n {
							break
						}
						a := mk(i, "t0")
						s := time.Now()
						if _, err := client.Insert(bg, a, opts); err != nil {
							if errs.Add(1) < 3 {
								fmt.Fprintln(os.Stderr, "insert error:", err)
							}
							if *acked != "" {
								break
							}
							continue
						}
						myl = append(myl, time.Since(s).Nanoseconds())
						myk = append(myk, a.K)
					}
					mu.Lock()
					lats = append(lats, myl...)
					keys = append(keys, myk...)
					mu.Unlock()
				}()
			}
			wg.Wait()
			secs := time.Since(t0).Seconds()
			if *acked != "" {
				must(os.WriteFile(*acked, []byte(strings.Join(keys, "\n")+"\n"), 0o644))
			}
			out = map[string]any{"n": *n, "concurrency": *c, "secs": secs, "acked": len(keys), "errors": errs.Load(),
				"jobs_per_s": math.Round(float64(len(keys)) / secs), "ack": latMs(lats)}
		case "bulk":
			var next atomic.Int64
			var ok atomic.Int64
			var mu sync.Mutex
			var lats []int64
			t0 := time.Now()
			var wg sync.WaitGroup
			for w := 0; w < *c; w++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for {
						start := int(next.Add(int64(*batch)) - int64(*batch))
						if start >= *n {
							return
						}
						end := min(start+*batch, *n)
						ps := make([]river.InsertManyParams, 0, end-start)
						for i := start; i < end; i++ {
							ps = append(ps, river.InsertManyParams{Args: mk(i, tenantOf(i, *mix, tenants, *tenant)), InsertOpts: opts})
						}
						s := time.Now()
						_, err := client.InsertManyFast(bg, ps)
						must(err)
						mu.Lock()
						lats = append(lats, time.Since(s).Nanoseconds())
						mu.Unlock()
						ok.Add(int64(len(ps)))
					}
				}()
			}
			wg.Wait()
			secs := time.Since(t0).Seconds()
			out = map[string]any{"n": *n, "batch": *batch, "concurrency": *c, "secs": secs, "accepted": ok.Load(),
				"jobs_per_s": math.Round(float64(ok.Load()) / secs), "batch_latency": latMs(lats)}
		case "steady":
			total := int(math.Round(*rate * *duration))
			sem := make(chan struct{}, *inflight)
			var mu sync.Mutex
			var lats []int64
			var ackedN, errs, late atomic.Int64
			var wg sync.WaitGroup
			t0 := time.Now()
			sent := 0
			deadline := t0.Add(time.Duration((*duration*1.25 + 1) * 1e9)) // cannot keep up: stop offering
			for i := 0; i < total && ctx.Err() == nil && time.Now().Before(deadline); i++ {
				due := t0.Add(time.Duration(float64(i) * 1e9 / *rate))
				if d := time.Until(due); d > time.Millisecond {
					time.Sleep(d)
				} else if d < -50*time.Millisecond {
					late.Add(1)
				}
				sem <- struct{}{}
				sent++
				wg.Add(1)
				go func(i int) {
					defer wg.Done()
					defer func() { <-sem }()
					a := mk(i, tenantOf(i, "", tenants, *tenant))
					s := time.Now()
					if _, err := client.Insert(bg, a, opts); err != nil {
						if errs.Add(1) < 3 {
							fmt.Fprintln(os.Stderr, "insert error:", err)
						}
						return
					}
					l := time.Since(s).Nanoseconds()
					mu.Lock()
					lats = append(lats, l)
					mu.Unlock()
					ackedN.Add(1)
				}(i)
			}
			wg.Wait()
			secs := time.Since(t0).Seconds()
			out = map[string]any{"offered_rate": *rate, "duration_s": *duration, "sent": sent, "acked": ackedN.Load(), "errors": errs.Load(),
				"late_over_50ms": late.Load(), "secs": secs, "achieved_rate": math.Round(float64(ackedN.Load()) / secs), "ack": latMs(lats)}
		}
	case "work":
		workers := river.NewWorkers()
		river.AddWorker(workers, &CallWorker{})
		qs := map[string]river.QueueConfig{}
		names := *queues
		if names == "" {
			names = *queue
		}
		for _, q := range strings.Split(names, ",") {
			qs[q] = river.QueueConfig{MaxWorkers: *concurrency}
		}
		// FetchCooldown: River's default (100 ms) caps a queue at MaxWorkers jobs per 100 ms (1k/s at
		// 100 workers); 10 ms is what a user tuning for throughput would set. Poll interval: default.
		cfg := &river.Config{Queues: qs, Workers: workers, FetchCooldown: 10 * time.Millisecond}
		if os.Getenv("BENCH_CRASH") == "1" { // B7: rescue jobs left running by a crash sooner (default 1 h)
			cfg.JobTimeout = 5 * time.Second
			cfg.RescueStuckJobsAfter = 10 * time.Second
		}
		client, err := river.NewClient(driver, cfg)
		must(err)
		must(client.Start(bg))
		fmt.Println(`{"ready":true}`)
		<-ctx.Done()
		sctx, scancel := context.WithTimeout(bg, 5*time.Second)
		_ = client.Stop(sctx)
		scancel()
		out = map[string]any{"stopped": true}
	default:
		fmt.Fprintln(os.Stderr, "unknown cmd", cmd)
		os.Exit(2)
	}
	b, _ := json.Marshal(out)
	fmt.Println(string(b))
}

var _ = pgx.ErrNoRows

func envOr(k, d string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return d
}

func must(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "fatal:", err)
		os.Exit(1)
	}
}
