//! TORRENT (`POST /api/v1/torrent`, issue 15): the call is sent from every listed live region
//! at once (this node for its own region, a hand-off to a live node of each other region);
//! the first 2xx wins and the other legs are dropped at once, which closes their connections
//! (and, for a hand-off, the executor's upstream connection). No queue, no retries: a race
//! in which no leg answers 2xx returns the last HTTP answer that arrived (or, when no leg got
//! one, the last leg's error).
//!
//! Every leg carries the same `Idempotency-Key` and a byte-identical body. The target is
//! checked against the SSRF rules here at submission (literal and resolved addresses) and
//! again by each executing node at connect time, with its own resolver.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ezt_core::ssrf::{SsrfPolicy, TargetHost};
use ezt_core::FieldError;
use ezt_outbound::resolver::ResolveError;
use ezt_outbound::SsrfResolver;
use ezt_store::{NodeRecord, Response, Store};
use futures::stream::{FuturesUnordered, StreamExt};
use serde::Serialize;
use tokio::time::Instant;

use crate::clock::Clock;
use crate::handoff::{AttemptSpec, Handoff, LegAnswer, LegError};

/// Default race budget.
pub const DEFAULT_TIMEOUT_MS: u64 = 10_000;
/// Longest race budget accepted.
pub const MAX_TIMEOUT_MS: u64 = 300_000;
/// How long the live-node list is reused before it is read again.
const NODES_TTL: Duration = Duration::from_millis(500);
/// The fields a TORRENT call takes (and the camelCase alias of the key).
const FIELDS: [&str; 8] = [
    "url",
    "method",
    "headers",
    "body",
    "regions",
    "timeout",
    "idempotent_key",
    "idempotentKey",
];

/// How a leg ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum LegOutcome {
    /// Its 2xx is the answer.
    Won,
    /// It answered, not 2xx (or after the race had no winner, not the answer returned).
    Lost,
    /// Dropped when another leg won: its connection was closed.
    Cancelled,
    /// No HTTP answer (connect failure, timeout, SSRF refusal, failed hand-off).
    Error,
}

/// One leg of a race, as the answer shows it.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LegView {
    /// The region it was sent from.
    pub region: String,
    /// The node that made the call.
    pub node: String,
    /// `won`, `lost`, `cancelled` or `error`.
    pub outcome: LegOutcome,
    /// The target's status, when it answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status_code: Option<u16>,
    /// Why it has no answer (`outcome: error`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub error: Option<LegError>,
    /// From the start of the race to this leg's end (its answer, error or cancellation), ms,
    /// measured on the node that took the TORRENT call.
    pub latency_ms: f64,
}

/// The answer of a race.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TorrentOut {
    /// The region whose answer this is.
    pub region: String,
    /// The node that made that call.
    pub node: String,
    /// The target's status (absent when no leg got an HTTP answer; `error` says why).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status_code: Option<u16>,
    /// The target's headers, as pairs.
    #[cfg_attr(feature = "openapi", schema(schema_with = ezt_core::openapi::header_pairs))]
    pub headers: Vec<(String, String)>,
    /// The target's body (UTF-8, lossy, capped at `executor.max_response_bytes`).
    pub body: String,
    /// True when the body was cut at the cap.
    pub body_truncated: bool,
    /// From the start of the race to this answer, ms.
    pub latency_ms: f64,
    /// The `Idempotency-Key` every leg carried.
    pub idempotent_key: String,
    /// Every leg, in the order of `regions`.
    pub attempts: Vec<LegView>,
    /// When no leg got an HTTP answer: the last leg's error.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub error: Option<LegError>,
}

/// Where a leg is sent from.
#[derive(Debug, Clone)]
enum Plan {
    Local,
    Remote {
        node: String,
        url: String,
        region: String,
    },
}

