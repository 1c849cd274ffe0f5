//! `/api/v1/jobs`: STREAM admission, views, waiting, events, cancel and replay.

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
use ezt_core::job::{self, JobSpecIn};
use ezt_core::ssrf::TargetHost;
use ezt_core::{FieldError, JobId, JobState, TenantId};
use ezt_store::{Admission, Attempt, CancelOutcome, JobFilter, JobRecord, NewJob, ReplayOutcome};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::broadcast::error::RecvError;
use utoipa::{IntoParams, ToSchema};

use crate::events::{JobEvent, Subscription, WaiterPermit};
use crate::http::auth::Caller;
use crate::http::body::read_limited;
use crate::http::error::{ApiError, Path, Query};
use crate::scheduler::{now_ms, Enqueue};
use crate::AppState;

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
    pub status: String,
    /// The dedup key in force.
    pub idempotent_key: String,
}

/// Batch body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchIn {
    /// Up to 1,000 job specs.
    pub jobs: Vec<serde_json::Value>,
}

/// A job as shown to its owner.
#[derive(Debug, Serialize, ToSchema)]
pub struct JobView {
    /// Id.
    pub job_id: String,
    /// queued scheduled running succeeded failed expired cancelled.
    pub state: String,
    /// The lane it runs in.
    pub lane: String,
    /// Dedup key.
    pub idempotent_key: String,
    /// The spec, credentials redacted.
    #[schema(value_type = Object)]
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
    #[schema(value_type = Vec<Object>)]
    pub attempts: Vec<Attempt>,
    /// Final (or last) response.
    #[schema(value_type = Option<Object>)]
    pub response: Option<ezt_store::Response>,
    /// Why it failed.
    #[schema(value_type = Option<Object>)]
    pub error: Option<ezt_store::JobError>,
    /// Deliveries of the latest outcome to each webhook, in the job's webhook order.
    pub webhooks: Vec<DeliveryView>,
    /// Whether enough voting webhooks acknowledged (absent for jobs without webhooks).
    pub webhook_quorum: Option<QuorumView>,
    /// Parent job in a workflow.
    pub parent_id: Option<String>,
    /// Child jobs.
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
            parent_id: None,
            children: Vec::new(),
        }
    }
}

/// One delivery of a job's outcome to one webhook.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryView {
    /// Sent as `X-EZThrottle-Delivery-Id` and `webhook-id`; the same on every retry.
    pub delivery_id: String,
    /// Receiver.
    pub url: String,
    /// Counts towards the quorum.
    pub has_quorum_vote: bool,
    /// `pending`, `delivered` or `failed`.
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
    #[schema(value_type = Vec<Object>)]
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
#[derive(Debug, Serialize, ToSchema)]
pub struct QuorumView {
    /// Voting webhooks that must acknowledge.
    pub required: u32,
    /// Voting webhooks that have acknowledged.
    pub acknowledged: u32,
    /// `pending`, `met` or `failed`.
    #[schema(value_type = String)]
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

/// Validates one spec and builds the job to store.
async fn prepare(
    st: &AppState,
    tenant: TenantId,
    input: JobSpecIn,
    now: u64,
) -> Result<NewJob, ApiError> {
    let cx = job::Context {
        limits: &st.cfg.limits.job,
        ssrf: &st.ssrf,
        local_region: &st.cfg.region,
        now_ms: now,
    };
    let v = input.validate(&cx)?;
    // Admission check of the resolved addresses; the connect-time check repeats it.
    let hooks = v.webhook_targets.iter().enumerate();
    for (field, target) in std::iter::once(("url".to_string(), &v.target))
        .chain(hooks.map(|(i, t)| (format!("webhooks[{i}].url"), t)))
    {
        if let TargetHost::Domain(host) = &target.host {
            if let Err(e) = st.resolver.resolve_checked(host, target.port).await {
                if let Some(b) = e.downcast_ref::<crate::executor::SsrfBlocked>() {
                    return Err(FieldError::ssrf(field, b.to_string()).into());
                }
            }
        }
    }
    let lane = ezt_core::lane::lane_for(
        &v.target.authority(),
        &v.spec.headers,
        &st.cfg.lanes.credential_headers,
        &st.fingerprint_key,
    );
    // The lane's credential fingerprint is part of the default key: two upstream credentials
    // never share a job (nor see each other's response).
    let idempotent_key = v.idempotent_key.clone().unwrap_or_else(|| {
        ezt_core::idempotency::default_key(
            tenant,
            ezt_core::idempotency::credential_fingerprint(&lane),
            &v.spec.method,
            &v.spec.url,
            v.spec.body.as_deref(),
        )
    });
    let run_at = v.spec.retry_at.unwrap_or(now).max(now);
    Ok(NewJob {
        id: JobId::new(now, rand::random()),
        tenant_id: tenant,
        lane,
        deadline_at: now.saturating_add(v.spec.timeout_ms),
        spec: v.spec,
        idempotent_key,
        created_at: now,
        run_at,
    })
}

fn pending(j: &NewJob) -> ezt_store::PendingJob {
    ezt_store::PendingJob {
        id: j.id,
        tenant_id: j.tenant_id,
        lane: j.lane.clone(),
        run_at: j.run_at,
        deadline_at: j.deadline_at,
    }
}

/// Refuses work that would give the tenant more lanes with waiting work than
/// `lanes.max_lanes_per_tenant` (each upstream credential or host is a lane, and lanes cost
/// memory and metrics): 422 `too_many_lanes`, nothing stored.
fn check_lane_cap(st: &AppState, caller: &Caller, jobs: &[NewJob]) -> Result<(), ApiError> {
    st.scheduler
        .admit_lanes(caller.tenant.id, jobs.iter().map(|j| &j.lane))
        .map_err(|e| {
            st.metrics.rejected.inc();
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "too_many_lanes",
                e.to_string(),
            )
            .with_field("headers")
        })
}

