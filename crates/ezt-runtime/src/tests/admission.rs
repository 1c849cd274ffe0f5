//! Admission reads the injected clock: every time it stores is exact under a fake one.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use super::rig::Rig;
use crate::clock::FakeClock;
use crate::config::Config;

use ezt_core::job::JobSpecIn;
use ezt_core::JobState;

use crate::jobs::{JobsError, SubmitStatus};
use crate::lanes::TooManyLanes;

const NOW: u64 = 1_700_000_000_000;

async fn rig(cfg: Config) -> (Rig, FakeClock) {
    let clock = FakeClock::new(NOW);
    (Rig::start(cfg, Arc::new(clock.clone())).await, clock)
}

/// A job that never runs within the test: delayed by an hour, to an address nothing
/// listens on.
fn later(port: u16, body: &str) -> serde_json::Value {
    json!({"url": format!("http://127.0.0.1:{port}/"), "body": body, "retry_at": NOW + 3_600_000, "timeout": "2h"})
}

#[tokio::test]
async fn times_come_from_the_clock() {
    let (rig, clock) = rig(Config::default()).await;
    clock.advance(Duration::from_millis(1_234));
    let now = NOW + 1_234;
    let (a, _) = rig.submit(later(9, "a")).await;
    let job = rig.job(a.job_id).await;
    assert_eq!(job.created_at, now);
    assert_eq!(job.run_at, NOW + 3_600_000, "run_at is retry_at");
    assert_eq!(
        job.deadline_at,
        now + 2 * 3_600_000,
        "deadline is now + timeout"
    );
    assert_eq!(job.state, JobState::Scheduled);
    // A retry_at in the past starts now.
    let past = json!({"url": "http://127.0.0.1:9/", "retry_at": NOW - 5_000, "timeout": "1s"});
    let input: JobSpecIn = serde_json::from_value(past).unwrap();
    let j = rig
        .rt
        .jobs
        .prepare(rig.tenant.id, input, rig.rt.jobs.now_ms())
        .await;
    let j = j.unwrap();
    assert_eq!((j.run_at, j.deadline_at), (now, now + 1_000));
    rig.stop().await;
}

#[tokio::test]
async fn the_default_idempotency_key_dedupes_the_same_call_only() {
    let (rig, _) = rig(Config::default()).await;
    let (a, _) = rig.submit(later(9, "same")).await;
    let (b, _) = rig.submit(later(9, "same")).await;
    let (c, _) = rig.submit(later(9, "other")).await;
    assert_eq!(
        (a.status, b.status),
        (SubmitStatus::Queued, SubmitStatus::Duplicate)
    );
    assert_eq!(b.job_id, a.job_id);
    assert_eq!(b.idempotent_key, a.idempotent_key);
    assert_eq!(c.status, SubmitStatus::Queued);
    assert_ne!(
        c.idempotent_key, a.idempotent_key,
        "another body is another call"
    );
    rig.stop().await;
}

#[tokio::test]
async fn a_job_listing_regions_in_race_mode_is_answered_racing() {
    let (rig, _) = rig(Config::default()).await;
    let mut regions = later(9, "regions");
    regions["regions"] = json!(["us-east-1", "eu-west-1"]);
    let (a, _) = rig.submit(regions.clone()).await;
    let (b, _) = rig.submit(regions.clone()).await;
    let mut explicit = later(9, "explicit race");
    explicit["regions"] = json!(["local"]);
    explicit["execution_mode"] = json!("race");
    let (c, _) = rig.submit(explicit).await;
    let (d, _) = rig.submit(later(9, "no regions")).await;
    assert_eq!(
        (a.status, b.status, c.status, d.status),
        (
            SubmitStatus::Racing,
            SubmitStatus::Duplicate,
            SubmitStatus::Racing,
            SubmitStatus::Queued
        )
    );
    assert_eq!(b.job_id, a.job_id);
    rig.stop().await;
}

#[tokio::test]
async fn the_lane_cap_refuses_a_new_lane_and_stores_nothing() {
    let mut cfg = Config::default();
    cfg.lanes.max_lanes_per_tenant = 1;
    let (rig, _) = rig(cfg).await;
    rig.submit(later(9, "a")).await;
    let _ = rig.rt.lanes.lanes().await; // the lanes task has taken the job in
    let jobs = &rig.rt.jobs;
    let input: JobSpecIn = serde_json::from_value(later(10, "b")).unwrap();
    let other = jobs
        .prepare(rig.tenant.id, input, jobs.now_ms())
        .await
        .unwrap();
    let id = other.id;
    let refused = jobs.admit(&rig.tenant, vec![other]).await;
    assert!(
        matches!(
            refused,
            Err(JobsError::TooManyLanes(TooManyLanes { busy: 1, max: 1 }))
        ),
        "{refused:?}"
    );
    assert!(rig.rt.store.get_job(None, id).await.unwrap().is_none());
    let input: JobSpecIn = serde_json::from_value(later(9, "c")).unwrap();
    let same = jobs
        .prepare(rig.tenant.id, input, jobs.now_ms())
        .await
        .unwrap();
    assert!(
        jobs.admit(&rig.tenant, vec![same]).await.is_ok(),
        "its own lane is free"
    );
    rig.stop().await;
}
