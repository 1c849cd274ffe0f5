//! Workflow runs: the frozen definition and the run's state, one row per run.
//!
//! A run advances inside the transaction that makes one of its step jobs final (every backend's
//! outcome hook calls [`step_ended`]): the step's result and the jobs it releases are one
//! commit, so a crash can neither lose a released step nor run a finished one again.

use async_trait::async_trait;
use ezt_core::lane::LaneKey;
use ezt_core::workflow::{Run, StepRef, StepResponse};
use ezt_core::{TenantId, WorkflowId};
use serde::{Deserialize, Serialize};

use crate::{Ending, NewJob, Result};

/// A workflow run as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkflowRecord {
    /// Id.
    pub id: WorkflowId,
    /// Owner.
    pub tenant_id: TenantId,
    /// Definition and state.
    pub run: Run,
    /// Submission, ms.
    pub created_at: u64,
    /// Last change, ms.
    pub updated_at: u64,
}

/// Workflow runs.
#[async_trait]
pub trait WorkflowStore: Send + Sync + 'static {
    /// Stores a new run and the jobs of the steps it starts with, in one transaction.
    async fn insert_workflow(&self, wf: WorkflowRecord, jobs: Vec<NewJob>) -> Result<()>;
    /// One run of one tenant.
    async fn get_workflow(
        &self,
        tenant: Option<TenantId>,
        id: WorkflowId,
    ) -> Result<Option<WorkflowRecord>>;
}

/// The jobs of `releases`, for `tenant`, created at `now_ms`.
pub fn release_jobs(
    releases: Vec<ezt_core::workflow::Release>,
    tenant: TenantId,
    now_ms: u64,
) -> Vec<NewJob> {
    releases
        .into_iter()
        .map(|r| NewJob {
            id: r.id,
            tenant_id: tenant,
            lane: LaneKey(r.lane),
            idempotent_key: r.key,
            created_at: now_ms,
            run_at: r.spec.retry_at.unwrap_or(now_ms).max(now_ms),
            deadline_at: now_ms.saturating_add(r.spec.timeout_ms),
            spec: r.spec,
        })
        .collect()
}

/// Advances `wf` by the end of its step job `ending` (inside the transaction that records the
/// end) and answers the jobs to insert in that same transaction.
pub fn step_ended(wf: &mut WorkflowRecord, r: &StepRef, ending: &Ending<'_>) -> Vec<NewJob> {
    let response = ending.response.map(|resp| StepResponse {
        status: resp.status_code,
        headers: resp.headers.clone(),
        body: resp.body.clone(),
    });
    let error = ending.error.map(|e| format!("{}: {}", e.code, e.message));
    let releases = wf
        .run
        .step_ended(wf.id, r, ending.id, ending.state, response, error);
    wf.updated_at = ending.now_ms;
    release_jobs(releases, wf.tenant_id, ending.now_ms)
}

/// The run a step job belongs to, if its spec names one.
pub fn workflow_of(spec: &ezt_core::job::JobSpec) -> Option<(WorkflowId, &StepRef)> {
    let r = spec.workflow.as_ref()?;
    Some((r.workflow_id.parse().ok()?, r))
}