/// Stores jobs durably (one transaction, group-committed) and hands the new ones to the scheduler.
async fn admit(
    st: &AppState,
    caller: &Caller,
    mut jobs: Vec<NewJob>,
) -> Result<Vec<SubmitOut>, ApiError> {
    check_lane_cap(st, caller, &jobs)?;
    // After `prepare` fingerprinted the credentials for the lane and the default key.
    for j in &mut jobs {
        let sealer = st.signing_keys.sealer();
        crate::credentials::seal_headers(sealer, j.tenant_id, &st.cfg, &mut j.spec.headers);
    }
    let summaries: Vec<(ezt_store::PendingJob, String)> = jobs
        .iter()
        .map(|j| (pending(j), j.idempotent_key.clone()))
        .collect();
    let outcomes = st.store.insert_jobs(jobs, st.cfg.dedup_window_ms).await?;
    let weight = st.cfg.tiers.weight(caller.tenant.tier);
    let mut fresh = Vec::new();
    let mut out = Vec::with_capacity(summaries.len());
    for ((job, idempotent_key), o) in summaries.into_iter().zip(outcomes) {
        match o {
            Admission::Inserted => {
                tracing::debug!(job_id = %job.id, lane = %job.lane, "job admitted");
                out.push(SubmitOut {
                    job_id: job.id.to_string(),
                    status: "queued".into(),
                    idempotent_key,
                });
                fresh.push(Enqueue { job, weight });
            }
            Admission::Duplicate { existing } => {
                st.metrics.duplicates.inc();
                out.push(SubmitOut {
                    job_id: existing.to_string(),
                    status: "duplicate".into(),
                    idempotent_key,
                });
            }
        }
    }
    st.metrics.admitted.add(fresh.len() as u64);
    st.scheduler.enqueue(fresh);
    Ok(out)
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
    let t0 = std::time::Instant::now();
    let wait = parse_wait(q.wait.as_deref(), "wait")?;
    // The waiter slot first: a 429 comes before anything is read or stored.
    let permit = wait
        .map(|_| admit_waiter(&st, caller.tenant.id))
        .transpose()?;
    let bytes = read_limited(&st, body).await?;
    let now = now_ms();
    let parsed = job::parse(&bytes).and_then(|mut input| {
        if let Some(key) = idempotency_header(&headers)? {
            input.take_header_key(key)?;
        }
        Ok(input)
    });
    let job = match parsed {
        Ok(input) => prepare(&st, caller.tenant.id, input, now).await,
        Err(e) => Err(e.into()),
    };
    let job = job.inspect_err(|_| st.metrics.rejected.inc())?;
    let id = job.id;
    // Subscribed before admission (the job can end before `admit` returns); a duplicate or an
    // error drops the watch, which removes the channel.
    let watch = permit.map(|permit| Watch {
        sub: st.events.subscribe(id),
        _permit: permit,
    });
    let out = admit(&st, &caller, vec![job]).await?.remove(0);
    st.metrics.admission_latency.observe(t0.elapsed());
    if out.status == "duplicate" {
        return Ok((StatusCode::OK, Json(out)).into_response());
    }
    if let (Some(wait), Some(watch)) = (wait, watch) {
        if let (job, true) = wait_final(&st, caller.tenant.id, id, wait, Some(watch)).await? {
            return Ok((
                StatusCode::OK,
                Json(JobView::from_record(&job, &st.cfg.lanes.credential_headers)),
            )
                .into_response());
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
    let bytes = read_limited(&st, body).await?;
    let batch: BatchIn = job::parse_object(&bytes, "a JSON object {\"jobs\": [...]}")?;
    let max = st.cfg.limits.max_batch_jobs;
    if batch.jobs.is_empty() || batch.jobs.len() > max {
        return Err(FieldError::invalid("jobs", format!("must hold 1 to {max} jobs")).into());
    }
    let now = now_ms();
    let mut results: Vec<Option<serde_json::Value>> = Vec::with_capacity(batch.jobs.len());
    let mut valid = Vec::new();
    for (i, v) in batch.jobs.into_iter().enumerate() {
        let prepared = match job::from_value(v) {
            Ok(input) => prepare(&st, caller.tenant.id, input, now).await,
            Err(e) => Err(e.into()),
        };
        match prepared {
            Ok(j) => {
                valid.push((i, j));
                results.push(None);
            }
            Err(e) => {
                st.metrics.rejected.inc();
                results.push(Some(e.body()));
            }
        }
    }
    let (idx, jobs): (Vec<usize>, Vec<NewJob>) = valid.into_iter().unzip();
    if !jobs.is_empty() {
        for (i, out) in idx.into_iter().zip(admit(&st, &caller, jobs).await?) {
            results[i] = Some(serde_json::to_value(out).unwrap_or_default());
        }
    }
    Ok((StatusCode::ACCEPTED, Json(json!({ "results": results }))).into_response())
}

async fn load(st: &AppState, tenant: TenantId, id: JobId) -> Result<JobRecord, ApiError> {
    st.store
        .get_job(Some(tenant), id)
        .await?
        .ok_or_else(|| ApiError::not_found("job"))
}

/// One job with its attempts.
#[utoipa::path(get, path = "/api/v1/jobs/{id}", params(("id" = String, Path)),
    responses((status = 200, body = JobView), (status = 404)), security(("bearer" = [])))]
