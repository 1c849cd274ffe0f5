//! `DeliveryStore`: deliveries are created with a job's end (by `JobStore`), fenced by their
//! lease, survive a restart, end, and can be redelivered.

use ezt_core::webhook::DeliveryState;
use ezt_core::{JobState, TenantId};

use super::fixtures::*;
use crate::*;

/// Every way a job ends (success, expiry, cancel) creates its deliveries in the same call, with
/// one payload; deliveries are fenced by their lease and survive a restart.
pub async fn final_states_create_webhook_deliveries<S: JobStore + DeliveryStore>(s: S) {
    let hooks = [
        ("http://127.0.0.1:7/a", true),
        ("http://127.0.0.1:7/b", false),
    ];
    let a = hooked_job(1, 1, "a", 100, &hooks, 1);
    let b = hooked_job(2, 1, "b", 100, &hooks[..1], 1);
    let c = hooked_job(3, 1, "c", 100, &hooks[..1], 1);
    let plain = new_job(4, 1, "plain", 100);
    s.insert_jobs(vec![a.clone(), b.clone(), c.clone(), plain.clone()], WINDOW)
        .await
        .unwrap();
    s.lease(a.id, lease(1, 110)).await.unwrap().unwrap();
    let mut done = succeeded(a.id, 1, 120);
    done.next = Next::Final {
        state: JobState::Succeeded,
        response: Some(ok_response()),
        error: None,
    };
    let created = s.complete_attempt(done).await.unwrap().expect("applied");
    assert_eq!(created.len(), 2, "one delivery per webhook");
    assert_eq!(
        (
            created[0].url.as_str(),
            created[0].next_at,
            created[0].tenant_id
        ),
        ("http://127.0.0.1:7/a", 120, TenantId(1))
    );
    let view = s.get_job(Some(TenantId(1)), a.id).await.unwrap().unwrap();
    assert_eq!(view.deliveries.len(), 2);
    assert_eq!(
        (
            view.deliveries[0].index,
            view.deliveries[0].has_quorum_vote,
            view.deliveries[1].has_quorum_vote
        ),
        (0, true, false)
    );
    assert!(view
        .deliveries
        .iter()
        .all(|d| d.state == DeliveryState::Pending));

    let expired = s
        .expire(b.id, 130, "local")
        .await
        .unwrap()
        .expect("expired");
    assert_eq!(expired.len(), 1);
    let CancelOutcome::Cancelled(cancelled) = s.cancel(None, c.id, 140, "local").await.unwrap()
    else {
        panic!("cancels")
    };
    assert_eq!(cancelled.len(), 1);
    assert_eq!(
        s.take_wakeups().await.unwrap(),
        vec![c.id],
        "a cancel that creates deliveries wakes a server sharing the store"
    );
    s.lease(plain.id, lease(2, 150)).await.unwrap().unwrap();
    assert_eq!(
        s.complete_attempt(succeeded(plain.id, 2, 160))
            .await
            .unwrap(),
        Some(vec![]),
        "no webhooks, no deliveries"
    );

    // The payload: API.md's shape, fixed when the job ended.
    let d = s
        .lease_delivery(created[0].id, lease(7, 200))
        .await
        .unwrap()
        .expect("pending delivery leases");
    assert!(
        s.lease_delivery(created[0].id, lease(8, 200))
            .await
            .unwrap()
            .is_none(),
        "not twice"
    );
    let body: serde_json::Value = serde_json::from_slice(&d.payload).unwrap();
    assert_eq!(body["job_id"], a.id.to_string());
    assert_eq!(body["idempotent_key"], "a");
    assert_eq!(body["status"], "success");
    assert_eq!(body["response"]["status_code"], 200);
    assert_eq!(body["response"]["body"], "ok");
    assert_eq!(body["metadata"]["order"], "42");
    assert_eq!(
        (body["attempts"].as_u64(), body["completed_at"].as_u64()),
        (Some(1), Some(120))
    );
    assert_eq!(body["region"], "local");
    assert!(body.get("error").is_none());
    // Standard Webhooks' `type` and `timestamp` next to the hosted fields.
    assert_eq!(body["type"], "job.succeeded");
    assert_eq!(body["timestamp"], "1970-01-01T00:00:00.120Z");
    let eb = s
        .lease_delivery(expired[0].id, lease(9, 200))
        .await
        .unwrap()
        .unwrap();
    let eb: serde_json::Value = serde_json::from_slice(&eb.payload).unwrap();
    assert_eq!(
        (eb["status"].as_str(), eb["error"]["code"].as_str()),
        (Some("failed"), Some("deadline"))
    );
    assert_eq!(eb["type"], "job.expired", "status failed, type job.expired");
    assert!(eb["response"].is_null());
    let cb = s
        .lease_delivery(cancelled[0].id, lease(10, 200))
        .await
        .unwrap()
        .unwrap();
    let cb: serde_json::Value = serde_json::from_slice(&cb.payload).unwrap();
    assert_eq!(cb["error"]["code"], "cancelled");
    assert_eq!(cb["type"], "job.cancelled");

    // Fencing, then a retry.
    let retry = |token| DeliveryDone {
        id: created[0].id,
        lease_token: token,
        attempt: delivery_attempt(1, 503, "retry"),
        next: DeliveryNext::RetryAt(5_000),
        now_ms: 210,
    };
    assert!(
        !s.complete_delivery(retry(99)).await.unwrap(),
        "zombie discarded"
    );
    assert!(s.complete_delivery(retry(7)).await.unwrap());
    assert!(!s.complete_delivery(retry(7)).await.unwrap(), "once");

    // Restart: leases are void, every pending delivery comes back with its next time.
    let rec = s.recover(&NodeId::local(), 300, "local").await.unwrap();
    let mut ids: Vec<_> = rec.deliveries.iter().map(|d| (d.id, d.next_at)).collect();
    ids.sort();
    let mut want = vec![
        (created[0].id, 5_000),
        (created[1].id, 120),
        (expired[0].id, 130),
        (cancelled[0].id, 140),
    ];
    want.sort();
    assert_eq!(ids, want);
    let again = s
        .lease_delivery(expired[0].id, lease(11, 310))
        .await
        .unwrap();
    assert!(again.is_some(), "the dead run's lease was released");
    let d0 = s
        .lease_delivery(created[0].id, lease(12, 5_000))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((d0.attempt_no, d0.failed_in_run), (2, 1));
}

