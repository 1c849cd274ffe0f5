//! Keeping the store healthy and bounded: the readiness probe and retention.
//!
//! Apart because neither is on a request's path: a background task and the readiness check
//! call these, and a backend may implement them very differently (SQLite vacuums, PostgreSQL
//! would partition).

use async_trait::async_trait;

use crate::{PurgeCutoffs, Result};

/// Liveness and retention.
#[async_trait]
pub trait MaintenanceStore: Send + Sync + 'static {
    /// Cheap liveness probe of the storage.
    async fn ping(&self) -> Result<()>;
    /// Deletes up to `limit` finished jobs that finished before their tenant's cutoff, oldest
    /// first, with their attempts, responses, webhook payloads and deliveries (and so their
    /// idempotency keys), in one short transaction. Jobs with a webhook delivery still pending
    /// are kept. Returns how many jobs went; callers repeat while it equals `limit`, so a large
    /// backlog is cleared in small steps that never hold the writer for long.
    async fn purge_finished(&self, cutoffs: &PurgeCutoffs, limit: usize) -> Result<usize>;
}
