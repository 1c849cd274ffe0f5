//! `MaintenanceStore`: retention removes what it should and nothing else.

use ezt_core::{JobId, TenantId};

use super::fixtures::*;
use crate::*;

/// Finishes `id` with a successful first attempt at `now` (token `id`); its new deliveries.
async fn finish_for_purge<S: JobStore>(s: &S, id: JobId, now: u64) -> Vec<PendingDelivery> {
    s.lease(id, lease(id.0 as u64 & 0xffff, now))
        .await
        .unwrap()
        .unwrap();
    s.complete_attempt(succeeded(id, id.0 as u64 & 0xffff, now))
        .await
        .unwrap()
        .unwrap()
}

/// Retention: finished jobs older than their tenant's cutoff go (oldest first, at most `limit`
/// per call) with their attempts and idempotency keys; recent, unfinished, overridden and
/// still-delivering jobs stay.
pub async fn purge_removes_old_finished_jobs<S: JobStore + DeliveryStore + MaintenanceStore>(s: S) {
    let old1 = new_job(1, 1, "old1", 100);
    let old2 = new_job(2, 1, "old2", 100);
    let recent = new_job(3, 1, "recent", 100);
    let waiting = new_job(4, 1, "waiting", 100);
    let other = new_job(5, 2, "other", 100);
    let hooked = hooked_job(6, 1, "hooked", 100, &[("http://127.0.0.1:7/h", true)], 1);
    let all = [&old1, &old2, &recent, &waiting, &other, &hooked];
    s.insert_jobs(all.iter().map(|j| (*j).clone()).collect(), WINDOW)
        .await
        .unwrap();
    finish_for_purge(&s, old1.id, 1_000).await;
    finish_for_purge(&s, old2.id, 1_100).await;
    finish_for_purge(&s, recent.id, 5_000).await;
    finish_for_purge(&s, other.id, 1_000).await;
    let deliveries = finish_for_purge(&s, hooked.id, 1_000).await;
    let cutoffs = PurgeCutoffs {
        default: Some(2_000),
        tenants: vec![(TenantId(2), None), (TenantId(9), Some(9_999))],
    };
    assert_eq!(
        s.purge_finished(&PurgeCutoffs::default(), 10)
            .await
            .unwrap(),
        0,
        "no cutoff"
    );
    assert_eq!(s.purge_finished(&cutoffs, 1).await.unwrap(), 1, "limit");
    assert!(
        s.get_job(None, old1.id).await.unwrap().is_none(),
        "oldest first"
    );
    assert!(s.get_job(None, old2.id).await.unwrap().is_some());
    assert_eq!(s.purge_finished(&cutoffs, 10).await.unwrap(), 1);
    assert_eq!(
        s.purge_finished(&cutoffs, 10).await.unwrap(),
        0,
        "nothing left"
    );
    for j in [&recent, &waiting, &other, &hooked] {
        assert!(
            s.get_job(None, j.id).await.unwrap().is_some(),
            "{:?} kept",
            j.idempotent_key
        );
    }
    // The purged key is free again, well inside the dedup window.
    let again = new_job(7, 1, "old1", 3_000);
    assert_eq!(
        s.insert_jobs(vec![again.clone()], WINDOW).await.unwrap(),
        vec![Admission::Inserted]
    );
    // Once the webhook is delivered, the hooked job goes too (with its deliveries).
    let d = deliveries[0].id;
    s.lease_delivery(d, lease(50, 1_200))
        .await
        .unwrap()
        .unwrap();
    assert!(s
        .complete_delivery(DeliveryDone {
            id: d,
            lease_token: 50,
            attempt: delivery_attempt(1, 200, "delivered"),
            next: DeliveryNext::Delivered,
            now_ms: 1_300,
        })
        .await
        .unwrap());
    assert_eq!(s.purge_finished(&cutoffs, 10).await.unwrap(), 1);
    assert!(s.get_job(None, hooked.id).await.unwrap().is_none());
    assert!(s
        .lease_delivery(d, lease(51, 1_400))
        .await
        .unwrap()
        .is_none());
    assert_eq!(
        s.redeliver(None, hooked.id, 1_500).await.unwrap(),
        RedeliverOutcome::NotFound
    );
    // A per-tenant override applies to its tenant only.
    let longer = PurgeCutoffs {
        default: Some(2_000),
        tenants: vec![(TenantId(2), Some(1_001))],
    };
    assert_eq!(s.purge_finished(&longer, 10).await.unwrap(), 1);
    assert!(s.get_job(None, other.id).await.unwrap().is_none());
    let listed = listed(
        &s,
        None,
        JobFilter {
            limit: 100,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(listed, vec![again.id, waiting.id, recent.id]);
}
