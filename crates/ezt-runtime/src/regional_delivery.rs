//! Webhooks from regions (issue 15 item 6): a webhook with `regions` is POSTed by a live node
//! of one of them, so a receiver in a region gets it from the nearest node.
//!
//! The node that holds the delivery's lease (any node: deliveries are not tied to lanes)
//! keeps all of its bookkeeping: it builds the request once (body, `webhook-id`, timestamp
//! and signatures, so the secrets never leave it and every leg carries the same headers),
//! then sends it from each listed region at once: itself for its own region, a signed
//! `POST /internal/v1/deliveries` ([`DELIVERIES_PATH`]) to a live node of each other region,
//! which re-checks the SSRF rules at connect time, makes the one POST from its own source
//! address and answers status, headers and latency ([`DeliveryLeg`]); it writes nothing. The
//! first 2xx wins and the other legs are dropped at once (closing the hand-off's connection,
//! which drops the executor's POST). One delivery is one endpoint: the quorum counts it once
//! whatever the number of legs, and a receiver that sees two legs sees the same `webhook-id`
//! (Standard Webhooks receivers dedupe on it).
//!
//! **Fallback rule.** Webhooks must still be delivered: listed regions with no live node (with
//! an advertise URL) are skipped; when none is left, or every hand-off failed (the node was
//! unreachable or refused), this node sends the POST itself in the same attempt. The attempt
//! says so in its `note`, and records the region and node that sent it. A webhook without
//! `regions` is sent by the node holding the delivery, as before.

use std::sync::Arc;
use std::time::Duration;

use ezt_core::ssrf::SsrfPolicy;
use ezt_outbound::{CallError, SsrfResolver};
use ezt_store::NodeRecord;
use futures::stream::{FuturesUnordered, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::handoff::{Handoff, LegError};

/// The internal route of a webhook POST made for another node.
pub const DELIVERIES_PATH: &str = "/internal/v1/deliveries";

/// The longest POST a node may be asked to make for another.
pub const MAX_DELIVERY_MS: u64 = 300_000;

/// An attempt whose hand-offs all failed may still send from this node until `timeout_ms` +
/// this margin after it started (the delivery's lease lasts `timeout_ms` + 30 s).
const FALLBACK_MARGIN: Duration = Duration::from_secs(25);

/// One webhook POST, as the node holding the delivery built it (already signed).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DeliveryCall {
    /// The receiver.
    pub url: String,
    /// Every header to send (content type, ids, timestamp, signatures), as pairs.
    pub headers: Vec<(String, String)>,
    /// The payload, byte for byte as signed.
    pub body: String,
    /// The POST's budget, ms.
    pub timeout_ms: u64,
}

/// What one leg of a delivery produced.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DeliveryLeg {
    /// The region that sent it.
    pub region: String,
    /// The node that sent it.
    pub node: String,
    /// The receiver's status, when it answered.
    pub status: Option<u16>,
    /// The receiver's headers (rate-limit hints), as pairs.
    pub headers: Vec<(String, String)>,
    /// Why there is no answer: `ssrf_denied`, `connect`, `timeout`, `request`, or `handoff`
    /// when the node asked to send it could not be reached or refused.
    pub error: Option<LegError>,
    /// Time spent on the POST, ms.
    pub latency_ms: f64,
}

impl DeliveryLeg {
    /// A 2xx.
    pub fn is_success(&self) -> bool {
        self.status.is_some_and(|s| (200..300).contains(&s))
    }

    /// The error as the deliverer classifies it.
    pub fn call_error(&self) -> Option<CallError> {
        self.error.as_ref().map(|e| match e.code.as_str() {
            "ssrf_denied" => CallError::SsrfDenied(e.message.clone()),
            "connect" | "handoff" => CallError::Connect(e.message.clone()),
            "timeout" => CallError::Timeout(e.message.clone()),
            _ => CallError::Request(e.message.clone()),
        })
    }

    fn handoff_failed(&self) -> bool {
        self.error.as_ref().is_some_and(|e| e.code == "handoff")
    }
}

fn leg_error(e: &CallError) -> LegError {
    let code = match e {
        CallError::SsrfDenied(_) => "ssrf_denied",
        CallError::Connect(_) => "connect",
        CallError::Timeout(_) => "timeout",
        _ => "request",
    };
    LegError {
        code: code.into(),
        message: e.to_string(),
    }
}

