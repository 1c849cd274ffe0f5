//! Store and forward (issue 13, item 6) with real processes and a real PostgreSQL: while the
//! database is unreachable, admissions are fsynced into the node's spool and answered 202; when
//! it is back they are forwarded, de-duplicated by idempotency key, and run. Nothing
//! acknowledged is lost: not through a PostgreSQL crash (`pg_ctl stop -m immediate`, case 5),
//! not through a kill -9 of the node, not when two nodes admit the same key (case 8). A
//! blackholed database connection (the fault proxy) is detected by the store deadline, and a
//! full spool answers 503 with Retry-After.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::cluster::no_lane_has_two_owners;
use crate::support::faultproxy::{database_addr as db_addr, FaultProxy, Mode};
use crate::support::{Target, TestServer};

const OPERATOR: &str = "operator-token-0123456789";

/// Fast lanes and a short store deadline, so the tests spend their time on the faults.
fn config(max_jobs: u64) -> String {
    format!(
        "[lanes.default]\nrate = 200.0\nburst = 20\nmax_in_flight = 20\n\
         [spool]\nmax_jobs = {max_jobs}\nstore_deadline_ms = 800\n\
         [admin]\ntoken = \"{OPERATOR}\"\n"
    )
}

fn node(dir: &Path, url: &str, key: Option<String>, max_jobs: u64) -> TestServer {
    TestServer::spawn_env(
        dir,
        &config(max_jobs),
        key,
        &[("EZTHROTTLE_DATABASE_URL", url)],
    )
}

/// One authenticated call while the database is up: a node admits into its spool only for
/// keys it verified recently (it cannot check a key it never saw without the database).
async fn verify_key(s: &TestServer) {
    let (st, b) = s.get("/api/v1/jobs?limit=1").await;
    assert_eq!(st, 200, "{b}");
}

async fn submit(s: &TestServer, body: Value) -> (u16, Value, Option<String>, Duration) {
    let t0 = Instant::now();
    let r = s
        .http
        .post(s.url("/api/v1/jobs"))
        .bearer_auth(&s.key)
        .json(&body)
        .send()
        .await
        .expect("post");
    let took = t0.elapsed();
    let status = r.status().as_u16();
    let retry_after = r
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_string());
    (
        status,
        r.json().await.unwrap_or(Value::Null),
        retry_after,
        took,
    )
}

async fn accepted(s: &TestServer, body: Value) -> String {
    let (st, b, _, _) = submit(s, body).await;
    assert_eq!(st, 202, "{b}");
    assert!(
        matches!(b["status"].as_str(), Some("queued" | "duplicate")),
        "{b}"
    );
    b["job_id"].as_str().unwrap().to_string()
}

