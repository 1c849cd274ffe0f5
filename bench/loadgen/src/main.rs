//! EZThrottle benchmark load generator and instrumented target.
//!
//! Every subcommand prints one JSON object on stdout (diagnostics go to stderr), so
//! `bench/run.sh` can collect the results. All traffic goes to 127.0.0.1.
//! Timestamps that cross processes use CLOCK_MONOTONIC (system-wide), so the target's
//! arrival times and the load generator's submit times are directly comparable.

use anyhow::{anyhow, bail, Context, Result};
use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use clap::{Parser, Subcommand};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------------
// helpers

fn mono_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn epoch_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

type HttpClient = Client<HttpConnector, Full<Bytes>>;

fn http_client(max_idle: usize) -> HttpClient {
    let mut c = HttpConnector::new();
    c.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(max_idle)
        .build(c)
}

async fn request(
    c: &HttpClient,
    method: &str,
    url: &str,
    bearer: Option<&str>,
    body: Option<Bytes>,
) -> Result<(u16, Bytes)> {
    let mut b = hyper::Request::builder().method(method).uri(url);
    if let Some(k) = bearer {
        b = b.header("authorization", format!("Bearer {k}"));
    }
    if body.is_some() {
        b = b.header("content-type", "application/json");
    }
    let r = c.request(b.body(Full::new(body.unwrap_or_default()))?).await?;
    let status = r.status().as_u16();
    let bytes = r.into_body().collect().await?.to_bytes();
    Ok((status, bytes))
}

fn pct(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[i.saturating_sub(1).min(sorted.len() - 1)]
}

fn r3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Latency summary of nanosecond samples, in milliseconds.
fn lat_ms(mut v: Vec<u64>) -> Value {
    v.sort_unstable();
    let ms = |x: u64| r3(x as f64 / 1e6);
    let mean = if v.is_empty() { 0.0 } else { v.iter().map(|&x| x as f64).sum::<f64>() / v.len() as f64 };
    json!({
        "n": v.len(),
        "p50_ms": ms(pct(&v, 50.0)), "p95_ms": ms(pct(&v, 95.0)), "p99_ms": ms(pct(&v, 99.0)),
        "p999_ms": ms(pct(&v, 99.9)), "max_ms": ms(v.last().copied().unwrap_or(0)),
        "mean_ms": r3(mean / 1e6),
    })
}

/// A ~300-byte JSON payload, as the job body.
fn payload(i: u64, bytes: usize) -> String {
    let mut s = format!(
        r#"{{"order_id":{i},"customer":"cust-{:06}","currency":"EUR","amount_cents":{},"items":[{{"sku":"A-1","qty":2}},{{"sku":"B-7","qty":1}}],"note":""#,
        i % 997_331,
        (i * 7919) % 100_000
    );
    while s.len() + 2 < bytes {
        s.push('x');
    }
    s.push_str("\"}");
    s
}

struct Spec<'a> {
    target_url: &'a str,
    key: String,
    tenant: &'a str,
    retry_at: Option<u64>,
    lane_auth: Option<String>,
    body_bytes: usize,
    i: u64,
}

fn job_spec(s: &Spec) -> Value {
    let mut headers = json!({"X-Tenant": s.tenant, "Content-Type": "application/json"});
    if let Some(a) = &s.lane_auth {
        headers["Authorization"] = json!(format!("Bearer {a}"));
    }
    let mut j = json!({
        "url": s.target_url, "method": "POST", "headers": headers,
        "body": payload(s.i, s.body_bytes), "idempotent_key": s.key,
    });
    if let Some(r) = s.retry_at {
        j["retry_at"] = json!(r);
    }
    j
}

// ---------------------------------------------------------------------------------------------
// the target

#[derive(Clone, Debug)]
struct Arrival {
    t: u64,
    port: u16,
    inflight: i64,
    key: String,
    tenant: String,
}

#[derive(Default)]
struct TargetShared {
    log: Mutex<Vec<Arrival>>,
    waiters: Mutex<HashMap<String, tokio::sync::oneshot::Sender<u64>>>,
    delay_ms: u64,
}

#[derive(Clone)]
struct PortState {
    shared: Arc<TargetShared>,
    port: u16,
    inflight: Arc<AtomicI64>,
}

async fn record(State(s): State<PortState>, headers: HeaderMap, _body: Bytes) -> &'static str {
    let t = mono_ns();
    let inflight = s.inflight.fetch_add(1, Ordering::SeqCst) + 1;
    let h = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let key = h("idempotency-key");
    if let Some(tx) = s.shared.waiters.lock().unwrap().remove(&key) {
        let _ = tx.send(t);
    }
    s.shared.log.lock().unwrap().push(Arrival { t, port: s.port, inflight, key, tenant: h("x-tenant") });
    if s.shared.delay_ms > 0 {
        tokio::time::sleep(Duration::from_millis(s.shared.delay_ms)).await;
    }
    s.inflight.fetch_sub(1, Ordering::SeqCst);
    "ok"
}

fn dump_text(log: &[Arrival]) -> String {
    let mut out = String::with_capacity(log.len() * 48);
    for a in log {
        out.push_str(&format!("{}\t{}\t{}\t{}\t{}\n", a.t, a.port, a.inflight, a.key, a.tenant));
    }
    out
}

async fn dump(State(s): State<PortState>, RawQuery(q): RawQuery) -> String {
    let mut log = s.shared.log.lock().unwrap();
    let text = dump_text(&log);
    if q.unwrap_or_default().contains("reset=1") {
        log.clear();
    }
    text
}

