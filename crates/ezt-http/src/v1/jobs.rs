//! `/api/v1/jobs`: STREAM admission, views, waiting, events, cancel and replay. Each handler
//! parses, calls the runtime's jobs service (`ezt_runtime::jobs`) and maps the answer.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use ezt_core::job;
use ezt_core::{FieldError, JobId, JobState};
use ezt_runtime::events::{JobEvent, Replay};
use ezt_runtime::jobs::{Admitted, SubmitStatus};
use ezt_store::{JobFilter, JobRecord, NewJob};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::broadcast::error::RecvError;
use utoipa::{IntoParams, ToSchema};

pub use ezt_runtime::events::{DeliveryView, JobView, QuorumView};

use crate::auth::Caller;
use crate::body::read_limited;
use crate::error::{ApiError, Path, Query};
use crate::state::AppState;

/// Routes of this resource.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/jobs", post(submit).get(list))
        .route("/api/v1/jobs/batch", post(submit_batch))
        .route("/api/v1/jobs/{id}", get(get_one))
        .route("/api/v1/jobs/{id}/wait", get(wait))
        .route("/api/v1/jobs/{id}/events", get(events))
        .route("/api/v1/jobs/{id}/cancel", post(cancel))
        .route("/api/v1/jobs/{id}/retry", post(retry))
        .route("/api/v1/jobs/{id}/webhooks/redeliver", post(redeliver))
}

/// A webhook on a job.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
pub struct WebhookIn {
    /// Receiver; checked against the SSRF rules at submit and at connect time.
    pub url: String,
    /// Regions allowed to deliver it (one node delivers from its own).
    pub regions: Option<Vec<String>>,
    /// Counts towards `webhook_quorum` (default true).
    pub has_quorum_vote: Option<bool>,
}

/// The body of `POST /api/v1/jobs` (see API.md; camelCase aliases are accepted too).
#[derive(Debug, Deserialize, Serialize, ToSchema)]
pub struct JobIn {
    /// http(s) target; checked against the SSRF rules.
    pub url: String,
    /// GET POST PUT PATCH DELETE HEAD OPTIONS (default GET).
    pub method: Option<String>,
    /// Sent to the target; Authorization / API-key headers also pick the lane.
    pub headers: Option<BTreeMap<String, String>>,
    /// Sent as is.
    pub body: Option<String>,
    /// Echoed in views.
    pub metadata: Option<BTreeMap<String, String>>,
    /// Where the outcome is POSTed, signed (up to 10).
    pub webhooks: Option<Vec<WebhookIn>>,
    /// Voting webhooks that must acknowledge (1-10, at most the number of voting webhooks;
    /// default 1 when there is one; 0 only when no webhook votes, as views show it).
    pub webhook_quorum: Option<u32>,
    /// Regions allowed to make the call.
    pub regions: Option<Vec<String>>,
    /// `fallback` or `strict`.
    pub region_policy: Option<String>,
    /// `race` (default) or `fanout`.
    pub execution_mode: Option<String>,
    /// {max_retries, max_reroutes, retry_codes, reroute_codes}.
    pub retry_policy: Option<serde_json::Value>,
    /// How long to keep trying: humantime string or integer ms (default 24h).
    pub timeout: Option<serde_json::Value>,
    /// Earliest first attempt, ms since epoch.
    pub retry_at: Option<u64>,
    /// Dedup key; else the `Idempotency-Key` request header (both set and different: 400);
    /// else SHA-256 of tenant, lane credential fingerprint, method, url, body.
    pub idempotent_key: Option<String>,
}

/// Answer to a submission.
#[derive(Debug, Serialize, ToSchema)]
pub struct SubmitOut {
    /// The job (or the existing job, for a duplicate).
    pub job_id: String,
    /// `queued` or `duplicate`.
    pub status: SubmitStatus,
    /// The dedup key in force.
    pub idempotent_key: String,
}

impl From<Admitted> for SubmitOut {
    fn from(a: Admitted) -> Self {
        Self {
            job_id: a.job_id.to_string(),
            status: a.status,
            idempotent_key: a.idempotent_key,
        }
    }
}

/// Batch body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchIn {
    /// Up to 1,000 job specs.
    pub jobs: Vec<serde_json::Value>,
}