/// The TORRENT service.
pub struct Torrent {
    handoff: Arc<Handoff>,
    store: Arc<dyn Store>,
    cfg: Arc<crate::config::Config>,
    ssrf: SsrfPolicy,
    resolver: SsrfResolver,
    clock: Arc<dyn Clock>,
    node: String,
    nodes: Mutex<Option<(Instant, Arc<Vec<NodeRecord>>)>>,
}

impl std::fmt::Debug for Torrent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Torrent")
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

fn region_unavailable(field: String, message: String) -> FieldError {
    FieldError {
        code: "region_unavailable",
        field,
        message,
    }
}

impl Torrent {
    /// The service of this node.
    pub fn new(
        handoff: Arc<Handoff>,
        store: Arc<dyn Store>,
        cfg: Arc<crate::config::Config>,
        clock: Arc<dyn Clock>,
        node: String,
    ) -> Self {
        let ssrf = SsrfPolicy::new(cfg.allow_cidrs.clone());
        Self {
            handoff,
            store,
            resolver: SsrfResolver::new(ssrf.clone()),
            ssrf,
            cfg,
            clock,
            node,
            nodes: Mutex::new(None),
        }
    }

    /// Live members, read at most every 500 ms.
    async fn live_nodes(&self) -> Result<Arc<Vec<NodeRecord>>, ezt_store::Error> {
        if let Some((at, n)) = &*self.nodes.lock().unwrap_or_else(|p| p.into_inner()) {
            if at.elapsed() < NODES_TTL {
                return Ok(n.clone());
            }
        }
        let fresh = Arc::new(
            self.store
                .nodes()
                .await?
                .into_iter()
                .filter(|n| n.alive && !n.draining)
                .collect::<Vec<_>>(),
        );
        *self.nodes.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((Instant::now(), fresh.clone()));
        Ok(fresh)
    }

    /// Parses and checks a TORRENT body (the `Idempotency-Key` request header, if any, in
    /// `header_key`), then races it. Bad input is a field error; a store failure while reading
    /// the members is a store error.
    pub async fn run(
        &self,
        bytes: &[u8],
        header_key: Option<&str>,
    ) -> Result<TorrentOut, TorrentError> {
        let (spec, regions) = self.prepare(bytes, header_key).await?;
        let plans = self.plan(&regions).await?;
        Ok(self.race(spec, plans).await)
    }

    async fn prepare(
        &self,
        bytes: &[u8],
        header_key: Option<&str>,
    ) -> Result<(AttemptSpec, Vec<String>), TorrentError> {
        let mut obj: serde_json::Map<String, serde_json::Value> =
            ezt_core::job::parse_object(bytes, "one call as a JSON object")?;
        if let Some(k) = obj.keys().find(|k| !FIELDS.contains(&k.as_str())) {
            return Err(FieldError {
                code: "unknown_field",
                field: k.clone(),
                message: format!(
                    "not a TORRENT field; expected one of {}",
                    FIELDS[..7].join(", ")
                ),
            }
            .into());
        }
        let timeout_ms = match obj.remove("timeout") {
            None | Some(serde_json::Value::Null) => DEFAULT_TIMEOUT_MS,
            Some(serde_json::Value::Number(n)) => n
                .as_u64()
                .ok_or_else(|| FieldError::invalid("timeout", "must be a positive duration"))?,
            Some(serde_json::Value::String(s)) => ezt_core::duration::parse_millis(&s)
                .map_err(|m| FieldError::invalid("timeout", m))?,
            Some(_) => {
                return Err(FieldError::invalid(
                    "timeout",
                    "must be a duration (\"10s\") or integer milliseconds",
                )
                .into())
            }
        };
        if !(1..=MAX_TIMEOUT_MS).contains(&timeout_ms) {
            return Err(FieldError::invalid(
                "timeout",
                format!("must be between 1ms and {}s", MAX_TIMEOUT_MS / 1000),
            )
            .into());
        }
        let mut input = ezt_core::job::from_value(serde_json::Value::Object(obj))?;
        if let Some(h) = header_key {
            input.take_header_key(h)?;
        }
        let cx = ezt_core::job::Context {
            limits: &self.cfg.limits.job,
            ssrf: &self.ssrf,
            local_region: &self.cfg.region,
            clustered: self.cfg.clustered(),
            now_ms: self.clock.now_ms(),
        };
        let v = input.validate(&cx)?;
        if let TargetHost::Domain(host) = &v.target.host {
            if let Err(ResolveError::Blocked(b)) =
                self.resolver.resolve_checked(host, v.target.port).await
            {
                return Err(FieldError::ssrf("url", b.to_string()).into());
            }
        }
        let mut regions: Vec<String> = Vec::new();
        for r in v.spec.regions {
            if !regions.contains(&r) {
                regions.push(r);
            }
        }
        if regions.is_empty() {
            regions.push(self.cfg.region.clone());
        }
        let key = v
            .idempotent_key
            .unwrap_or_else(|| format!("torrent_{:032x}", rand::random::<u128>()));
        Ok((
            AttemptSpec {
                url: v.spec.url,
                method: v.spec.method,
                headers: v.spec.headers,
                body: v.spec.body,
                idempotency_key: key,
                timeout_ms,
            },
            regions,
        ))
    }

