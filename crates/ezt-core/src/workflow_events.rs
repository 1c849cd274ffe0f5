//! What a run tells its webhooks and its watchers: `workflow.completed`, `workflow.failed`,
//! `workflow.cancelled` when it ends, and `workflow.page` when a page of a paginated step
//! completes. Pure: the store calls [`run_events`] inside the transaction that changed the run
//! and stores one payload (and one delivery per webhook) for each event it answers.

use serde::Serialize;

use crate::webhook::PayloadResponse;
use crate::workflow::{Run, RunState, RunStatus, StepStatus};
use crate::WorkflowId;

/// Series of the payloads of page events start here (final events use `1 + resumes`), so the
/// payloads of one run never share a `(run, series)` slot.
pub const PAGE_SERIES_BASE: u32 = 10_000_000;

/// A step as a final event reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StepSummary {
    /// Name.
    pub name: String,
    /// Where it ended.
    pub status: StepStatus,
    /// Its (latest) job.
    pub job_id: Option<String>,
    /// Its answer's HTTP status, if it has one.
    pub status_code: Option<u16>,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Its compensation's status, if one ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compensation: Option<StepStatus>,
}

/// The body of a workflow webhook delivery (serialised once, sent byte-identical on every
/// attempt, signed like a job's).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WorkflowPayload {
    /// `workflow.completed`, `workflow.failed`, `workflow.cancelled` or `workflow.page`.
    #[serde(rename = "type")]
    pub event_type: &'static str,
    /// The run.
    pub workflow_id: String,
    /// Its name.
    pub name: String,
    /// Its dedup key, if it was given one.
    pub idempotent_key: Option<String>,
    /// The run's status when the event happened.
    pub status: RunStatus,
    /// `workflow.page`: the paginated step.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    /// `workflow.page`: the page's number, from 1.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub page: Option<u32>,
    /// `workflow.page`: the page's job.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job_id: Option<String>,
    /// `workflow.page`: the page's answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response: Option<PayloadResponse>,
    /// Final events: every step, in definition order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<StepSummary>,
    /// Final events: failures of non-blocking steps.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// When it happened, ms since the epoch.
    pub at: u64,
    /// Standard Webhooks `timestamp`: `at` in RFC 3339 (UTC, milliseconds).
    pub timestamp: String,
}

impl WorkflowPayload {
    /// The exact bytes sent.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a payload serialises")
    }
}

/// One event of a run, as stored for its webhooks and sent to its watchers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunEvent {
    /// Payload slot of the run (`1 + resumes` for a final event, from [`PAGE_SERIES_BASE`]
    /// for pages).
    pub series: u32,
    /// The body.
    pub payload: WorkflowPayload,
}

impl RunEvent {
    /// Whether the run ended with it.
    pub fn is_final(&self) -> bool {
        self.payload.page.is_none()
    }
}

/// The Standard Webhooks `type` of a final run status.
pub fn final_type(status: RunStatus) -> &'static str {
    match status {
        RunStatus::Succeeded => "workflow.completed",
        RunStatus::Cancelled => "workflow.cancelled",
        _ => "workflow.failed",
    }
}

/// The series of page `n` of step `step`.
pub fn page_series(step: u32, n: u32) -> u32 {
    PAGE_SERIES_BASE + step * 100_001 + n
}

/// The event that says `run` ended (call only when its status is final).
pub fn final_event(wf: WorkflowId, run: &Run, now_ms: u64) -> RunEvent {
    let steps = run
        .def
        .steps
        .iter()
        .zip(&run.state.steps)
        .map(|(d, s)| StepSummary {
            name: d.name.clone(),
            status: s.status,
            job_id: s.job_id.clone(),
            status_code: s.response.as_ref().map(|r| r.status),
            error: s.error.clone(),
            compensation: s.compensation,
        })
        .collect();
    RunEvent {
        series: 1 + run.state.resumes,
        payload: WorkflowPayload {
            event_type: final_type(run.state.status),
            workflow_id: wf.to_string(),
            name: run.def.name.clone(),
            idempotent_key: run.def.idempotent_key.clone(),
            status: run.state.status,
            step: None,
            page: None,
            job_id: None,
            response: None,
            steps,
            warnings: run.state.warnings.clone(),
            at: now_ms,
            timestamp: crate::webhook::rfc3339_ms(now_ms),
        },
    }
}

