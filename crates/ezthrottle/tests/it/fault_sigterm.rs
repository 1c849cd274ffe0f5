//! SIGTERM: a graceful drain. Calls in flight finish and are recorded, nothing new is sent, the
//! process exits 0, and the store has nothing left `running`.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::json;

use crate::fault_common::{await_final, calls_per_key, cli_jobs, record, sigterm_and_wait};
use crate::support::{cli, Reply, Target, TestServer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_sigterm_finishes_in_flight_calls_and_exits_0() {
    const IN_FLIGHT: usize = 3;
    const JOBS: usize = 6;
    const CALL_MS: u64 = 1500;
    let config = format!(
        "[lanes.default]\nrate = 100.0\nburst = {IN_FLIGHT}\nmax_in_flight = {IN_FLIGHT}\n"
    );
    let target = Target::start().await;
    target.default_reply(
        "slow",
        Reply {
            status: 200,
            headers: vec![],
            delay_ms: CALL_MS,
        },
    );
    let mut server = TestServer::start_with(&config);
    let (dir, key) = (server.dir.clone(), server.key.clone());
    let mut ids = HashMap::new();
    for i in 0..JOBS {
        let k = format!("term-{i}");
        let id = server
            .submit(json!({"url": target.url("slow"), "idempotent_key": k}))
            .await;
        ids.insert(k, id);
    }
    let started = target
        .wait_for("slow", IN_FLIGHT, Duration::from_secs(10))
        .await;
    let code = sigterm_and_wait(&mut server, Duration::from_secs(20)).await;
    let log = server.logs();
    assert_eq!(code, Some(0), "exit status after SIGTERM; log:\n{log}");
    assert!(log.contains("shutting down"), "{log}");
    assert!(
        log.contains("left_in_flight=0"),
        "the drain must end with nothing in flight:\n{log}"
    );
    assert_eq!(
        target.arrivals("slow").len(),
        IN_FLIGHT,
        "no call may start after SIGTERM"
    );

    // The store, read by the CLI with the server stopped.
    assert!(
        cli_jobs(&dir, Some("running")).is_empty(),
        "jobs left running after a graceful stop"
    );
    let in_flight: Vec<String> = started
        .iter()
        .map(|a| a.headers["idempotency-key"].clone())
        .collect();
    for k in &in_flight {
        let job: serde_json::Value =
            serde_json::from_str(&cli(&dir, &["jobs", "get", &ids[k]])).unwrap();
        assert_eq!(job["state"], "succeeded", "{job}");
        let attempts = job["attempts"].as_array().unwrap();
        assert_eq!(attempts.len(), 1, "{job}");
        assert_eq!(attempts[0]["status_code"], 200, "{job}");
        assert!(
            attempts[0]["latency_ms"].as_u64().unwrap() >= CALL_MS - 50,
            "the call ran to its end: {job}"
        );
    }
    let queued = cli_jobs(&dir, Some("queued"));
    assert_eq!(
        queued.len(),
        JOBS - IN_FLIGHT,
        "jobs not started stay queued"
    );

    // A restart runs the rest; the calls that finished before the stop are not repeated.
    let restarted = TestServer::spawn(&dir, &config, Some(key));
    let all: Vec<String> = ids.values().cloned().collect();
    let (views, lost) = await_final(&restarted, &all, Duration::from_secs(30)).await;
    assert!(lost.is_empty());
    assert!(views.values().all(|v| v["state"] == "succeeded"));
    let calls = calls_per_key(&target.arrivals("slow"));
    assert_eq!(calls.len(), JOBS);
    assert!(
        calls.values().all(|n| *n == 1),
        "a gracefully stopped call ran twice: {calls:?}"
    );
    record(
        "sigterm_drain",
        json!({"in_flight_at_term": IN_FLIGHT, "exit_code": 0, "left_running": 0,
               "duplicates": 0, "jobs": JOBS}),
    );
}
