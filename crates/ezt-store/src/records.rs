//! The records the store reads and writes.

use ezt_core::job::JobSpec;
use ezt_core::lane::LaneKey;
use ezt_core::retry::{Counters, Verdict};
use ezt_core::tier::Tier;
use ezt_core::webhook::{DeliveryState, Payload, PayloadError, PayloadResponse};
use ezt_core::{ApiKeyId, DeliveryId, JobId, JobState, TenantId};
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
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Response {
    /// HTTP status.
    pub status_code: u16,
    /// Headers as received.
    #[cfg_attr(feature = "openapi", schema(schema_with = ezt_core::openapi::header_pairs))]
    pub headers: Vec<(String, String)>,
    /// Body (UTF-8, lossy), capped.
    pub body: String,
    /// True when the body was cut at the cap.
    #[serde(default)]
    pub body_truncated: bool,
    /// A fanout job's final answer: its outcome in each listed region (`regions` order); the
    /// status, headers and body above are one region's (the first failing one, else the first).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub regions: Vec<ezt_core::webhook::RegionOutcome>,
}

/// Why a job ended without success.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JobError {
    /// Stable code: `http_status`, `network_error`, `retries_exhausted`, `deadline`, `cancelled`, `ssrf_denied`.
    #[cfg_attr(feature = "openapi", schema(schema_with = ezt_core::openapi::job_error_code))]
    pub code: String,
    /// Human text.
    pub message: String,
}

impl JobError {
    /// The job's `timeout` passed before it succeeded (every store and the executor agree on it).
    pub fn deadline() -> Self {
        Self {
            code: "deadline".into(),
            message: "the job's timeout passed before it succeeded".into(),
        }
    }

    /// The caller cancelled the job.
    pub fn cancelled() -> Self {
        Self {
            code: "cancelled".into(),
            message: "cancelled by the caller".into(),
        }
    }
}

/// One attempt of a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
    /// Which link of the job's fallback chain made the call (0: the job itself).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub link: u32,
    /// The chain link the job moved to after this attempt, if it moved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_link: Option<u32>,
    /// The node that made the call (absent in histories written before regions routed calls).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Why this attempt ran where it did, when it moved: `reroute: 502 from r1`, `reroute:
    /// connect failure from r1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// A fanout attempt: each region's leg of it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub legs: Vec<ezt_core::webhook::RegionOutcome>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl Attempt {
    /// The attempt a crash cut off: leased at `at` as number `n`, never answered. Its outcome is
    /// unknown (the target may have acted on it), so the history says so instead of hiding it.
    pub fn interrupted(n: u32, series: u32, at: u64, region: &str) -> Self {
        Self {
            n,
            series,
            at,
            region: region.to_string(),
            status_code: None,
            error: Some(
                "interrupted: the server stopped during the call; the job was queued again".into(),
            ),
            latency_ms: 0,
            decision: Verdict::Interrupted,
            wait_ms: None,
            link: 0,
            next_link: None,
            node: None,
            reason: None,
            legs: Vec::new(),
        }
    }
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
    /// Webhook deliveries of the latest outcome, in webhook order (empty in lists).
    pub deliveries: Vec<DeliveryRecord>,
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

/// Who holds a lease: the id of the node (process) that runs the attempt.
///
/// Recovery releases the leases of one holder only, so in a cluster a node that takes over from
/// a dead peer frees that peer's work and leaves the live nodes' in-flight calls alone. A single
/// node uses [`NodeId::local`]. Cheap to clone (a shared string), so leasing costs no allocation.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NodeId(std::sync::Arc<str>);

impl NodeId {
    /// What a single-node server holds its leases as. Leases taken before holders were stored
    /// are migrated to it, so an upgrade after a crash still releases them.
    pub const LOCAL: &'static str = "local";

    /// A node with this id.
    pub fn new(id: impl Into<std::sync::Arc<str>>) -> Self {
        Self(id.into())
    }

    /// The single-node holder ([`NodeId::LOCAL`]), shared rather than allocated per lease.
    pub fn local() -> Self {
        static LOCAL: std::sync::OnceLock<NodeId> = std::sync::OnceLock::new();
        LOCAL.get_or_init(|| NodeId::new(Self::LOCAL)).clone()
    }

