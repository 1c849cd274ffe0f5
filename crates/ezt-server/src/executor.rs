//! The executor: makes one attempt of one job and records what happened.
//!
//! Every attempt runs under a lease whose fencing token must match when the result is written,
//! carries `Idempotency-Key: <job key>`, never follows redirects, and connects only to addresses
//! that pass the SSRF rules at connect time (the resolver filters what it returns, so a name
//! that rebinds to a private address after admission is still refused).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ezt_core::lane::LaneKey;
use ezt_core::ratelimit_headers::{self, LimitChange};
use ezt_core::retry::{plan_next, Outcome, Plan, Verdict};
use ezt_core::ssrf::{DenyClass, SsrfError, SsrfPolicy};
use ezt_core::{JobId, JobState, TenantId};
use ezt_store::{Attempt, AttemptDone, JobError, Lease, LeasedJob, Next, Response, Store};
use serde_json::json;
use tokio::time::Instant;

use crate::events::{Events, JobEvent};
use crate::metrics::Metrics;
use crate::scheduler::{now_ms, AttemptEnd, GateTicket, Ran, Runner};
use crate::webhooks::Deliveries;

/// A name that resolved only to refused addresses.
#[derive(Debug, thiserror::Error)]
#[error("ssrf_denied: {host} resolves only to refused addresses ({addr} is {class})")]
pub(crate) struct SsrfBlocked {
    host: String,
    addr: std::net::IpAddr,
    class: DenyClass,
}

/// DNS resolution for outbound calls that drops refused addresses (pinning: the client connects
/// to what this returns, so there is no second lookup to rebind).
#[derive(Debug, Clone)]
pub struct SsrfResolver {
    policy: SsrfPolicy,
}

impl SsrfResolver {
    /// A resolver enforcing `policy`.
    pub fn new(policy: SsrfPolicy) -> Self {
        Self { policy }
    }

    /// Resolves and filters; an error names the refused class when nothing is left.
    pub async fn resolve_checked(
        &self,
        host: &str,
        port: u16,
    ) -> Result<Vec<SocketAddr>, Box<dyn std::error::Error + Send + Sync>> {
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port)).await?.collect();
        let allowed = self
            .policy
            .filter_resolved(addrs.iter().map(SocketAddr::ip))
            .map_err(|e| match e {
                SsrfError::Denied { addr, class } => Box::new(SsrfBlocked {
                    host: host.into(),
                    addr,
                    class,
                }) as Box<_>,
                other => Box::new(other) as Box<dyn std::error::Error + Send + Sync>,
            })?;
        if allowed.is_empty() {
            return Err(format!("{host} did not resolve").into());
        }
        Ok(allowed
            .into_iter()
            .map(|ip| SocketAddr::new(ip, port))
            .collect())
    }
}

impl reqwest::dns::Resolve for SsrfResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let this = self.clone();
        Box::pin(async move {
            let addrs = this.resolve_checked(name.as_str(), 0).await?;
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// What the call produced.
struct CallResult {
    outcome: Outcome,
    response: Option<Response>,
    error: Option<String>,
    ssrf: bool,
}

/// Runs attempts.
pub struct Executor {
    store: Arc<dyn Store>,
    client: reqwest::Client,
    cfg: crate::config::ExecutorConfig,
    region: String,
    credential_headers: Vec<String>,
    policy: SsrfPolicy,
    events: Arc<Events>,
    metrics: Arc<Metrics>,
    deliveries: Deliveries,
    /// Opens the credential headers sealed at rest (see `credentials`).
    sealer: Arc<crate::sealing::Sealer>,
}

impl std::fmt::Debug for Executor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Executor")
            .field("region", &self.region)
            .finish_non_exhaustive()
    }
}

