//! The hand-off (issue 15): one call made by a node of another region on this node's behalf,
//! over the authenticated internal API (`POST /internal/v1/attempts`, see `internal_auth`).
//!
//! The request carries the call itself ([`AttemptSpec`]: url, method, headers, body, the
//! `Idempotency-Key` and a timeout), not a job id and lease token. TORRENT, its first user, has
//! no stored job to load or complete; and a spec-carrying hand-off needs no read of the
//! database on the executor, so a far region pays no round trip to the primary before it
//! sends. The executor re-checks the SSRF rules at connect time with its own resolver (its
//! region's DNS may answer differently), makes the call from its own source address and
//! answers status, headers, body and latency ([`LegAnswer`]). It writes nothing: the caller
//! records the outcome. (The job path's reroute, which must survive the owner's death, will
//! add the job id, attempt lease token and lane epoch so the executor completes the attempt
//! under that token, as `reference/cluster.md` §4 describes.)
//!
//! Cancellation: the caller drops its request (a lost race leg); the connection to the
//! executor closes, the executor's HTTP server drops the handler, and with it the upstream
//! call, whose connection is closed at once.

use std::sync::Arc;
use std::time::Duration;

use ezt_core::ssrf::SsrfPolicy;
use ezt_outbound::{CallError, SsrfResolver};
use ezt_store::Response;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::clock::Clock;
use crate::internal_auth::{AuthError, NodeAuth, HEADER};

/// The internal route of a hand-off.
pub const ATTEMPTS_PATH: &str = "/internal/v1/attempts";

/// One call to make, as sent to the executing node.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AttemptSpec {
    /// Target URL (validated by the caller; the executor re-checks SSRF).
    pub url: String,
    /// Upper-case method.
    pub method: String,
    /// Headers sent to the target, as pairs.
    pub headers: Vec<(String, String)>,
    /// Body, sent as is.
    pub body: Option<String>,
    /// Sent as `Idempotency-Key` unless `headers` carries one.
    pub idempotency_key: String,
    /// The whole call's budget (connect, answer and body).
    pub timeout_ms: u64,
}

/// Why a leg produced no HTTP answer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LegError {
    /// `ssrf_denied`, `connect`, `timeout`, `body`, `request`, or for a hand-off that failed
    /// itself `handoff` (the executing node unreachable or refusing).
    pub code: String,
    /// Safe to show: never a URL's path or query.
    pub message: String,
}

/// What one leg produced: an answer, or an error.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LegAnswer {
    /// The region that made the call.
    pub region: String,
    /// The node that made the call.
    pub node: String,
    /// The target's answer, if any arrived in full.
    pub response: Option<Response>,
    /// Why there is no answer.
    pub error: Option<LegError>,
    /// Time the executor spent on the call, ms.
    pub latency_ms: f64,
}

impl LegAnswer {
    /// A 2xx answer.
    pub fn is_success(&self) -> bool {
        self.response
            .as_ref()
            .is_some_and(|r| (200..300).contains(&r.status_code))
    }
}

fn leg_error(e: &CallError) -> LegError {
    let code = match e {
        CallError::SsrfDenied(_) => "ssrf_denied",
        CallError::Connect(_) => "connect",
        CallError::Timeout(_) => "timeout",
        CallError::Body(_) => "body",
        _ => "request",
    };
    LegError {
        code: code.into(),
        message: e.to_string(),
    }
}

/// Why a hand-off could not be asked of another node.
#[derive(Debug, thiserror::Error)]
pub enum HandoffError {
    /// This node has no cluster secret: the internal API is off.
    #[error("no cluster_secret is set: node-to-node calls are disabled")]
    NoSecret,
}

