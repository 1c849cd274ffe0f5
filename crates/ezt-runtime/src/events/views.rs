//! Jobs as their owners see them: what the API answers, what final events and the CLI show.
//! Credentials are redacted and sealed values hidden.

use std::collections::BTreeMap;

use ezt_store::{Attempt, JobRecord};
use serde::Serialize;

/// A job as shown to its owner.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JobView {
    /// Id.
    pub job_id: String,
    /// queued scheduled running succeeded failed expired cancelled.
    #[cfg_attr(feature = "openapi", schema(value_type = ezt_core::JobState))]
    pub state: String,
    /// The lane it runs in.
    pub lane: String,
    /// Dedup key.
    pub idempotent_key: String,
    /// The spec, credentials redacted.
    pub spec: ezt_core::job::JobSpec,
    /// Metadata (also in spec).
    pub metadata: BTreeMap<String, String>,
    /// Times, ms since epoch.
    pub created_at: u64,
    /// Last change.
    pub updated_at: u64,
    /// Next attempt not before.
    pub run_at: u64,
    /// Expiry.
    pub deadline_at: u64,
    /// When it became final.
    pub finished_at: Option<u64>,
    /// Attempts made (all series).
    pub attempt_count: u32,
    /// Attempt series (1 + replays).
    pub series: u32,
    /// Every attempt (empty in lists).
    pub attempts: Vec<Attempt>,
    /// Final (or last) response.
    pub response: Option<ezt_store::Response>,
    /// Why it failed.
    pub error: Option<ezt_store::JobError>,
    /// Deliveries of the latest outcome to each webhook, in the job's webhook order.
    pub webhooks: Vec<DeliveryView>,
    /// Whether enough voting webhooks acknowledged (absent for jobs without webhooks).
    pub webhook_quorum: Option<QuorumView>,
    /// The job whose outcome created this one (`on_success` / `on_failure`), if any.
    pub parent_id: Option<String>,
    /// The child job this job's outcome created (`on_success` after a success, `on_failure`
    /// after a failure or expiry).
    pub children: Vec<String>,
}

impl JobView {
    /// The view of a stored job.
    pub fn from_record(j: &JobRecord, credential_headers: &[String]) -> Self {
        Self {
            job_id: j.id.to_string(),
            state: j.state.as_str().into(),
            lane: j.lane.0.clone(),
            idempotent_key: j.idempotent_key.clone(),
            spec: crate::credentials::hide_sealed(j.spec.redacted(credential_headers)),
            metadata: j.spec.metadata.clone(),
            created_at: j.created_at,
            updated_at: j.updated_at,
            run_at: j.run_at,
            deadline_at: j.deadline_at,
            finished_at: j.finished_at,
            attempt_count: j.attempt_count,
            series: j.series,
            attempts: j.attempts.clone(),
            response: j.response.clone(),
            error: j.error.clone(),
            webhooks: j.deliveries.iter().map(DeliveryView::from).collect(),
            webhook_quorum: QuorumView::of(j),
            parent_id: j.spec.parent.as_ref().map(|p| p.job_id.clone()),
            // The child the latest outcome created (its id is derived from this job's).
            children: j
                .spec
                .child_for(j.state)
                .map(|(relation, _)| ezt_core::job::child_id(j.id, relation, j.series).to_string())
                .into_iter()
                .collect(),
        }
    }
}

/// One delivery of a job's outcome to one webhook.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeliveryView {
    /// Sent as `X-EZThrottle-Delivery-Id` and `webhook-id`; the same on every retry.
    pub delivery_id: String,
    /// Receiver.
    pub url: String,
    /// Counts towards the quorum.
    pub has_quorum_vote: bool,
    /// `pending`, `delivered` or `failed`.
    #[cfg_attr(feature = "openapi", schema(value_type = ezt_core::webhook::DeliveryState))]
    pub state: String,
    /// The job's attempt series whose outcome it carries.
    pub series: u32,
    /// When the outcome happened (ms).
    pub created_at: u64,
    /// Next attempt not before (ms), while pending.
    pub next_attempt_at: Option<u64>,
    /// First 2xx (ms).
    pub acknowledged_at: Option<u64>,
    /// Every attempt: at, status_code or error, latency_ms, outcome, wait_ms.
    pub attempts: Vec<ezt_store::DeliveryAttempt>,
}

impl From<&ezt_store::DeliveryRecord> for DeliveryView {
    fn from(d: &ezt_store::DeliveryRecord) -> Self {
        Self {
            delivery_id: d.id.to_string(),
            url: d.url.clone(),
            has_quorum_vote: d.has_quorum_vote,
            state: d.state.as_str().into(),
            series: d.series,
            created_at: d.created_at,
            next_attempt_at: d.next_at,
            acknowledged_at: d.acked_at,
            attempts: d.attempts.clone(),
        }
    }
}

/// The webhook quorum of a job.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct QuorumView {
    /// Voting webhooks that must acknowledge.
    pub required: u32,
    /// Voting webhooks that have acknowledged.
    pub acknowledged: u32,
    /// `pending`, `met` or `failed`.
    pub state: ezt_core::webhook::QuorumState,
}

impl QuorumView {
    fn of(j: &JobRecord) -> Option<Self> {
        if j.spec.webhooks.is_empty() {
            return None;
        }
        let required = j.spec.webhook_quorum;
        let votes: Vec<_> = j
            .deliveries
            .iter()
            .filter(|d| d.has_quorum_vote)
            .map(|d| (d.acked_at.is_some(), d.state))
            .collect();
        let acknowledged = votes.iter().filter(|(acked, _)| *acked).count() as u32;
        let state = if j.deliveries.is_empty() && required > 0 {
            ezt_core::webhook::QuorumState::Pending // the job has not ended yet
        } else {
            ezt_core::webhook::quorum(required, votes)
        };
        Some(Self {
            required,
            acknowledged,
            state,
        })
    }
}

/// A view for unit tests: a valid GET job, never run.
#[cfg(test)]
pub(crate) fn sample(state: &str) -> JobView {
    let cx = ezt_core::job::Context {
        limits: &ezt_core::job::Limits::default(),
        ssrf: &ezt_core::ssrf::SsrfPolicy::default(),
        local_region: "local",
        clustered: false,
        now_ms: 1_700_000_000_000,
    };
    let spec = ezt_core::job::parse(br#"{"url": "https://example.com/"}"#)
        .and_then(|i| i.validate(&cx))
        .expect("a valid job")
        .spec;
    JobView {
        job_id: "job_test".into(),
        state: state.into(),
        lane: "example.com:443".into(),
        idempotent_key: "k".into(),
        metadata: spec.metadata.clone(),
        spec,
        created_at: 0,
        updated_at: 0,
        run_at: 0,
        deadline_at: 0,
        finished_at: None,
        attempt_count: 0,
        series: 1,
        attempts: Vec::new(),
        response: None,
        error: None,
        webhooks: Vec::new(),
        webhook_quorum: None,
        parent_id: None,
        children: Vec::new(),
    }
}
