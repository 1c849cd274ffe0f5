//! `/api/v1/jobs`: STREAM admission, views, waiting, events, cancel and replay. Each handler
//! parses, calls the runtime's jobs service (`ezt_runtime::jobs`) and maps the answer.

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
use tokio::sync::broadcast::error::RecvError;
use utoipa::{IntoParams, ToSchema};

pub use ezt_runtime::events::{DeliveryView, JobView, QuorumView};

use crate::auth::Caller;
use crate::body::read_limited;
use crate::error::{ApiError, ErrorBody, Path, Query};
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

/// Answer to a submission.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"job_id": "job_01JD6Q3K9V2M8X4T7B5N0R1C2E", "status": "queued", "idempotent_key": "order-42"}))]
pub struct SubmitOut {
    /// The job (or the existing job, for a duplicate).
    pub job_id: String,
    /// `queued` (stored; it will run), `racing` (stored; it lists `regions` in `race` mode, as
    /// the hosted service answered) or `duplicate` (the job with this key is answered). The
    /// job's own progress is its view's `state`.
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
#[schema(example = json!({"jobs": [{"url": "https://api.example.com/a"}, {"url": "https://api.example.com/b", "method": "POST"}]}))]
#[serde(deny_unknown_fields)]
pub struct BatchIn {
    /// 1 to 1,000 jobs (`limits.max_batch_jobs`), each the body of `POST /api/v1/jobs`
    /// (`JobSpecIn`). Each is judged on its own: one that is not a valid job is refused in its
    /// own result entry, and the others are still admitted.
    #[schema(schema_with = batch_jobs)]
    pub jobs: Vec<serde_json::Value>,
}

fn batch_jobs() -> impl Into<utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>> {
    use utoipa::openapi::schema::{AnyOfBuilder, ArrayBuilder, ObjectBuilder, SchemaType};
    use utoipa::openapi::{Ref, RefOr, Schema};
    let job = AnyOfBuilder::new()
        .item(Ref::from_schema_name("JobSpecIn"))
        .item(
            ObjectBuilder::new()
                .schema_type(SchemaType::AnyValue)
                .description(Some("anything else: refused in its result entry")),
        )
        .build();
    ArrayBuilder::new()
        .description(Some(
            "1 to 1,000 jobs (`limits.max_batch_jobs`), each the body of `POST /api/v1/jobs` \
             (`JobSpecIn`). Each is judged on its own: one that is not a valid job is refused in \
             its own result entry, and the others are still admitted.",
        ))
        .items(RefOr::T(Schema::AnyOf(job)))
        .min_items(Some(1))
        .max_items(Some(1000))
        .build()
}

/// One result of a batch: the submit answer, or the error body of that job alone.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum BatchResult {
    /// Admitted (queued, racing or duplicate).
    Admitted(SubmitOut),
    /// Refused; the other jobs are unaffected.
    Refused(ErrorBody),
}

/// Answer to a batch.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"results": [
    {"job_id": "job_01JD6Q3K9V2M8X4T7B5N0R1C2E", "status": "queued", "idempotent_key": "5f1c…"},
    {"error": {"code": "invalid_field", "field": "method", "message": "must be one of GET POST PUT PATCH DELETE HEAD OPTIONS"}}
]}))]
pub struct BatchOut {
    /// One per submitted job, in request order.
    pub results: Vec<BatchResult>,
}

/// A `200` to a submission: the duplicate's submit answer, or (with `?wait`) the final view.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum SubmitOrView {
    /// `status: duplicate`.
    Submitted(SubmitOut),
    /// The job, final within `?wait`.
    Final(Box<JobView>),
}

/// One Server-Sent Event of `/events` (the frame, as a client's SSE parser sees it).
#[derive(Debug, Serialize, ToSchema)]
pub struct SseEvent {
    /// `queued`, `position`, `dispatching`, `attempt`, or the final state.
    #[schema(schema_with = sse_event_names)]
    pub event: String,
    /// The event's JSON: `{job_id, at}`, `{job_id, position}`, `{job_id, attempt}`, an attempt,
    /// or (final) the job view.
    pub data: String,
}