    /// The id as text (as stored).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for NodeId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A lease on one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// Fencing token; completion must present it.
    pub token: u64,
    /// Lease start, ms.
    pub now_ms: u64,
    /// Lease end, ms (after it, another runner may take the job).
    pub expires_at: u64,
    /// The node running the attempt; `recover` releases one holder's leases.
    pub holder: NodeId,
    /// Cluster mode: the lease is taken only while this fence holds (the holder still owns the
    /// lane under this epoch and its own lease holds), else nothing is leased. `None` on one
    /// node and for webhook deliveries.
    pub fence: Option<crate::cluster::Fence>,
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
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CancelOutcome {
    /// Now cancelled; its webhook deliveries (if any) were created in the same transaction.
    Cancelled(Vec<PendingDelivery>),
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

/// Jobs and webhook deliveries waiting after a recovery: not done, and held by no one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovered {
    /// Jobs not yet final and not running under another holder's lease.
    pub jobs: Vec<PendingJob>,
    /// Deliveries not yet delivered or failed, and not leased by another holder.
    pub deliveries: Vec<PendingDelivery>,
}

/// One webhook delivery: a job outcome to one URL, retried on its schedule until a 2xx.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryRecord {
    /// Id (stable across retries and redeliveries).
    pub id: DeliveryId,
    /// The job whose outcome it carries.
    pub job_id: JobId,
    /// Owner.
    pub tenant_id: TenantId,
    /// The job's attempt series that produced the outcome.
    pub series: u32,
    /// Position in the job's `webhooks`.
    pub index: u32,
    /// Receiver.
    pub url: String,
    /// Counts towards the quorum.
    pub has_quorum_vote: bool,
    /// Where it stands.
    pub state: DeliveryState,
    /// Every attempt, oldest first.
    pub attempts: Vec<DeliveryAttempt>,
    /// When the outcome happened, ms.
    pub created_at: u64,
    /// Next attempt not before, ms (pending only).
    pub next_at: Option<u64>,
    /// First acknowledgement, ms (kept across redeliveries: a vote once cast stays cast).
    pub acked_at: Option<u64>,
    /// Failed attempts since the schedule (re)started: the schedule's step.
    pub failed_in_run: u32,
}

impl DeliveryRecord {
    /// What the webhook scheduler needs, if the delivery is still pending.
    pub fn pending(&self) -> Option<PendingDelivery> {
        (self.state == DeliveryState::Pending).then(|| PendingDelivery {
            id: self.id,
            tenant_id: self.tenant_id,
            url: self.url.clone(),
            next_at: self.next_at.unwrap_or(self.created_at),
        })
    }
}

/// One attempt to deliver.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeliveryAttempt {
    /// 1-based over the delivery's life.
    pub n: u32,
    /// Start, ms.
    pub at: u64,
    /// Receiver's status, when it answered.
    pub status_code: Option<u16>,
    /// Network error text, when it did not.
    pub error: Option<String>,
    /// Call latency, ms.
    pub latency_ms: u64,
    /// What followed: `delivered`, `retry` or `failed`.
    #[cfg_attr(feature = "openapi", schema(schema_with = ezt_core::openapi::delivery_outcome))]
    pub outcome: String,
    /// Wait before the next attempt, ms.
    pub wait_ms: Option<u64>,
    /// The region whose node sent this attempt (absent in attempts recorded before webhooks
    /// were delivered from regions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// The node that sent it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// How the sender was chosen when it was not as asked: e.g. no live node of the webhook's
    /// `regions`, so another node delivered it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// What the webhook scheduler keeps of a waiting delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingDelivery {
    /// Id.
    pub id: DeliveryId,
    /// Owner (for fair sharing of a receiver between tenants).
    pub tenant_id: TenantId,
    /// Receiver (its host picks the lane).
    pub url: String,
    /// Not before, ms.
    pub next_at: u64,
}

/// What one delivery attempt needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeasedDelivery {
    /// Id.
    pub id: DeliveryId,
    /// The job.
    pub job_id: JobId,
    /// Owner (whose secrets sign it).
    pub tenant_id: TenantId,
    /// Receiver.
    pub url: String,
    /// The exact body, as serialised when the job ended.
    pub payload: Vec<u8>,
    /// Number of this attempt (1-based).
    pub attempt_no: u32,
    /// Failed attempts in this run before this one.
    pub failed_in_run: u32,
    /// When the outcome happened, ms.
    pub created_at: u64,
    /// Whether it was acknowledged before (a redelivery).
    pub acked_before: bool,
    /// The webhook's `regions`: deliver from a node of one of them (empty: from anywhere).
    pub regions: Vec<String>,
}

/// After a delivery attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryNext {
    /// Acknowledged.
    Delivered,
    /// Try again not before, ms.
    RetryAt(u64),
    /// Given up.
    Failed,
}

/// A finished delivery attempt to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryDone {
    /// Delivery.
    pub id: DeliveryId,
    /// The lease's fencing token.
    pub lease_token: u64,
    /// The attempt.
    pub attempt: DeliveryAttempt,
    /// What follows.
    pub next: DeliveryNext,
    /// Now, ms.
    pub now_ms: u64,
}

