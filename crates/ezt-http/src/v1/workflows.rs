//! `/api/v1/workflows`: static workflows (a DAG of steps, each a durable job). Handlers parse,
//! call the runtime's jobs service and map the answer.

use std::convert::Infallible;
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use ezt_core::workflow::{PageState, RunStatus, StepResponse, StepStatus, WorkflowIn};
use ezt_core::WorkflowId;
use serde::Serialize;
use utoipa::ToSchema;

use crate::auth::Caller;
use crate::body::read_limited;
use crate::error::{ApiError, ErrorBody, Path};
use crate::state::AppState;
use crate::v1::jobs::JobView;

/// Routes of this resource.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/workflows", post(submit))
        .route("/api/v1/workflows/{id}", get(get_one))
        .route("/api/v1/workflows/{id}/events", get(events))
        .route("/api/v1/workflows/{id}/cancel", post(cancel))
        .route("/api/v1/workflows/{id}/resume", post(resume))
        .route("/api/v1/workflows/{id}/restart", post(restart))
}

/// What a workflow submission became.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum WorkflowSubmitStatus {
    /// Stored; its first steps are queued.
    Running,
    /// The tenant has a run with the same `idempotent_key`: that run is answered.
    Duplicate,
}

/// Answer to a submitted workflow.
#[derive(Debug, Serialize, ToSchema)]
pub struct WorkflowSubmitted {
    /// The run's id (the earlier run's, for a duplicate).
    pub workflow_id: String,
    /// `running`, or `duplicate` (answered 200).
    pub status: WorkflowSubmitStatus,
}

/// One step of a run.
#[derive(Debug, Serialize, ToSchema)]
pub struct StepView {
    /// Its name.
    pub name: String,
    /// Where it stands.
    pub status: StepStatus,
    /// Steps that must succeed first.
    pub depends_on: Vec<String>,
    /// Its failure fails the run.
    pub critical: bool,
    /// Never gates dependents nor decides the outcome.
    pub non_blocking: bool,
    /// Its job, once released.
    pub job_id: Option<String>,
    /// Its job with attempts and timings, once released.
    pub job: Option<JobView>,
    /// The answer later steps may read.
    pub response: Option<StepResponse>,
    /// Why it failed (`template_unresolved: …` when a template had no value,
    /// `condition_unresolved: …` / `condition_invalid: …` when `when` could not be decided).
    pub error: Option<String>,
    /// Its compensation's job, if one ran.
    pub compensation_job_id: Option<String>,
    /// Its compensation's status.
    pub compensation: Option<StepStatus>,
    /// A paginated step's pages so far (each a job, each a checkpoint).
    pub pages: Vec<PageState>,
    /// The walk stopped at `max_pages`.
    pub truncated: bool,
    /// Its condition, if it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub when: Option<String>,
    /// What `when` decided once its dependencies were done (false: the step was skipped).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub condition: Option<bool>,
}

/// A workflow run.
#[derive(Debug, Serialize, ToSchema)]
pub struct WorkflowView {
    /// Id.
    pub workflow_id: String,
    /// Name.
    pub name: String,
    /// `running`, `compensating`, `succeeded`, `failed`, `compensation_failed` or `cancelled`.
    pub status: RunStatus,
    /// Its dedup key, if it was given one.
    pub idempotent_key: Option<String>,
    /// Times it was resumed.
    pub resumes: u32,
    /// Every step, in definition order.
    pub steps: Vec<StepView>,
    /// Failures of non-blocking steps.
    pub warnings: Vec<String>,
    /// Deliveries of the run's webhook events, oldest first: `series` 1 is the first end's
    /// event (`1 + n` after resume `n`); from 10,000,000 a page's (`workflow.page`).
    pub webhooks: Vec<ezt_runtime::events::DeliveryView>,
    /// Submission, ms since the epoch.
    pub created_at: u64,
    /// Last change, ms since the epoch.
    pub updated_at: u64,
}