fn sse_event_names() -> impl Into<utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>> {
    utoipa::openapi::schema::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .enum_values(Some([
            "queued",
            "position",
            "dispatching",
            "attempt",
            "succeeded",
            "failed",
            "expired",
            "cancelled",
        ]))
        .build()
}

/// Answer to a redelivery.
#[derive(Debug, Serialize, ToSchema)]
pub struct RedeliverOut {
    /// The job.
    pub job_id: String,
    /// The deliveries sent again (their ids are kept, so receivers can de-duplicate).
    pub deliveries: Vec<String>,
}

/// A page of jobs.
#[derive(Debug, Serialize, ToSchema)]
pub struct JobList {
    /// Newest first.
    pub jobs: Vec<JobView>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// `?wait=` on submit, `?timeout=` on `/wait`.
#[derive(Debug, Deserialize, IntoParams)]
pub struct WaitQuery {
    /// Hold the answer until the job is final or this long passed: integer milliseconds or a
    /// humantime duration (`250ms`, `30s`, `1m`); more than 5 minutes counts as 5 minutes.
    #[param(
        pattern = r"^ *([0-9]{1,9}|([0-9]{1,9}(nanos|nsec|ns|usec|us|millis|msec|ms|seconds|second|secs|sec|s|minutes|minute|mins|min|m|hours|hour|hrs|hr|h|days|day|d|weeks|week|wks|wk|w|months|month|M|years|year|yrs|yr|y) *)+) *$",
        example = "30s"
    )]
    pub wait: Option<String>,
    /// Same as `wait` (the name `/wait` documents; `timeout` wins when both are given).
    #[param(
        pattern = r"^ *([0-9]{1,9}|([0-9]{1,9}(nanos|nsec|ns|usec|us|millis|msec|ms|seconds|second|secs|sec|s|minutes|minute|mins|min|m|hours|hour|hrs|hr|h|days|day|d|weeks|week|wks|wk|w|months|month|M|years|year|yrs|yr|y) *)+) *$",
        example = "30s"
    )]
    pub timeout: Option<String>,
}

