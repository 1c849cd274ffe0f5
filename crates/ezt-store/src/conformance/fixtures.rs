//! What the cases share: small builders for tenants, jobs, leases and attempts.

use ezt_core::job::JobSpec;
use ezt_core::lane::LaneKey;
use ezt_core::retry::{RetryPolicy, Verdict};
use ezt_core::tier::Tier;
use ezt_core::webhook::Webhook;
use ezt_core::{JobId, JobState, TenantId};

use crate::*;

pub(crate) const WINDOW: u64 = 24 * 3600 * 1000;

pub(crate) fn tenant(n: u128, name: &str) -> Tenant {
    Tenant {
        id: TenantId(n),
        name: name.into(),
        tier: Tier::Paid,
        created_at: 1,
    }
}

pub(crate) fn spec(url: &str) -> JobSpec {
    JobSpec {
        url: url.into(),
        method: "POST".into(),
        headers: vec![("Authorization".into(), "Bearer x".into())],
        body: Some("{\"a\":1}".into()),
        metadata: Default::default(),
        regions: vec![],
        retry_policy: RetryPolicy::default(),
        timeout_ms: 60_000,
        retry_at: None,
        webhooks: vec![],
        webhook_quorum: 0,
        region_policy: Default::default(),
        execution_mode: Default::default(),
        fallback: None,
        on_success: None,
        on_failure: None,
        on_failure_timeout_ms: None,
        parent: None,
        workflow: None,
        template_error: None,
    }
}

/// A new job for tests.
pub fn new_job(id: u128, tenant: u128, key: &str, now: u64) -> NewJob {
    NewJob {
        id: JobId::new(now, id),
        tenant_id: TenantId(tenant),
        lane: LaneKey("127.0.0.1:9".into()),
        spec: spec("http://127.0.0.1:9/x"),
        idempotent_key: key.into(),
        created_at: now,
        run_at: now,
        deadline_at: now + 60_000,
    }
}

pub(crate) fn lease(token: u64, now: u64) -> Lease {
    lease_by(token, now, NodeId::local())
}

/// A lease held by `holder`.
pub(crate) fn lease_by(token: u64, now: u64, holder: NodeId) -> Lease {
    Lease {
        token,
        now_ms: now,
        expires_at: now + 30_000,
        holder,
        fence: None,
    }
}

pub(crate) fn attempt(n: u32, decision: Verdict) -> Attempt {
    Attempt {
        n,
        series: 1,
        at: 10,
        region: "local".into(),
        status_code: Some(200),
        error: None,
        latency_ms: 1,
        decision,
        wait_ms: None,
        link: 0,
        next_link: None,
        node: None,
        reason: None,
        legs: Vec::new(),
    }
}

/// A successful first attempt, completed under `token` at `now`.
pub(crate) fn succeeded(id: JobId, token: u64, now: u64) -> AttemptDone {
    AttemptDone {
        id,
        lease_token: token,
        attempt: attempt(1, Verdict::Success),
        next: Next::Final {
            state: JobState::Succeeded,
            response: None,
            error: None,
        },
        now_ms: now,
    }
}

pub(crate) fn ok_response() -> Response {
    Response {
        status_code: 200,
        headers: vec![("content-type".into(), "text/plain".into())],
        body: "ok".into(),
        body_truncated: false,
        regions: Vec::new(),
    }
}

pub(crate) fn hooked_job(
    id: u128,
    tenant: u128,
    key: &str,
    now: u64,
    urls: &[(&str, bool)],
    quorum: u32,
) -> NewJob {
    let mut j = new_job(id, tenant, key, now);
    j.spec.metadata.insert("order".into(), "42".into());
    j.spec.webhooks = urls
        .iter()
        .map(|(u, vote)| Webhook {
            url: (*u).into(),
            regions: vec![],
            has_quorum_vote: *vote,
        })
        .collect();
    j.spec.webhook_quorum = quorum;
    j
}

pub(crate) fn delivery_attempt(n: u32, status: u16, outcome: &str) -> DeliveryAttempt {
    DeliveryAttempt {
        n,
        at: 1,
        status_code: Some(status),
        error: None,
        latency_ms: 1,
        outcome: outcome.into(),
        wait_ms: None,
        region: None,
        node: None,
        note: None,
    }
}

/// The ids a listing returns, newest first.
pub(crate) async fn listed<S: JobStore>(
    s: &S,
    tenant: Option<TenantId>,
    filter: JobFilter,
) -> Vec<JobId> {
    let jobs = s.list_jobs(tenant, &filter).await.unwrap();
    jobs.iter().map(|j| j.id).collect()
}