/// Delivered and failed deliveries end; quorum facts (acked) survive a redelivery, which
/// restarts the schedule for the job's latest deliveries and is tenant-scoped.
pub async fn deliveries_end_and_redeliver<S: JobStore + DeliveryStore>(s: S) {
    let hooks = [
        ("http://127.0.0.1:7/a", true),
        ("http://127.0.0.1:7/b", true),
    ];
    let a = hooked_job(1, 1, "a", 100, &hooks, 2);
    s.insert_jobs(vec![a.clone()], WINDOW).await.unwrap();
    assert_eq!(
        s.redeliver(Some(TenantId(1)), a.id, 105).await.unwrap(),
        RedeliverOutcome::NoDeliveries,
        "not final yet"
    );
    s.lease(a.id, lease(1, 110)).await.unwrap().unwrap();
    let created = s
        .complete_attempt(succeeded(a.id, 1, 120))
        .await
        .unwrap()
        .unwrap();
    let (d0, d1) = (created[0].id, created[1].id);
    s.lease_delivery(d0, lease(2, 130)).await.unwrap().unwrap();
    s.lease_delivery(d1, lease(3, 130)).await.unwrap().unwrap();
    assert!(s
        .complete_delivery(DeliveryDone {
            id: d0,
            lease_token: 2,
            attempt: delivery_attempt(1, 200, "delivered"),
            next: DeliveryNext::Delivered,
            now_ms: 140,
        })
        .await
        .unwrap());
    assert!(s
        .complete_delivery(DeliveryDone {
            id: d1,
            lease_token: 3,
            attempt: delivery_attempt(1, 410, "failed"),
            next: DeliveryNext::Failed,
            now_ms: 141,
        })
        .await
        .unwrap());
    assert_eq!(s.oldest_pending_delivery().await.unwrap(), None);
    let j = s.get_job(None, a.id).await.unwrap().unwrap();
    assert_eq!(
        j.deliveries
            .iter()
            .map(|d| (d.state, d.acked_at))
            .collect::<Vec<_>>(),
        vec![
            (DeliveryState::Delivered, Some(140)),
            (DeliveryState::Failed, None)
        ]
    );
    assert_eq!(
        j.deliveries[0].attempts,
        vec![delivery_attempt(1, 200, "delivered")]
    );
    assert!(
        s.lease_delivery(d0, lease(4, 150)).await.unwrap().is_none(),
        "delivered is final"
    );
    assert!(
        s.lease_delivery(d1, lease(4, 150)).await.unwrap().is_none(),
        "failed is final"
    );

    assert_eq!(
        s.redeliver(Some(TenantId(2)), a.id, 200).await.unwrap(),
        RedeliverOutcome::NotFound,
        "another tenant's job"
    );
    let RedeliverOutcome::Requeued(again) =
        s.redeliver(Some(TenantId(1)), a.id, 200).await.unwrap()
    else {
        panic!("redelivers")
    };
    let mut again_ids: Vec<_> = again.iter().map(|p| (p.id, p.next_at)).collect();
    again_ids.sort();
    let mut want = vec![(d0, 200), (d1, 200)];
    want.sort();
    assert_eq!(again_ids, want);
    let j = s.get_job(None, a.id).await.unwrap().unwrap();
    assert!(j
        .deliveries
        .iter()
        .all(|d| d.state == DeliveryState::Pending && d.failed_in_run == 0));
    assert_eq!(
        j.deliveries[0].acked_at,
        Some(140),
        "a cast vote stays cast"
    );
    assert_eq!(s.oldest_pending_delivery().await.unwrap(), Some(120));
    let l = s.lease_delivery(d1, lease(5, 210)).await.unwrap().unwrap();
    assert_eq!(
        (l.attempt_no, l.failed_in_run, l.acked_before),
        (2, 0, false)
    );
}