/// Makes webhook POSTs from this node: for its own deliveries and for other nodes'.
pub struct WebhookSender {
    client: reqwest::Client,
    policy: SsrfPolicy,
    region: String,
    node: String,
}

impl std::fmt::Debug for WebhookSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookSender")
            .field("region", &self.region)
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

impl WebhookSender {
    /// The webhook client: rustls, pooled, no redirects (a 3xx is a failure, as Standard
    /// Webhooks says), connecting only to addresses `policy` allows, from `outbound.source_ip`,
    /// through `outbound.proxy` only (never the environment's).
    pub fn new(
        cfg: &crate::config::WebhooksConfig,
        outbound: &crate::config::OutboundConfig,
        policy: SsrfPolicy,
        region: &str,
        node: &str,
    ) -> Result<Self, reqwest::Error> {
        let client = ezt_outbound::client::build(ezt_outbound::client::ClientOptions {
            connect_timeout: Duration::from_millis(cfg.connect_timeout_ms),
            resolver: SsrfResolver::new(policy.clone()),
            user_agent: concat!("ezthrottle-webhooks/", env!("CARGO_PKG_VERSION")),
            proxy: outbound.proxy.as_deref(),
            source_ip: outbound.source_ip,
        })?;
        Ok(Self {
            client,
            policy,
            region: region.to_string(),
            node: node.to_string(),
        })
    }

    /// This node's region.
    pub fn region(&self) -> &str {
        &self.region
    }

    /// Sends the POST from this node: SSRF rules checked here (an IP literal now, a name's
    /// addresses at connect time).
    pub async fn execute(&self, call: &DeliveryCall) -> DeliveryLeg {
        let t0 = Instant::now();
        let (status, headers, error) = self.post(call).await;
        DeliveryLeg {
            region: self.region.clone(),
            node: self.node.clone(),
            status,
            headers,
            error: error.as_ref().map(leg_error),
            latency_ms: t0.elapsed().as_secs_f64() * 1000.0,
        }
    }

    async fn post(
        &self,
        call: &DeliveryCall,
    ) -> (Option<u16>, Vec<(String, String)>, Option<CallError>) {
        let target = match ezt_core::ssrf::check_url(&self.policy, &call.url) {
            Ok(t) => t,
            Err(e) => return (None, Vec::new(), Some(CallError::ssrf_denied(e))),
        };
        let mut req = self
            .client
            .post(target.url)
            .timeout(Duration::from_millis(call.timeout_ms.max(1)));
        for (k, v) in &call.headers {
            req = req.header(k.as_str(), v.as_str());
        }
        match req.body(call.body.clone()).send().await {
            Ok(resp) => (
                Some(resp.status().as_u16()),
                ezt_outbound::headers::header_pairs(resp.headers()),
                None,
            ),
            Err(e) => (None, Vec::new(), Some(CallError::from_reqwest(&e))),
        }
    }
}

/// Where one leg is sent from.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Leg {
    Local,
    Remote {
        region: String,
        node: String,
        url: String,
    },
}

/// How a delivery attempt was sent: the leg whose answer counts, and a note when the sender
/// was not as the webhook asked.
#[derive(Debug, Clone)]
pub(crate) struct Routed {
    pub(crate) leg: DeliveryLeg,
    pub(crate) note: Option<String>,
}

/// The legs of a webhook listing `regions`, in their order, and the listed regions with no
/// live node (pure). `own`: this node's region; `others`: live members other than this node
/// with an advertise URL; `pick` chooses among a region's nodes.
fn plan(
    regions: &[String],
    own: &str,
    reach: bool,
    others: &[&NodeRecord],
    pick: impl Fn(usize) -> usize,
) -> (Vec<Leg>, Vec<String>) {
    let mut legs = Vec::new();
    let mut missing = Vec::new();
    let mut seen: Vec<&str> = Vec::new();
    for r in regions {
        if seen.contains(&r.as_str()) {
            continue;
        }
        seen.push(r);
        if r == own {
            legs.push(Leg::Local);
            continue;
        }
        let of: Vec<&&NodeRecord> = others.iter().filter(|n| n.region == *r).collect();
        if !reach || of.is_empty() {
            missing.push(r.clone());
            continue;
        }
        let n = of[pick(of.len()) % of.len()];
        legs.push(Leg::Remote {
            region: r.clone(),
            node: n.id.clone(),
            url: n.advertise_url.clone().unwrap_or_default(),
        });
    }
    (legs, missing)
}