impl Executor {
    /// Builds the shared HTTP client (rustls, pooled, HTTP/2 where offered, no redirects).
    pub fn new(
        store: Arc<dyn Store>,
        config: &crate::Config,
        policy: SsrfPolicy,
        events: Arc<Events>,
        metrics: Arc<Metrics>,
        deliveries: Deliveries,
        sealer: Arc<crate::sealing::Sealer>,
    ) -> Result<Self, reqwest::Error> {
        let cfg = config.executor.clone();
        let client = outbound_client(
            cfg.connect_timeout_ms,
            SsrfResolver::new(policy.clone()),
            concat!("ezthrottle/", env!("CARGO_PKG_VERSION")),
            config.outbound.proxy.as_deref(),
        )?;
        Ok(Self {
            store,
            client,
            cfg,
            region: config.region.clone(),
            credential_headers: config.lanes.credential_headers.clone(),
            policy,
            events,
            metrics,
            deliveries,
            sealer,
        })
    }

    /// Ends a job whose deadline passed while it waited. The scheduler has already dropped it,
    /// so this keeps trying while the store is unavailable: giving up would leave the job
    /// queued on disk but unknown to the scheduler until the next restart.
    pub async fn expire(&self, id: JobId) {
        let expired =
            until_stored("expiry", || self.store.expire(id, now_ms(), &self.region)).await;
        if let Some(deliveries) = expired {
            tracing::info!(job_id = %id, "job expired while waiting");
            crate::webhooks::enqueue(&self.deliveries, deliveries);
            self.publish_final(id).await;
        }
    }

    /// Sends the final event with the job's view to watchers (reading the job only if anyone
    /// watches it).
    pub async fn publish_final(&self, id: JobId) {
        if !self.events.is_watched(id) {
            return;
        }
        if let Ok(Some(job)) = self.store.get_job(None, id).await {
            self.events.publish(id, || JobEvent {
                event: job.state.as_str().into(),
                data: serde_json::to_value(crate::http::v1::jobs::JobView::from_record(
                    &job,
                    &self.credential_headers,
                ))
                .unwrap_or_default(),
                terminal: true,
            });
        }
    }