    /// Where each region's leg goes: here for this node's region, else a live node of it.
    async fn plan(&self, regions: &[String]) -> Result<Vec<Plan>, TorrentError> {
        let nodes = if self.cfg.clustered() && regions.iter().any(|r| *r != self.cfg.region) {
            self.live_nodes().await?
        } else {
            Arc::new(Vec::new())
        };
        let mut by_region: HashMap<&str, Vec<&NodeRecord>> = HashMap::new();
        for n in nodes.iter() {
            if n.id != self.node && n.advertise_url.is_some() {
                by_region.entry(n.region.as_str()).or_default().push(n);
            }
        }
        let mut plans = Vec::with_capacity(regions.len());
        for (i, r) in regions.iter().enumerate() {
            if *r == self.cfg.region {
                plans.push(Plan::Local);
                continue;
            }
            let field = format!("regions[{i}]");
            if !self.cfg.clustered() {
                return Err(region_unavailable(
                    field,
                    format!(
                        "{r:?} is not this node's region ({:?}) and this node runs alone",
                        self.cfg.region
                    ),
                )
                .into());
            }
            let Some(cands) = by_region.get(r.as_str()).filter(|c| !c.is_empty()) else {
                return Err(region_unavailable(
                    field,
                    format!("no live node of region {r:?} (with an advertise_url) in the cluster"),
                )
                .into());
            };
            if !self.handoff.enabled() {
                return Err(region_unavailable(
                    field,
                    "this node has no cluster_secret, so it cannot hand calls to other regions"
                        .into(),
                )
                .into());
            }
            let n = cands[rand::random::<u32>() as usize % cands.len()];
            plans.push(Plan::Remote {
                node: n.id.clone(),
                url: n.advertise_url.clone().unwrap_or_default(),
                region: r.clone(),
            });
        }
        Ok(plans)
    }