async fn stats(State(s): State<PortState>) -> String {
    let log = s.shared.log.lock().unwrap();
    let mut m: BTreeMap<u16, (u64, u64, u64)> = BTreeMap::new();
    for a in log.iter() {
        let e = m.entry(a.port).or_insert((0, u64::MAX, 0));
        e.0 += 1;
        e.1 = e.1.min(a.t);
        e.2 = e.2.max(a.t);
    }
    let v: Value = m
        .into_iter()
        .map(|(p, (n, f, l))| (p.to_string(), json!({"count": n, "first": f, "last": l})))
        .collect::<serde_json::Map<_, _>>()
        .into();
    json!({"now": mono_ns(), "ports": v}).to_string()
}

async fn start_target(ports: &[u16], delay_ms: u64) -> Result<Arc<TargetShared>> {
    let shared = Arc::new(TargetShared { delay_ms, ..Default::default() });
    for &port in ports {
        let st = PortState { shared: shared.clone(), port, inflight: Arc::new(AtomicI64::new(0)) };
        let app = Router::new()
            .route("/_dump", get(dump))
            .route("/_stats", get(stats))
            .fallback(record)
            .with_state(st);
        let l = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .with_context(|| format!("bind 127.0.0.1:{port}"))?;
        tokio::spawn(async move { axum::serve(l, app).await });
    }
    Ok(shared)
}

fn parse_dump(text: &str) -> Vec<Arrival> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            if f.len() < 5 {
                return None;
            }
            Some(Arrival {
                t: f[0].parse().ok()?,
                port: f[1].parse().ok()?,
                inflight: f[2].parse().ok()?,
                key: f[3].to_string(),
                tenant: f[4].to_string(),
            })
        })
        .collect()
}

async fn fetch_dump(c: &HttpClient, port: u16) -> Result<Vec<Arrival>> {
    let (_, b) = request(c, "GET", &format!("http://127.0.0.1:{port}/_dump"), None, None).await?;
    Ok(parse_dump(std::str::from_utf8(&b)?))
}

async fn fetch_stats(c: &HttpClient, port: u16) -> Result<Value> {
    let (_, b) = request(c, "GET", &format!("http://127.0.0.1:{port}/_stats"), None, None).await?;
    Ok(serde_json::from_slice(&b)?)
}

// ---------------------------------------------------------------------------------------------
// submissions

/// Submits `n` single jobs over `c` keep-alive connections; returns (per-request ns, statuses, secs).
#[allow(clippy::too_many_arguments)]
async fn run_admit(
    server: &str,
    key: &str,
    n: u64,
    c: usize,
    target_url: &str,
    retry_at: Option<u64>,
    prefix: &str,
    body_bytes: usize,
) -> Result<Value> {
    let client = http_client(c);
    let next = Arc::new(AtomicU64::new(0));
    // `server` may list several nodes (comma-separated): connection w goes to node w mod count.
    let urls: Vec<String> = server.split(',').map(|s| format!("{s}/api/v1/jobs")).collect();
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..c {
        let (client, next, url, key, target_url, prefix) = (
            client.clone(),
            next.clone(),
            urls[w % urls.len()].clone(),
            key.to_string(),
            target_url.to_string(),
            prefix.to_string(),
        );
        tasks.push(tokio::spawn(async move {
            let mut lats = Vec::new();
            let mut statuses: HashMap<u16, u64> = HashMap::new();
            let mut errors = 0u64;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break;
                }
                let spec = job_spec(&Spec {
                    target_url: &target_url,
                    key: format!("{prefix}-{i}"),
                    tenant: "t0",
                    retry_at,
                    lane_auth: None,
                    body_bytes,
                    i,
                });
                let body = Bytes::from(serde_json::to_vec(&spec).unwrap());
                let s = Instant::now();
                match request(&client, "POST", &url, Some(&key), Some(body)).await {
                    Ok((st, _)) => {
                        lats.push(s.elapsed().as_nanos() as u64);
                        *statuses.entry(st).or_default() += 1;
                    }
                    Err(e) => {
                        errors += 1;
                        if errors < 3 {
                            eprintln!("admit error: {e:#}");
                        }
                    }
                }
            }
            (lats, statuses, errors)
        }));
    }
    let mut lats = Vec::new();
    let mut statuses: HashMap<u16, u64> = HashMap::new();
    let mut errors = 0;
    for t in tasks {
        let (l, s, e) = t.await?;
        lats.extend(l);
        for (k, v) in s {
            *statuses.entry(k).or_default() += v;
        }
        errors += e;
    }
    let secs = t0.elapsed().as_secs_f64();
    let ok = *statuses.get(&202).unwrap_or(&0);
    Ok(json!({
        "n": n, "concurrency": c, "secs": r3(secs), "jobs_per_s": (ok as f64 / secs).round(),
        "accepted_202": ok, "statuses": statuses.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_,_>>(),
        "transport_errors": errors, "ack": lat_ms(lats),
    }))
}