/// A page of jobs.
#[derive(Debug, Serialize, ToSchema)]
pub struct JobList {
    /// Newest first.
    pub jobs: Vec<JobView>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// `?wait=` on submit.
#[derive(Debug, Deserialize, IntoParams)]
pub struct WaitQuery {
    /// Hold the answer until the job is final or this long passed (humantime, max 5m).
    pub wait: Option<String>,
    /// Same, for `/wait`.
    pub timeout: Option<String>,
}

/// List filters.
#[derive(Debug, Deserialize, IntoParams)]
pub struct ListQuery {
    /// Only this state.
    pub state: Option<String>,
    /// Only this lane.
    pub lane: Option<String>,
    /// Only jobs created after (ms since epoch).
    pub created_after: Option<u64>,
    /// Page size, 1-100 (default 20).
    pub limit: Option<usize>,
    /// From a previous page's `next_cursor`.
    pub cursor: Option<String>,
}

const MAX_WAIT: Duration = Duration::from_secs(300);

fn parse_wait(v: Option<&str>, field: &str) -> Result<Option<Duration>, ApiError> {
    v.map(|s| {
        ezt_core::duration::parse_millis(s)
            .map(|ms| Duration::from_millis(ms).min(MAX_WAIT))
            .map_err(|m| ApiError::from(FieldError::invalid(field, m)))
    })
    .transpose()
}

fn parse_id(id: &str) -> Result<JobId, ApiError> {
    id.parse().map_err(|_| ApiError::not_found("job"))
}

fn view(st: &AppState, job: &JobRecord) -> JobView {
    JobView::from_record(job, &st.rt.cfg.lanes.credential_headers)
}

/// Submit one job.
#[utoipa::path(post, path = "/api/v1/jobs", request_body = JobIn,
    params(WaitQuery, ("Idempotency-Key" = Option<String>, Header, description = "taken as idempotent_key; 400 if the body sets a different one")),
    responses((status = 202, body = SubmitOut), (status = 200, description = "duplicate, or final within ?wait", body = SubmitOut),
              (status = 400, description = "bad field"), (status = 401), (status = 413), (status = 422), (status = 503)),
    security(("bearer" = [])))]
async fn submit(
    State(st): State<AppState>,
    caller: Caller,
    Query(q): Query<WaitQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let t0 = tokio::time::Instant::now();
    let jobs = &st.rt.jobs;
    let wait = parse_wait(q.wait.as_deref(), "wait")?;
    // The waiter slot first: a 429 comes before anything is read or stored.
    let permit = wait
        .map(|_| jobs.admit_waiter(caller.tenant.id))
        .transpose()?;
    let bytes = read_limited(&st, body).await?;
    let now = jobs.now_ms();
    let parsed = job::parse(&bytes).and_then(|mut input| {
        if let Some(key) = idempotency_header(&headers)? {
            input.take_header_key(key)?;
        }
        Ok(input)
    });
    let job = match parsed {
        Ok(input) => jobs.prepare(caller.tenant.id, input, now).await,
        Err(e) => Err(e.into()),
    };
    let job = job.inspect_err(|_| st.rt.metrics.rejected.inc())?;
    let id = job.id;
    // Subscribed before admission (the job can end before `admit` returns); a duplicate or an
    // error drops the watch, which removes the channel.
    let watch = permit.map(|permit| jobs.subscribe(permit, id));
    let out = SubmitOut::from(jobs.admit(&caller.tenant, vec![job]).await?.remove(0));
    st.rt.metrics.admission_latency.observe(t0.elapsed());
    if out.status == SubmitStatus::Duplicate {
        return Ok((StatusCode::OK, Json(out)).into_response());
    }
    if let (Some(wait), Some(watch)) = (wait, watch) {
        if let (job, true) = jobs
            .wait_final(caller.tenant.id, id, wait, Some(watch))
            .await?
        {
            return Ok((StatusCode::OK, Json(view(&st, &job))).into_response());
        }
    }
    Ok((StatusCode::ACCEPTED, Json(out)).into_response())
}

/// The standard `Idempotency-Key` request header (draft-ietf-httpapi-idempotency-key-header),
/// if sent: the same as the body's `idempotent_key`.
fn idempotency_header(headers: &HeaderMap) -> Result<Option<&str>, FieldError> {
    let mut all = headers.get_all(IDEMPOTENCY_KEY).iter();
    let Some(v) = all.next() else {
        return Ok(None);
    };
    if all.next().is_some() {
        return Err(FieldError::invalid(
            IDEMPOTENCY_KEY,
            "header given more than once",
        ));
    }
    v.to_str()
        .map(Some)
        .map_err(|_| FieldError::invalid(IDEMPOTENCY_KEY, "must be printable ASCII"))
}