    /// Makes one attempt of `id` in `lane`.
    // Debug level: an info span per attempt cost ~14% of dispatch CPU in the B2 profile; the
    // events that matter at info name the job themselves.
    #[tracing::instrument(level = "debug", skip_all, name = "attempt", fields(job_id = %id, lane = %lane))]
    pub async fn attempt(
        &self,
        id: JobId,
        lane: &LaneKey,
        gate: &mut GateTicket,
    ) -> (AttemptEnd, Option<LimitChange>) {
        let now = now_ms();
        let token = rand::random::<u64>() >> 1;
        let lease = Lease {
            token,
            now_ms: now,
            expires_at: now + self.cfg.attempt_timeout_ms + 30_000,
            holder: ezt_store::NodeId::local(),
        };
        let leased = match self.store.lease(id, lease).await {
            Ok(Some(l)) => l,
            Ok(None) => return (AttemptEnd::Finished, None), // cancelled or already final
            Err(e) => {
                tracing::warn!(error = %e, "cannot lease; retrying in 1 s");
                return (AttemptEnd::RetryAfter(Duration::from_secs(1)), None);
            }
        };
        self.events.publish(id, || JobEvent {
            event: "dispatching".into(),
            data: json!({"job_id": id, "attempt": leased.attempt_no}),
            terminal: false,
        });
        let started_ms = now_ms();
        let left = leased.deadline_at.saturating_sub(started_ms);
        let (call, latency_ms, change) = if left == 0 {
            let r = CallResult {
                outcome: Outcome::NetworkError,
                response: None,
                error: Some("deadline passed".into()),
                ssrf: false,
            };
            (r, 0, None)
        } else {
            let timeout = Duration::from_millis(self.cfg.attempt_timeout_ms.min(left));
            gate.pass().await;
            let t0 = Instant::now();
            let r = self.call(&leased, timeout).await;
            let latency = t0.elapsed().as_millis() as u64;
            let change = r
                .response
                .as_ref()
                .map(|resp| ratelimit_headers::parse(&resp.headers, resp.status_code, now_ms()));
            if let Some(c) = &change {
                gate.apply(c, Instant::now());
            }
            (r, latency, change)
        };
        let policy = &leased.spec.retry_policy;
        let verdict = if call.ssrf {
            Verdict::Fail
        } else {
            policy.judge(&call.outcome)
        };
        let done_ms = now_ms();
        let pause = change.as_ref().and_then(|c| c.pause_for_ms);
        let plan = if left == 0 {
            Plan::Expire
        } else {
            plan_next(
                policy,
                verdict,
                leased.counters,
                pause,
                done_ms,
                leased.deadline_at,
                &mut rand::thread_rng(),
            )
        };
        match (&call.outcome, verdict) {
            (Outcome::NetworkError, _) => self.metrics.attempts_network_error.inc(),
            (_, Verdict::Success) => self.metrics.attempts_success.inc(),
            (_, Verdict::Retry) => self.metrics.attempts_retry.inc(),
            (_, Verdict::Reroute) => self.metrics.attempts_reroute.inc(),
            (_, Verdict::Fail) => self.metrics.attempts_fail.inc(),
            (_, Verdict::Interrupted) => {} // only recorded by a store's recover
        }
        let wait_ms = match plan {
            Plan::RetryAt { at, .. } => Some(at.saturating_sub(done_ms)),
            _ => None,
        };
        let attempt = Attempt {
            n: leased.attempt_no,
            series: leased.series,
            at: started_ms,
            region: self.region.clone(),
            status_code: match call.outcome {
                Outcome::Status(s) => Some(s),
                Outcome::NetworkError => None,
            },
            error: call.error.clone(),
            latency_ms,
            decision: verdict,
            wait_ms,
        };
        let (next, end) = self.next_state(plan, &call, verdict, done_ms);
        let done = AttemptDone {
            id,
            lease_token: token,
            attempt: attempt.clone(),
            next,
            now_ms: done_ms,
        };
        // Recorded first, logged after: a log line never claims an outcome the store lacks.
        let recorded = self.record(done).await;
        // Successes are counted in metrics and logged at debug (one line per call was the
        // largest cost after the store in the B2 profile); retries and failures stay at info.
        if verdict == Verdict::Success {
            tracing::debug!(attempt = leased.attempt_no, status = ?attempt.status_code, "attempt finished");
        } else {
            tracing::info!(job_id = %id, lane = %lane, target = %log_target(&leased.spec.url), attempt = leased.attempt_no, status = ?attempt.status_code, error = ?attempt.error, decision = ?verdict, wait_ms = ?wait_ms, "attempt finished");
        }
        let Some(deliveries) = recorded else {
            tracing::info!(
                "attempt result discarded: the job was cancelled or re-leased meanwhile"
            );
            return (AttemptEnd::Finished, change);
        };
        crate::webhooks::enqueue(&self.deliveries, deliveries);
        self.events.publish(id, || JobEvent {
            event: "attempt".into(),
            data: serde_json::to_value(&attempt).unwrap_or_default(),
            terminal: false,
        });
        if matches!(end, AttemptEnd::Finished) {
            self.publish_final(id).await;
        }
        (end, change)
    }

    fn next_state(
        &self,
        plan: Plan,
        call: &CallResult,
        verdict: Verdict,
        done_ms: u64,
    ) -> (Next, AttemptEnd) {
        let response = call.response.clone();
        let fail_error = || {
            if call.ssrf {
                JobError {
                    code: "ssrf_denied".into(),
                    message: call.error.clone().unwrap_or_default(),
                }
            } else if let Some(r) = &call.response {
                let code = if verdict == Verdict::Fail {
                    "http_status"
                } else {
                    "retries_exhausted"
                };
                JobError {
                    code: code.into(),
                    message: format!("target answered {}", r.status_code),
                }
            } else {
                JobError {
                    code: "retries_exhausted".into(),
                    message: call.error.clone().unwrap_or_else(|| "network error".into()),
                }
            }
        };
        match plan {
            Plan::Succeed => (
                Next::Final {
                    state: JobState::Succeeded,
                    response,
                    error: None,
                },
                AttemptEnd::Finished,
            ),
            Plan::Fail => (
                Next::Final {
                    state: JobState::Failed,
                    response,
                    error: Some(fail_error()),
                },
                AttemptEnd::Finished,
            ),
            Plan::Expire => (
                Next::Final {
                    state: JobState::Expired,
                    response,
                    error: Some(JobError::deadline()),
                },
                AttemptEnd::Finished,
            ),
            Plan::RetryAt { at, counters } => (
                Next::Retry {
                    run_at: at,
                    counters,
                    response,
                },
                // The store keeps the absolute time (for restarts); the scheduler waits the
                // relative part on the monotonic clock.
                AttemptEnd::RetryAfter(Duration::from_millis(at.saturating_sub(done_ms))),
            ),
        }
    }