/// Sends deliveries from the regions their webhooks list.
pub(crate) struct RegionalRouter {
    sender: Arc<WebhookSender>,
    members: Option<Arc<crate::members::LiveMembers>>,
    handoff: Option<Arc<Handoff>>,
    node: String,
}

impl std::fmt::Debug for RegionalRouter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegionalRouter")
            .field("node", &self.node)
            .field("cluster", &self.members.is_some())
            .finish_non_exhaustive()
    }
}

impl RegionalRouter {
    /// Every leg from this node (one node, or no cluster secret).
    pub(crate) fn local(sender: Arc<WebhookSender>, node: &str) -> Self {
        Self {
            sender,
            members: None,
            handoff: None,
            node: node.to_string(),
        }
    }

    /// This node's id (legs never go to it).
    pub(crate) fn set_node(&mut self, node: &str) {
        self.node = node.to_string();
    }

    /// Legs of other regions handed to their live nodes through `handoff` (when it has a
    /// cluster secret).
    pub(crate) fn clustered(
        self,
        members: Arc<crate::members::LiveMembers>,
        handoff: Arc<Handoff>,
    ) -> Self {
        let reach = handoff.enabled();
        Self {
            members: reach.then_some(members),
            handoff: reach.then_some(handoff),
            ..self
        }
    }

    /// Sends `call` as the webhook's `regions` ask (see the module's rules). The whole attempt,
    /// a fallback included, ends within `timeout_ms` + [`FALLBACK_MARGIN`] (inside the
    /// delivery's lease, which lasts `timeout_ms` + 30 s).
    pub(crate) async fn send(&self, regions: &[String], call: &DeliveryCall) -> Routed {
        let t0 = Instant::now();
        if regions.is_empty() {
            return Routed {
                leg: self.sender.execute(call).await,
                note: None,
            };
        }
        let own = self.sender.region();
        let nodes = match &self.members {
            Some(m) => m.get().await.unwrap_or_else(|e| {
                tracing::warn!(error = %e, "cannot read the cluster's members; webhook regions other than this node's are skipped");
                Arc::new(Vec::new())
            }),
            None => Arc::new(Vec::new()),
        };
        let others: Vec<&NodeRecord> = nodes
            .iter()
            .filter(|n| n.id != self.node && n.advertise_url.is_some())
            .collect();
        let (legs, missing) = plan(regions, own, self.handoff.is_some(), &others, |n| {
            rand::random::<usize>() % n
        });
        let mut notes = Vec::new();
        if !missing.is_empty() {
            notes.push(format!("no live node of region(s) {missing:?}"));
        }
        if legs.is_empty() {
            notes.push(format!(
                "sent from this node (region {own:?}) instead, as webhooks are delivered anyway"
            ));
            return Routed {
                leg: self.sender.execute(call).await,
                note: Some(notes.join("; ")),
            };
        }
        let (leg, every_handoff_failed) = self.race(legs, call).await;
        if every_handoff_failed {
            // Every hand-off failed: no receiver saw a leg from those regions' nodes (or
            // the outcome is unknown); this node sends it rather than wait for the retry.
            if let Some(m) = &self.members {
                m.forget();
            }
            let why = leg
                .error
                .as_ref()
                .map(|e| e.message.clone())
                .unwrap_or_default();
            let budget = Duration::from_millis(call.timeout_ms) + FALLBACK_MARGIN;
            let left = budget.saturating_sub(t0.elapsed());
            if left < Duration::from_secs(1) {
                notes.push(format!(
                    "hand-off failed ({why}); no time left in this attempt to send it from this node"
                ));
                return Routed {
                    leg,
                    note: Some(notes.join("; ")),
                };
            }
            notes.push(format!(
                "hand-off failed ({why}); sent from this node (region {own:?}) instead"
            ));
            let mut local = call.clone();
            local.timeout_ms = local.timeout_ms.min(left.as_millis() as u64);
            return Routed {
                leg: self.sender.execute(&local).await,
                note: Some(notes.join("; ")),
            };
        }
        Routed {
            leg,
            note: (!notes.is_empty()).then(|| notes.join("; ")),
        }
    }

