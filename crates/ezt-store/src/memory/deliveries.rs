//! `DeliveryStore` in memory.

use async_trait::async_trait;
use ezt_core::webhook::DeliveryState;
use ezt_core::{DeliveryId, JobId, TenantId};

use super::{owned, MemoryStore};
use crate::*;

#[async_trait]
impl DeliveryStore for MemoryStore {
    async fn lease_delivery(&self, id: DeliveryId, lease: Lease) -> Result<Option<LeasedDelivery>> {
        let mut g = self.lock();
        if g.delivery_leases.contains_key(&id) {
            return Ok(None);
        }
        let Some(d) = g.deliveries.get(&id) else {
            return Ok(None);
        };
        if d.state != DeliveryState::Pending {
            return Ok(None);
        }
        let Some(payload) = g.payloads.get(&(d.job_id, d.series)).cloned() else {
            return Err(Error::Other(format!("delivery {id} has no payload")));
        };
        let leased = LeasedDelivery {
            id,
            job_id: d.job_id,
            tenant_id: d.tenant_id,
            url: d.url.clone(),
            payload,
            attempt_no: d.attempts.len() as u32 + 1,
            failed_in_run: d.failed_in_run,
            created_at: d.created_at,
            acked_before: d.acked_at.is_some(),
            regions: g.delivery_regions.get(&id).cloned().unwrap_or_default(),
        };
        g.delivery_leases.insert(id, (lease.token, lease.holder));
        Ok(Some(leased))
    }

    async fn complete_delivery(&self, done: DeliveryDone) -> Result<bool> {
        let mut g = self.lock();
        if g.delivery_leases.get(&done.id).map(|(t, _)| *t) != Some(done.lease_token) {
            return Ok(false);
        }
        g.delivery_leases.remove(&done.id);
        let Some(d) = g.deliveries.get_mut(&done.id) else {
            return Ok(false);
        };
        d.attempts.push(done.attempt);
        match done.next {
            DeliveryNext::Delivered => {
                d.state = DeliveryState::Delivered;
                d.next_at = None;
                d.acked_at.get_or_insert(done.now_ms);
            }
            DeliveryNext::RetryAt(t) => {
                d.next_at = Some(t);
                d.failed_in_run += 1;
            }
            DeliveryNext::Failed => {
                d.state = DeliveryState::Failed;
                d.next_at = None;
                d.failed_in_run += 1;
            }
        }
        Ok(true)
    }

    async fn redeliver(
        &self,
        tenant: Option<TenantId>,
        job: JobId,
        now_ms: u64,
    ) -> Result<RedeliverOutcome> {
        let mut g = self.lock();
        if !g.jobs.get(&job).is_some_and(|j| owned(j, tenant)) {
            return Ok(RedeliverOutcome::NotFound);
        }
        let latest = g.latest_deliveries(job);
        if latest.is_empty() {
            return Ok(RedeliverOutcome::NoDeliveries);
        }
        let mut out = Vec::new();
        for d in latest {
            if g.delivery_leases.contains_key(&d.id) {
                continue; // in flight: that attempt is the redelivery
            }
            let r = g.deliveries.get_mut(&d.id).expect("listed");
            r.state = DeliveryState::Pending;
            r.next_at = Some(now_ms);
            r.failed_in_run = 0;
            out.extend(r.pending());
        }
        Ok(RedeliverOutcome::Requeued(out))
    }

    async fn oldest_pending_delivery(&self) -> Result<Option<u64>> {
        Ok(self
            .lock()
            .deliveries
            .values()
            .filter(|d| d.state == DeliveryState::Pending)
            .map(|d| d.created_at)
            .min())
    }

    async fn deliveries_under(&self, tenant: TenantId, key: JobId) -> Result<Vec<DeliveryRecord>> {
        let g = self.lock();
        let mut out: Vec<DeliveryRecord> = g
            .deliveries
            .values()
            .filter(|d| d.job_id == key && d.tenant_id == tenant)
            .cloned()
            .collect();
        out.sort_by_key(|d| (d.series, d.index));
        Ok(out)
    }
}