/// Makes calls for this node and for others, and asks other nodes to make them.
pub struct Handoff {
    /// Calls to targets: SSRF-checking resolver, this node's source address, no redirects.
    target: reqwest::Client,
    /// Calls to other nodes (their internal URLs are private addresses: no SSRF filter).
    nodes: reqwest::Client,
    auth: Option<NodeAuth>,
    policy: SsrfPolicy,
    region: String,
    node: String,
    max_response_bytes: usize,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for Handoff {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handoff")
            .field("region", &self.region)
            .field("node", &self.node)
            .field("internal_api", &self.auth.is_some())
            .finish_non_exhaustive()
    }
}

impl Handoff {
    /// Builds both clients from the configuration.
    pub fn new(
        cfg: &crate::config::Config,
        node: &str,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, reqwest::Error> {
        let policy = SsrfPolicy::new(cfg.allow_cidrs.clone());
        let target = ezt_outbound::client::build(ezt_outbound::client::ClientOptions {
            connect_timeout: Duration::from_millis(cfg.executor.connect_timeout_ms),
            resolver: SsrfResolver::new(policy.clone()),
            user_agent: concat!("ezthrottle/", env!("CARGO_PKG_VERSION")),
            proxy: cfg.outbound.proxy.as_deref(),
            source_ip: cfg.outbound.source_ip,
        })?;
        let nodes = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_millis(cfg.executor.connect_timeout_ms))
            .tcp_nodelay(true)
            .pool_idle_timeout(Duration::from_secs(90))
            .user_agent(concat!("ezthrottle-node/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self {
            target,
            nodes,
            auth: cfg.cluster_secret.as_ref().map(|s| NodeAuth::new(&s.0)),
            policy,
            region: cfg.region.clone(),
            node: node.to_string(),
            max_response_bytes: cfg.executor.max_response_bytes,
            clock,
        })
    }

    /// This node's region.
    pub fn region(&self) -> &str {
        &self.region
    }

    /// Whether the internal API is on (a cluster secret is set).
    pub fn enabled(&self) -> bool {
        self.auth.is_some()
    }

    fn now_secs(&self) -> u64 {
        self.clock.now_ms() / 1000
    }

    /// Checks an internal request's signature. Without a secret every internal request is
    /// refused.
    pub fn verify(
        &self,
        method: &str,
        path: &str,
        body: &[u8],
        header: Option<&str>,
    ) -> Result<(), AuthError> {
        match &self.auth {
            None => Err(AuthError::Bad),
            Some(a) => a.verify(method, path, body, header, self.now_secs()),
        }
    }

    /// Makes the call here, from this node (SSRF rules re-checked at connect time).
    pub async fn execute(&self, spec: &AttemptSpec) -> LegAnswer {
        let t0 = Instant::now();
        let (response, error) = self.call(spec).await;
        LegAnswer {
            region: self.region.clone(),
            node: self.node.clone(),
            response,
            error: error.as_ref().map(leg_error),
            latency_ms: t0.elapsed().as_secs_f64() * 1000.0,
        }
    }