/// The events a change of a run from `before` to `run` produces: each page of a paginated
/// step that got its answer (`page_response` is the answer of the job that just ended), and
/// the run's end. A change that repeats (a stale step end) produces none.
pub fn run_events(
    wf: WorkflowId,
    before: &RunState,
    run: &Run,
    page_response: Option<&PayloadResponse>,
    now_ms: u64,
) -> Vec<RunEvent> {
    let mut out = Vec::new();
    for (i, (b, a)) in before.steps.iter().zip(&run.state.steps).enumerate() {
        for p in &a.pages {
            let was = b.pages.iter().find(|q| q.n == p.n).and_then(|q| q.status);
            let Some(status) = p.status else { continue };
            if was.is_some() || !(200..300).contains(&status) {
                continue;
            }
            out.push(RunEvent {
                series: page_series(i as u32, p.n),
                payload: WorkflowPayload {
                    event_type: "workflow.page",
                    workflow_id: wf.to_string(),
                    name: run.def.name.clone(),
                    idempotent_key: run.def.idempotent_key.clone(),
                    status: run.state.status,
                    step: Some(run.def.steps[i].name.clone()),
                    page: Some(p.n),
                    job_id: Some(p.job_id.clone()),
                    response: page_response.cloned(),
                    steps: Vec::new(),
                    warnings: Vec::new(),
                    at: now_ms,
                    timestamp: crate::webhook::rfc3339_ms(now_ms),
                },
            });
        }
    }
    if !before.status.is_final() && run.state.status.is_final() {
        out.push(final_event(wf, run, now_ms));
    }
    out
}

/// One event of a run's `/events` stream.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamEvent {
    /// `step.started`, `workflow.page`, `step.ended`, or the final type
    /// (`workflow.completed`, `workflow.failed`, `workflow.cancelled`).
    pub name: &'static str,
    /// The event's data (a final event's is filled with the run's view by the caller).
    pub data: serde_json::Value,
}

impl StreamEvent {
    /// Whether it is the run's last event.
    pub fn is_final(&self) -> bool {
        self.name.starts_with("workflow.") && self.name != "workflow.page"
    }
}

/// What happened to `run` since a watcher saw it as `before` (a new watcher passes the state
/// of a fresh run, so it first gets everything so far): steps that started (released, or
/// released again by a resume), pages answered, steps that ended, and the run's end, in that
/// order per step and steps in definition order.
pub fn stream_events(before: &RunState, run: &Run) -> Vec<StreamEvent> {
    use serde_json::json;
    let mut out = Vec::new();
    for (i, (b, a)) in before.steps.iter().zip(&run.state.steps).enumerate() {
        let name = &run.def.steps[i].name;
        let started = a.job_id.is_some()
            && a.job_id != b.job_id
            && (b.pages.is_empty() || a.pages.len() <= 1);
        if started {
            out.push(StreamEvent {
                name: "step.started",
                data: json!({"step": name, "job_id": a.job_id}),
            });
        }
        for p in &a.pages {
            let was = b.pages.iter().find(|q| q.n == p.n).and_then(|q| q.status);
            if let (None, Some(status)) = (was, p.status) {
                out.push(StreamEvent {
                    name: "workflow.page",
                    data: json!({"step": name, "page": p.n, "job_id": p.job_id, "status_code": status}),
                });
            }
        }
        let ended = !matches!(a.status, StepStatus::Pending | StepStatus::Running);
        if ended && (b.status != a.status || b.job_id != a.job_id) {
            out.push(StreamEvent {
                name: "step.ended",
                data: json!({"step": name, "status": a.status, "job_id": a.job_id, "error": a.error}),
            });
        }
    }
    if !before.status.is_final() && run.state.status.is_final() {
        out.push(StreamEvent {
            name: final_type(run.state.status),
            data: json!({"status": run.state.status}),
        });
    }
    out
}