#[allow(clippy::too_many_arguments)]
async fn run_batch(
    server: &str,
    key: &str,
    n: u64,
    batch: u64,
    c: usize,
    target_url: &str,
    retry_at: Option<u64>,
    lanes: u64,
    prefix: &str,
    tenant: &str,
    body_bytes: usize,
) -> Result<Value> {
    let client = http_client(c);
    let next = Arc::new(AtomicU64::new(0));
    let url = format!("{server}/api/v1/jobs/batch");
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..c {
        let (client, next, url, key, target_url, prefix, tenant) = (
            client.clone(), next.clone(), url.clone(), key.to_string(), target_url.to_string(),
            prefix.to_string(), tenant.to_string(),
        );
        tasks.push(tokio::spawn(async move {
            let mut lats = Vec::new();
            let (mut ok, mut bad, mut http_err) = (0u64, 0u64, 0u64);
            loop {
                let start = next.fetch_add(batch, Ordering::Relaxed);
                if start >= n {
                    break;
                }
                let end = (start + batch).min(n);
                let jobs: Vec<Value> = (start..end)
                    .map(|i| {
                        job_spec(&Spec {
                            target_url: &target_url,
                            key: format!("{prefix}-{i}"),
                            tenant: &tenant,
                            retry_at,
                            lane_auth: (lanes > 0).then(|| format!("lane-{}", i % lanes)),
                            body_bytes,
                            i,
                        })
                    })
                    .collect();
                let body = Bytes::from(serde_json::to_vec(&json!({ "jobs": jobs })).unwrap());
                let s = Instant::now();
                match request(&client, "POST", &url, Some(&key), Some(body)).await {
                    Ok((st, b)) if st < 300 => {
                        lats.push(s.elapsed().as_nanos() as u64);
                        let v: Value = serde_json::from_slice(&b).unwrap_or(Value::Null);
                        for r in v["results"].as_array().map(|a| a.as_slice()).unwrap_or(&[]) {
                            if r.get("job_id").is_some() {
                                ok += 1;
                            } else {
                                bad += 1;
                                if bad < 3 {
                                    eprintln!("batch item error: {r}");
                                }
                            }
                        }
                    }
                    Ok((st, b)) => {
                        http_err += 1;
                        if http_err < 3 {
                            eprintln!("batch HTTP {st}: {}", String::from_utf8_lossy(&b[..b.len().min(300)]));
                        }
                    }
                    Err(e) => {
                        http_err += 1;
                        eprintln!("batch error: {e:#}");
                    }
                }
            }
            (lats, ok, bad, http_err)
        }));
    }
    let (mut lats, mut ok, mut bad, mut http_err) = (Vec::new(), 0, 0, 0);
    for t in tasks {
        let (l, o, b, e) = t.await?;
        lats.extend(l);
        ok += o;
        bad += b;
        http_err += e;
    }
    let secs = t0.elapsed().as_secs_f64();
    Ok(json!({
        "n": n, "batch": batch, "concurrency": c, "lanes": lanes, "secs": r3(secs),
        "jobs_per_s": (ok as f64 / secs).round(), "accepted": ok, "item_errors": bad,
        "request_errors": http_err, "batch_latency": lat_ms(lats),
    }))
}

// ---------------------------------------------------------------------------------------------
// analysis

/// Most arrivals in any 1 s window starting at an arrival, and how many such windows exceed `limit`.
fn sliding(ts: &[u64], win: u64, limit: u64) -> (u64, u64) {
    let (mut j, mut max, mut exceed) = (0usize, 0u64, 0u64);
    for i in 0..ts.len() {
        while j < ts.len() && ts[j] < ts[i] + win {
            j += 1;
        }
        let c = (j - i) as u64;
        max = max.max(c);
        if c > limit {
            exceed += 1;
        }
    }
    (max, exceed)
}

fn jain(x: &[f64]) -> f64 {
    let s: f64 = x.iter().sum();
    let s2: f64 = x.iter().map(|v| v * v).sum();
    if s2 == 0.0 {
        return 1.0;
    }
    s * s / (x.len() as f64 * s2)
}

// ---------------------------------------------------------------------------------------------
// scenarios

async fn direct_latency(client: &HttpClient, port: u16, n: u64) -> Result<Value> {
    let url = format!("http://127.0.0.1:{port}/direct");
    let mut lats = Vec::new();
    for i in 0..n {
        let body = Bytes::from(payload(i, 300));
        let s = Instant::now();
        let (st, _) = request(client, "POST", &url, None, Some(body)).await?;
        if st != 200 {
            bail!("direct call got {st}");
        }
        lats.push(s.elapsed().as_nanos() as u64);
    }
    Ok(json!({"n": n, "latency": lat_ms(lats)}))
}

async fn pickup(server: &str, key: &str, n: u64, port: u16, gap_ms: u64) -> Result<Value> {
    let shared = start_target(&[port], 0).await?;
    let client = http_client(4);
    // warm up both paths
    let direct = {
        direct_latency(&client, port, 200).await?;
        direct_latency(&client, port, n.max(1000)).await?
    };
    let url = format!("{server}/api/v1/jobs");
    let target = format!("http://127.0.0.1:{port}/pickup");
    let run = mono_ns();
    let (mut sub, mut ack_to_arr, mut acks) = (Vec::new(), Vec::new(), Vec::new());
    let (mut before_ack, mut lost) = (0u64, 0u64);
    for i in 0..(n + 20) {
        let k = format!("pk-{run}-{i}");
        let (tx, rx) = tokio::sync::oneshot::channel();
        shared.waiters.lock().unwrap().insert(k.clone(), tx);
        let spec = job_spec(&Spec { target_url: &target, key: k.clone(), tenant: "t0", retry_at: None, lane_auth: None, body_bytes: 300, i });
        let body = Bytes::from(serde_json::to_vec(&spec)?);
        let t_sub = mono_ns();
        let (st, b) = request(&client, "POST", &url, Some(key), Some(body)).await?;
        let t_ack = mono_ns();
        if st != 202 {
            bail!("submit got {st}: {}", String::from_utf8_lossy(&b));
        }
        match tokio::time::timeout(Duration::from_secs(10), rx).await {
            Ok(Ok(t_arr)) => {
                if i >= 20 {
                    // the first 20 are warm-up
                    sub.push(t_arr.saturating_sub(t_sub));
                    acks.push(t_ack - t_sub);
                    if t_arr < t_ack {
                        before_ack += 1;
                    }
                    ack_to_arr.push(t_arr.saturating_sub(t_ack));
                }
            }
            _ => {
                lost += 1;
                eprintln!("pickup: job {k} did not arrive within 10 s");
            }
        }
        if gap_ms > 0 {
            tokio::time::sleep(Duration::from_millis(gap_ms)).await;
        }
    }
    Ok(json!({
        "n": n, "submit_to_arrival": lat_ms(sub), "ack_to_arrival": lat_ms(ack_to_arr),
        "submit_ack": lat_ms(acks), "arrived_before_ack": before_ack, "not_arrived": lost,
        "direct": direct,
    }))
}

