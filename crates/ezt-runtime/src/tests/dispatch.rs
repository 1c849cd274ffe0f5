//! One attempt against a scripted target on 127.0.0.1, under a frozen fake wall clock: every
//! stored time is exact. Real tokio time (paused time would let a socket wait jump over the
//! attempt's timeout); each test makes one or two calls.

use std::sync::Arc;
use std::time::Duration;

use ezt_core::retry::Verdict;
use ezt_core::JobState;
use serde_json::json;

use super::rig::{Reply, Rig, Target};
use crate::clock::FakeClock;
use crate::config::Config;

const NOW: u64 = 1_700_000_000_000;

async fn rig() -> (Rig, FakeClock) {
    let clock = FakeClock::new(NOW);
    (
        Rig::start(Config::default(), Arc::new(clock.clone())).await,
        clock,
    )
}

#[tokio::test]
async fn a_2xx_succeeds_with_the_response_and_the_idempotency_key() {
    let (rig, _) = rig().await;
    let target = Target::start(vec![Reply::status(201).header("x-answer", "42")]).await;
    let (a, mut sub) = rig
        .submit(json!({"url": target.url, "method": "POST", "body": "hi"}))
        .await;
    let job = rig.next_event(&mut sub, a.job_id).await;
    assert_eq!(job.state, JobState::Succeeded);
    let at = &job.attempts[0];
    assert_eq!(
        (at.status_code, at.decision, at.at),
        (Some(201), Verdict::Success, NOW)
    );
    assert_eq!(at.wait_ms, None);
    let resp = job.response.expect("kept");
    assert!(resp
        .headers
        .iter()
        .any(|(k, v)| k == "x-answer" && v == "42"));
    let hit = &target.hits()[0];
    assert_eq!(hit.body, "hi");
    let key = format!("idempotency-key: {}", a.idempotent_key).to_lowercase();
    assert!(hit.head.to_lowercase().contains(&key), "{}", hit.head);
    rig.stop().await;
}

#[tokio::test]
async fn a_retry_code_waits_out_retry_after_and_pauses_the_lane() {
    let (rig, _) = rig().await;
    let target = Target::start(vec![Reply::status(429).header("retry-after", "7")]).await;
    let (a, mut sub) = rig.submit(json!({"url": target.url})).await;
    let job = rig.next_event(&mut sub, a.job_id).await;
    assert_eq!(job.state, JobState::Scheduled);
    assert_eq!((job.retries, job.run_at), (1, NOW + 7_000));
    let at = &job.attempts[0];
    assert_eq!((at.status_code, at.decision), (Some(429), Verdict::Retry));
    assert_eq!(at.wait_ms, Some(7_000), "exactly the Retry-After");
    let lanes = rig.rt.lanes.lanes().await;
    assert_eq!(
        lanes[0].paused_until,
        Some(NOW + 7_000),
        "the whole lane waits"
    );
    rig.stop().await;
}

#[tokio::test]
async fn a_reroute_code_is_judged_a_reroute() {
    let (rig, _) = rig().await;
    let target = Target::start(vec![Reply::status(502)]).await;
    let (a, mut sub) = rig.submit(json!({"url": target.url})).await;
    let job = rig.next_event(&mut sub, a.job_id).await;
    let at = &job.attempts[0];
    assert_eq!((at.status_code, at.decision), (Some(502), Verdict::Reroute));
    assert!(
        matches!(job.state, JobState::Scheduled | JobState::Queued),
        "one region: the call is tried again here, got {:?}",
        job.state
    );
    rig.stop().await;
}

#[tokio::test]
async fn another_status_fails_at_once() {
    let (rig, _) = rig().await;
    let target = Target::start(vec![Reply::status(404)]).await;
    let (a, mut sub) = rig.submit(json!({"url": target.url})).await;
    let job = rig.next_event(&mut sub, a.job_id).await;
    assert_eq!(job.state, JobState::Failed);
    assert_eq!(job.attempts[0].decision, Verdict::Fail);
    let err = job.error.expect("why");
    assert_eq!(err.code, "http_status");
    assert_eq!(job.finished_at, Some(NOW));
    rig.stop().await;
}

#[tokio::test]
async fn a_network_error_is_retried_with_backoff() {
    let (rig, _) = rig().await;
    // A port nobody listens on: connection refused.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", closed.local_addr().unwrap());
    drop(closed);
    let (a, mut sub) = rig.submit(json!({"url": url})).await;
    let job = rig.next_event(&mut sub, a.job_id).await;
    let at = &job.attempts[0];
    assert_eq!((at.status_code, at.decision), (None, Verdict::Retry));
    assert!(at.error.is_some());
    assert_eq!(job.state, JobState::Scheduled);
    let wait = at.wait_ms.expect("a retry waits");
    assert!(wait <= 1_000, "first backoff is at most 1 s, got {wait}");
    assert_eq!(job.run_at, NOW + wait);
    rig.stop().await;
}

#[tokio::test]
async fn a_deadline_passed_while_waiting_expires_without_a_call() {
    let (rig, clock) = rig().await;
    let target = Target::start(vec![
        Reply::status(503).header("retry-after", "1"),
        Reply::status(200),
    ])
    .await;
    let (a, mut sub) = rig
        .submit(json!({"url": target.url, "timeout": "30s"}))
        .await;
    let job = rig.next_event(&mut sub, a.job_id).await;
    assert_eq!(job.state, JobState::Scheduled);
    // The wall clock passes the deadline while the job waits out its Retry-After. No
    // socket is open from here on, so tokio time can be paused: the 1 s wait is skipped.
    clock.advance(Duration::from_secs(31));
    tokio::time::pause();
    let job = loop {
        let job = rig.next_event(&mut sub, a.job_id).await;
        if job.state.is_final() {
            break job;
        }
    };
    assert_eq!(job.state, JobState::Expired);
    assert_eq!(job.error.expect("why").code, "deadline");
    assert_eq!(target.hits().len(), 1, "no call after the deadline");
    rig.stop().await;
}
