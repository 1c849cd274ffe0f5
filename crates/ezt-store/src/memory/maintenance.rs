//! `MaintenanceStore` in memory.

use async_trait::async_trait;
use ezt_core::webhook::DeliveryState;
use ezt_core::{DeliveryId, JobId};

use super::MemoryStore;
use crate::*;

#[async_trait]
impl MaintenanceStore for MemoryStore {
    async fn ping(&self) -> Result<()> {
        Ok(())
    }

    async fn purge_finished(&self, cutoffs: &PurgeCutoffs, limit: usize) -> Result<usize> {
        let mut g = self.lock();
        let pending_hooks: std::collections::HashSet<JobId> = g
            .deliveries
            .values()
            .filter(|d| d.state == DeliveryState::Pending)
            .map(|d| d.job_id)
            .collect();
        let mut due: Vec<(u64, JobId)> = g
            .jobs
            .values()
            .filter_map(|j| {
                let done = j.finished_at?;
                let cutoff = cutoffs.of(j.tenant_id)?;
                (done < cutoff && !pending_hooks.contains(&j.id)).then_some((done, j.id))
            })
            .collect();
        due.sort_unstable();
        due.truncate(limit);
        for (_, id) in &due {
            let Some(j) = g.jobs.remove(id) else { continue };
            let k = (j.tenant_id, j.idempotent_key);
            if g.by_key.get(&k) == Some(id) {
                g.by_key.remove(&k);
            }
            g.leases.remove(id);
            g.wakeups.retain(|w| w != id);
            g.payloads.retain(|(job, _), _| job != id);
            let gone: Vec<DeliveryId> = g
                .deliveries
                .values()
                .filter(|d| d.job_id == *id)
                .map(|d| d.id)
                .collect();
            for d in gone {
                g.deliveries.remove(&d);
                g.delivery_regions.remove(&d);
                g.delivery_leases.remove(&d);
            }
        }
        Ok(due.len())
    }
}
