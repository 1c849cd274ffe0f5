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
//!
//! Limits stay global: every leg takes one send permit of the call's lane (the job
//! scheduler's [`Permit`](crate::lanes::Permit): the lane's rate and in-flight cap, counted
//! with its jobs) before it is sent, waiting at most until the race's deadline, and holds it
//! until the leg ended or was cut. A lane paused by a Retry-After refuses at once: nothing is
//! sent and the call is answered 429 `lane_paused`. In a cluster the lane's owner grants its
//! permits: a node that does not own the lane forwards the whole race to the owner over the
//! signed internal API (`POST /internal/v1/torrent`, [`TORRENT_PATH`]), which takes one permit
//! per leg and runs the legs (its own region itself, the others by hand-off). A lane nobody
//! owns is claimed as a job's would be.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ezt_core::lane::LaneKey;
use ezt_core::ssrf::{SsrfPolicy, TargetHost};
use ezt_core::FieldError;
use ezt_outbound::resolver::ResolveError;
use ezt_outbound::SsrfResolver;
use ezt_store::{NodeRecord, Response};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::clock::Clock;
use crate::handoff::{AttemptSpec, Handoff, LegAnswer, LegError};
use crate::lanes::{Permit, PermitRefused, SchedulerHandle};

/// The internal route a node that does not own a call's lane forwards the race to.
pub const TORRENT_PATH: &str = "/internal/v1/torrent";

/// A race forwarded to its lane's owner: the call as checked by the node that took it, the
/// regions to race and the lane whose permits the legs take.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForwardedRace {
    /// The call (its `timeout_ms`: the race's budget left when it was forwarded).
    pub spec: AttemptSpec,
    /// The regions to race, in order.
    pub regions: Vec<String>,
    /// The lane.
    pub lane: LaneKey,
}

/// Default race budget.
pub const DEFAULT_TIMEOUT_MS: u64 = 10_000;
/// Longest race budget accepted.
pub const MAX_TIMEOUT_MS: u64 = 300_000;
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

/// How a leg ended (`won`, `lost`, `cancelled`, `error`; a TORRENT leg refused a permit is
/// an `error` with code `lane_busy` or `lane_paused`).
pub use ezt_core::hedge::LegOutcome;