/// Submit a workflow.
#[utoipa::path(post, path = "/api/v1/workflows", operation_id = "submitWorkflow", tag = "workflows",
    request_body(content = WorkflowIn, description = "a workflow: steps are job specs plus `name`, `depends_on`, `critical`, `non_blocking`, `retry` (the step's wall-clock budget), `compensate`, `paginate`, `when` (a condition over the same paths: false skips the step) and `webhooks` (the step's own, reporting its job); url paths and queries, header values and bodies may use `{{input.<path>}}` and `{{steps.<name>.response.status|headers.<name>|body<path>}}`"),
    responses((status = 202, description = "stored; the first steps are queued", body = WorkflowSubmitted),
              (status = 200, description = "`duplicate`: the tenant has a run with this `idempotent_key`; that run's id is answered and nothing is stored", body = WorkflowSubmitted),
              (status = 400, description = "a bad step or field; `field` names it (`steps[2].depends_on`, …)", body = ErrorBody),
              (status = 401, description = "no valid API key (`unauthorized`)", body = ErrorBody),
              (status = 413, description = "the request body is larger than `limits.max_request_bytes` (`payload_too_large`)", body = ErrorBody),
              (status = 422, description = "`ssrf_denied`, `too_many_lanes`", body = ErrorBody),
              (status = 503, description = "storage is unavailable; nothing was written (`unavailable`)", body = ErrorBody)),
    security(("bearer" = [])))]
async fn submit(
    State(st): State<AppState>,
    caller: Caller,
    body: Body,
) -> Result<(StatusCode, Json<WorkflowSubmitted>), ApiError> {
    let bytes = read_limited(&st, body).await?;
    let input: WorkflowIn = ezt_core::job::parse_object(&bytes, "one workflow as a JSON object")?;
    let (id, duplicate) = st.rt.jobs.submit_workflow(&caller.tenant, input).await?;
    let (code, status) = if duplicate {
        (StatusCode::OK, WorkflowSubmitStatus::Duplicate)
    } else {
        (StatusCode::ACCEPTED, WorkflowSubmitStatus::Running)
    };
    Ok((
        code,
        Json(WorkflowSubmitted {
            workflow_id: id.to_string(),
            status,
        }),
    ))
}

/// A workflow run with every step.
#[utoipa::path(get, path = "/api/v1/workflows/{id}", operation_id = "getWorkflow", tag = "workflows", params(("id" = String, Path, description = "a workflow id from a submit answer")),
    responses((status = 200, description = "the run: every step with its job (attempts, state, timings)", body = WorkflowView),
              (status = 401, description = "no valid API key (`unauthorized`)", body = ErrorBody),
              (status = 404, description = "no such workflow for this tenant (`not_found`)", body = ErrorBody),
              (status = 503, description = "storage is unavailable (`unavailable`)", body = ErrorBody)),
    security(("bearer" = [])))]
async fn get_one(
    State(st): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<WorkflowView>, ApiError> {
    let id = parse_id(&id)?;
    let rec = st
        .rt
        .jobs
        .get_workflow(caller.tenant.id, id)
        .await
        .map_err(workflow_err)?;
    Ok(Json(view(&st, caller.tenant.id, &rec).await))
}

fn parse_id(id: &str) -> Result<WorkflowId, ApiError> {
    id.parse().map_err(|_| ApiError::not_found("workflow"))
}

fn workflow_err(e: ezt_runtime::jobs::JobsError) -> ApiError {
    match e {
        ezt_runtime::jobs::JobsError::NotFound => ApiError::not_found("workflow"),
        e => e.into(),
    }
}

/// One Server-Sent Event of a run's `/events` (the frame, as a client's SSE parser sees it).
#[derive(Debug, Serialize, ToSchema)]
pub struct WorkflowSseEvent {
    /// `step.started`, `workflow.page`, `step.ended`, then one final `workflow.completed`,
    /// `workflow.failed` or `workflow.cancelled`.
    pub event: String,
    /// The event's JSON: `{step, job_id}`, `{step, page, job_id, status_code}`,
    /// `{step, status, job_id, error}`, or (final) the run's view.
    pub data: String,
}

/// Server-Sent Events of a run until it is over.
#[utoipa::path(get, path = "/api/v1/workflows/{id}/events", operation_id = "streamWorkflowEvents", tag = "workflows", params(("id" = String, Path, description = "a workflow id")),
    responses((status = 200, description = "Server-Sent Events until the run is over: `step.started`, `workflow.page`, `step.ended`, then one final `workflow.completed`, `workflow.failed` or `workflow.cancelled` whose data is the run's view, and the stream ends; a late subscriber first gets what it missed (a finished run's stream is its history and final event)", content_type = "text/event-stream", body = WorkflowSseEvent),
              (status = 401, description = "no valid API key (`unauthorized`)", body = ErrorBody),
              (status = 404, description = "no such workflow for this tenant (`not_found`)", body = ErrorBody),
              (status = 429, description = "the tenant holds too many open streams and long polls (`too_many_waiters`)", body = ErrorBody, headers(("Retry-After" = u64, description = "seconds"))),
              (status = 503, description = "storage is unavailable (`unavailable`)", body = ErrorBody)),
    security(("bearer" = [])))]