/// Name of the request header taken as `idempotent_key`.
const IDEMPOTENCY_KEY: &str = "Idempotency-Key";

/// Submit up to 1,000 jobs in one transaction.
#[utoipa::path(post, path = "/api/v1/jobs/batch", request_body = BatchIn,
    responses((status = 202, description = "{results: [...]} in request order"), (status = 400), (status = 401), (status = 413), (status = 503)),
    security(("bearer" = [])))]
async fn submit_batch(
    State(st): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    // One header cannot key a thousand jobs: refuse it rather than guess (each job may carry
    // its own `idempotent_key`).
    if headers.contains_key(IDEMPOTENCY_KEY) {
        return Err(FieldError::invalid(
            IDEMPOTENCY_KEY,
            "does not apply to a batch; set idempotent_key on each job instead",
        )
        .into());
    }
    let jobs = &st.rt.jobs;
    let bytes = read_limited(&st, body).await?;
    let batch: BatchIn = job::parse_object(&bytes, "a JSON object {\"jobs\": [...]}")?;
    let max = st.rt.cfg.limits.max_batch_jobs;
    if batch.jobs.is_empty() || batch.jobs.len() > max {
        return Err(FieldError::invalid("jobs", format!("must hold 1 to {max} jobs")).into());
    }
    let now = jobs.now_ms();
    let mut results: Vec<Option<serde_json::Value>> = Vec::with_capacity(batch.jobs.len());
    let mut valid = Vec::new();
    for (i, v) in batch.jobs.into_iter().enumerate() {
        let prepared = match job::from_value(v) {
            Ok(input) => jobs.prepare(caller.tenant.id, input, now).await,
            Err(e) => Err(e.into()),
        };
        match prepared {
            Ok(j) => {
                valid.push((i, j));
                results.push(None);
            }
            Err(e) => {
                st.rt.metrics.rejected.inc();
                results.push(Some(ApiError::from(e).body()));
            }
        }
    }
    let (idx, valid): (Vec<usize>, Vec<NewJob>) = valid.into_iter().unzip();
    if !valid.is_empty() {
        for (i, out) in idx
            .into_iter()
            .zip(jobs.admit(&caller.tenant, valid).await?)
        {
            results[i] = Some(serde_json::to_value(SubmitOut::from(out)).unwrap_or_default());
        }
    }
    Ok((StatusCode::ACCEPTED, Json(json!({ "results": results }))).into_response())
}

/// One job with its attempts.
#[utoipa::path(get, path = "/api/v1/jobs/{id}", params(("id" = String, Path)),
    responses((status = 200, body = JobView), (status = 404)), security(("bearer" = [])))]
async fn get_one(
    State(st): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<JobView>, ApiError> {
    let job = st.rt.jobs.get(caller.tenant.id, parse_id(&id)?).await?;
    Ok(Json(view(&st, &job)))
}

/// Jobs, newest first.
#[utoipa::path(get, path = "/api/v1/jobs", params(ListQuery),
    responses((status = 200, body = JobList), (status = 400)), security(("bearer" = [])))]
async fn list(
    State(st): State<AppState>,
    caller: Caller,
    Query(q): Query<ListQuery>,
) -> Result<Json<JobList>, ApiError> {
    let state = q
        .state
        .as_deref()
        .map(|s| JobState::parse(s).ok_or_else(|| FieldError::invalid("state", "not a job state")))
        .transpose()?;
    let limit = q.limit.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        return Err(FieldError::invalid("limit", "must be between 1 and 100").into());
    }
    let before = q
        .cursor
        .as_deref()
        .map(|c| {
            c.parse::<JobId>()
                .map_err(|_| FieldError::invalid("cursor", "not a cursor from a previous page"))
        })
        .transpose()?;
    let filter = JobFilter {
        state,
        lane: q.lane,
        created_after: q.created_after,
        before,
        limit,
    };
    let jobs = st.rt.jobs.list(caller.tenant.id, &filter).await?;
    let next_cursor = (jobs.len() == limit)
        .then(|| jobs.last().map(|j| j.id.to_string()))
        .flatten();
    let jobs = jobs.iter().map(|j| view(&st, j)).collect();
    Ok(Json(JobList { jobs, next_cursor }))
}

/// Long-poll until the job is final.
#[utoipa::path(get, path = "/api/v1/jobs/{id}/wait", params(("id" = String, Path), WaitQuery),
    responses((status = 200, description = "final", body = JobView), (status = 202, description = "still going", body = JobView), (status = 404)),
    security(("bearer" = [])))]
