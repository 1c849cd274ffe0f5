//! Webhook deliveries: the lease cycle of one delivery attempt, and redelivery on demand.
//!
//! A sibling of the job lease cycle, not part of it: deliveries are created by `JobStore` when
//! a job ends, then live on their own schedule, so the deliverer needs only this trait.

use async_trait::async_trait;
use ezt_core::{DeliveryId, JobId, TenantId};

use crate::{DeliveryDone, Lease, LeasedDelivery, RedeliverOutcome, Result};

/// Webhook deliveries.
#[async_trait]
pub trait DeliveryStore: Send + Sync + 'static {
    /// Starts a delivery attempt: only a pending delivery that no one else holds.
    async fn lease_delivery(&self, id: DeliveryId, lease: Lease) -> Result<Option<LeasedDelivery>>;
    /// Records a delivery attempt if `lease_token` still holds it. Returns whether it applied.
    async fn complete_delivery(&self, done: DeliveryDone) -> Result<bool>;
    /// Starts the schedule again for every delivery of the job's latest outcome (on demand).
    async fn redeliver(
        &self,
        tenant: Option<TenantId>,
        job: JobId,
        now_ms: u64,
    ) -> Result<RedeliverOutcome>;
    /// Creation time of the oldest pending delivery (for metrics).
    async fn oldest_pending_delivery(&self) -> Result<Option<u64>>;
    /// Every delivery stored under `key` for `tenant` (a workflow run's events, under
    /// [`crate::run_key`]), oldest outcome first, in webhook order.
    async fn deliveries_under(
        &self,
        tenant: TenantId,
        key: JobId,
    ) -> Result<Vec<crate::DeliveryRecord>>;
}
