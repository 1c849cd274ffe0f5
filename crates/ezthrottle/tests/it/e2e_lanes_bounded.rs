//! Bounded lanes: idle lanes leave memory but keep what they learned (also across a restart),
//! a per-tenant cap on lanes with waiting work, and a small, optionally protected `/metrics`.

use std::time::Duration;

use serde_json::json;

use crate::support::{in_days, Reply, Target, TestServer};

/// Scheduling allowance between the limiter's decision and the mock target's stamp.
const JITTER: Duration = Duration::from_millis(150);

/// Waits (polling the scrape, bounded) until `/metrics` shows `line`.
async fn wait_metric(server: &TestServer, token: Option<&str>, line: &str, timeout: Duration) {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let mut req = server.http.get(server.url("/metrics"));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let text = req.send().await.unwrap().text().await.unwrap();
        if text.lines().any(|l| l == line) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "/metrics never showed {line:?} within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The gap between the last two arrivals at `/name` after two more jobs there.
async fn gap_of_two_more(server: &TestServer, target: &Target, name: &str, tag: &str) -> Duration {
    let before = target.arrivals(name).len();
    let jobs: Vec<_> = (0..2)
        .map(|i| json!({"url": target.url(name), "body": format!("{tag}{i}")}))
        .collect();
    let (s, b) = server
        .post("/api/v1/jobs/batch", json!({ "jobs": jobs }))
        .await;
    assert_eq!(s, 202, "{b}");
    let seen = target
        .wait_for(name, before + 2, Duration::from_secs(20))
        .await;
    seen[before + 1].at.duration_since(seen[before].at)
}

#[tokio::test]
async fn an_evicted_lane_keeps_its_learned_rate_also_after_a_restart() {
    let target = Target::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let config = "[lanes]\nidle_evict_after_ms = 200\n";
    let server = TestServer::spawn(tmp.path(), config, None);
    // The first answer teaches 1 request/s (the default is 2/s); later answers say nothing.
    target.script(
        "learn",
        vec![Reply::status(200).header("X-EZTHROTTLE-RPS", "1")],
    );
    let id = server
        .submit(json!({"url": target.url("learn"), "body": "teach"}))
        .await;
    server.wait_final(&id, 20).await;
    wait_metric(&server, None, "ezthrottle_lanes 0", Duration::from_secs(10)).await;
    let gap = gap_of_two_more(&server, &target, "learn", "after-eviction").await;
    assert!(
        gap + JITTER >= Duration::from_secs(1),
        "the re-created lane forgot the learned 1/s: calls {gap:?} apart (default 2/s = 500 ms)"
    );
    let key = server.key.clone();
    drop(server);
    let server = TestServer::spawn(tmp.path(), config, Some(key));
    let gap = gap_of_two_more(&server, &target, "learn", "after-restart").await;
    assert!(
        gap + JITTER >= Duration::from_secs(1),
        "the lane forgot the learned 1/s over a restart: calls {gap:?} apart"
    );
}

#[tokio::test]
async fn a_pause_learned_before_a_restart_holds_new_work_after_it() {
    let target = Target::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let server = TestServer::spawn(tmp.path(), "", None);
    target.script("pause", vec![Reply::status(429).header("Retry-After", "4")]);
    server
        .submit(json!({"url": target.url("pause"), "body": "first"}))
        .await;
    let paused_at = target.wait_for("pause", 1, Duration::from_secs(10)).await[0].at;
    // Wait until the pause is recorded (the lane shows it, the database holds it), then
    // restart hard.
    wait_metric(
        &server,
        None,
        "ezthrottle_lanes_paused 1",
        Duration::from_secs(5),
    )
    .await;
    let db = rusqlite::Connection::open(tmp.path().join("ezthrottle.db")).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while db
        .query_row("SELECT COUNT(*) FROM lane_states", [], |r| {
            r.get::<_, i64>(0)
        })
        .unwrap()
        == 0
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the pause was never saved"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(db);
    let key = server.key.clone();
    let mut server = server;
    server.kill9();
    drop(server);
    let server = TestServer::spawn(tmp.path(), "", Some(key));
    server
        .submit(json!({"url": target.url("pause"), "body": "second"}))
        .await;
    let seen = target.wait_for("pause", 2, Duration::from_secs(20)).await;
    let gap = seen[1].at.duration_since(paused_at);
    assert!(
        gap + JITTER >= Duration::from_secs(4),
        "a call {gap:?} after the 429, inside its Retry-After: 4 (forgotten over the restart)"
    );
}

#[tokio::test]
async fn a_tenant_cannot_open_more_lanes_than_the_cap() {
    let target = Target::start().await;
    let server = TestServer::start_with("[lanes]\nmax_lanes_per_tenant = 3\n");
    let n = std::sync::atomic::AtomicU32::new(0);
    let job = |cred: &str| {
        let body = n
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            .to_string();
        json!({"url": target.url("cap"), "headers": {"Authorization": format!("Bearer {cred}")},
               "body": body, "retry_at": in_days(1)})
    };
    for c in ["a", "b", "c"] {
        server.submit(job(c)).await;
    }
    let (s, b) = server.post("/api/v1/jobs", job("d")).await;
    assert_eq!(s, 422, "{b}");
    assert_eq!(b["error"]["code"], "too_many_lanes", "{b}");
    assert_eq!(b["error"]["field"], "headers", "{b}");
    // Lanes the tenant already uses stay open.
    server.submit(job("a")).await;
    let (s, b) = server
        .post("/api/v1/jobs/batch", json!({"jobs": [job("b"), job("e")]}))
        .await;
    assert_eq!(
        s, 422,
        "a batch opening a fourth lane is refused whole: {b}"
    );
    let (_, list) = server.get("/api/v1/jobs?limit=100").await;
    let n = list["jobs"].as_array().map_or(0, Vec::len);
    assert_eq!(
        n, 4,
        "nothing of the refused submissions was stored: {list}"
    );
}

#[tokio::test]
async fn metrics_stay_small_with_5000_lanes_and_need_the_token() {
    let target = Target::start().await;
    let server = TestServer::start_with(
        "[lanes]\nmax_lanes_per_tenant = 0\n[metrics]\nmax_lane_series = 20\nbearer_token = \"scrape-me\"\n",
    );
    for chunk in 0..5 {
        let jobs: Vec<_> = (0..1000)
            .map(|i| {
                json!({"url": target.url("many"),
                       "headers": {"X-Api-Key": format!("k{chunk}-{i}")},
                       "body": format!("{chunk}-{i}"),
                       "retry_at": in_days(1)})
            })
            .collect();
        let (s, b) = server
            .post("/api/v1/jobs/batch", json!({ "jobs": jobs }))
            .await;
        assert_eq!(s, 202, "{b}");
    }
    let r = server
        .http
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unauthorized", "{body}");
    let r = server
        .http
        .get(server.url("/metrics"))
        .header("Authorization", "Bearer wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    wait_metric(
        &server,
        Some("scrape-me"),
        "ezthrottle_lanes 5000",
        Duration::from_secs(10),
    )
    .await;
    let text = server
        .http
        .get(server.url("/metrics"))
        .bearer_auth("scrape-me")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.len() < 32 * 1024,
        "5,000 lanes made /metrics {} bytes",
        text.len()
    );
    for family in [
        "ezthrottle_lane_queue_depth{",
        "ezthrottle_lane_rate{",
        "ezthrottle_lane_in_flight{",
        "ezthrottle_lane_dispatched_total{",
    ] {
        let n = text.lines().filter(|l| l.starts_with(family)).count();
        assert!(n <= 20, "{n} series of {family}");
    }
    assert!(
        text.contains("\nezthrottle_lanes_without_series 4980\n"),
        "{text}"
    );
}

#[tokio::test]
async fn webhook_receiver_lanes_save_what_they_learn_apart_from_job_lanes() {
    let target = Target::start().await;
    let receiver = Target::start().await;
    let server = TestServer::start();
    receiver.script("hook", vec![Reply::status(429).header("Retry-After", "30")]);
    server
        .submit(json!({"url": target.url("work"), "webhooks": [{"url": receiver.url("hook")}]}))
        .await;
    receiver.wait_for("hook", 1, Duration::from_secs(20)).await;
    let db = rusqlite::Connection::open(server.dir.join("ezthrottle.db")).unwrap();
    let want = format!("webhook:{}", receiver.addr);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let lanes = loop {
        let mut st = db.prepare("SELECT lane FROM lane_states").unwrap();
        let lanes: Vec<String> = st
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        if lanes.contains(&want) {
            break lanes;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the receiver's pause was never saved as {want}: {lanes:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(
        lanes,
        [want],
        "the job lane learned nothing, so saved nothing"
    );
}
