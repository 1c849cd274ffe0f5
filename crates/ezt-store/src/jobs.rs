//! Jobs: admission, the attempt lease cycle, the caller's controls, and recovery.
//!
//! These are the calls on the dispatch and admission paths, each one transaction: "insert job +
//! claim idempotency key" and "finish attempt + schedule the next step (+ create the job's
//! webhook deliveries)" never split, so no crash can leave half of either.

use async_trait::async_trait;
use ezt_core::{JobId, JobState, TenantId};

use crate::{
    Admission, AttemptDone, CancelOutcome, JobFilter, JobRecord, Lease, LeasedJob, NewJob, NodeId,
    PendingDelivery, Recovered, ReplayOutcome, Result,
};

/// Jobs and their attempts.
///
/// Every transition that makes a job final also creates its webhook deliveries (in the same
/// transaction), which is why several methods here answer with `PendingDelivery`s even though
/// running the deliveries is `DeliveryStore`'s business.
#[async_trait]
pub trait JobStore: Send + Sync + 'static {
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
    /// Releases the leases `holder` held (jobs and webhook deliveries), then lists the jobs not
    /// yet final and the deliveries not yet done that no one holds, for rebuilding the
    /// schedulers' indexes.
    ///
    /// The holder must be dead: a single node passes its own id at start-up (the previous run
    /// is dead, the data dir is locked); in a cluster, a node passes a peer it found dead, and
    /// the leases of live nodes stay put. Each released job lease leaves an attempt with
    /// decision `interrupted` (its number taken at lease time, `at` the lease time, `region` the
    /// recovering node's) so the job's history shows the call that was cut off. Delivery leases
    /// are released here too, in the same transaction, so one call hands over all of a holder's
    /// work.
    async fn recover(&self, holder: &NodeId, now_ms: u64, region: &str) -> Result<Recovered>;
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
    ///
    /// Here rather than with maintenance because `cancel` and `replay` write them in their own
    /// transaction: they are the jobs' out-of-process half (a poll today, LISTEN/NOTIFY later).
    async fn take_wakeups(&self) -> Result<Vec<JobId>>;
    /// Counts of jobs by state (for metrics).
    async fn count_by_state(&self) -> Result<Vec<(JobState, u64)>>;
}
