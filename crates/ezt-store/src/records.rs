//! The records the store reads and writes.

use ezt_core::job::JobSpec;
use ezt_core::lane::LaneKey;
use ezt_core::retry::{Counters, Verdict};
use ezt_core::tier::Tier;
use ezt_core::{ApiKeyId, JobId, JobState, TenantId};
use serde::{Deserialize, Serialize};

/// A tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tenant {
    /// Id.
    pub id: TenantId,
    /// Unique name.
    pub name: String,
    /// Fair-share tier.
    pub tier: Tier,
    /// Creation time, ms.
    pub created_at: u64,
}

/// An API key as stored: never the key itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKeyRecord {
    /// Public id.
    pub id: ApiKeyId,
    /// Owner.
    pub tenant_id: TenantId,
    /// SHA-256 of the key.
    #[serde(skip)]
    pub digest: [u8; 32],
    /// First characters, for humans.
    pub prefix: String,
    /// Creation time, ms.
    pub created_at: u64,
    /// Revocation time, ms.
    pub revoked_at: Option<u64>,
}

/// A job to admit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewJob {
    /// New id.
    pub id: JobId,
    /// Owner.
    pub tenant_id: TenantId,
    /// Lane it joins.
    pub lane: LaneKey,
    /// Validated spec.
    pub spec: JobSpec,
    /// Custom or HASH key.
    pub idempotent_key: String,
    /// Admission time, ms.
    pub created_at: u64,
    /// Earliest first attempt, ms.
    pub run_at: u64,
    /// When it expires, ms.
    pub deadline_at: u64,
}

/// What admission did with one job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// Stored as new.
    Inserted,
    /// A job with the same key exists.
    Duplicate {
        /// The existing job.
        existing: JobId,
    },
}

/// A stored upstream answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    /// HTTP status.
    pub status_code: u16,
    /// Headers as received.
    pub headers: Vec<(String, String)>,
    /// Body (UTF-8, lossy), capped.
    pub body: String,
    /// True when the body was cut at the cap.
    #[serde(default)]
    pub body_truncated: bool,
}

/// Why a job ended without success.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobError {
    /// Stable code: `http_status`, `network_error`, `retries_exhausted`, `deadline`, `cancelled`, `ssrf_denied`.
    pub code: String,
    /// Human text.
    pub message: String,
}

/// One attempt of a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    /// 1-based number over the job's whole life.
    pub n: u32,
    /// Attempt series (1 + number of replays).
    pub series: u32,
    /// Start, ms.
    pub at: u64,
    /// Region that made the call.
    pub region: String,
    /// Status, when the target answered.
    pub status_code: Option<u16>,
    /// Network error text, when it did not.
    pub error: Option<String>,
    /// Call latency, ms.
    pub latency_ms: u64,
    /// How the outcome was judged.
    pub decision: Verdict,
    /// Wait before the next attempt, ms, if any.
    pub wait_ms: Option<u64>,
}

/// A job as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRecord {
    /// Id.
    pub id: JobId,
    /// Owner.
    pub tenant_id: TenantId,
    /// Lane.
    pub lane: LaneKey,
    /// State.
    pub state: JobState,
    /// Spec (with credentials: redact before showing).
    pub spec: JobSpec,
    /// Dedup key.
    pub idempotent_key: String,
    /// Admission, ms.
    pub created_at: u64,
    /// Last change, ms.
    pub updated_at: u64,
    /// Next attempt not before, ms.
    pub run_at: u64,
    /// Expiry, ms.
    pub deadline_at: u64,
    /// Attempts started (all series).
    pub attempt_count: u32,
    /// Retry/reroute counters of the current series.
    pub retries: u32,
    /// Reroutes of the current series.
    pub reroutes: u32,
    /// Current series (1 + replays).
    pub series: u32,
    /// Final or last response.
    pub response: Option<Response>,
    /// Why it failed.
    pub error: Option<JobError>,
    /// Final state time, ms.
    pub finished_at: Option<u64>,
    /// Every attempt (empty in lists).
    pub attempts: Vec<Attempt>,
}

/// List filters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobFilter {
    /// Only this state.
    pub state: Option<JobState>,
    /// Only this lane.
    pub lane: Option<String>,
    /// Only jobs created after, ms.
    pub created_after: Option<u64>,
    /// Only jobs older than this id (cursor).
    pub before: Option<JobId>,
    /// Page size.
    pub limit: usize,
}

/// What the scheduler's index keeps of a waiting job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingJob {
    /// Id.
    pub id: JobId,
    /// Owner.
    pub tenant_id: TenantId,
    /// Lane.
    pub lane: LaneKey,
    /// Not before, ms.
    pub run_at: u64,
    /// Expiry, ms.
    pub deadline_at: u64,
}

/// A lease on one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    /// Fencing token; completion must present it.
    pub token: u64,
    /// Lease start, ms.
    pub now_ms: u64,
    /// Lease end, ms (after it, another runner may take the job).
    pub expires_at: u64,
}

/// What an attempt needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeasedJob {
    /// Spec to execute.
    pub spec: JobSpec,
    /// Owner.
    pub tenant_id: TenantId,
    /// Sent as `Idempotency-Key`.
    pub idempotent_key: String,
    /// Number of this attempt (1-based, all series).
    pub attempt_no: u32,
    /// Series.
    pub series: u32,
    /// Counters before this attempt.
    pub counters: Counters,
    /// Expiry, ms.
    pub deadline_at: u64,
}

/// After an attempt: the job's next state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Final state with its response and error.
    Final {
        /// Succeeded, Failed or Expired.
        state: JobState,
        /// Last response, if any.
        response: Option<Response>,
        /// Why, if not succeeded.
        error: Option<JobError>,
    },
    /// Wait, then try again.
    Retry {
        /// Not before, ms.
        run_at: u64,
        /// Counters after this attempt.
        counters: Counters,
        /// Last response, if any.
        response: Option<Response>,
    },
}

/// A finished attempt to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptDone {
    /// Job.
    pub id: JobId,
    /// The lease's fencing token.
    pub lease_token: u64,
    /// The attempt.
    pub attempt: Attempt,
    /// What follows.
    pub next: Next,
    /// Now, ms.
    pub now_ms: u64,
}

/// Result of a cancel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelOutcome {
    /// Now cancelled.
    Cancelled,
    /// No such job (for this tenant).
    NotFound,
    /// Already in a final state.
    AlreadyFinal(JobState),
}

/// Result of a replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplayOutcome {
    /// Queued again; the pending entry for the scheduler.
    Requeued(PendingJob),
    /// No such job.
    NotFound,
    /// Not failed or expired.
    NotReplayable(JobState),
}

/// True if an existing job still claims its idempotency key: it is alive, or final for less
/// than the dedup window.
pub fn dedups(state: JobState, finished_at: Option<u64>, now_ms: u64, window_ms: u64) -> bool {
    !state.is_final() || finished_at.is_some_and(|f| now_ms.saturating_sub(f) < window_ms)
}
