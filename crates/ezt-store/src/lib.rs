//! Storage for EZThrottle: the `Store` trait every backend implements, the records it speaks,
//! the in-memory backend, and (behind the `testing` feature) the conformance suite that every
//! backend runs, so SQLite, PostgreSQL and memory cannot drift apart.
//!
//! Atomicity lives here, never in handlers: "insert job + claim idempotency key" and "finish
//! attempt + schedule the next step (+ create the job's webhook deliveries)" are each one call
//! and one transaction.
#![warn(missing_docs)]

mod error;
mod memory;
mod records;

#[cfg(feature = "testing")]
pub mod conformance;

pub use error::{Error, Result};
pub use memory::MemoryStore;
pub use records::*;

use async_trait::async_trait;
use ezt_core::{ApiKeyId, DeliveryId, JobId, TenantId};

/// Everything the server needs from durable storage.
///
/// Times are passed in (ms since the epoch) by the caller's clock, so tests are deterministic.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Creates a tenant; `Conflict` if the name is taken.
    async fn create_tenant(&self, tenant: Tenant) -> Result<Tenant>;
    /// All tenants, oldest first.
    async fn list_tenants(&self) -> Result<Vec<Tenant>>;
    /// One tenant by name.
    async fn tenant_by_name(&self, name: &str) -> Result<Option<Tenant>>;
    /// Stores a new key (its digest only).
    async fn create_api_key(&self, key: ApiKeyRecord) -> Result<()>;
    /// Keys, all or of one tenant, oldest first.
    async fn list_api_keys(&self, tenant: Option<TenantId>) -> Result<Vec<ApiKeyRecord>>;
    /// Revokes a key; `NotFound` if there is none with that id.
    async fn revoke_api_key(&self, id: ApiKeyId, now_ms: u64) -> Result<()>;
    /// The tenant of an active (unrevoked) key with this digest.
    async fn authenticate(&self, digest: [u8; 32]) -> Result<Option<(Tenant, ApiKeyId)>>;
    /// A value from the installation's small key/value table (e.g. the fingerprint secret),
    /// set to `init` atomically if absent.
    async fn meta_get_or_init(&self, key: &str, init: Vec<u8>) -> Result<Vec<u8>>;

    /// Admits jobs in one transaction: each either inserted, or a duplicate of a live job with
    /// the same idempotency key (alive, or final for less than `dedup_window_ms`).
    async fn insert_jobs(&self, jobs: Vec<NewJob>, dedup_window_ms: u64) -> Result<Vec<Admission>>;
    /// One job of one tenant, with its attempts.
    async fn get_job(&self, tenant: Option<TenantId>, id: JobId) -> Result<Option<JobRecord>>;
    /// Jobs newest first, filtered; attempts are not loaded.
    async fn list_jobs(
        &self,
        tenant: Option<TenantId>,
        filter: &JobFilter,
    ) -> Result<Vec<JobRecord>>;
    /// Jobs not yet final and deliveries not yet done, for rebuilding the schedulers' indexes at
    /// start-up. Leases held by a previous run of this node (which is dead: the data dir is
    /// locked) are released first, and each released lease leaves an attempt with decision
    /// `interrupted` (its number taken at lease time, `at` the lease time, `region` this node's)
    /// so the job's history shows the call that was cut off.
    async fn recover(&self, now_ms: u64, region: &str) -> Result<Recovered>;
    /// Starts an attempt: a queued/scheduled job becomes running under `lease`. `None` when the
    /// job is gone, final or running elsewhere (e.g. cancelled while it waited).
    async fn lease(&self, id: JobId, lease: Lease) -> Result<Option<LeasedJob>>;
    /// Records an attempt and the job's next state, only if `lease_token` still holds the job (a
    /// fencing token: a zombie's late result is discarded). `None` if it was not applied; else
    /// the webhook deliveries created with a final state (`region` is the attempt's).
    async fn complete_attempt(&self, done: AttemptDone) -> Result<Option<Vec<PendingDelivery>>>;
    /// Ends a non-final job `expired` (deadline passed while it waited); `None` if it was not
    /// waiting any more, else its new webhook deliveries.
    async fn expire(
        &self,
        id: JobId,
        now_ms: u64,
        region: &str,
    ) -> Result<Option<Vec<PendingDelivery>>>;
    /// Cancels a non-final job (its webhooks are told, like for any other end). When that
    /// creates deliveries it also records a wakeup, so a server sharing the store (the CLI
    /// cancelled) sends them.
    async fn cancel(
        &self,
        tenant: Option<TenantId>,
        id: JobId,
        now_ms: u64,
        region: &str,
    ) -> Result<CancelOutcome>;
    /// Re-queues a failed or expired job as a new attempt series, and records a wakeup so a
    /// server sharing the store picks it up (see `take_wakeups`).
    async fn replay(
        &self,
        tenant: Option<TenantId>,
        id: JobId,
        now_ms: u64,
        deadline_ms: u64,
    ) -> Result<ReplayOutcome>;
    /// Job ids that an out-of-process writer (the CLI) asked the running server to pick up
    /// (a replayed job, or a cancelled job's deliveries), removed as they are returned.
    async fn take_wakeups(&self) -> Result<Vec<JobId>>;
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
    /// Sets a tenant's signing secrets (sealed by the caller), replacing any.
    async fn put_webhook_secrets(&self, tenant: TenantId, secrets: WebhookSecrets) -> Result<()>;
    /// A tenant's signing secrets.
    async fn webhook_secrets(&self, tenant: TenantId) -> Result<Option<WebhookSecrets>>;
    /// Atomically makes `primary` the primary secret and the old primary the secondary; `None`
    /// when the tenant has no secrets yet.
    async fn rotate_webhook_secret(
        &self,
        tenant: TenantId,
        primary: Vec<u8>,
        now_ms: u64,
    ) -> Result<Option<WebhookSecrets>>;
    /// Deletes a tenant's secrets (webhooks go unsigned); whether there were any.
    async fn delete_webhook_secrets(&self, tenant: TenantId) -> Result<bool>;
    /// Counts of jobs by state (for metrics).
    async fn count_by_state(&self) -> Result<Vec<(ezt_core::JobState, u64)>>;
    /// Cheap liveness probe of the storage.
    async fn ping(&self) -> Result<()>;
    /// Saves what a lane learned (replacing what was saved for `lane` before). `lane` is the
    /// scheduler's name for it (job and webhook lanes are prefixed apart).
    async fn save_lane_state(&self, lane: &str, state: LaneState) -> Result<()>;
    /// What was last saved for `lane`.
    async fn lane_state(&self, lane: &str) -> Result<Option<LaneState>>;
    /// Deletes up to `limit` finished jobs that finished before their tenant's cutoff, oldest
    /// first, with their attempts, responses, webhook payloads and deliveries (and so their
    /// idempotency keys), in one short transaction. Jobs with a webhook delivery still pending
    /// are kept. Returns how many jobs went; callers repeat while it equals `limit`, so a large
    /// backlog is cleared in small steps that never hold the writer for long.
    async fn purge_finished(&self, cutoffs: &PurgeCutoffs, limit: usize) -> Result<usize>;
}
