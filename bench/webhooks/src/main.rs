//! Webhook delivery benchmark (all traffic on 127.0.0.1).
//!
//! `ezt-webhook-bench <ezthrottle binary> <jobs> <out.json>`
//!
//! One in-process receiver serves both the jobs' target (`/target`) and their webhook (`/hook`),
//! stamping arrivals with one monotonic clock. A job ends right after its target answers, so
//! `hook arrival − target arrival` is the time from a job's completion to its signed webhook's
//! receipt (plus the target's sub-millisecond answer). Beside it, in the same run, a direct POST
//! loop sends the same payload to the same receiver with the same concurrency: the floor.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::post;
use axum::Router;
use serde_json::{json, Value};

#[derive(Default)]
struct Log {
    target: HashMap<String, Instant>,
    hook: HashMap<String, Instant>,
    direct: Vec<Instant>,
}

type Shared = Arc<(Instant, Mutex<Log>)>;

async fn target(State(s): State<Shared>, h: HeaderMap) -> &'static str {
    let key = h.get("idempotency-key").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    s.1.lock().unwrap().target.insert(key, Instant::now());
    "ok"
}

async fn hook(State(s): State<Shared>, body: Bytes) -> &'static str {
    let now = Instant::now();
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let key = v["idempotent_key"].as_str().unwrap_or("").to_string();
    s.1.lock().unwrap().hook.insert(key, now);
    "ok"
}