/// Result of a redelivery request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedeliverOutcome {
    /// These deliveries start their schedule again now (in-flight ones are left to finish).
    Requeued(Vec<PendingDelivery>),
    /// No such job (for this tenant).
    NotFound,
    /// The job has no deliveries (no webhooks, or not final yet).
    NoDeliveries,
}

/// A tenant's webhook signing secrets, encrypted by the server (the store never sees them in
/// clear).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookSecrets {
    /// Primary secret, sealed.
    pub primary: Vec<u8>,
    /// Secondary (previous) secret, sealed.
    pub secondary: Option<Vec<u8>>,
    /// Last change, ms.
    pub updated_at: u64,
}

/// What a job's end produces for its webhooks: the payload (serialised once) and one delivery
/// per webhook. Every store calls this inside the transaction that makes the job final, so no
/// crash can finish a job and forget its webhooks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The body every delivery sends.
    pub payload: Vec<u8>,
    /// New deliveries, in webhook order: (id, index, url, has_quorum_vote, regions to deliver
    /// from: empty for anywhere).
    pub deliveries: Vec<(DeliveryId, u32, String, bool, Vec<String>)>,
}

/// The facts of a job that has just become final.
#[derive(Debug, Clone, Copy)]
pub struct Ending<'a> {
    /// The job.
    pub id: JobId,
    /// Its spec (webhooks, metadata).
    pub spec: &'a JobSpec,
    /// Its dedup key.
    pub idempotent_key: &'a str,
    /// The final state.
    pub state: JobState,
    /// Final response, if any.
    pub response: Option<&'a Response>,
    /// Why, if not succeeded.
    pub error: Option<&'a JobError>,
    /// Attempts made.
    pub attempts: u32,
    /// Region of the node ending it.
    pub region: &'a str,
    /// Now, ms.
    pub now_ms: u64,
}

impl Ending<'_> {
    /// The webhook outcome, or `None` when the job has no webhooks.
    pub fn outcome(&self) -> Option<Outcome> {
        if self.spec.webhooks.is_empty() {
            return None;
        }
        let payload = Payload {
            job_id: self.id.to_string(),
            idempotent_key: self.idempotent_key.to_string(),
            status: ezt_core::webhook::hosted_status(self.state),
            response: self
                .response
                .map(|r| PayloadResponse::new(r.status_code, &r.headers, r.body.clone())),
            metadata: self.spec.metadata.clone(),
            error: self.error.map(|e| PayloadError {
                code: e.code.clone(),
                message: e.message.clone(),
            }),
            attempts: self.attempts,
            region: self.region.to_string(),
            regions: self.response.map(|r| r.regions.clone()).unwrap_or_default(),
            completed_at: self.now_ms,
            event_type: ezt_core::webhook::event_type(self.state),
            timestamp: ezt_core::webhook::rfc3339_ms(self.now_ms),
        };
        let deliveries = self
            .spec
            .webhooks
            .iter()
            .enumerate()
            .map(|(i, w)| {
                (
                    DeliveryId::new(self.now_ms, rand::random()),
                    i as u32,
                    w.url.clone(),
                    w.has_quorum_vote,
                    w.regions.clone(),
                )
            })
            .collect();
        Some(Outcome {
            payload: payload.to_bytes(),
            deliveries,
        })
    }
}

impl Ending<'_> {
    /// The child job this ending creates (`on_success` after a success, `on_failure` after a
    /// failure or expiry), for `tenant`; `None` when the spec names none. Every store inserts it
    /// in the transaction that makes the parent final, under its derived id
    /// ([`ezt_core::job::child_id`]) and, unless the child names one, the key
    /// `<parent id>:<relation>[:<series>]`, so no crash loses or doubles it.
    pub fn child(&self, tenant_id: TenantId, series: u32) -> Option<NewJob> {
        let (relation, child) = self.spec.child_for(self.state)?;
        let mut spec = child.spec.clone();
        // `{{parent.response…}}`: rendered once, here, from the answer this transaction
        // records; a path without a value ends the child unsent (dispatch reads the error).
        if ezt_core::workflow::has_templates(&spec) {
            let parent = self.response.map(|r| ezt_core::workflow::StepResponse {
                status: r.status_code,
                headers: r.headers.clone(),
                body: r.body.clone(),
            });
            match ezt_core::workflow::render_child(&spec, parent.as_ref()) {
                Ok(rendered) => spec = rendered,
                Err(e) => spec.template_error = Some(e),
            }
        }
        spec.parent = Some(ezt_core::job::ParentRef {
            job_id: self.id.to_string(),
            relation,
        });
        let now = self.now_ms;
        Some(NewJob {
            id: ezt_core::job::child_id(self.id, relation, series),
            tenant_id,
            lane: LaneKey(child.lane.clone()),
            idempotent_key: child
                .idempotent_key
                .clone()
                .unwrap_or_else(|| match series {
                    1 => format!("{}:{}", self.id, relation.as_str()),
                    n => format!("{}:{}:{n}", self.id, relation.as_str()),
                }),
            created_at: now,
            run_at: spec.retry_at.unwrap_or(now).max(now),
            deadline_at: now.saturating_add(
                spec.on_failure_timeout_ms
                    .map_or(spec.timeout_ms, |t| t.min(spec.timeout_ms)),
            ),
            spec,
        })
    }
}