/// List filters.
#[derive(Debug, Deserialize, IntoParams)]
pub struct ListQuery {
    /// Only this state.
    #[param(value_type = Option<ezt_core::JobState>)]
    pub state: Option<String>,
    /// Only this lane (as views show it, e.g. `api.example.com:443`).
    pub lane: Option<String>,
    /// Only jobs created after (ms since epoch; 0 to 2^63-1).
    #[param(minimum = 0, format = Int64)]
    pub created_after: Option<i64>,
    /// Page size, 1-100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<usize>,
    /// From a previous page's `next_cursor`.
    #[param(pattern = "^job_[0-7][0-9A-HJKMNP-TV-Za-hjkmnp-tv-z]{25}$")]
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
#[utoipa::path(post, path = "/api/v1/jobs", operation_id = "submitJob", tag = "jobs",
    request_body(content = ezt_core::job::JobSpecIn, description = "one job as a JSON object"),
    params(WaitQuery, ("Idempotency-Key" = Option<String>, Header, description = "taken as idempotent_key (1-256 printable characters); 400 if the body sets a different one")),
    responses((status = 202, description = "queued or racing (or, with ?wait, not final in time); through the hosted envelope (`POST /api/v1/proxy`) this is 201", body = SubmitOut),
              (status = 200, description = "`status: duplicate` (a job with this key exists), or with ?wait the final job view", body = SubmitOrView),
              (status = 400, description = "a bad field, parameter or header; `field` names it (`invalid_field`, `missing_field`, `unknown_field`, `invalid_json`)", body = ErrorBody),
              (status = 401, description = "no valid API key (`unauthorized`)", body = ErrorBody), (status = 408, description = "the body did not arrive within `server.request_body_timeout_ms` (`request_timeout`)", body = ErrorBody), (status = 413, description = "the request body is larger than `limits.max_request_bytes` (1 MiB), or a job body larger than `limits.max_body_bytes` (256 KiB) (`payload_too_large`)", body = ErrorBody),
              (status = 422, description = "well-formed but refused: `ssrf_denied` (target or webhook address), `not_supported` (workflow fields, `execution_mode: fanout`), `too_many_lanes`, `region_unavailable` (`region_policy: strict` outside a lone node's region)", body = ErrorBody),
              (status = 429, description = "the tenant holds too many open streams and long polls (`too_many_waiters`)", body = ErrorBody, headers(("Retry-After" = u64, description = "seconds"))), (status = 503, description = "storage is unavailable; nothing was written (`unavailable`); retry after `Retry-After`", body = ErrorBody, headers(("Retry-After" = u64, description = "seconds")))),
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
        return Ok((StatusCode::OK, Json(SubmitOrView::Submitted(out))).into_response());
    }
    if let (Some(wait), Some(watch)) = (wait, watch) {
        if let (job, true) = jobs
            .wait_final(caller.tenant.id, id, wait, Some(watch))
            .await?
        {
            let view = SubmitOrView::Final(Box::new(view(&st, &job)));
            return Ok((StatusCode::OK, Json(view)).into_response());
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
#[utoipa::path(post, path = "/api/v1/jobs/batch", operation_id = "submitJobs", tag = "jobs",
    request_body = BatchIn,
    responses((status = 202, description = "one result per job, in request order; valid jobs are stored in one transaction", body = BatchOut),
              (status = 400, description = "not a `{{jobs: [...]}}` object, 0 or more than `limits.max_batch_jobs` jobs, or an `Idempotency-Key` header (set `idempotent_key` per job)", body = ErrorBody),
              (status = 401, description = "no valid API key (`unauthorized`)", body = ErrorBody), (status = 408, description = "the body did not arrive within `server.request_body_timeout_ms` (`request_timeout`)", body = ErrorBody), (status = 413, description = "the request body is larger than `limits.max_request_bytes` (1 MiB), or a job body larger than `limits.max_body_bytes` (256 KiB) (`payload_too_large`)", body = ErrorBody),
              (status = 422, description = "the valid jobs would open too many lanes for the tenant (`too_many_lanes`)", body = ErrorBody),
              (status = 503, description = "storage is unavailable; nothing was written (`unavailable`); retry after `Retry-After`", body = ErrorBody, headers(("Retry-After" = u64, description = "seconds")))),
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
    let mut results: Vec<Option<BatchResult>> = Vec::with_capacity(batch.jobs.len());
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
                results.push(Some(BatchResult::Refused(ApiError::from(e).error_body())));
            }
        }
    }
    let (idx, valid): (Vec<usize>, Vec<NewJob>) = valid.into_iter().unzip();
    if !valid.is_empty() {
        for (i, out) in idx
            .into_iter()
            .zip(jobs.admit(&caller.tenant, valid).await?)
        {
            results[i] = Some(BatchResult::Admitted(SubmitOut::from(out)));
        }
    }
    // Every slot was filled: refused jobs above, admitted ones from `admit`, in order.
    let results = results.into_iter().flatten().collect();
    Ok((StatusCode::ACCEPTED, Json(BatchOut { results })).into_response())
}

/// One job with its attempts.
#[utoipa::path(get, path = "/api/v1/jobs/{id}", operation_id = "getJob", tag = "jobs", params(("id" = String, Path, description = "a job id from a submit answer", pattern = "^job_[0-7][0-9A-HJKMNP-TV-Za-hjkmnp-tv-z]{25}$", example = "job_01JD6Q3K9V2M8X4T7B5N0R1C2E")),
    responses((status = 200, description = "the job with its attempts and deliveries", body = JobView), (status = 400, description = "the path is not valid UTF-8 (`invalid_field`, field `path`)", body = ErrorBody), (status = 401, description = "no valid API key (`unauthorized`)", body = ErrorBody), (status = 404, description = "no such job for this tenant (`not_found`)", body = ErrorBody), (status = 503, description = "storage is unavailable; nothing was written (`unavailable`); retry after `Retry-After`", body = ErrorBody, headers(("Retry-After" = u64, description = "seconds")))),
    security(("bearer" = [])))]