async fn get_one(
    State(st): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<JobView>, ApiError> {
    let job = load(&st, caller.tenant.id, parse_id(&id)?).await?;
    Ok(Json(JobView::from_record(
        &job,
        &st.cfg.lanes.credential_headers,
    )))
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
    let jobs = st.store.list_jobs(Some(caller.tenant.id), &filter).await?;
    let next_cursor = (jobs.len() == limit)
        .then(|| jobs.last().map(|j| j.id.to_string()))
        .flatten();
    let jobs = jobs
        .iter()
        .map(|j| JobView::from_record(j, &st.cfg.lanes.credential_headers))
        .collect();
    Ok(Json(JobList { jobs, next_cursor }))
}

/// An open long poll or event stream: the tenant's waiter slot and the job's subscription,
/// both given back when it is dropped.
struct Watch {
    sub: Subscription,
    _permit: WaiterPermit,
}

/// Takes one of the tenant's waiter slots, or answers 429.
fn admit_waiter(st: &AppState, tenant: TenantId) -> Result<WaiterPermit, ApiError> {
    st.events
        .admit_waiter(tenant, st.cfg.server.max_waiters_per_tenant)
        .map_err(|e| {
            ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_waiters",
                format!(
                    "this tenant already has {} open event streams and long polls; close one or retry later",
                    e.limit
                ),
            )
            .with_retry_after(1)
        })
}