    async fn race(&self, spec: AttemptSpec, plans: Vec<Plan>) -> TorrentOut {
        let t0 = Instant::now();
        let spec = Arc::new(spec);
        let mut legs = FuturesUnordered::new();
        for (i, plan) in plans.iter().cloned().enumerate() {
            let (h, s) = (self.handoff.clone(), spec.clone());
            legs.push(async move {
                let ans = match plan {
                    Plan::Local => h.execute(&s).await,
                    Plan::Remote { node, url, region } => {
                        match h.send(&url, &region, &node, &s).await {
                            Ok(a) => a,
                            Err(e) => LegAnswer {
                                region,
                                node,
                                response: None,
                                error: Some(LegError {
                                    code: "handoff".into(),
                                    message: e.to_string(),
                                }),
                                latency_ms: 0.0,
                            },
                        }
                    }
                };
                (i, ans)
            });
        }
        let mut done: Vec<Option<(LegAnswer, f64)>> = vec![None; plans.len()];
        let mut winner: Option<usize> = None;
        let mut last_answer: Option<usize> = None;
        let mut last: Option<usize> = None;
        // Every leg has its own timeout; this bound only guards against a leg that never ends.
        let guard = tokio::time::sleep(Duration::from_millis(spec.timeout_ms + 3_000));
        tokio::pin!(guard);
        loop {
            tokio::select! {
                next = legs.next() => {
                    let Some((i, ans)) = next else { break };
                    let at = t0.elapsed().as_secs_f64() * 1000.0;
                    let ok = ans.is_success();
                    if ans.response.is_some() {
                        last_answer = Some(i);
                    }
                    last = Some(i);
                    done[i] = Some((ans, at));
                    if ok {
                        winner = Some(i);
                        break;
                    }
                }
                _ = &mut guard => break,
            }
        }
        // The losers still running are dropped here: their connections close now.
        drop(legs);
        let cancelled_at = t0.elapsed().as_secs_f64() * 1000.0;
        let pick = winner.or(last_answer).or(last);
        let attempts: Vec<LegView> = plans
            .iter()
            .enumerate()
            .map(|(i, plan)| match &done[i] {
                Some((a, at)) => LegView {
                    region: a.region.clone(),
                    node: a.node.clone(),
                    outcome: if Some(i) == winner {
                        LegOutcome::Won
                    } else if a.response.is_some() {
                        LegOutcome::Lost
                    } else {
                        LegOutcome::Error
                    },
                    status_code: a.response.as_ref().map(|r| r.status_code),
                    error: a.error.clone(),
                    latency_ms: *at,
                },
                None => {
                    let (region, node) = match plan {
                        Plan::Local => (self.cfg.region.clone(), self.node.clone()),
                        Plan::Remote { region, node, .. } => (region.clone(), node.clone()),
                    };
                    LegView {
                        region,
                        node,
                        outcome: if winner.is_some() {
                            LegOutcome::Cancelled
                        } else {
                            LegOutcome::Error
                        },
                        status_code: None,
                        error: winner.is_none().then(|| LegError {
                            code: "timeout".into(),
                            message: "the leg did not end within the race's timeout".into(),
                        }),
                        latency_ms: cancelled_at,
                    }
                }
            })
            .collect();
        let chosen = pick.and_then(|i| done[i].take());
        let key = spec.idempotency_key.clone();
        match chosen {
            Some((a, at)) => {
                let Response {
                    status_code,
                    headers,
                    body,
                    body_truncated,
                    ..
                } = a.response.clone().unwrap_or(Response {
                    status_code: 0,
                    headers: Vec::new(),
                    body: String::new(),
                    body_truncated: false,
                    regions: Vec::new(),
                });
                TorrentOut {
                    region: a.region,
                    node: a.node,
                    status_code: a.response.is_some().then_some(status_code),
                    headers,
                    body,
                    body_truncated,
                    latency_ms: at,
                    idempotent_key: key,
                    attempts,
                    error: if a.response.is_some() { None } else { a.error },
                }
            }
            None => TorrentOut {
                region: self.cfg.region.clone(),
                node: self.node.clone(),
                status_code: None,
                headers: Vec::new(),
                body: String::new(),
                body_truncated: false,
                latency_ms: cancelled_at,
                idempotent_key: key,
                attempts,
                error: Some(LegError {
                    code: "timeout".into(),
                    message: "no leg ended within the race's timeout".into(),
                }),
            },
        }
    }
}

/// Why a TORRENT call was refused before any leg was sent.
#[derive(Debug, thiserror::Error)]
pub enum TorrentError {
    /// A bad or refused field (`invalid_field`, `unknown_field`, `ssrf_denied`,
    /// `region_unavailable`, …).
    #[error(transparent)]
    Invalid(#[from] FieldError),
    /// The members could not be read.
    #[error(transparent)]
    Store(#[from] ezt_store::Error),
}