async fn get_one(
    State(st): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<JobView>, ApiError> {
    let job = st.rt.jobs.get(caller.tenant.id, parse_id(&id)?).await?;
    Ok(Json(view(&st, &job)))
}

/// Jobs, newest first.
#[utoipa::path(get, path = "/api/v1/jobs", operation_id = "listJobs", tag = "jobs", params(ListQuery),
    responses((status = 200, description = "a page of jobs, newest first (attempts and deliveries left out)", body = JobList),
              (status = 400, description = "a bad query parameter; `field` names it", body = ErrorBody), (status = 401, description = "no valid API key (`unauthorized`)", body = ErrorBody), (status = 503, description = "storage is unavailable; nothing was written (`unavailable`); retry after `Retry-After`", body = ErrorBody, headers(("Retry-After" = u64, description = "seconds")))),
    security(("bearer" = [])))]
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
    let created_after = q
        .created_after
        .map(|t| {
            u64::try_from(t).map_err(|_| FieldError::invalid("created_after", "must be 0 or more"))
        })
        .transpose()?;
    let filter = JobFilter {
        state,
        lane: q.lane,
        created_after,
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
#[utoipa::path(get, path = "/api/v1/jobs/{id}/wait", operation_id = "waitJob", tag = "jobs", params(("id" = String, Path, description = "a job id from a submit answer", pattern = "^job_[0-7][0-9A-HJKMNP-TV-Za-hjkmnp-tv-z]{25}$", example = "job_01JD6Q3K9V2M8X4T7B5N0R1C2E"), WaitQuery),
    responses((status = 200, description = "final", body = JobView), (status = 202, description = "still going after the wait (default 30s)", body = JobView),
              (status = 400, description = "a bad path or `timeout`", body = ErrorBody), (status = 401, description = "no valid API key (`unauthorized`)", body = ErrorBody), (status = 404, description = "no such job for this tenant (`not_found`)", body = ErrorBody), (status = 429, description = "the tenant holds too many open streams and long polls (`too_many_waiters`)", body = ErrorBody, headers(("Retry-After" = u64, description = "seconds"))), (status = 503, description = "storage is unavailable; nothing was written (`unavailable`); retry after `Retry-After`", body = ErrorBody, headers(("Retry-After" = u64, description = "seconds")))),
    security(("bearer" = [])))]
async fn wait(
    State(st): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(q): Query<WaitQuery>,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    // Both spellings are checked even when both are given (`timeout` wins): a bad value is a
    // 400 naming it, never silently ignored (found by the OpenAPI fuzz).
    let timeout = parse_wait(q.timeout.as_deref(), "timeout")?;
    let wait = timeout
        .or(parse_wait(q.wait.as_deref(), "wait")?)
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
#[utoipa::path(get, path = "/api/v1/jobs/{id}/events", operation_id = "streamJobEvents", tag = "jobs", params(("id" = String, Path, description = "a job id from a submit answer", pattern = "^job_[0-7][0-9A-HJKMNP-TV-Za-hjkmnp-tv-z]{25}$", example = "job_01JD6Q3K9V2M8X4T7B5N0R1C2E")),
    responses((status = 200, description = "Server-Sent Events until the job is final: `queued`, `position`, `dispatching`, `attempt`, then the final state (`succeeded`, `failed`, `expired`, `cancelled`) whose data is the job view; a late subscriber first gets what it missed", content_type = "text/event-stream", body = SseEvent),
              (status = 400, description = "the path is not valid UTF-8 (`invalid_field`, field `path`)", body = ErrorBody), (status = 401, description = "no valid API key (`unauthorized`)", body = ErrorBody), (status = 404, description = "no such job for this tenant (`not_found`)", body = ErrorBody), (status = 429, description = "the tenant holds too many open streams and long polls (`too_many_waiters`)", body = ErrorBody, headers(("Retry-After" = u64, description = "seconds"))), (status = 503, description = "storage is unavailable; nothing was written (`unavailable`); retry after `Retry-After`", body = ErrorBody, headers(("Retry-After" = u64, description = "seconds")))),
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
#[utoipa::path(post, path = "/api/v1/jobs/{id}/cancel", operation_id = "cancelJob", tag = "jobs", params(("id" = String, Path, description = "a job id from a submit answer", pattern = "^job_[0-7][0-9A-HJKMNP-TV-Za-hjkmnp-tv-z]{25}$", example = "job_01JD6Q3K9V2M8X4T7B5N0R1C2E")),
    responses((status = 200, description = "cancelled", body = JobView), (status = 400, description = "the path is not valid UTF-8 (`invalid_field`, field `path`)", body = ErrorBody), (status = 401, description = "no valid API key (`unauthorized`)", body = ErrorBody), (status = 404, description = "no such job for this tenant (`not_found`)", body = ErrorBody),
              (status = 409, description = "the job is already final (`conflict`)", body = ErrorBody), (status = 503, description = "storage is unavailable; nothing was written (`unavailable`); retry after `Retry-After`", body = ErrorBody, headers(("Retry-After" = u64, description = "seconds")))),
    security(("bearer" = [])))]
