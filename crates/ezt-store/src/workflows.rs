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

use crate::{Ending, NewJob, Outcome, PendingDelivery, Result};

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

/// What storing a run became.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkflowAdmission {
    /// Stored with its first jobs.
    Stored,
    /// The tenant has a run with the same `idempotent_key`: nothing was stored.
    Duplicate {
        /// That run.
        existing: WorkflowId,
    },
}

/// Workflow runs.
#[async_trait]
pub trait WorkflowStore: Send + Sync + 'static {
    /// Stores a new run and the jobs of the steps it starts with, in one transaction; a run
    /// whose definition has an `idempotent_key` that another run of its tenant has is not
    /// stored (that run is answered).
    async fn insert_workflow(
        &self,
        wf: WorkflowRecord,
        jobs: Vec<NewJob>,
    ) -> Result<WorkflowAdmission>;
    /// Applies the owner's `control` to the tenant's run in one transaction: the run written,
    /// the step jobs it cancels ended `cancelled`, the jobs it releases stored, and the
    /// deliveries of the events it causes created.
    async fn control_workflow(
        &self,
        tenant: TenantId,
        id: WorkflowId,
        control: RunControl,
        now_ms: u64,
    ) -> Result<ControlOutcome>;
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

/// The key under which a run's webhook payloads and deliveries are stored (where a job's are
/// stored under its id): the run's id as a job id. No job has it.
pub fn run_key(wf: WorkflowId) -> ezt_core::JobId {
    ezt_core::JobId(wf.0)
}

/// One event of a run with the payload and deliveries to store for it (none without webhooks).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunOutcome {
    /// What happened.
    pub event: ezt_core::workflow_events::RunEvent,
    /// The payload and one delivery per webhook of the run.
    pub outcome: Outcome,
}

impl RunOutcome {
    /// The deliveries as the webhook scheduler needs them.
    pub fn pending(&self, tenant: TenantId, now_ms: u64) -> Vec<PendingDelivery> {
        self.outcome.pending(tenant, now_ms)
    }
}

/// The outcomes of `events` of `wf`'s run: a payload each and, per webhook of the run, a
/// delivery. Events of a run without webhooks are answered too (watchers see them) with no
/// deliveries.
pub fn run_outcomes(
    wf: &WorkflowRecord,
    events: Vec<ezt_core::workflow_events::RunEvent>,
    now_ms: u64,
) -> Vec<RunOutcome> {
    events
        .into_iter()
        .map(|event| {
            let deliveries = wf
                .run
                .def
                .webhooks
                .iter()
                .enumerate()
                .map(|(i, w)| {
                    (
                        ezt_core::DeliveryId::new(now_ms, rand::random()),
                        i as u32,
                        w.url.clone(),
                        w.has_quorum_vote,
                        w.regions.clone(),
                    )
                })
                .collect();
            RunOutcome {
                outcome: Outcome {
                    payload: event.payload.to_bytes(),
                    deliveries,
                },
                event,
            }
        })
        .collect()
}

/// [`step_ended`], and the run's events that end produced (a page answered, the run over)
/// with what to store for them in the same transaction.
pub fn step_ended_with_events(
    wf: &mut WorkflowRecord,
    r: &StepRef,
    ending: &Ending<'_>,
) -> (Vec<NewJob>, Vec<RunOutcome>) {
    let before = wf.run.state.clone();
    let jobs = step_ended(wf, r, ending);
    let page = ending.response.filter(|_| r.page > 0).map(|resp| {
        ezt_core::webhook::PayloadResponse::new(resp.status_code, &resp.headers, resp.body.clone())
    });
    let events = ezt_core::workflow_events::run_events(
        wf.id,
        &before,
        &wf.run,
        page.as_ref(),
        ending.now_ms,
    );
    let outs = run_outcomes(wf, events, ending.now_ms);
    (jobs, outs)
}

/// What the owner does to a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunControl {
    /// Cancel it (`POST /api/v1/workflows/{id}/cancel`).
    Cancel,
    /// Resume it after a failure or a cancel (`POST /api/v1/workflows/{id}/resume`).
    Resume,
}

/// What a control did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlOutcome {
    /// No such run for this tenant.
    NotFound,
    /// The run refused (nothing changed).
    Refused(ezt_core::workflow::ControlError),
    /// Applied.
    Applied {
        /// The run as written.
        record: Box<WorkflowRecord>,
        /// Step jobs it ended `cancelled`.
        cancelled: Vec<ezt_core::JobId>,
        /// Jobs it stored (a resume's first steps), as their lanes index them.
        released: Vec<crate::PendingJob>,
        /// Deliveries of the events it caused.
        deliveries: Vec<PendingDelivery>,
    },
}

/// What a control changes, for a backend to write in one transaction.
#[derive(Debug)]
pub struct Applied {
    /// Step jobs to end `cancelled` (those not final yet).
    pub cancel: Vec<ezt_core::JobId>,
    /// Jobs to insert.
    pub jobs: Vec<NewJob>,
    /// Events to store deliveries for.
    pub outcomes: Vec<RunOutcome>,
}

/// Applies `control` to `wf` (the backend holds its row lock) at `now_ms`.
pub fn apply_control(
    wf: &mut WorkflowRecord,
    control: RunControl,
    now_ms: u64,
) -> std::result::Result<Applied, ezt_core::workflow::ControlError> {
    let mut before = wf.run.state.clone();
    let (cancel, jobs) = match control {
        RunControl::Cancel => (wf.run.cancel()?, Vec::new()),
        RunControl::Resume => {
            let releases = wf.run.resume(wf.id)?;
            // The resumed run may end at once; that end is news.
            before.status = ezt_core::workflow::RunStatus::Running;
            (Vec::new(), release_jobs(releases, wf.tenant_id, now_ms))
        }
    };
    wf.updated_at = now_ms;
    let events = ezt_core::workflow_events::run_events(wf.id, &before, &wf.run, None, now_ms);
    Ok(Applied {
        cancel,
        jobs,
        outcomes: run_outcomes(wf, events, now_ms),
    })
}

/// A job as its lane indexes it.
pub fn pending_of(j: &NewJob) -> crate::PendingJob {
    crate::PendingJob {
        id: j.id,
        tenant_id: j.tenant_id,
        lane: j.lane.clone(),
        run_at: j.run_at,
        deadline_at: j.deadline_at,
    }
}