    async fn call(&self, spec: &AttemptSpec) -> (Option<Response>, Option<CallError>) {
        let target = match ezt_core::ssrf::check_url(&self.policy, &spec.url) {
            Ok(t) => t,
            Err(e) => return (None, Some(CallError::ssrf_denied(e))),
        };
        let Ok(method) = reqwest::Method::from_bytes(spec.method.as_bytes()) else {
            return (None, Some(CallError::Request("invalid method".into())));
        };
        let mut req = self
            .target
            .request(method, target.url)
            .timeout(Duration::from_millis(spec.timeout_ms.max(1)));
        req = crate::call::prepare(
            req,
            &spec.headers,
            &spec.idempotency_key,
            spec.body.as_ref(),
        );
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => return (None, Some(CallError::from_reqwest(&e))),
        };
        let (response, read_error) = crate::call::answer(resp, self.max_response_bytes).await;
        match read_error {
            Some(e) => (None, Some(e)),
            None => (Some(response), None),
        }
    }

    /// Sends a signed internal request (`POST path`, JSON `body`) to the node at `base_url`;
    /// answers its status, `Retry-After` (seconds) and body. Dropping the future closes the
    /// connection.
    pub async fn post_signed(
        &self,
        base_url: &str,
        path: &str,
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<(u16, Option<u64>, Vec<u8>), String> {
        let auth = self
            .auth
            .as_ref()
            .ok_or_else(|| HandoffError::NoSecret.to_string())?;
        let sig = auth.sign("POST", path, &body, self.now_secs());
        let url = format!("{}{path}", base_url.trim_end_matches('/'));
        let resp = self
            .nodes
            .post(url)
            .header(HEADER, sig)
            .header("content-type", "application/json")
            .timeout(timeout)
            .body(body)
            .send()
            .await
            .map_err(|e| format!("unreachable: {}", ezt_outbound::describe(&e)))?;
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse().ok());
        let bytes = resp.bytes().await.map_err(|e| ezt_outbound::describe(&e))?;
        Ok((status, retry_after, bytes.to_vec()))
    }

    /// Asks the node at `base_url` (its advertise URL) of `region` to make the call. A failed
    /// hand-off (unreachable, refused, garbled) comes back as a leg with error `handoff`.
    /// Dropping the returned future closes the connection, which cancels the executor's call.
    pub async fn send(
        &self,
        base_url: &str,
        region: &str,
        node: &str,
        spec: &AttemptSpec,
    ) -> Result<LegAnswer, HandoffError> {
        self.send_leg(base_url, region, node, spec)
            .await
            .map(|(leg, _)| leg)
    }

    /// As [`Handoff::send`], and says whether the target may have seen the call: false when
    /// the executing node was never reached (no connection) or refused the hand-off with an
    /// error status; true when the hand-off broke after it was sent (the outcome is unknown)
    /// or answered a leg.
    pub async fn send_leg(
        &self,
        base_url: &str,
        region: &str,
        node: &str,
        spec: &AttemptSpec,
    ) -> Result<(LegAnswer, bool), HandoffError> {
        let auth = self.auth.as_ref().ok_or(HandoffError::NoSecret)?;
        let body = serde_json::to_vec(spec).expect("a spec serializes");
        let sig = auth.sign("POST", ATTEMPTS_PATH, &body, self.now_secs());
        let url = format!("{}{ATTEMPTS_PATH}", base_url.trim_end_matches('/'));
        let t0 = Instant::now();
        let failed = |message: String| LegAnswer {
            region: region.to_string(),
            node: node.to_string(),
            response: None,
            error: Some(LegError {
                code: "handoff".into(),
                message,
            }),
            latency_ms: t0.elapsed().as_secs_f64() * 1000.0,
        };
        let sent = self
            .nodes
            .post(url)
            .header(HEADER, sig)
            .header("content-type", "application/json")
            // The executor's own call has `timeout_ms`; the hand-off gets a margin on top.
            .timeout(Duration::from_millis(spec.timeout_ms.saturating_add(2_000)))
            .body(body)
            .send()
            .await;
        let resp = match sent {
            Ok(r) => r,
            Err(e) => {
                return Ok((
                    failed(format!(
                        "node {node} unreachable: {}",
                        ezt_outbound::describe(&e)
                    )),
                    !e.is_connect(),
                ))
            }
        };
        let status = resp.status();
        let bytes = match resp.bytes().await {
            Ok(b) => b,
            Err(e) => {
                return Ok((
                    failed(format!("node {node}: {}", ezt_outbound::describe(&e))),
                    true,
                ))
            }
        };
        if !status.is_success() {
            return Ok((
                failed(format!("node {node} answered {}", status.as_u16())),
                false,
            ));
        }
        Ok(serde_json::from_slice(&bytes).map_or_else(
            |e| {
                (
                    failed(format!("node {node} answered an unreadable leg: {e}")),
                    true,
                )
            },
            |leg| (leg, true),
        ))
    }
}
