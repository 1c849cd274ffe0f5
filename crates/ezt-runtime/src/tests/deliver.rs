//! Webhook attempts against scripted receivers on 127.0.0.1, under a frozen fake wall clock:
//! the stored schedule is exact up to the configured jitter (±20 % of the step).

use std::sync::Arc;

use ezt_core::webhook::{DeliveryState, QuorumState};
use serde_json::json;

use super::rig::{Reply, Rig, Target};
use crate::clock::FakeClock;
use crate::config::Config;
use crate::events::JobView;

const NOW: u64 = 1_700_000_000_000;

async fn rig() -> Rig {
    Rig::start(Config::default(), Arc::new(FakeClock::new(NOW))).await
}

/// Submits a job that succeeds, with a webhook to each receiver; returns its id.
async fn job_with_hooks(rig: &Rig, target: &Target, hooks: &[&Target]) -> ezt_core::JobId {
    let hooks: Vec<_> = hooks.iter().map(|h| json!({"url": h.url})).collect();
    let (a, _) = rig
        .submit(json!({"url": target.url, "webhooks": hooks}))
        .await;
    a.job_id
}

fn attempted(job: &ezt_store::JobRecord) -> bool {
    !job.deliveries.is_empty() && job.deliveries.iter().all(|d| !d.attempts.is_empty())
}

#[tokio::test]
async fn a_failed_delivery_waits_its_first_step_with_jitter_signed_at_the_clock() {
    let rig = rig().await;
    let target = Target::start(vec![Reply::status(200)]).await;
    let hook = Target::start(vec![Reply::status(500)]).await;
    let id = job_with_hooks(&rig, &target, &[&hook]).await;
    let job = rig.until(id, attempted).await;
    let d = &job.deliveries[0];
    assert_eq!((d.state, d.failed_in_run), (DeliveryState::Pending, 1));
    let next = d.next_at.expect("a retry is scheduled");
    assert!(
        (NOW + 4_000..=NOW + 6_000).contains(&next),
        "5 s ±20 % after the failure, got +{} ms",
        next - NOW
    );
    assert_eq!(d.attempts[0].wait_ms, Some(next - NOW));
    let head = hook.hits()[0].head.to_lowercase();
    assert!(
        head.contains(&format!("webhook-timestamp: {}", NOW / 1000)),
        "signed with the injected clock's time: {head}"
    );
    rig.stop().await;
}

#[tokio::test]
async fn gone_410_stops_at_once() {
    let rig = rig().await;
    let target = Target::start(vec![Reply::status(200)]).await;
    let hook = Target::start(vec![Reply::status(410)]).await;
    let id = job_with_hooks(&rig, &target, &[&hook]).await;
    let job = rig.until(id, attempted).await;
    let d = &job.deliveries[0];
    assert_eq!((d.state, d.next_at), (DeliveryState::Failed, None));
    assert_eq!(hook.hits().len(), 1);
    rig.stop().await;
}

#[tokio::test]
async fn a_receivers_retry_after_is_respected() {
    let rig = rig().await;
    let target = Target::start(vec![Reply::status(200)]).await;
    let hook = Target::start(vec![Reply::status(503).header("retry-after", "120")]).await;
    let id = job_with_hooks(&rig, &target, &[&hook]).await;
    let job = rig.until(id, attempted).await;
    let d = &job.deliveries[0];
    assert_eq!(
        d.next_at,
        Some(NOW + 120_000),
        "Retry-After 120 s beats the 5 s step"
    );
    rig.stop().await;
}

#[tokio::test]
async fn quorum_is_met_when_enough_voters_acknowledge() {
    let rig = rig().await;
    let target = Target::start(vec![Reply::status(200)]).await;
    let (yes, gone) = (
        Target::start(vec![Reply::status(200)]).await,
        Target::start(vec![Reply::status(410)]).await,
    );
    let hooks = [&yes, &gone].map(|h| json!({"url": h.url, "has_quorum_vote": true}));
    let (one, _) = rig
        .submit(json!({"url": target.url, "webhooks": hooks, "webhook_quorum": 1}))
        .await;
    let (two, _) = rig
        .submit(json!({"url": target.url, "body": "2", "webhooks": hooks, "webhook_quorum": 2}))
        .await;
    for (id, want) in [
        (one.job_id, QuorumState::Met),
        (two.job_id, QuorumState::Failed),
    ] {
        let job = rig.until(id, attempted).await;
        let q = JobView::from_record(&job, &[])
            .webhook_quorum
            .expect("shown");
        assert_eq!(
            (q.acknowledged, q.state),
            (1, want),
            "quorum {}",
            q.required
        );
    }
    rig.stop().await;
}