    /// Sends every leg at once: the first 2xx wins and the others are dropped (their
    /// connections closed); without a 2xx, the last leg that got an HTTP answer, else the
    /// last leg. Also says whether every leg was a failed hand-off.
    async fn race(&self, legs: Vec<Leg>, call: &DeliveryCall) -> (DeliveryLeg, bool) {
        let mut running: FuturesUnordered<_> = legs
            .into_iter()
            .map(|leg| self.send_leg(leg, call))
            .collect();
        let mut answered: Option<DeliveryLeg> = None;
        let mut last: Option<DeliveryLeg> = None;
        let mut every_handoff_failed = true;
        while let Some(leg) = running.next().await {
            if leg.is_success() {
                // Dropping `running` cuts the other legs.
                return (leg, false);
            }
            every_handoff_failed &= leg.handoff_failed();
            if leg.status.is_some() {
                answered = Some(leg);
            } else {
                last = Some(leg);
            }
        }
        let leg = answered
            .or(last)
            .expect("a race has at least one leg, and every leg ends");
        (leg, every_handoff_failed)
    }

    async fn send_leg(&self, leg: Leg, call: &DeliveryCall) -> DeliveryLeg {
        let (region, node, url) = match leg {
            Leg::Local => return self.sender.execute(call).await,
            Leg::Remote { region, node, url } => (region, node, url),
        };
        let t0 = Instant::now();
        let failed = |message: String| DeliveryLeg {
            region: region.clone(),
            node: node.clone(),
            status: None,
            headers: Vec::new(),
            error: Some(LegError {
                code: "handoff".into(),
                message,
            }),
            latency_ms: t0.elapsed().as_secs_f64() * 1000.0,
        };
        let Some(handoff) = &self.handoff else {
            return failed("this node has no cluster_secret".into());
        };
        let body = serde_json::to_vec(call).expect("a delivery call serializes");
        // The executor's POST has `timeout_ms`; the hand-off gets a margin on top.
        let timeout = Duration::from_millis(call.timeout_ms.saturating_add(2_000));
        match handoff
            .post_signed(&url, DELIVERIES_PATH, body, timeout)
            .await
        {
            Ok((200, _, bytes)) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                failed(format!("node {node} answered an unreadable delivery: {e}"))
            }),
            Ok((status, _, _)) => failed(format!("node {node} answered {status}")),
            Err(e) => failed(format!("node {node}: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str, region: &str) -> NodeRecord {
        NodeRecord {
            id: id.into(),
            epoch: 1,
            region: region.into(),
            advertise_url: Some(format!("http://{id}")),
            version: String::new(),
            started_at_ms: 0,
            expires_at_ms: 0,
            alive: true,
            draining: false,
            lanes: 0,
        }
    }

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn legs_follow_the_listed_regions_and_name_the_missing() {
        let (n2, n3, n3b) = (node("n2", "r2"), node("n3", "r3"), node("n3b", "r3"));
        let others = vec![&n2, &n3, &n3b];
        let (legs, missing) = plan(&s(&["r3", "r1", "r9", "r3"]), "r1", true, &others, |_| 1);
        assert_eq!(
            legs,
            vec![
                Leg::Remote {
                    region: "r3".into(),
                    node: "n3b".into(),
                    url: "http://n3b".into()
                },
                Leg::Local
            ],
            "listed order, each region once, a node of the region"
        );
        assert_eq!(missing, s(&["r9"]));
        let (legs, missing) = plan(&s(&["r2"]), "r1", false, &others, |_| 0);
        assert!(
            legs.is_empty(),
            "no cluster secret: other regions cannot be reached"
        );
        assert_eq!(missing, s(&["r2"]));
    }

    #[test]
    fn leg_errors_map_back_to_call_errors() {
        let leg = |code: &str| DeliveryLeg {
            region: "r1".into(),
            node: "n1".into(),
            status: None,
            headers: Vec::new(),
            error: Some(LegError {
                code: code.into(),
                message: "m".into(),
            }),
            latency_ms: 0.0,
        };
        assert!(leg("ssrf_denied").call_error().unwrap().is_ssrf_denied());
        assert!(matches!(
            leg("handoff").call_error(),
            Some(CallError::Connect(_))
        ));
        assert!(!leg("timeout").is_success());
    }
}
