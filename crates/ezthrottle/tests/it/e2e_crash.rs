//! SIGKILL in the middle of work: every accepted job still reaches a final state, and only jobs
//! in flight at the kill run twice.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use serde_json::json;

use crate::support::{Reply, Target, TestServer};

const IN_FLIGHT: usize = 16;

#[tokio::test]
async fn kill_9_loses_nothing_and_repeats_only_in_flight_jobs() {
    let target = Target::start().await;
    let config = format!("[lanes.default]\nrate = 400.0\nburst = 1\nmax_in_flight = {IN_FLIGHT}\n");
    let mut server = TestServer::start_with(&config);
    let dir = server.dir.clone();
    let key = server.key.clone();
    let _tmp = tempfile::tempdir().unwrap(); // server owns its own temp dir; keep it alive below
    target.default_reply(
        "work",
        Reply {
            status: 200,
            headers: vec![],
            delay_ms: 20,
        },
    );

    let mut accepted: Vec<String> = Vec::new();
    for batch in 0..3 {
        let jobs: Vec<_> = (0..1000)
            .map(|i| json!({"url": target.url("work"), "idempotent_key": format!("k-{batch}-{i}")}))
            .collect();
        let (s, b) = server
            .post("/api/v1/jobs/batch", json!({ "jobs": jobs }))
            .await;
        assert_eq!(s, 202);
        accepted.extend(
            b["results"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["job_id"].as_str().unwrap().to_string()),
        );
    }
    assert_eq!(accepted.len(), 3000);
    target.wait_for("work", 400, Duration::from_secs(60)).await;
    server.kill9();
    let at_kill = target.arrivals("work").len();

    // Restart on the same data; the key printed at first start is reused.
    let server2 = TestServer::spawn(&dir, &config, Some(key));
    let mut pending: HashSet<String> = accepted.iter().cloned().collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while !pending.is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} jobs never finished after restart",
            pending.len()
        );
        let id = pending.iter().next().unwrap().clone();
        let (s, job) = server2
            .get(&format!("/api/v1/jobs/{id}/wait?timeout=30s"))
            .await;
        assert_eq!(
            s, 200,
            "job {id} accepted before the kill is unknown or unfinished: {job}"
        );
        assert_eq!(job["state"], "succeeded", "{job}");
        pending.remove(&id);
        // Sweep finished jobs in pages to avoid one request per job.
        let (_, page) = server2.get("/api/v1/jobs?state=succeeded&limit=100").await;
        for j in page["jobs"].as_array().unwrap() {
            pending.remove(j["job_id"].as_str().unwrap());
        }
        if pending.len() > 100 {
            let mut cursor: Option<String> = None;
            loop {
                let q = cursor
                    .as_ref()
                    .map(|c| format!("&cursor={c}"))
                    .unwrap_or_default();
                let (_, page) = server2
                    .get(&format!("/api/v1/jobs?state=succeeded&limit=100{q}"))
                    .await;
                for j in page["jobs"].as_array().unwrap() {
                    pending.remove(j["job_id"].as_str().unwrap());
                }
                match page["next_cursor"].as_str() {
                    Some(c) => cursor = Some(c.to_string()),
                    None => break,
                }
            }
        }
    }
    let mut calls: HashMap<String, usize> = HashMap::new();
    for a in target.arrivals("work") {
        *calls
            .entry(a.headers["idempotency-key"].clone())
            .or_default() += 1;
    }
    assert_eq!(calls.len(), 3000, "every job called the target");
    let extra: usize = calls.values().map(|c| c - 1).sum();
    assert!(extra <= IN_FLIGHT, "{extra} repeated calls, but only {IN_FLIGHT} could be in flight at the kill (target had seen {at_kill})");
    eprintln!("kill -9: 3000 accepted, 0 lost, {extra} repeated (in-flight cap {IN_FLIGHT}, {at_kill} done before the kill)");
}