#[allow(clippy::too_many_arguments)]
async fn limiter(server: &str, key: &str, ports: &[u16], rates: &[f64], burst: u64, duration: f64) -> Result<Value> {
    let client = http_client(8);
    let admin = ports[0];
    request(&client, "GET", &format!("http://127.0.0.1:{admin}/_dump?reset=1"), None, None).await?;
    let run = mono_ns();
    let retry_at = None;
    let mut subs = Vec::new();
    for (&port, &rate) in ports.iter().zip(rates) {
        let n = (rate * (duration + 5.0)).ceil() as u64 + 5;
        let (server, key) = (server.to_string(), key.to_string());
        subs.push(tokio::spawn(async move {
            let target = format!("http://127.0.0.1:{port}/limit");
            run_batch(&server, &key, n, 1000, 1, &target, retry_at, 0, &format!("lim-{run}-{port}"), "t0", 300).await
        }));
    }
    let mut submits = Vec::new();
    for s in subs {
        submits.push(s.await??);
    }
    // wait until every lane has a full window behind its first arrival
    let dur_ns = (duration * 1e9) as u64;
    let deadline = Instant::now() + Duration::from_secs_f64(duration * 3.0 + 30.0);
    loop {
        let st = fetch_stats(&client, admin).await?;
        let now = st["now"].as_u64().unwrap_or(0);
        let done = ports.iter().all(|p| {
            st["ports"][p.to_string()]["first"].as_u64().map(|f| now > f + dur_ns + 300_000_000).unwrap_or(false)
        });
        if done || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let log = fetch_dump(&client, admin).await?;
    let mut lanes = Vec::new();
    for (i, (&port, &rate)) in ports.iter().zip(rates).enumerate() {
        let mut ts: Vec<u64> = log.iter().filter(|a| a.port == port).map(|a| a.t).collect();
        ts.sort_unstable();
        let peak_inflight = log.iter().filter(|a| a.port == port).map(|a| a.inflight).max().unwrap_or(0);
        if ts.is_empty() {
            lanes.push(json!({"port": port, "rate": rate, "error": "no arrivals"}));
            continue;
        }
        let t0 = ts[0];
        let win: Vec<u64> = ts.iter().copied().filter(|&t| t < t0 + dur_ns).collect();
        let limit = rate.floor() as u64 + burst;
        let (max1s, exceed) = sliding(&ts, 1_000_000_000, limit);
        let (max1s_w, exceed_w) = sliding(&win, 1_000_000_000, limit);
        let achieved = win.len() as f64 / duration;
        // steady state: skip the first second (burst + start-up)
        let steady: Vec<u64> = win.iter().copied().filter(|&t| t >= t0 + 1_000_000_000).collect();
        let steady_rate = steady.len() as f64 / (duration - 1.0);
        let gaps: Vec<f64> = win.windows(2).map(|w| (w[1] - w[0]) as f64).collect();
        let mean = gaps.iter().sum::<f64>() / gaps.len().max(1) as f64;
        let var = gaps.iter().map(|g| (g - mean).powi(2)).sum::<f64>() / gaps.len().max(1) as f64;
        lanes.push(json!({
            "port": port, "rate": rate, "burst": burst, "limit_per_window": limit,
            "submitted": submits[i]["accepted"], "arrivals_total": ts.len(), "arrivals_in_window": win.len(),
            "max_in_1s_window": max1s_w, "windows_over_limit": exceed_w,
            "max_in_1s_window_all": max1s, "windows_over_limit_all": exceed,
            "achieved_rate": r3(achieved), "achieved_ratio": r3(achieved / rate),
            "steady_rate_after_1s": r3(steady_rate), "steady_ratio": r3(steady_rate / rate),
            "interarrival_cv": r3(var.sqrt() / mean.max(1.0)), "peak_inflight_at_target": peak_inflight,
        }));
    }
    Ok(json!({"duration_s": duration, "lanes": lanes, "submit": submits}))
}

async fn fair_backlog(server: &str, keys: &[String], port: u16, rate: f64, duration: f64) -> Result<Value> {
    let client = http_client(8);
    request(&client, "GET", &format!("http://127.0.0.1:{port}/_dump?reset=1"), None, None).await?;
    let ntenants = keys.len() as u64;
    let q = ((rate / ntenants as f64) * (duration + 4.0)).ceil() as u64;
    let noisy = 9 * (ntenants - 1) * q; // 90% of all jobs
    let run = mono_ns();
    let target = format!("http://127.0.0.1:{port}/fair");
    let mut tasks = Vec::new();
    for (i, k) in keys.iter().enumerate() {
        let n = if i == 0 { noisy } else { q };
        let (server, k, target) = (server.to_string(), k.clone(), target.clone());
        let tenant = format!("t{i}");
        tasks.push(tokio::spawn(async move {
            if i == 0 {
                // let the quiet tenants' first batches land first
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            run_batch(&server, &k, n, 1000, 1, &target, None, 0, &format!("fb-{run}-{i}"), &tenant, 300).await
        }));
    }
    let mut submits = Vec::new();
    for t in tasks {
        submits.push(t.await??);
    }
    let skip = 1_000_000_000u64;
    let dur_ns = (duration * 1e9) as u64;
    let deadline = Instant::now() + Duration::from_secs_f64(duration * 3.0 + 30.0);
    loop {
        let st = fetch_stats(&client, port).await?;
        let now = st["now"].as_u64().unwrap_or(0);
        let f = st["ports"][port.to_string()]["first"].as_u64();
        if f.map(|f| now > f + skip + dur_ns + 200_000_000).unwrap_or(false) || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let log = fetch_dump(&client, port).await?;
    let t0 = log.iter().map(|a| a.t).min().ok_or_else(|| anyhow!("no arrivals"))?;
    let nwin = duration.floor() as usize;
    let idx: HashMap<String, usize> = (0..keys.len()).map(|i| (format!("t{i}"), i)).collect();
    let mut counts = vec![vec![0f64; keys.len()]; nwin];
    let mut totals = vec![0f64; keys.len()];
    for a in &log {
        if a.t < t0 + skip {
            continue;
        }
        let w = ((a.t - t0 - skip) / 1_000_000_000) as usize;
        if w < nwin {
            if let Some(&ti) = idx.get(&a.tenant) {
                counts[w][ti] += 1.0;
                totals[ti] += 1.0;
            }
        }
    }
    let mut jains: Vec<f64> = counts.iter().map(|c| jain(c)).collect();
    let per_window: Vec<f64> = jains.iter().map(|j| r3(*j)).collect();
    jains.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let all: f64 = totals.iter().sum();
    Ok(json!({
        "tenants": keys.len(), "rate": rate, "window_s": duration, "quiet_jobs_each": q, "noisy_jobs": noisy,
        "jain_mean": r3(jains.iter().sum::<f64>() / jains.len().max(1) as f64),
        "jain_median": r3(jains.get(jains.len() / 2).copied().unwrap_or(0.0)),
        "jain_min": r3(jains.first().copied().unwrap_or(0.0)),
        "jain_per_window": per_window, "counts_per_window": counts,
        "completions_per_tenant": totals, "noisy_share": r3(totals[0] / all.max(1.0)),
        "achieved_rate": r3(all / duration), "submit": submits,
    }))
}

/// Noisy tenant (keys[0]) preloaded with a backlog (90% of all jobs) unless `solo`; quiet tenants
/// submit single jobs open-loop; reports their submit→arrival wait.
async fn fair_wait(server: &str, keys: &[String], port: u16, rate: f64, duration: f64, solo: bool) -> Result<Value> {
    let client = http_client(16);
    request(&client, "GET", &format!("http://127.0.0.1:{port}/_dump?reset=1"), None, None).await?;
    let run = mono_ns();
    let target = format!("http://127.0.0.1:{port}/fair");
    let noisy_n = (rate * (duration + 10.0)).ceil() as u64;
    let quiet_total = noisy_n / 9; // noisy = 90% of all jobs
    let nquiet = keys.len() - 1;
    let per_quiet = (quiet_total / nquiet as u64).max(1);
    let qrate = per_quiet as f64 / duration;
    let mut noisy_submit = Value::Null;
    if !solo {
        noisy_submit = run_batch(server, &keys[0], noisy_n, 1000, 1, &target, None, 0, &format!("fw-{run}-n"), "t0", 300).await?;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let quiet: Vec<usize> = if solo { vec![1] } else { (1..keys.len()).collect() };
    let start = Instant::now() + Duration::from_millis(100);
    let mut tasks = Vec::new();
    for (qi, &i) in quiet.iter().enumerate() {
        let (client, server, k, target) = (client.clone(), server.to_string(), keys[i].clone(), target.clone());
        let offset = Duration::from_secs_f64(qi as f64 / (qrate * quiet.len() as f64));
        tasks.push(tokio::spawn(async move {
            let mut subs = Vec::new();
            for j in 0..per_quiet {
                let at = start + offset + Duration::from_secs_f64(j as f64 / qrate);
                tokio::time::sleep_until(at.into()).await;
                let key = format!("fw-{run}-{i}-{j}");
                let spec = job_spec(&Spec { target_url: &target, key: key.clone(), tenant: &format!("t{i}"), retry_at: None, lane_auth: None, body_bytes: 300, i: j });
                let t = mono_ns();
                let r = request(&client, "POST", &format!("{server}/api/v1/jobs"), Some(&k), Some(Bytes::from(serde_json::to_vec(&spec).unwrap()))).await;
                if matches!(r, Ok((202, _))) {
                    subs.push((key, (t, mono_ns())));
                } else {
                    eprintln!("quiet submit failed: {:?}", r.map(|x| x.0));
                }
            }
            subs
        }));
    }
    let mut subs: HashMap<String, (u64, u64)> = HashMap::new();
    for t in tasks {
        subs.extend(t.await?);
    }
    // wait for the quiet jobs to arrive
    let deadline = Instant::now() + Duration::from_secs(60);
    let log = loop {
        let log = fetch_dump(&client, port).await?;
        let seen = log.iter().filter(|a| subs.contains_key(&a.key)).count();
        if seen >= subs.len() || Instant::now() > deadline {
            break log;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let (mut waits, mut acks, mut after_ack) = (Vec::new(), Vec::new(), Vec::new());
    for a in &log {
        if let Some(&(t, t_ack)) = subs.get(&a.key) {
            waits.push(a.t.saturating_sub(t));
            acks.push(t_ack - t);
            after_ack.push(a.t.saturating_sub(t_ack));
        }
    }
    let noisy_in_period = log.iter().filter(|a| a.tenant == "t0").count();
    let arrived = waits.len();
    Ok(json!({
        "solo": solo, "quiet_tenants": quiet.len(), "quiet_rate_each": r3(qrate), "quiet_submitted": subs.len(),
        "quiet_arrived": arrived, "noisy_backlog": if solo { 0 } else { noisy_n },
        "noisy_arrivals_seen": noisy_in_period, "quiet_wait": lat_ms(waits), "quiet_submit_ack": lat_ms(acks),
        "quiet_ack_to_arrival": lat_ms(after_ack), "noisy_submit": noisy_submit,
    }))
}

/// Open loop: job i is due at t0 + i/rate; at most `inflight` submissions outstanding.
async fn steady(server: &str, key: &str, rate: f64, duration: f64, target_url: &str, prefix: &str, inflight: usize) -> Result<Value> {
    let client = http_client(inflight);
    let url = Arc::new(format!("{server}/api/v1/jobs"));
    let sem = Arc::new(tokio::sync::Semaphore::new(inflight));
    let lats = Arc::new(Mutex::new(Vec::new()));
    let (acked, errors) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let total = (rate * duration).round() as u64;
    let t0 = Instant::now();
    let mut late = 0u64;
    let mut handles = Vec::new();
    let deadline = t0 + Duration::from_secs_f64(duration * 1.25 + 1.0); // cannot keep up: stop offering
    let mut sent = 0u64;
    for i in 0..total {
        if Instant::now() > deadline {
            break;
        }
        sent += 1;
        let due = t0 + Duration::from_secs_f64(i as f64 / rate);
        let now = Instant::now();
        if due > now {
            tokio::time::sleep_until(due.into()).await;
        } else if now - due > Duration::from_millis(50) {
            late += 1;
        }
        let permit = sem.clone().acquire_owned().await?;
        let (client, url, key, lats, acked, errors) =
            (client.clone(), url.clone(), key.to_string(), lats.clone(), acked.clone(), errors.clone());
        let k = format!("{prefix}.{i}.{}", mono_ns());
        let spec = job_spec(&Spec { target_url, key: k, tenant: "t0", retry_at: None, lane_auth: None, body_bytes: 300, i });
        let body = Bytes::from(serde_json::to_vec(&spec)?);
        handles.push(tokio::spawn(async move {
            let s = Instant::now();
            match request(&client, "POST", &url, Some(&key), Some(body)).await {
                Ok((202, _)) => {
                    lats.lock().unwrap().push(s.elapsed().as_nanos() as u64);
                    acked.fetch_add(1, Ordering::Relaxed);
                }
                r => {
                    if errors.fetch_add(1, Ordering::Relaxed) < 3 {
                        eprintln!("steady submit failed: {:?}", r.map(|x| x.0));
                    }
                }
            }
            drop(permit);
        }));
    }
    for h in handles {
        h.await?;
    }
    let secs = t0.elapsed().as_secs_f64();
    let ok = acked.load(Ordering::Relaxed);
    let l = std::mem::take(&mut *lats.lock().unwrap());
    Ok(json!({"offered_rate": rate, "duration_s": duration, "sent": sent, "acked": ok,
        "errors": errors.load(Ordering::Relaxed), "late_over_50ms": late, "secs": r3(secs),
        "achieved_rate": (ok as f64 / secs).round(), "ack": lat_ms(l)}))
}

/// Submits until the server dies (each client stops at its first transport error), then writes
/// the acknowledged keys.
async fn crash_admit(server: &str, key: &str, c: usize, n: u64, target_url: &str, prefix: &str, acked_path: &str) -> Result<Value> {
    let client = http_client(c);
    let next = Arc::new(AtomicU64::new(0));
    let url = format!("{server}/api/v1/jobs");
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..c {
        let (client, next, url, key, target_url, prefix) =
            (client.clone(), next.clone(), url.clone(), key.to_string(), target_url.to_string(), prefix.to_string());
        tasks.push(tokio::spawn(async move {
            let (mut keys, mut other) = (Vec::new(), 0u64);
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break;
                }
                let k = format!("{prefix}.{i}.{}", mono_ns());
                let spec = job_spec(&Spec { target_url: &target_url, key: k.clone(), tenant: "t0", retry_at: None, lane_auth: None, body_bytes: 300, i });
                match request(&client, "POST", &url, Some(&key), Some(Bytes::from(serde_json::to_vec(&spec).unwrap()))).await {
                    Ok((202, _)) => keys.push(k),
                    Ok(_) => other += 1,
                    Err(_) => break,
                }
            }
            (keys, other)
        }));
    }
    let (mut keys, mut other) = (Vec::new(), 0);
    for t in tasks {
        let (k, o) = t.await?;
        keys.extend(k);
        other += o;
    }
    let secs = t0.elapsed().as_secs_f64();
    std::fs::write(acked_path, keys.join("\n") + "\n")?;
    Ok(json!({"acked": keys.len(), "non_202": other, "secs": r3(secs), "jobs_per_s": (keys.len() as f64 / secs).round()}))
}

fn sqlite_baseline(dir: &str, n: u64, rows_per_txn: u64) -> Result<Value> {
    let path = std::path::Path::new(dir).join("baseline.db");
    let _ = std::fs::remove_file(&path);
    let conn = rusqlite::Connection::open(&path)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.execute_batch(
        "CREATE TABLE jobs (id TEXT PRIMARY KEY, tenant TEXT NOT NULL, lane TEXT NOT NULL, state TEXT NOT NULL,
           run_at INTEGER NOT NULL, created_at INTEGER NOT NULL, spec BLOB NOT NULL);
         CREATE INDEX jobs_lane_state ON jobs(lane, state, run_at);",
    )?;
    let mut lats = Vec::new();
    let t0 = Instant::now();
    let mut i = 0;
    while i < n {
        let s = Instant::now();
        let tx = conn.unchecked_transaction()?;
        {
            let mut st = tx.prepare_cached("INSERT INTO jobs VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)")?;
            for _ in 0..rows_per_txn.min(n - i) {
                let p = payload(i, 300);
                st.execute(rusqlite::params![
                    format!("job_{i:016x}"), "tenant-1", "127.0.0.1:9999", "queued",
                    epoch_ms() as i64 + 3_600_000, epoch_ms() as i64, p.as_bytes()
                ])?;
                i += 1;
            }
        }
        tx.commit()?;
        lats.push(s.elapsed().as_nanos() as u64);
    }
    let secs = t0.elapsed().as_secs_f64();
    drop(conn);
    let _ = std::fs::remove_file(&path);
    let _ = std::fs::remove_file(path.with_extension("db-wal"));
    let _ = std::fs::remove_file(path.with_extension("db-shm"));
    Ok(json!({"n": n, "rows_per_txn": rows_per_txn, "secs": r3(secs), "rows_per_s": (n as f64 / secs).round(), "commit": lat_ms(lats)}))
}

fn procstat(pid: u32) -> Result<Value> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb = |name: &str| -> u64 {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after = &stat[stat.rfind(')').ok_or_else(|| anyhow!("bad stat"))? + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    // fields 14 and 15 (utime, stime) are at index 11, 12 after the ')'
    let ticks: f64 = f[11].parse::<f64>()? + f[12].parse::<f64>()?;
    // SAFETY: sysconf has no memory effects.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Ok(json!({"rss_mb": r3(kb("VmRSS:") as f64 / 1024.0), "hwm_mb": r3(kb("VmHWM:") as f64 / 1024.0), "cpu_s": r3(ticks / hz)}))
}

// ---------------------------------------------------------------------------------------------
// CLI

#[derive(Parser)]
#[command(about = "EZThrottle benchmark load generator (127.0.0.1 only)")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// 200-OK target recording (mono ns, port, in-flight, Idempotency-Key, X-Tenant) per arrival;
    /// `GET /_dump[?reset=1]` returns the log as TSV, SIGTERM writes it to --out.
    Target {
        #[arg(long, value_delimiter = ',', required = true)]
        ports: Vec<u16>,
        #[arg(long)]
        out: Option<String>,
        #[arg(long, default_value_t = 0)]
        delay_ms: u64,
    },
    /// N single-job submissions over C keep-alive connections (--server may list several
    /// comma-separated base URLs: connection i goes to server i mod count).
    Admit {
        #[arg(long)]
        server: String,
        #[arg(long)]
        key: String,
        #[arg(long, default_value_t = 100_000)]
        n: u64,
        #[arg(long, default_value_t = 64)]
        c: usize,
        #[arg(long)]
        target_url: String,
        /// Schedule the jobs this many seconds in the future (0 = now).
        #[arg(long, default_value_t = 3600)]
        retry_in_s: u64,
        #[arg(long, default_value = "adm")]
        prefix: String,
    },
    /// Submissions through POST /api/v1/jobs/batch.
    Batch {
        #[arg(long)]
        server: String,
        #[arg(long)]
        key: String,
        #[arg(long, default_value_t = 100_000)]
        n: u64,
        #[arg(long, default_value_t = 1000)]
        batch: u64,
        #[arg(long, default_value_t = 1)]
        c: usize,
        #[arg(long)]
        target_url: String,
        #[arg(long, default_value_t = 3600)]
        retry_in_s: u64,
        /// Spread jobs over this many lanes via `Authorization: Bearer lane-<i % lanes>` (0 = none).
        #[arg(long, default_value_t = 0)]
        lanes: u64,
        #[arg(long, default_value = "bat")]
        prefix: String,
        #[arg(long, default_value_t = 300)]
        body_bytes: usize,
        /// Absolute first-call time (ms since the epoch); overrides --retry-in-s.
        #[arg(long)]
        retry_at_ms: Option<u64>,
    },
    /// Open-loop single submissions at a fixed rate (dispatch now); keys "<prefix>.<i>.<mono ns>".
    Steady {
        #[arg(long)]
        server: String,
        #[arg(long)]
        key: String,
        #[arg(long)]
        rate: f64,
        #[arg(long)]
        duration: f64,
        #[arg(long)]
        target_url: String,
        #[arg(long, default_value = "st")]
        prefix: String,
        #[arg(long, default_value_t = 256)]
        inflight: usize,
    },
    /// Crash trial producer: C clients submit (dispatch now) until the server goes away; writes
    /// the acknowledged keys ("<prefix>.<i>.<mono ns>") to --acked, one per line.
    CrashAdmit {
        #[arg(long)]
        server: String,
        #[arg(long)]
        key: String,
        #[arg(long, default_value_t = 64)]
        c: usize,
        #[arg(long, default_value_t = 10_000_000)]
        n: u64,
        #[arg(long)]
        target_url: String,
        #[arg(long, default_value = "crash")]
        prefix: String,
        #[arg(long)]
        acked: String,
    },
    /// Bare SQLite WAL synchronous=FULL inserts.
    SqliteBaseline {
        #[arg(long)]
        dir: String,
        #[arg(long, default_value_t = 20_000)]
        n: u64,
        #[arg(long, default_value_t = 1)]
        rows_per_txn: u64,
    },
    /// Direct call latency to an in-process target.
    Direct {
        #[arg(long)]
        port: u16,
        #[arg(long, default_value_t = 5000)]
        n: u64,
    },
    /// Submit → target arrival, one job at a time, with an in-process target on --port.
    Pickup {
        #[arg(long)]
        server: String,
        #[arg(long)]
        key: String,
        #[arg(long)]
        port: u16,
        #[arg(long, default_value_t = 1000)]
        n: u64,
        #[arg(long, default_value_t = 2)]
        gap_ms: u64,
    },
    /// Backlogged lanes at pinned rates; analyses the target's arrival log (target must run).
    Limiter {
        #[arg(long)]
        server: String,
        #[arg(long)]
        key: String,
        #[arg(long, value_delimiter = ',')]
        ports: Vec<u16>,
        #[arg(long, value_delimiter = ',')]
        rates: Vec<f64>,
        #[arg(long, default_value_t = 1)]
        burst: u64,
        #[arg(long, default_value_t = 60.0)]
        duration: f64,
    },
    /// Fairness: backlog (Jain), wait (noisy backlog + quiet open loop), solo (one quiet tenant alone).
    Fair {
        #[arg(long)]
        server: String,
        #[arg(long, value_delimiter = ',')]
        keys: Vec<String>,
        #[arg(long)]
        port: u16,
        #[arg(long, default_value_t = 200.0)]
        rate: f64,
        #[arg(long, default_value_t = 30.0)]
        duration: f64,
        #[arg(long, default_value = "backlog")]
        mode: String,
    },
    /// RSS / HWM / CPU seconds of a process.
    Procstat {
        #[arg(long)]
        pid: u32,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let retry = |s: u64| (s > 0).then(|| epoch_ms() + s * 1000);
    let v: Value = rt.block_on(async {
        match cli.cmd {
            Cmd::Target { ports, out, delay_ms } => {
                let shared = start_target(&ports, delay_ms).await?;
                eprintln!("target listening on 127.0.0.1:{ports:?}");
                let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
                tokio::select! { _ = term.recv() => {}, _ = tokio::signal::ctrl_c() => {} }
                let log = shared.log.lock().unwrap().clone();
                if let Some(p) = out {
                    std::fs::write(&p, dump_text(&log))?;
                }
                Ok::<Value, anyhow::Error>(json!({"arrivals": log.len()}))
            }
            Cmd::Admit { server, key, n, c, target_url, retry_in_s, prefix } => {
                run_admit(&server, &key, n, c, &target_url, retry(retry_in_s), &prefix, 300).await
            }
            Cmd::Batch { server, key, n, batch, c, target_url, retry_in_s, lanes, prefix, body_bytes, retry_at_ms } => {
                let ra = retry_at_ms.or(retry(retry_in_s));
                run_batch(&server, &key, n, batch, c, &target_url, ra, lanes, &prefix, "t0", body_bytes).await
            }
            Cmd::Steady { server, key, rate, duration, target_url, prefix, inflight } => {
                steady(&server, &key, rate, duration, &target_url, &prefix, inflight).await
            }
            Cmd::CrashAdmit { server, key, c, n, target_url, prefix, acked } => {
                crash_admit(&server, &key, c, n, &target_url, &prefix, &acked).await
            }
            Cmd::SqliteBaseline { dir, n, rows_per_txn } => sqlite_baseline(&dir, n, rows_per_txn),
            Cmd::Direct { port, n } => {
                start_target(&[port], 0).await?;
                let c = http_client(2);
                direct_latency(&c, port, 200).await?;
                direct_latency(&c, port, n).await
            }
            Cmd::Pickup { server, key, port, n, gap_ms } => pickup(&server, &key, n, port, gap_ms).await,
            Cmd::Limiter { server, key, ports, rates, burst, duration } => {
                if ports.len() != rates.len() {
                    bail!("--ports and --rates differ in length");
                }
                limiter(&server, &key, &ports, &rates, burst, duration).await
            }
            Cmd::Fair { server, keys, port, rate, duration, mode } => match mode.as_str() {
                "backlog" => fair_backlog(&server, &keys, port, rate, duration).await,
                "wait" => fair_wait(&server, &keys, port, rate, duration, false).await,
                "solo" => fair_wait(&server, &keys, port, rate, duration, true).await,
                m => bail!("unknown mode {m}"),
            },
            Cmd::Procstat { pid } => procstat(pid),
        }
    })?;
    println!("{v}");
    Ok(())
}