/// Waits (polling the job, with a deadline) until it is final; returns its view.
async fn final_view(s: &TestServer, id: &str, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let (st, b) = s.get(&format!("/api/v1/jobs/{id}/wait?timeout=2s")).await;
        if st == 200
            && b["state"]
                .as_str()
                .is_some_and(|x| x != "queued" && x != "running" && x != "scheduled")
        {
            return b;
        }
        assert!(
            Instant::now() < deadline,
            "job {id} not final within {within:?}: {st} {b}\n{}",
            s.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blackholed_database_admissions_go_to_the_spool_within_the_deadline() {
    let url = ezt_store_postgres::testing::database_url().await;
    let proxy = FaultProxy::start(db_addr(&url)).await;
    let target = Target::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let s = node(tmp.path(), &proxy.url_for(&url), None, 1000);

    let before = accepted(&s, json!({"url": target.url("before")})).await;
    assert_eq!(
        final_view(&s, &before, Duration::from_secs(20)).await["state"],
        "succeeded"
    );

    // Silence: connections stay open, nothing answers.
    proxy.set(Mode::Blackhole);
    let (st, b, _, took) = submit(&s, json!({"url": target.url("b1")})).await;
    assert_eq!(st, 202, "{b}");
    assert_eq!(b["status"], "queued", "the same answer shape: {b}");
    assert!(
        took < Duration::from_millis(800 + 1500),
        "admission waited {took:?}, past the 800 ms store deadline plus slack"
    );
    let b1 = b["job_id"].as_str().unwrap().to_string();
    // Jobs already spooled: the next admissions skip the database (admission order kept).
    let (st, b, _, took2) = submit(&s, json!({"url": target.url("b2")})).await;
    assert_eq!(st, 202, "{b}");
    assert!(took2 < Duration::from_millis(800), "{took2:?}");
    let b2 = b["job_id"].as_str().unwrap().to_string();
    // Past the 1 s key cache too, admissions stay fast: the key is not re-checked against the
    // silent database on every request while the node is spooling.
    let mut more = Vec::new();
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_millis(1500) {
        let name = format!("m{}", more.len());
        let (st, b, _, took) = submit(&s, json!({"url": target.url(&name)})).await;
        assert_eq!(st, 202, "{b}");
        assert!(took < Duration::from_millis(800), "{name}: {took:?}");
        more.push((b["job_id"].as_str().unwrap().to_string(), name));
        tokio::time::sleep(Duration::from_millis(100)).await; // pacing, not synchronisation
    }
    // Reads of a spooled job answer from the spool.
    let (st, view) = s.get(&format!("/api/v1/jobs/{b1}")).await;
    assert_eq!(st, 200, "{view}");
    assert_eq!(view["job_id"], b1.as_str());
    assert_eq!(view["state"], "queued");
    assert!(
        target.arrivals("b1").is_empty(),
        "a spooled job is not sent"
    );
    // A scrape does not hang on the silent database either.
    let t0 = Instant::now();
    let (st, text) = s.get_text("/metrics").await;
    assert_eq!(st, 200);
    assert!(t0.elapsed() < Duration::from_millis(800 * 2 + 1500));
    assert!(
        text.lines()
            .any(|l| l == format!("ezthrottle_spool_waiting {}", 2 + more.len())),
        "{text}"
    );

    // Healed: the stuck connections are cut, new ones flow.
    proxy.set(Mode::Forward);
    proxy.reset();
    for id in [&b1, &b2] {
        assert_eq!(
            final_view(&s, id, Duration::from_secs(30)).await["state"],
            "succeeded"
        );
    }
    assert_eq!(target.arrivals("b1").len(), 1);
    assert_eq!(target.arrivals("b2").len(), 1);
    for (id, name) in &more {
        assert_eq!(
            final_view(&s, id, Duration::from_secs(30)).await["state"],
            "succeeded"
        );
        assert_eq!(target.arrivals(name).len(), 1, "{name}");
    }
    assert!(
        s.logs().contains("admitting into the spool"),
        "{}",
        s.logs()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case5_postgres_crash_and_restart_loses_nothing_acknowledged() {
    let pg = ezt_store_postgres::testing::OwnServer::start();
    let target = Target::start().await;
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = node(da.path(), pg.url(), None, 10_000);
    let b = node(db.path(), pg.url(), Some(a.key.clone()), 10_000);
    let nodes = [&a, &b];
    verify_key(&b).await;

    // (job id, target path, node that took it), submitted round-robin.
    let mut acked: Vec<(String, String, usize)> = Vec::new();
    for i in 0..10 {
        let name = format!("pre{i}");
        let id = accepted(nodes[i % 2], json!({"url": target.url(&name)})).await;
        acked.push((id, name, i % 2));
    }
    pg.crash();
    for i in 0..30 {
        let name = format!("down{i}");
        let id = accepted(nodes[i % 2], json!({"url": target.url(&name)})).await;
        acked.push((id, name, i % 2));
    }
    // A spooled job reads from its node's spool while the database is down.
    for (id, _, n) in &acked[10..12] {
        let (st, v) = nodes[*n].get(&format!("/api/v1/jobs/{id}")).await;
        assert_eq!(st, 200, "{v}");
        assert_eq!(v["state"], "queued");
    }
    assert!(
        target.arrivals("down0").is_empty(),
        "nothing spooled is sent while the database is down"
    );

    pg.restart();
    for i in 0..6 {
        let name = format!("post{i}");
        let id = accepted(nodes[i % 2], json!({"url": target.url(&name)})).await;
        acked.push((id, name, i % 2));
    }
    // lost = acknowledged but never arrived: must be 0. Every job ends succeeded, and reads
    // the same on both nodes.
    for (id, name, n) in &acked {
        let v = final_view(nodes[*n], id, Duration::from_secs(60)).await;
        assert_eq!(v["state"], "succeeded", "{name}: {v}");
        let (st, other) = nodes[1 - *n].get(&format!("/api/v1/jobs/{id}")).await;
        assert_eq!(st, 200, "{other}");
        assert_eq!(
            other["state"], "succeeded",
            "{name} on the other node: {other}"
        );
        assert!(
            !target.arrivals(name).is_empty(),
            "{name} was acked and never arrived"
        );
    }
    // Spooled jobs were never in flight at the crash: exactly once each.
    for i in 0..30 {
        assert_eq!(target.arrivals(&format!("down{i}")).len(), 1, "down{i}");
    }
    no_lane_has_two_owners(pg.url(), &nodes, OPERATOR).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case8_one_key_admitted_on_two_nodes_while_the_database_is_down_is_one_job() {
    let url = ezt_store_postgres::testing::database_url().await;
    let (pa, pb) = (
        FaultProxy::start(db_addr(&url)).await,
        FaultProxy::start(db_addr(&url)).await,
    );
    let target = Target::start().await;
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = node(da.path(), &pa.url_for(&url), None, 1000);
    let b = node(db.path(), &pb.url_for(&url), Some(a.key.clone()), 1000);

    verify_key(&a).await;
    verify_key(&b).await;
    for p in [&pa, &pb] {
        p.set(Mode::Refuse);
        p.reset();
    }
    let body = json!({"url": target.url("k8"), "idempotent_key": "order-8"});
    let ida = accepted(&a, body.clone()).await;
    let idb = accepted(&b, body.clone()).await;
    assert_ne!(ida, idb, "two spools, two ids while split");
    // Within one spool the key holds already.
    let (st, again, _, _) = submit(&a, body.clone()).await;
    assert_eq!(
        st, 200,
        "a duplicate is answered 200, as on the database: {again}"
    );
    assert_eq!(again["status"], "duplicate", "{again}");
    assert_eq!(again["job_id"], ida.as_str());

    // Heal B first, then A: whichever forwards second finds the key taken.
    pb.set(Mode::Forward);
    pa.set(Mode::Forward);
    let va = final_view(&a, &ida, Duration::from_secs(30)).await;
    let vb = final_view(&b, &idb, Duration::from_secs(30)).await;
    assert_eq!(va["state"], "succeeded", "{va}");
    assert_eq!(
        va["job_id"], vb["job_id"],
        "both ids resolve to one job: {va} / {vb}"
    );
    let survivor = va["job_id"].as_str().unwrap().to_string();
    assert!(survivor == ida || survivor == idb);
    // Both ids read the one job on both nodes (the alias is in the database).
    for n in [&a, &b] {
        for id in [&ida, &idb] {
            let (st, v) = n.get(&format!("/api/v1/jobs/{id}")).await;
            assert_eq!(st, 200, "{v}");
            assert_eq!(v["job_id"], survivor.as_str(), "{id} on {}", n.addr);
        }
    }
    assert_eq!(
        target.arrivals("k8").len(),
        1,
        "one job after heal, sent once"
    );
    let logs = a.logs() + &b.logs();
    assert!(logs.contains("now resolves to that job"), "{logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_spool_answers_503_with_retry_after_and_drops_nothing() {
    let url = ezt_store_postgres::testing::database_url().await;
    let proxy = FaultProxy::start(db_addr(&url)).await;
    let target = Target::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let s = node(tmp.path(), &proxy.url_for(&url), None, 3);

    verify_key(&s).await;
    proxy.set(Mode::Refuse);
    proxy.reset();
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(accepted(&s, json!({"url": target.url(&format!("f{i}"))})).await);
    }
    let (st, b, retry_after, _) = submit(&s, json!({"url": target.url("f3")})).await;
    assert_eq!(st, 503, "{b}");
    assert_eq!(b["error"]["code"], "unavailable", "{b}");
    assert!(
        b["error"]["message"]
            .as_str()
            .unwrap()
            .contains("spool is full"),
        "{b}"
    );
    let secs: u64 = retry_after.expect("Retry-After").parse().unwrap();
    assert!(secs >= 1);

    proxy.set(Mode::Forward);
    for id in &ids {
        assert_eq!(
            final_view(&s, id, Duration::from_secs(30)).await["state"],
            "succeeded"
        );
    }
    assert!(
        target.arrivals("f3").is_empty(),
        "the refused job was not stored"
    );
    // The forwarder marks jobs forwarded after handing them over: they can finish first.
    let deadline = Instant::now() + Duration::from_secs(10);
    let text = loop {
        let (st, text) = s.get_text("/metrics").await;
        assert_eq!(st, 200);
        if text.lines().any(|l| l == "ezthrottle_spool_waiting 0") {
            break text;
        }
        assert!(Instant::now() < deadline, "{text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    for line in [
        "ezthrottle_spool_admitted_total 3",
        "ezthrottle_spool_forwarded_total 3",
        "ezthrottle_spool_waiting 0",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} in:\n{text}");
    }
    // Room again.
    accepted(&s, json!({"url": target.url("f4")})).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_with_a_non_empty_spool_forwards_after_restart() {
    let url = ezt_store_postgres::testing::database_url().await;
    let proxy = FaultProxy::start(db_addr(&url)).await;
    let target = Target::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let purl = proxy.url_for(&url);
    let mut s = node(tmp.path(), &purl, None, 1000);
    let key = s.key.clone();

    verify_key(&s).await;
    proxy.set(Mode::Refuse);
    proxy.reset();
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(accepted(&s, json!({"url": target.url(&format!("k{i}"))})).await);
    }
    s.kill9();
    proxy.set(Mode::Forward);
    let s = node(tmp.path(), &purl, Some(key), 1000);
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(
            final_view(&s, id, Duration::from_secs(30)).await["state"],
            "succeeded"
        );
        assert_eq!(target.arrivals(&format!("k{i}")).len(), 1);
    }
    assert!(
        s.logs().contains("wait to be forwarded"),
        "the restart found the spool: {}",
        s.logs()
    );
}

fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

/// Figures for the report (not a pass/fail target; `cargo test -- --ignored spool_figures
/// --nocapture`): admission latency on the database vs into the spool, and forward rate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn spool_figures() {
    let url = ezt_store_postgres::testing::database_url().await;
    let proxy = FaultProxy::start(db_addr(&url)).await;
    let target = Target::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let s = node(tmp.path(), &proxy.url_for(&url), None, 100_000);
    verify_key(&s).await;
    let n = 500;
    let delayed = crate::support::in_days(1);
    let mut normal = Vec::new();
    for i in 0..n {
        let (st, _, _, t) = submit(
            &s,
            json!({"url": target.url(&format!("n{i}")), "retry_at": delayed}),
        )
        .await;
        assert_eq!(st, 202);
        normal.push(t);
    }
    proxy.set(Mode::Blackhole);
    let mut spooled = Vec::new();
    let mut ids = HashMap::new();
    for i in 0..(4 * n) {
        let (st, b, _, t) = submit(
            &s,
            json!({"url": target.url(&format!("s{i}")), "retry_at": delayed}),
        )
        .await;
        assert_eq!(st, 202);
        spooled.push(t);
        ids.insert(i, b["job_id"].as_str().unwrap().to_string());
    }
    let first = spooled.remove(0);
    let t0 = Instant::now();
    proxy.set(Mode::Forward);
    proxy.reset();
    let deadline = t0 + Duration::from_secs(120);
    while !s.logs().contains("left=0") {
        assert!(Instant::now() < deadline, "spool not drained: {}", s.logs());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let drained = t0.elapsed();
    println!(
        "admission p50/p99: database {:?}/{:?}; spool {:?}/{:?} (the first, bound by the 800 ms deadline on a blackholed database: {first:?}); \
         forwarded {} jobs in {drained:?} = {:.0} jobs/s (incl. up to 500 ms retry wait)",
        pct(&mut normal, 0.5),
        pct(&mut normal, 0.99),
        pct(&mut spooled, 0.5),
        pct(&mut spooled, 0.99),
        4 * n,
        (4 * n) as f64 / drained.as_secs_f64()
    );
}