/// A webhook's `regions` come back with its leased delivery (the deliverer sends it from a
/// node of one of them); a webhook without them leases with none; an attempt's region, node
/// and note are stored and shown in the job's view.
pub async fn delivery_regions_round_trip<S: JobStore + DeliveryStore>(s: S) {
    let mut a = hooked_job(
        1,
        1,
        "a",
        100,
        &[
            ("http://127.0.0.1:7/a", true),
            ("http://127.0.0.1:7/b", true),
        ],
        1,
    );
    a.spec.webhooks[0].regions = vec!["r3".into(), "r2".into()];
    s.insert_jobs(vec![a.clone()], WINDOW).await.unwrap();
    s.lease(a.id, lease(1, 110)).await.unwrap().unwrap();
    let created = s
        .complete_attempt(succeeded(a.id, 1, 120))
        .await
        .unwrap()
        .unwrap();
    let d0 = s
        .lease_delivery(created[0].id, lease(2, 130))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(d0.regions, vec!["r3".to_string(), "r2".to_string()]);
    let d1 = s
        .lease_delivery(created[1].id, lease(3, 130))
        .await
        .unwrap()
        .unwrap();
    assert!(d1.regions.is_empty(), "no regions: from anywhere");
    let mut attempt = delivery_attempt(1, 200, "delivered");
    attempt.region = Some("r2".into());
    attempt.node = Some("n2".into());
    attempt.note = Some("no live node of r3".into());
    assert!(s
        .complete_delivery(DeliveryDone {
            id: d0.id,
            lease_token: 2,
            attempt: attempt.clone(),
            next: DeliveryNext::Delivered,
            now_ms: 140,
        })
        .await
        .unwrap());
    let view = s.get_job(Some(TenantId(1)), a.id).await.unwrap().unwrap();
    assert_eq!(view.deliveries[0].attempts, vec![attempt]);
}