/// One leg of a race, as the answer shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
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
#[derive(Debug, Clone, Serialize, Deserialize)]
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
    members: Arc<crate::members::LiveMembers>,
    cfg: Arc<crate::config::Config>,
    ssrf: SsrfPolicy,
    resolver: SsrfResolver,
    clock: Arc<dyn Clock>,
    node: String,
    lanes: SchedulerHandle,
    fingerprint_key: Arc<Vec<u8>>,
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
    /// The service of this node; legs take permits from the job lanes of `lanes` (lanes keyed
    /// with `fingerprint_key`, as jobs' are).
    pub fn new(
        handoff: Arc<Handoff>,
        members: Arc<crate::members::LiveMembers>,
        cfg: Arc<crate::config::Config>,
        clock: Arc<dyn Clock>,
        node: String,
        lanes: SchedulerHandle,
        fingerprint_key: Arc<Vec<u8>>,
    ) -> Self {
        let ssrf = SsrfPolicy::new(cfg.allow_cidrs.clone());
        Self {
            handoff,
            members,
            resolver: SsrfResolver::new(ssrf.clone()),
            ssrf,
            cfg,
            clock,
            node,
            lanes,
            fingerprint_key,
        }
    }

    /// Parses and checks a TORRENT body (the `Idempotency-Key` request header, if any, in
    /// `header_key`), then races it. Bad input is a field error; a store failure while reading
    /// the members is a store error.
    pub async fn run(
        &self,
        bytes: &[u8],
        header_key: Option<&str>,
    ) -> Result<TorrentOut, TorrentError> {
        let (spec, regions, lane) = self.prepare(bytes, header_key).await?;
        self.run_checked(spec, regions, lane, false).await
    }

    /// Runs a race another node forwarded here because this node owns its lane (as that node
    /// last saw it). Not forwarded again: if the lane is not this node's either, the call is
    /// refused ([`TorrentError::Moved`]) and its client may retry.
    pub async fn run_forwarded(&self, f: ForwardedRace) -> Result<TorrentOut, TorrentError> {
        let mut spec = f.spec;
        spec.timeout_ms = spec.timeout_ms.clamp(1, MAX_TIMEOUT_MS);
        let mut regions = Vec::new();
        for r in f.regions {
            if !regions.contains(&r) {
                regions.push(r);
            }
        }
        if regions.is_empty() {
            regions.push(self.cfg.region.clone());
        }
        self.run_checked(spec, regions, f.lane, true).await
    }

    async fn run_checked(
        &self,
        spec: AttemptSpec,
        regions: Vec<String>,
        lane: LaneKey,
        forwarded: bool,
    ) -> Result<TorrentOut, TorrentError> {
        let t0 = Instant::now();
        let deadline = t0 + Duration::from_millis(spec.timeout_ms);
        // Regions are checked first: a refused race takes no permit.
        let plans = self.plan(&regions).await?;
        // Whether this node grants the lane's permits: the first leg's permit says. A lane
        // another node owns gets the race forwarded; if that node no longer owns it (a
        // hand-over, an adoption under way), the owner is asked for again and the race
        // forwarded again, until the race's deadline.
        let mut tries = 0u32;
        let first = loop {
            match self.lanes.permit(lane.clone(), deadline).await {
                Ok(p) => break p,
                Err(PermitRefused::Elsewhere { owner }) if !forwarded => {
                    let sent = self
                        .forward(spec.clone(), regions.clone(), lane.clone(), owner, deadline)
                        .await;
                    let backoff = Duration::from_millis((100u64 << tries.min(3)).min(500));
                    match sent {
                        Err(TorrentError::Moved(m))
                            if tries < 10 && Instant::now() + backoff < deadline =>
                        {
                            tracing::debug!(lane = %lane, reason = %m, "TORRENT: the lane's owner changed; asking again");
                            tries += 1;
                            self.lanes.recheck(vec![lane.clone()]);
                            tokio::time::sleep(backoff).await;
                        }
                        r => return r,
                    }
                }
                Err(e) => return Err(self.refused(e)),
            }
        };
        let refusals = Arc::new(Mutex::new(Vec::new()));
        let out = self
            .race(spec, plans, lane, first, deadline, t0, refusals.clone())
            .await;
        let refused = std::mem::take(&mut *refusals.lock().unwrap_or_else(|p| p.into_inner()));
        if refused.len() == out.attempts.len() {
            if let Some(e) = refused.into_iter().next() {
                return Err(self.refused(e));
            }
        }
        Ok(out)
    }

    fn refused(&self, e: PermitRefused) -> TorrentError {
        match e {
            PermitRefused::Paused { until_ms } => {
                let left = until_ms.saturating_sub(self.clock.now_ms());
                TorrentError::Paused {
                    until_ms,
                    retry_after_s: left.div_ceil(1000).max(1),
                }
            }
            PermitRefused::Busy => TorrentError::Busy,
            PermitRefused::Elsewhere { .. } => TorrentError::Moved(
                "the call's lane moved to another node while the race was forwarded; retry".into(),
            ),
            PermitRefused::Closed => TorrentError::Moved("this node is shutting down".into()),
        }
    }

    /// Forwards the race to the lane's owner (`owner`, else the live member the lane is
    /// placed on) and answers what it answered.
    async fn forward(
        &self,
        mut spec: AttemptSpec,
        regions: Vec<String>,
        lane: LaneKey,
        owner: Option<String>,
        deadline: Instant,
    ) -> Result<TorrentOut, TorrentError> {
        let nodes = self.members.get().await?;
        let name = format!("job:{}", lane.0);
        let to = match owner.as_deref() {
            Some(o) => nodes.iter().find(|n| n.id == o),
            None => {
                let ids: Vec<ezt_store::NodeId> = nodes
                    .iter()
                    .filter(|n| n.advertise_url.is_some())
                    .map(|n| ezt_store::NodeId::new(n.id.as_str()))
                    .collect();
                crate::fence::rendezvous(&name, ids.iter())
                    .and_then(|best| nodes.iter().find(|n| n.id == best.as_str()))
            }
        };
        let Some((node, url)) = to
            .filter(|n| n.id != self.node)
            .and_then(|n| Some((n.id.clone(), n.advertise_url.clone()?)))
        else {
            return Err(TorrentError::Moved(
                "the call's lane has no live owner with an advertise_url yet; retry".into(),
            ));
        };
        if !self.handoff.enabled() {
            return Err(TorrentError::Moved(
                "the call's lane is another node's and this node has no cluster_secret to forward it"
                    .into(),
            ));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        spec.timeout_ms = (left.as_millis() as u64).max(1);
        let body = serde_json::to_vec(&ForwardedRace {
            spec,
            regions,
            lane,
        })
        .expect("a race serializes");
        let timeout = left + Duration::from_secs(3);
        let (status, retry_after, bytes) = self
            .handoff
            .post_signed(&url, TORRENT_PATH, body, timeout)
            .await
            .map_err(|e| TorrentError::Moved(format!("the lane's owner {node}: {e}")))?;
        if status == 200 {
            return serde_json::from_slice(&bytes).map_err(|e| {
                TorrentError::Moved(format!(
                    "the lane's owner {node} answered an unreadable race: {e}"
                ))
            });
        }
        let err: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
        let code = err["error"]["code"].as_str().unwrap_or_default();
        let message = err["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let field = err["error"]["field"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        Err(match code {
            "lane_paused" => {
                let s = retry_after.unwrap_or(1).max(1);
                TorrentError::Paused {
                    until_ms: self.clock.now_ms() + s * 1000,
                    retry_after_s: s,
                }
            }
            "lane_busy" => TorrentError::Busy,
            "region_unavailable" => region_unavailable(field, message).into(),
            "ssrf_denied" => FieldError::ssrf(field, message).into(),
            _ => TorrentError::Moved(format!(
                "the lane's owner {node} answered {status}: {message}"
            )),
        })
    }

    async fn prepare(
        &self,
        bytes: &[u8],
        header_key: Option<&str>,
    ) -> Result<(AttemptSpec, Vec<String>, LaneKey), TorrentError> {
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
        let lane = ezt_core::lane::lane_for(
            &v.target.authority(),
            &v.spec.headers,
            &self.cfg.lanes.credential_headers,
            &self.fingerprint_key,
        );
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
            lane,
        ))
    }

    /// Where each region's leg goes: here for this node's region, else a live node of it.
    async fn plan(&self, regions: &[String]) -> Result<Vec<Plan>, TorrentError> {
        let nodes = if self.cfg.clustered() && regions.iter().any(|r| *r != self.cfg.region) {
            self.members.get().await?
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

    /// Races the legs. Each takes one permit of `lane` (the first leg's is `first`) before it
    /// is sent and holds it until it ends or is dropped; a leg refused a permit is not sent
    /// (its refusal goes to `refusals`) and the race goes on with the others.
    #[allow(clippy::too_many_arguments)]
    async fn race(
        &self,
        spec: AttemptSpec,
        plans: Vec<Plan>,
        lane: LaneKey,
        first: Permit,
        deadline: Instant,
        t0: Instant,
        refusals: Arc<Mutex<Vec<PermitRefused>>>,
    ) -> TorrentOut {
        let spec = Arc::new(spec);
        let mut legs: Vec<(Duration, futures::future::BoxFuture<'_, (bool, LegAnswer)>)> =
            Vec::new();
        let mut first = Some(first);
        for plan in plans.iter().cloned() {
            let (h, s) = (self.handoff.clone(), spec.clone());
            let (lanes, lane, pre) = (self.lanes.clone(), lane.clone(), first.take());
            let (refusals, clock) = (refusals.clone(), self.clock.clone());
            let (here_region, here_node) = (self.cfg.region.clone(), self.node.clone());
            legs.push((
                Duration::ZERO,
                Box::pin(async move {
                    let permit = match pre {
                        Some(p) => Ok(p),
                        None => lanes.permit(lane, deadline).await,
                    };
                    let mut permit = match permit {
                        Ok(p) => p,
                        Err(e) => {
                            let (region, node) = match &plan {
                                Plan::Local => (here_region, here_node),
                                Plan::Remote { region, node, .. } => (region.clone(), node.clone()),
                            };
                            let (code, message) = match &e {
                                PermitRefused::Paused { .. } => ("lane_paused", e.to_string()),
                                PermitRefused::Busy => (
                                    "lane_busy",
                                    "no permit of the lane within the race's timeout: not sent"
                                        .to_string(),
                                ),
                                _ => ("lane_busy", e.to_string()),
                            };
                            refusals.lock().unwrap_or_else(|p| p.into_inner()).push(e);
                            let ans = LegAnswer {
                                region,
                                node,
                                response: None,
                                error: Some(LegError {
                                    code: code.into(),
                                    message,
                                }),
                                latency_ms: 0.0,
                            };
                            return (false, ans);
                        }
                    };
                    permit.pass().await;
                    // The leg's budget is what is left of the race's.
                    let left = deadline.saturating_duration_since(Instant::now());
                    let mut s = (*s).clone();
                    s.timeout_ms = (left.as_millis() as u64).max(1);
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
                    if let Some(r) = &ans.response {
                        permit.learned(ezt_core::ratelimit_headers::parse(
                            &r.headers,
                            r.status_code,
                            clock.now_ms(),
                        ));
                    }
                    drop(permit);
                    (true, ans)
                }),
            ));
        }
        // Every leg has its own timeout; the guard only bounds a leg that never ends.
        let raced = crate::race::run(legs, t0, deadline + Duration::from_millis(3_000)).await;
        let winner = raced.winner;
        let cancelled_at = raced.cut_at.as_secs_f64() * 1000.0;
        let mut done: Vec<Option<(LegAnswer, f64)>> = raced
            .ends
            .into_iter()
            .map(|e| match e {
                crate::race::End::Done((_, a), at) => Some((a, at.as_secs_f64() * 1000.0)),
                _ => None,
            })
            .collect();
        // The last leg to end, and the last with an HTTP answer (in order of ending).
        let mut order: Vec<usize> = (0..done.len()).filter(|i| done[*i].is_some()).collect();
        order.sort_by(|a, b| {
            let at = |i: &usize| done[*i].as_ref().map_or(0.0, |d| d.1);
            at(a).total_cmp(&at(b))
        });
        let last = order.last().copied();
        let last_answer = order
            .iter()
            .rev()
            .copied()
            .find(|i| done[*i].as_ref().is_some_and(|d| d.0.response.is_some()));
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

/// A TORRENT leg for the shared racer: whether it was sent, and what it produced.
impl crate::race::Leg for (bool, LegAnswer) {
    fn won(&self) -> bool {
        self.1.is_success()
    }
    fn ended_sent(&self) -> bool {
        self.0
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
    /// The lane is paused by its target (Retry-After) until `until_ms`: no leg was sent.
    #[error("the call's lane is paused by its target (Retry-After) for {retry_after_s} s more; nothing was sent")]
    Paused {
        /// End of the pause, ms since epoch.
        until_ms: u64,
        /// Seconds until then, rounded up (at least 1).
        retry_after_s: u64,
    },
    /// No leg got a permit of the lane within the race's timeout: nothing was sent.
    #[error("the call's lane had no free permit (rate or in-flight cap) within the race's timeout; nothing was sent")]
    Busy,
    /// The lane's owner could not run the race (it moved, none is live, or it is unreachable).
    #[error("{0}")]
    Moved(String),
}