    /// Writes the attempt, retrying while the store is unavailable (e.g. disk full): the job
    /// stays leased meanwhile, and a restart would rescue it.
    async fn record(&self, done: AttemptDone) -> Option<Vec<ezt_store::PendingDelivery>> {
        until_stored("attempt", || self.store.complete_attempt(done.clone())).await
    }

    async fn call(&self, job: &LeasedJob, timeout: Duration) -> CallResult {
        let net_err = |msg: String, ssrf: bool| CallResult {
            outcome: Outcome::NetworkError,
            response: None,
            error: Some(msg),
            ssrf,
        };
        let target = match ezt_core::ssrf::check_url(&self.policy, &job.spec.url) {
            Ok(t) => t,
            Err(e) => return net_err(format!("ssrf_denied: {e}"), true),
        };
        // check_url refused a denied IP literal; names are filtered by the resolver at connect time.
        let method =
            reqwest::Method::from_bytes(job.spec.method.as_bytes()).unwrap_or(reqwest::Method::GET);
        let opened = match crate::credentials::open_headers(
            &self.sealer,
            job.tenant_id,
            &job.spec.headers,
        ) {
            Ok(o) => o,
            Err(e) => return net_err(format!("{e}; was the server key changed?"), false),
        };
        let headers = opened.as_deref().unwrap_or(&job.spec.headers);
        let mut req = self.client.request(method, target.url).timeout(timeout);
        let mut has_key = false;
        for (n, v) in headers {
            has_key |= n.eq_ignore_ascii_case("idempotency-key");
            req = req.header(n.as_str(), v.as_str());
        }
        if !has_key {
            req = req.header("Idempotency-Key", job.idempotent_key.as_str());
        }
        if let Some(b) = &job.spec.body {
            req = req.body(b.clone());
        }
        let mut resp = match req.send().await {
            Ok(r) => r,
            Err(e) => {
                let ssrf = error_chain_has::<SsrfBlocked>(&e);
                return net_err(describe(&e), ssrf);
            }
        };
        let status = resp.status().as_u16();
        let headers = header_pairs(resp.headers());
        let mut body = Vec::new();
        let mut truncated = false;
        let mut read_error = None;
        loop {
            match resp.chunk().await {
                Ok(Some(chunk)) => {
                    let room = self.cfg.max_response_bytes.saturating_sub(body.len());
                    if chunk.len() > room {
                        body.extend_from_slice(&chunk[..room]);
                        truncated = true;
                        break;
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(None) => break,
                Err(e) => {
                    read_error = Some(describe(&e));
                    break;
                }
            }
        }
        let response = Response {
            status_code: status,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
            body_truncated: truncated,
        };
        if let Some(err) = read_error {
            // The head arrived but the body did not: the call did not complete.
            return CallResult {
                outcome: Outcome::NetworkError,
                response: Some(response),
                error: Some(err),
                ssrf: false,
            };
        }
        CallResult {
            outcome: Outcome::Status(status),
            response: Some(response),
            error: None,
            ssrf: false,
        }
    }
}

impl Runner for Executor {
    type Id = JobId;

    async fn run(
        &self,
        id: JobId,
        _tenant: TenantId,
        lane: &LaneKey,
        gate: &mut GateTicket,
    ) -> Ran {
        let (end, change) = self.attempt(id, lane, gate).await;
        Ran {
            end,
            change,
            healthy: None,
        }
    }

    async fn expire(&self, id: JobId) {
        Executor::expire(self, id).await
    }
}

/// The HTTP client for calls we make (jobs and webhook deliveries alike): rustls, pooled,
/// HTTP/2 where offered, never following redirects, connecting only to addresses `resolver`
/// lets through.
///
/// Proxies come only from `outbound.proxy` (`proxy`): `HTTP_PROXY`, `HTTPS_PROXY` and
/// `ALL_PROXY` in the environment are ignored, because a call through a proxy reaches the
/// proxy's address, never the resolver's checked one.
pub(crate) fn outbound_client(
    connect_timeout_ms: u64,
    resolver: SsrfResolver,
    user_agent: &'static str,
    proxy: Option<&str>,
) -> Result<reqwest::Client, reqwest::Error> {
    let mut b = reqwest::Client::builder().no_proxy();
    if let Some(p) = proxy {
        b = b.proxy(reqwest::Proxy::all(p)?);
    }
    b.redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_millis(connect_timeout_ms))
        .dns_resolver(Arc::new(resolver))
        .user_agent(user_agent)
        .pool_idle_timeout(Duration::from_secs(90))
        .tcp_nodelay(true)
        .build()
}

/// Response headers as (name, value) pairs, values decoded lossily.
pub(crate) fn header_pairs(headers: &reqwest::header::HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect()
}

/// Repeats a store write with capped exponential backoff until the store answers: used where
/// giving up would strand a job (recorded nowhere but in a scheduler that already let it go).
pub(crate) async fn until_stored<T, F, Fut>(what: &str, mut write: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ezt_store::Result<T>>,
{
    let mut wait = Duration::from_millis(100);
    loop {
        match write().await {
            Ok(v) => return v,
            Err(e) => {
                tracing::warn!(error = %e, "cannot record the {what}; retrying in {wait:?}");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(30));
            }
        }
    }
}

pub(crate) fn error_chain_has<E: std::error::Error + 'static>(
    e: &(dyn std::error::Error + 'static),
) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if err.is::<E>() {
            return true;
        }
        cur = err.source();
    }
    false
}