async fn direct(State(s): State<Shared>, _body: Bytes) -> &'static str {
    s.1.lock().unwrap().direct.push(Instant::now());
    "ok"
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    if v.is_empty() {
        return f64::NAN;
    }
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (bin, n, out) = (&args[1], args[2].parse::<usize>().unwrap(), &args[3]);
    let concurrency = 64;
    let shared: Shared = Arc::new((Instant::now(), Mutex::new(Log::default())));
    let app = Router::new()
        .route("/target", post(target).get(target))
        .route("/hook", post(hook))
        .route("/direct", post(direct))
        .with_state(shared.clone());
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });

    let dir = std::env::temp_dir().join(format!("ezt-webhook-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("config.toml");
    std::fs::write(
        &cfg,
        format!(
            "[lanes.hosts.\"127.0.0.1:{port}\"]\nrate = 1000000.0\nburst = 1000\nmax_in_flight = {concurrency}\n\
             [webhooks.hosts.\"127.0.0.1:{port}\"]\nrate = 1000000.0\nburst = 1000\nmax_in_flight = {concurrency}\n"
        ),
    )
    .unwrap();
    let srv_port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut child = std::process::Command::new(bin)
        .args(["serve", "--listen", &format!("127.0.0.1:{srv_port}"), "--allow-cidr", "127.0.0.1/32", "--config"])
        .arg(&cfg)
        .arg("--data-dir")
        .arg(&dir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn ezthrottle");
    let key = {
        use std::io::BufRead;
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        line.trim().to_string()
    };
    let base = format!("http://127.0.0.1:{srv_port}");
    let http = reqwest::Client::new();
    for _ in 0..200 {
        if http.get(format!("{base}/readyz")).send().await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Signed deliveries: the realistic (and costlier) case.
    let r = http
        .post(format!("{base}/api/v1/webhook-secrets"))
        .bearer_auth(&key)
        .json(&json!({"primary_secret": "bench-secret-0123456789"}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());

    // 1. Through EZThrottle: N jobs, each with one webhook.
    let t0 = Instant::now();
    for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
        let jobs: Vec<Value> = chunk
            .iter()
            .map(|i| json!({"url": format!("http://127.0.0.1:{port}/target"), "idempotent_key": format!("k{i}"),
                             "metadata": {"bench": "webhooks"}, "webhooks": [{"url": format!("http://127.0.0.1:{port}/hook")}]}))
            .collect();
        let r = http
            .post(format!("{base}/api/v1/jobs/batch"))
            .bearer_auth(&key)
            .json(&json!({ "jobs": jobs }))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
    }
    let deadline = Instant::now() + Duration::from_secs(300);
    while shared.1.lock().unwrap().hook.len() < n && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (mut lat_ms, first_hook, last_hook, hooks) = {
        let g = shared.1.lock().unwrap();
        let lat: Vec<f64> = g
            .hook
            .iter()
            .filter_map(|(k, h)| g.target.get(k).map(|t| h.duration_since(*t).as_secs_f64() * 1e3))
            .collect();
        let first = g.hook.values().min().copied().unwrap_or(t0);
        let last = g.hook.values().max().copied().unwrap_or(t0);
        (lat, first, last, g.hook.len())
    };
    let span = last_hook.duration_since(first_hook).as_secs_f64().max(1e-9);
    let ezt = json!({
        "jobs": n, "delivered": hooks,
        "deliveries_per_s": hooks as f64 / span,
        "end_to_receipt_ms": {"p50": pct(&mut lat_ms, 0.5), "p99": pct(&mut lat_ms, 0.99), "max": pct(&mut lat_ms, 1.0)},
        "submit_to_last_receipt_s": last_hook.duration_since(t0).as_secs_f64(),
    });
    // 2. Unsaturated: single jobs at 200/s (open loop), so the latency is the pipeline's own,
    //    not a queue's.
    let paced = (n / 10).clamp(200, 2000);
    let mut ticker = tokio::time::interval(Duration::from_millis(5));
    let mut sends = Vec::new();
    for i in 0..paced {
        ticker.tick().await;
        let (http, base, key) = (http.clone(), base.clone(), key.clone());
        let job = json!({"url": format!("http://127.0.0.1:{port}/target"), "idempotent_key": format!("p{i}"),
                         "webhooks": [{"url": format!("http://127.0.0.1:{port}/hook")}]});
        sends.push(tokio::spawn(async move {
            http.post(format!("{base}/api/v1/jobs")).bearer_auth(&key).json(&job).send().await.unwrap().status()
        }));
    }
    for s in sends {
        assert!(s.await.unwrap().is_success());
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while shared.1.lock().unwrap().hook.len() < n + paced && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut plat: Vec<f64> = {
        let g = shared.1.lock().unwrap();
        (0..paced)
            .filter_map(|i| {
                let k = format!("p{i}");
                Some(g.hook.get(&k)?.duration_since(*g.target.get(&k)?).as_secs_f64() * 1e3)
            })
            .collect()
    };
    let unsaturated = json!({
        "jobs": paced, "rate_per_s": 200, "delivered": plat.len(),
        "end_to_receipt_ms": {"p50": pct(&mut plat, 0.5), "p99": pct(&mut plat, 0.99), "max": pct(&mut plat, 1.0)},
    });
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);

    // 2. Direct POST loop: the same payload size, the same receiver, the same concurrency.
    let body = vec![b'x'; 420];
    let per = n / concurrency;
    let t1 = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let http = http.clone();
        let (url, body) = (format!("http://127.0.0.1:{port}/direct"), body.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(per);
            for _ in 0..per {
                let s = Instant::now();
                http.post(&url).body(body.clone()).send().await.unwrap().bytes().await.unwrap();
                lat.push(s.elapsed().as_secs_f64() * 1e3);
            }
            lat
        }));
    }
    let mut dlat = Vec::new();
    for t in tasks {
        dlat.extend(t.await.unwrap());
    }
    let dspan = t1.elapsed().as_secs_f64();
    let direct = json!({
        "requests": dlat.len(), "requests_per_s": dlat.len() as f64 / dspan,
        "latency_ms": {"p50": pct(&mut dlat, 0.5), "p99": pct(&mut dlat, 0.99)},
    });
    let result = json!({
        "what": "webhook deliveries vs a direct POST loop, same receiver, concurrency 64, signed (1 secret)",
        "ezthrottle_backlog": ezt, "ezthrottle_200_per_s": unsaturated, "direct": direct,
        "ratio_throughput": ezt["deliveries_per_s"].as_f64().unwrap() / direct["requests_per_s"].as_f64().unwrap(),
    });
    println!("{}", serde_json::to_string_pretty(&result).unwrap());
    std::fs::write(out, serde_json::to_string_pretty(&result).unwrap()).unwrap();
}