/// Whether a spec's end may create jobs (children, a workflow's next steps): stores use it to
/// skip reading the spec back.
pub fn has_children(spec: &JobSpec) -> bool {
    spec.on_success.is_some() || spec.on_failure.is_some() || spec.workflow.is_some()
}

impl Outcome {
    /// The new deliveries as the webhook scheduler needs them.
    pub fn pending(&self, tenant_id: TenantId, now_ms: u64) -> Vec<PendingDelivery> {
        self.deliveries
            .iter()
            .map(|(id, _, url, _, _)| PendingDelivery {
                id: *id,
                tenant_id,
                url: url.clone(),
                next_at: now_ms,
            })
            .collect()
    }
}

/// What a lane learned from its target (rate, concurrency, a pause), kept across the lane's
/// eviction from memory and across restarts, so an idle lane that is dropped and later
/// re-created does not forget a Retry-After or a slower rate the target asked for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LaneState {
    /// Sustained requests per second in force.
    pub rate: f64,
    /// Burst in force.
    pub burst: u32,
    /// Concurrency cap in force.
    pub max_in_flight: u32,
    /// Paused until this wall-clock time (ms since epoch), if a pause was learned.
    pub paused_until_ms: Option<u64>,
    /// When this was saved, ms since epoch.
    pub updated_at_ms: u64,
    /// Why the lane runs at its speed, and what its tenant pinned (absent in states saved
    /// before sources were kept).
    #[serde(default)]
    pub detail: LaneDetail,
}

/// Where a lane's values came from, and the limits a tenant pinned on it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LaneDetail {
    /// Source of the rate in force (`None`: the configured default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<LearnedFrom>,
    /// Source of the burst in force.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<LearnedFrom>,
    /// Source of the in-flight cap in force.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_in_flight: Option<LearnedFrom>,
    /// Source of the last pause.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pause: Option<LearnedFrom>,
    /// Requests left in the provider's window at the last response that said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remaining: Option<u64>,
    /// Limits pinned through `PUT /api/v1/lanes/{host}/limits`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pin: Option<LanePin>,
}

/// How a lane value was set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceKind {
    /// The configured default (`lanes.default`).
    Default,
    /// Pinned by the operator (`lanes.hosts`).
    Config,
    /// A response header of the target.
    Header,
    /// Adaptive pacing (AIMD) found it.
    Adaptive,
    /// The tenant pinned it.
    Tenant,
    /// Derived from the learned rate (in-flight cap: one second of calls).
    Derived,
}

/// The source of one learned value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LearnedFrom {
    /// How it was set.
    pub kind: SourceKind,
    /// The header (lower-case), when `kind` is `header` or `derived`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    /// Window of the announced quota, seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_s: Option<u64>,
    /// When it was learned, ms since epoch.
    pub at_ms: u64,
}

/// Limits a tenant pinned on its own lane; each set field overrides what is learned.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LanePin {
    /// Requests per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<f64>,
    /// Burst.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
    /// In-flight cap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_in_flight: Option<u32>,
    /// Adaptive pacing on (`Some(true)`) or off (`Some(false)`) for this lane, whatever the
    /// configuration says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adaptive: Option<bool>,
    /// Ceiling of adaptive pacing, requests/s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adaptive_ceiling: Option<f64>,
    /// When it was pinned, ms since epoch.
    pub at_ms: u64,
}

/// Who may be purged: finished jobs older than their tenant's cutoff (ms since the epoch).
/// `None` keeps a tenant's (or, as the default, everyone's) jobs forever.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PurgeCutoffs {
    /// Cutoff of tenants without an override.
    pub default: Option<u64>,
    /// Per-tenant overrides.
    pub tenants: Vec<(TenantId, Option<u64>)>,
}

impl PurgeCutoffs {
    /// The cutoff that applies to `tenant`.
    pub fn of(&self, tenant: TenantId) -> Option<u64> {
        self.tenants
            .iter()
            .find(|(t, _)| *t == tenant)
            .map_or(self.default, |(_, c)| *c)
    }

    /// The latest cutoff of any tenant (nothing finished after it can be purged).
    pub fn latest(&self) -> Option<u64> {
        self.tenants
            .iter()
            .filter_map(|(_, c)| *c)
            .chain(self.default)
            .max()
    }
}