/// What a URL may show in logs and error texts: scheme, host and port. Paths and queries
/// carry secrets (`?key=…`, Slack-style webhook paths), so they never leave the job's spec.
pub(crate) fn log_target(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(u) => origin(&u),
        Err(_) => "(unparseable URL)".into(),
    }
}

fn origin(u: &reqwest::Url) -> String {
    let host = u.host_str().unwrap_or("");
    match u.port_or_known_default() {
        Some(p) => format!("{}://{host}:{p}", u.scheme()),
        None => format!("{}://{host}", u.scheme()),
    }
}

/// A call's error for logs and attempt records, without the URL's path or query: reqwest's
/// own text ends in `for url (<full URL>)`, which is cut, and any other copy of the URL in
/// the chain is replaced by its scheme, host and port.
pub(crate) fn describe(e: &reqwest::Error) -> String {
    let url = e.url();
    let scrub = |text: String| match url {
        Some(u) => text
            .replace(&format!(" for url ({u})"), "")
            .replace(u.as_str(), &origin(u)),
        None => text,
    };
    let kind = if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connect"
    } else if e.is_body() || e.is_decode() {
        "body"
    } else {
        "request"
    };
    let mut msg = format!("{kind}: {}", scrub(e.to_string()));
    let mut cur = std::error::Error::source(e);
    while let Some(s) = cur {
        msg.push_str(": ");
        msg.push_str(&scrub(s.to_string()));
        cur = s.source();
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn resolver_refuses_names_that_resolve_to_denied_addresses() {
        let strict = SsrfResolver::new(SsrfPolicy::default());
        let err = strict
            .resolve_checked("localhost", 80)
            .await
            .expect_err("localhost is loopback");
        let blocked = err
            .downcast_ref::<SsrfBlocked>()
            .expect("an SSRF refusal, not a DNS failure");
        assert_eq!(blocked.class, DenyClass::Loopback, "{blocked}");
        let allowing = SsrfResolver::new(SsrfPolicy::new(vec![
            "127.0.0.0/8".parse().unwrap(),
            "::1/128".parse().unwrap(),
        ]));
        let addrs = allowing
            .resolve_checked("localhost", 80)
            .await
            .expect("allowed by the operator");
        assert!(addrs.iter().all(|a| a.ip().is_loopback()), "{addrs:?}");
    }
}