/// Watches a job the caller owns and that was not final when read. Re-read the job after
/// this: a final event sent between that read and the subscription is not delivered.
fn watch_job(st: &AppState, tenant: TenantId, id: JobId) -> Result<Watch, ApiError> {
    let permit = admit_waiter(st, tenant)?;
    Ok(Watch {
        sub: st.events.subscribe(id),
        _permit: permit,
    })
}

/// Waits until the job is final or `wait` passes; returns the job and whether it is final.
/// Unknown, foreign and final jobs answer without subscribing; `watch` is a subscription made
/// before the job was stored (submit `?wait=`).
async fn wait_final(
    st: &AppState,
    tenant: TenantId,
    id: JobId,
    wait: Duration,
    watch: Option<Watch>,
) -> Result<(JobRecord, bool), ApiError> {
    let deadline = tokio::time::Instant::now() + wait;
    let job = load(st, tenant, id).await?;
    if job.state.is_final() {
        return Ok((job, true));
    }
    let mut w = match watch {
        Some(w) => w,
        None => {
            let w = watch_job(st, tenant, id)?;
            let job = load(st, tenant, id).await?;
            if job.state.is_final() {
                return Ok((job, true));
            }
            w
        }
    };
    loop {
        match tokio::time::timeout_at(deadline, w.sub.recv()).await {
            Err(_) => break,
            Ok(Ok(ev)) if !ev.terminal => continue,
            Ok(Ok(_)) | Ok(Err(RecvError::Closed)) => break,
            Ok(Err(RecvError::Lagged(_))) => {
                let job = load(st, tenant, id).await?;
                if job.state.is_final() {
                    return Ok((job, true));
                }
            }
        }
    }
    drop(w);
    let job = load(st, tenant, id).await?;
    let done = job.state.is_final();
    Ok((job, done))
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
    let creds = &st.cfg.lanes.credential_headers;
    let (job, done) = wait_final(&st, caller.tenant.id, id, wait, None).await?;
    let status = if done {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    Ok((status, Json(JobView::from_record(&job, creds))).into_response())
}

fn attempt_events(a: &Attempt, job: JobId) -> [JobEvent; 2] {
    [
        JobEvent {
            event: "dispatching".into(),
            data: json!({"job_id": job, "attempt": a.n}),
            terminal: false,
        },
        JobEvent {
            event: "attempt".into(),
            data: serde_json::to_value(a).unwrap_or_default(),
            terminal: false,
        },
    ]
}

fn sse(ev: &JobEvent) -> Event {
    Event::default()
        .event(ev.event.clone())
        .data(ev.data.to_string())
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
    let mut job = load(&st, caller.tenant.id, id).await?;
    // A final job's stream is its backlog alone: nothing to subscribe to.
    let watch = if job.state.is_final() {
        None
    } else {
        let w = watch_job(&st, caller.tenant.id, id)?;
        job = load(&st, caller.tenant.id, id).await?; // the backlog is built after subscribing
        Some(w)
    };
    let (tx, out) = tokio::sync::mpsc::channel::<Result<Event, Infallible>>(64);
    let creds = st.cfg.lanes.credential_headers.clone();
    tokio::spawn(async move {
        let mut backlog = vec![JobEvent {
            event: "queued".into(),
            data: json!({"job_id": id, "at": job.created_at}),
            terminal: false,
        }];
        for a in &job.attempts {
            backlog.extend(attempt_events(a, id));
        }
        let seen = job.attempts.last().map_or(0, |a| a.n);
        // An attempt in flight now was dispatched before we subscribed: tell it from here.
        let dispatched = if job.state == JobState::Running {
            backlog.push(JobEvent {
                event: "dispatching".into(),
                data: json!({"job_id": id, "attempt": job.attempt_count}),
                terminal: false,
            });
            job.attempt_count
        } else {
            seen
        };
        if job.state.is_final() {
            let view = JobView::from_record(&job, &creds);
            backlog.push(JobEvent {
                event: job.state.as_str().into(),
                data: serde_json::to_value(view).unwrap_or_default(),
                terminal: true,
            });
        }
        for ev in &backlog {
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
                ev = w.sub.recv() => match ev {
                    Ok(ev) => {
                        let n = ev.data.get("attempt").or_else(|| ev.data.get("n")).and_then(|v| v.as_u64()).unwrap_or(u64::MAX);
                        let already = match ev.event.as_str() {
                            "attempt" => n <= u64::from(seen),
                            "dispatching" => n <= u64::from(dispatched),
                            _ => false,
                        };
                        if already {
                            continue; // already sent from the backlog
                        }
                        if tx.send(Ok(sse(&ev))).await.is_err() || ev.terminal {
                            return;
                        }
                    }
                    Err(RecvError::Lagged(_)) => continue,
                    Err(RecvError::Closed) => return,
                },
                _ = tick.tick() => {
                    if let Some(pos) = st.scheduler.position(id).await {
                        let ev = JobEvent { event: "position".into(), data: json!({"job_id": id, "position": pos}), terminal: false };
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
    let id = parse_id(&id)?;
    match st
        .store
        .cancel(Some(caller.tenant.id), id, now_ms(), &st.cfg.region)
        .await?
    {
        CancelOutcome::NotFound => Err(ApiError::not_found("job")),
        CancelOutcome::AlreadyFinal(s) => {
            Err(ApiError::conflict(format!("job is already {}", s.as_str())))
        }
        CancelOutcome::Cancelled(deliveries) => {
            tracing::info!(job_id = %id, "job cancelled");
            st.scheduler.remove(id);
            crate::webhooks::enqueue(&st.deliveries, deliveries);
            st.executor.publish_final(id).await;
            let job = load(&st, caller.tenant.id, id).await?;
            Ok(Json(JobView::from_record(
                &job,
                &st.cfg.lanes.credential_headers,
            )))
        }
    }
}

/// Replay a failed or expired job as a new attempt series.
#[utoipa::path(post, path = "/api/v1/jobs/{id}/retry", params(("id" = String, Path)),
    responses((status = 202, body = JobView), (status = 404), (status = 409, description = "not failed or expired")), security(("bearer" = [])))]
async fn retry(
    State(st): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    let job = load(&st, caller.tenant.id, id).await?;
    let now = now_ms();
    match st
        .store
        .replay(
            Some(caller.tenant.id),
            id,
            now,
            now.saturating_add(job.spec.timeout_ms),
        )
        .await?
    {
        ReplayOutcome::NotFound => Err(ApiError::not_found("job")),
        ReplayOutcome::NotReplayable(s) => Err(ApiError::conflict(format!(
            "only failed or expired jobs can be retried; this one is {}",
            s.as_str()
        ))),
        ReplayOutcome::Requeued(p) => {
            tracing::info!(job_id = %id, "job replayed");
            st.scheduler.enqueue(vec![Enqueue {
                job: p,
                weight: st.cfg.tiers.weight(caller.tenant.tier),
            }]);
            let job = load(&st, caller.tenant.id, id).await?;
            Ok((
                StatusCode::ACCEPTED,
                Json(JobView::from_record(&job, &st.cfg.lanes.credential_headers)),
            )
                .into_response())
        }
    }
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
    match st
        .store
        .redeliver(Some(caller.tenant.id), id, now_ms())
        .await?
    {
        ezt_store::RedeliverOutcome::NotFound => Err(ApiError::not_found("job")),
        ezt_store::RedeliverOutcome::NoDeliveries => Err(ApiError::conflict(
            "the job has no webhook deliveries yet: it has no webhooks or is not final",
        )),
        ezt_store::RedeliverOutcome::Requeued(pending) => {
            tracing::info!(job_id = %id, deliveries = pending.len(), "redelivery requested");
            let ids: Vec<String> = pending.iter().map(|p| p.id.to_string()).collect();
            crate::webhooks::enqueue(&st.deliveries, pending);
            Ok((
                StatusCode::ACCEPTED,
                Json(json!({ "job_id": id.to_string(), "deliveries": ids })),
            )
                .into_response())
        }
    }
}