async fn events(
    State(st): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    let tenant = caller.tenant.id;
    let jobs = st.rt.jobs.clone();
    let mut rec = jobs.get_workflow(tenant, id).await.map_err(workflow_err)?;
    // Subscribed before the read the stream starts from, so no change falls in between.
    let mut watch = if rec.run.state.status.is_final() {
        None
    } else {
        let w = jobs.watch_workflow(tenant, id)?;
        rec = jobs.get_workflow(tenant, id).await.map_err(workflow_err)?;
        Some(w)
    };
    let (tx, out) = tokio::sync::mpsc::channel::<Result<Event, Infallible>>(64);
    tokio::spawn(async move {
        let mut before = ezt_core::workflow::Run::new(rec.run.def.clone()).state;
        let mut tick = tokio::time::interval(Duration::from_secs(2));
        loop {
            for ev in ezt_core::workflow_events::stream_events(&before, &rec.run) {
                let data = if ev.is_final() {
                    serde_json::to_string(&view(&st, tenant, &rec).await).unwrap_or_default()
                } else {
                    ev.data.to_string()
                };
                let frame = Event::default().event(ev.name).data(data);
                if tx.send(Ok(frame)).await.is_err() || ev.is_final() {
                    return;
                }
            }
            if rec.run.state.status.is_final() {
                return;
            }
            let Some(w) = watch.as_mut() else { return };
            before = rec.run.state.clone();
            // A change wakes the watch; the tick covers changes made by another node.
            tokio::select! {
                ev = w.recv() => {
                    if matches!(ev, Err(tokio::sync::broadcast::error::RecvError::Closed)) {
                        return;
                    }
                }
                _ = tick.tick() => {
                    if tx.is_closed() {
                        return;
                    }
                }
            }
            match jobs.get_workflow(tenant, id).await {
                Ok(r) => rec = r,
                Err(_) => return,
            }
        }
    });
    let stream = tokio_stream::wrappers::ReceiverStream::new(out);
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}

/// Cancel a run.
#[utoipa::path(post, path = "/api/v1/workflows/{id}/cancel", operation_id = "cancelWorkflow", tag = "workflows", params(("id" = String, Path, description = "a workflow id")),
    responses((status = 200, description = "cancelled: its unfinished step jobs ended `cancelled` in the same transaction (nothing more is sent; a call in flight is not recalled), no compensation runs, and its webhooks get `workflow.cancelled`", body = WorkflowView),
              (status = 401, description = "no valid API key (`unauthorized`)", body = ErrorBody),
              (status = 404, description = "no such workflow for this tenant (`not_found`)", body = ErrorBody),
              (status = 409, description = "the run is already over (`conflict`)", body = ErrorBody),
              (status = 503, description = "storage is unavailable (`unavailable`)", body = ErrorBody)),
    security(("bearer" = [])))]
async fn cancel(
    State(st): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<WorkflowView>, ApiError> {
    let id = parse_id(&id)?;
    let rec = st
        .rt
        .jobs
        .cancel_workflow(caller.tenant.id, id)
        .await
        .map_err(workflow_err)?;
    Ok(Json(view(&st, caller.tenant.id, &rec).await))
}

/// Resume a failed or cancelled run.
#[utoipa::path(post, path = "/api/v1/workflows/{id}/resume", operation_id = "resumeWorkflow", tag = "workflows", params(("id" = String, Path, description = "a workflow id")),
    responses((status = 200, description = "running again: steps that succeeded keep their results; every other step (a failed non-blocking one excepted) runs again with new job ids and `Idempotency-Key`s (`…:resume:<n>`), a paginated step from the page that failed", body = WorkflowView),
              (status = 401, description = "no valid API key (`unauthorized`)", body = ErrorBody),
              (status = 404, description = "no such workflow for this tenant (`not_found`)", body = ErrorBody),
              (status = 409, description = "the run is not `failed` or `cancelled` (`conflict`)", body = ErrorBody),
              (status = 503, description = "storage is unavailable (`unavailable`)", body = ErrorBody)),
    security(("bearer" = [])))]