async fn cancel(
    State(st): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<JobView>, ApiError> {
    let job = st.rt.jobs.cancel(caller.tenant.id, parse_id(&id)?).await?;
    Ok(Json(view(&st, &job)))
}

/// Replay a failed or expired job as a new attempt series.
#[utoipa::path(post, path = "/api/v1/jobs/{id}/retry", operation_id = "retryJob", tag = "jobs", params(("id" = String, Path, description = "a job id from a submit answer", pattern = "^job_[0-7][0-9A-HJKMNP-TV-Za-hjkmnp-tv-z]{25}$", example = "job_01JD6Q3K9V2M8X4T7B5N0R1C2E")),
    responses((status = 202, description = "queued again as a new attempt series", body = JobView), (status = 400, description = "the path is not valid UTF-8 (`invalid_field`, field `path`)", body = ErrorBody), (status = 401, description = "no valid API key (`unauthorized`)", body = ErrorBody), (status = 404, description = "no such job for this tenant (`not_found`)", body = ErrorBody),
              (status = 409, description = "only failed or expired jobs can be retried (`conflict`)", body = ErrorBody),
              (status = 422, description = "the tenant has work waiting in too many lanes (`too_many_lanes`)", body = ErrorBody), (status = 503, description = "storage is unavailable; nothing was written (`unavailable`); retry after `Retry-After`", body = ErrorBody, headers(("Retry-After" = u64, description = "seconds")))),
    security(("bearer" = [])))]
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
#[utoipa::path(post, path = "/api/v1/jobs/{id}/webhooks/redeliver", operation_id = "redeliverJobWebhooks", tag = "jobs", params(("id" = String, Path, description = "a job id from a submit answer", pattern = "^job_[0-7][0-9A-HJKMNP-TV-Za-hjkmnp-tv-z]{25}$", example = "job_01JD6Q3K9V2M8X4T7B5N0R1C2E")),
    responses((status = 202, description = "the deliveries sent again now", body = RedeliverOut), (status = 400, description = "the path is not valid UTF-8 (`invalid_field`, field `path`)", body = ErrorBody), (status = 401, description = "no valid API key (`unauthorized`)", body = ErrorBody), (status = 404, description = "no such job for this tenant (`not_found`)", body = ErrorBody),
              (status = 409, description = "the job has no deliveries yet: no webhooks, or not final (`conflict`)", body = ErrorBody), (status = 503, description = "storage is unavailable; nothing was written (`unavailable`); retry after `Retry-After`", body = ErrorBody, headers(("Retry-After" = u64, description = "seconds")))),
    security(("bearer" = [])))]
async fn redeliver(
    State(st): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    let ids = st.rt.jobs.redeliver(caller.tenant.id, id).await?;
    let out = RedeliverOut {
        job_id: id.to_string(),
        deliveries: ids.iter().map(ToString::to_string).collect(),
    };
    Ok((StatusCode::ACCEPTED, Json(out)).into_response())
}