async fn wait(
    State(st): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(q): Query<WaitQuery>,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    let wait = parse_wait(q.timeout.as_deref().or(q.wait.as_deref()), "timeout")?
        .unwrap_or(Duration::from_secs(30));
    let (job, done) = st
        .rt
        .jobs
        .wait_final(caller.tenant.id, id, wait, None)
        .await?;
    let status = if done {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    Ok((status, Json(view(&st, &job))).into_response())
}

fn sse(ev: &JobEvent) -> Event {
    Event::default()
        .event(ev.name())
        .data(ev.data().to_string())
}

/// Server-Sent Events until the job is final; late subscribers first get what they missed.
#[utoipa::path(get, path = "/api/v1/jobs/{id}/events", params(("id" = String, Path)),
    responses((status = 200, description = "text/event-stream: queued, position, dispatching, attempt, then the final state"), (status = 404)),
    security(("bearer" = [])))]
async fn events(
    State(st): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    let jobs = st.rt.jobs.clone();
    let mut job = jobs.get(caller.tenant.id, id).await?;
    // A final job's stream is its backlog alone: nothing to subscribe to.
    let watch = if job.state.is_final() {
        None
    } else {
        let w = jobs.watch(caller.tenant.id, id)?;
        job = jobs.get(caller.tenant.id, id).await?; // the backlog is built after subscribing
        Some(w)
    };
    let (tx, out) = tokio::sync::mpsc::channel::<Result<Event, Infallible>>(64);
    let replay = Replay::of(&job, &st.rt.cfg.lanes.credential_headers);
    tokio::spawn(async move {
        for ev in &replay.backlog {
            if tx.send(Ok(sse(ev))).await.is_err() {
                return;
            }
        }
        let Some(mut w) = watch.filter(|_| !job.state.is_final()) else {
            return;
        };
        let mut tick = tokio::time::interval(Duration::from_secs(2));
        loop {
            tokio::select! {
                ev = w.recv() => match ev {
                    Ok(ev) => {
                        if !replay.is_new(&ev) {
                            continue; // already sent from the backlog
                        }
                        if tx.send(Ok(sse(&ev))).await.is_err() || ev.is_terminal() {
                            return;
                        }
                    }
                    Err(RecvError::Lagged(_)) => continue,
                    Err(RecvError::Closed) => return,
                },
                _ = tick.tick() => {
                    if let Some(position) = jobs.position(id).await {
                        let ev = JobEvent::Position { job_id: id, position };
                        if tx.send(Ok(sse(&ev))).await.is_err() {
                            return;
                        }
                    } else if tx.is_closed() {
                        return;
                    }
                }
            }
        }
    });
    let stream = tokio_stream::wrappers::ReceiverStream::new(out);
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}

/// Cancel a job that is not final.
#[utoipa::path(post, path = "/api/v1/jobs/{id}/cancel", params(("id" = String, Path)),
    responses((status = 200, body = JobView), (status = 404), (status = 409, description = "already final")), security(("bearer" = [])))]
async fn cancel(
    State(st): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<JobView>, ApiError> {
    let job = st.rt.jobs.cancel(caller.tenant.id, parse_id(&id)?).await?;
    Ok(Json(view(&st, &job)))
}

/// Replay a failed or expired job as a new attempt series.
#[utoipa::path(post, path = "/api/v1/jobs/{id}/retry", params(("id" = String, Path)),
    responses((status = 202, body = JobView), (status = 404), (status = 409, description = "not failed or expired")), security(("bearer" = [])))]
async fn retry(
    State(st): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let job = st.rt.jobs.retry(&caller.tenant, parse_id(&id)?).await?;
    Ok((StatusCode::ACCEPTED, Json(view(&st, &job))).into_response())
}

/// Re-send the job's latest outcome to every webhook now, restarting their retry schedules
/// (deliveries keep their ids, so receivers can de-duplicate).
#[utoipa::path(post, path = "/api/v1/jobs/{id}/webhooks/redeliver", params(("id" = String, Path)),
    responses((status = 202, description = "{job_id, deliveries: [delivery ids re-sent]}"), (status = 404),
              (status = 409, description = "the job has no deliveries yet (no webhooks, or not final)")),
    security(("bearer" = [])))]
async fn redeliver(
    State(st): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    let ids = st.rt.jobs.redeliver(caller.tenant.id, id).await?;
    let ids: Vec<String> = ids.iter().map(ToString::to_string).collect();
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "job_id": id.to_string(), "deliveries": ids })),
    )
        .into_response())
}