async fn resume(
    State(st): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<WorkflowView>, ApiError> {
    let id = parse_id(&id)?;
    let rec = st
        .rt
        .jobs
        .resume_workflow(caller.tenant.id, id)
        .await
        .map_err(workflow_err)?;
    Ok(Json(view(&st, caller.tenant.id, &rec).await))
}

/// Restart a finished run as a new run.
#[utoipa::path(post, path = "/api/v1/workflows/{id}/restart", operation_id = "restartWorkflow", tag = "workflows", params(("id" = String, Path, description = "a workflow id")),
    responses((status = 202, description = "a new run of the same frozen definition and input (without its `idempotent_key`); the answer has the new run's id", body = WorkflowSubmitted),
              (status = 401, description = "no valid API key (`unauthorized`)", body = ErrorBody),
              (status = 404, description = "no such workflow for this tenant (`not_found`)", body = ErrorBody),
              (status = 409, description = "the run is not over (`conflict`): cancel it first", body = ErrorBody),
              (status = 422, description = "`too_many_lanes`", body = ErrorBody),
              (status = 503, description = "storage is unavailable (`unavailable`)", body = ErrorBody)),
    security(("bearer" = [])))]
async fn restart(
    State(st): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<WorkflowSubmitted>), ApiError> {
    let id = parse_id(&id)?;
    let new = st
        .rt
        .jobs
        .restart_workflow(&caller.tenant, id)
        .await
        .map_err(workflow_err)?;
    Ok((
        StatusCode::ACCEPTED,
        Json(WorkflowSubmitted {
            workflow_id: new.to_string(),
            status: WorkflowSubmitStatus::Running,
        }),
    ))
}

/// The view of a run, every step with its job.
async fn view(
    st: &AppState,
    tenant: ezt_core::TenantId,
    rec: &ezt_store::WorkflowRecord,
) -> WorkflowView {
    let def = &rec.run.def;
    let mut steps = Vec::with_capacity(def.steps.len());
    for (d, s) in def.steps.iter().zip(&rec.run.state.steps) {
        let job = match s.job_id.as_deref().and_then(|j| j.parse().ok()) {
            Some(j) => match st.rt.jobs.get(tenant, j).await {
                Ok(job) => Some(JobView::from_record(
                    &job,
                    &st.rt.cfg.lanes.credential_headers,
                )),
                Err(_) => None,
            },
            None => None,
        };
        steps.push(StepView {
            name: d.name.clone(),
            status: s.status,
            depends_on: d
                .depends_on
                .iter()
                .map(|i| def.steps[*i as usize].name.clone())
                .collect(),
            critical: d.critical,
            non_blocking: d.non_blocking,
            job_id: s.job_id.clone(),
            job,
            response: s.response.clone(),
            error: s.error.clone(),
            compensation_job_id: s.compensation_job_id.clone(),
            compensation: s.compensation,
            pages: s.pages.clone(),
            truncated: s.truncated,
            when: d.when.clone(),
            condition: s.condition,
        });
    }
    WorkflowView {
        workflow_id: rec.id.to_string(),
        name: def.name.clone(),
        status: rec.run.state.status,
        idempotent_key: def.idempotent_key.clone(),
        resumes: rec.run.state.resumes,
        steps,
        warnings: rec.run.state.warnings.clone(),
        webhooks: if def.webhooks.is_empty() {
            Vec::new()
        } else {
            match st.rt.jobs.workflow_deliveries(tenant, rec.id).await {
                Ok(ds) => ds.iter().map(Into::into).collect(),
                Err(_) => Vec::new(),
            }
        },
        created_at: rec.created_at,
        updated_at: rec.updated_at,
    }
}
