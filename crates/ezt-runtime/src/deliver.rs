//! Delivery: sends job outcomes to webhooks, signed, and retries them on a schedule of
//! days until a 2xx.
//!
//! Deliveries are created by the store in the transaction that ends a job; this module only
//! runs them. They go through their own scheduler (one lane per receiver host, fair between
//! tenants, rate and concurrency capped) so a slow or dead receiver cannot hold up jobs or other
//! receivers. When a receiver that was failing answers 2xx again, its deliveries waiting out a
//! backoff are sent at once (the scheduler's `healthy` signal), so a receiver that was down for
//! an hour gets everything soon after it is back, without anyone acting.

use std::sync::Arc;
use std::time::Duration;

use ezt_core::lane::LaneKey;
use ezt_core::ratelimit_headers;
use ezt_core::webhook::{self, DeliveryPlan, RetrySchedule};
use ezt_core::{DeliveryId, TenantId};
use ezt_outbound::{log_target, CallError};
use ezt_store::{
    DeliveryAttempt, DeliveryDone, DeliveryNext, Lease, LeasedDelivery, PendingDelivery, Store,
};
use tokio::time::Instant;

use crate::clock::Clock;
use crate::fence::NodeFence;
use crate::lanes::{AttemptEnd, GateTicket, Item, Ran, Runner, SchedulerHandle};
use crate::metrics::Metrics;
use crate::regional_delivery::{DeliveryCall, RegionalRouter, WebhookSender};
use crate::sealing::Sealer;
use crate::store_retry::until_stored;
use crate::ttl_cache::TtlCache;

/// Handle of the webhook scheduler.
pub type Deliveries = SchedulerHandle<DeliveryId>;

/// The scheduler item for a pending delivery: its lane is the receiver's host and port; every
/// tenant has the same weight at a receiver.
pub fn item(p: PendingDelivery) -> Item<DeliveryId> {
    let lane = ezt_core::ssrf::parse_target_url(&p.url)
        .map(|t| t.authority())
        .unwrap_or_else(|_| log_target(&p.url)); // lanes show in logs: never a path
    Item {
        id: p.id,
        tenant: p.tenant_id,
        weight: 1,
        lane: LaneKey(lane),
        run_at: p.next_at,
        deadline_at: u64::MAX,
    }
}

/// Hands new or recovered deliveries to the webhook scheduler.
pub fn enqueue(deliveries: &Deliveries, pending: Vec<PendingDelivery>) {
    deliveries.enqueue(pending.into_iter().map(item).collect::<Vec<_>>());
}

/// Runs delivery attempts.
pub struct Deliverer {
    store: Arc<dyn Store>,
    /// Sends each attempt: from this node, or from the webhook's regions.
    router: RegionalRouter,
    timeout: Duration,
    schedule: RetrySchedule,
    keys: Arc<SigningKeys>,
    metrics: Arc<Metrics>,
    /// The wall clock (leases, signatures' timestamps, the retry schedule).
    clock: Arc<dyn Clock>,
    /// This node (holder of the leases; its self-fence is checked before sending).
    node: Arc<NodeFence>,
}

/// Tenants' webhook secrets in clear, read from the store and opened once per tenant and second
/// rather than once per delivery. The secrets API forgets a tenant's entry when it changes them,
/// so on this node a change applies to the next delivery; the TTL bounds it for other writers.
pub struct SigningKeys {
    store: Arc<dyn Store>,
    sealer: Arc<Sealer>,
    cache: TtlCache<TenantId, Arc<[String]>>,
}

const KEYS_TTL: Duration = Duration::from_secs(1);

impl std::fmt::Debug for SigningKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningKeys([redacted])")
    }
}

impl SigningKeys {
    /// Keys over `store`, opened with `sealer`.
    pub fn new(store: Arc<dyn Store>, sealer: Arc<Sealer>) -> Self {
        Self {
            store,
            sealer,
            cache: TtlCache::new(KEYS_TTL),
        }
    }

    /// The sealer (the secrets API seals with it).
    pub fn sealer(&self) -> &Sealer {
        &self.sealer
    }

    /// Drops a tenant's cached secrets (after the secrets API changed them).
    pub fn forget(&self, tenant: TenantId) {
        self.cache.remove(&tenant);
    }

    /// The tenant's secrets in clear, primary first; none when the tenant has not set any
    /// (webhooks then go unsigned) or they cannot be opened (logged, never the secret itself).
    pub async fn get(&self, tenant: TenantId) -> Result<Arc<[String]>, ezt_store::Error> {
        if let Some(keys) = self.cache.get(&tenant) {
            return Ok(keys);
        }
        let mut out = Vec::with_capacity(2);
        if let Some(s) = self.store.webhook_secrets(tenant).await? {
            for sealed in std::iter::once(&s.primary).chain(s.secondary.as_ref()) {
                match self.sealer.open(tenant, sealed) {
                    Ok(plain) => out.push(plain),
                    Err(e) => {
                        tracing::error!(tenant_id = %tenant, error = %e, "cannot open a webhook secret; was the server key changed?")
                    }
                }
            }
        }
        let keys: Arc<[String]> = out.into();
        self.cache.insert(tenant, keys.clone());
        Ok(keys)
    }
}

impl std::fmt::Debug for Deliverer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deliverer").finish_non_exhaustive()
    }
}

/// What one POST produced (from whichever node sent it).
struct Sent {
    status: Option<u16>,
    error: Option<CallError>,
    change: Option<ratelimit_headers::LimitChange>,
    /// The region and node that sent it, and why them when not as asked.
    region: String,
    node: String,
    note: Option<String>,
}

/// How one delivery attempt ended (stored as its `outcome`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryOutcome {
    /// A 2xx: acknowledged.
    Delivered,
    /// To be tried again later.
    Retry,
    /// Given up.
    Failed,
}

impl DeliveryOutcome {
    /// The stored name: `delivered`, `retry` or `failed`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Delivered => "delivered",
            Self::Retry => "retry",
            Self::Failed => "failed",
        }
    }
}

impl Deliverer {
    /// A deliverer sending from this node with `sender` (see [`WebhookSender::new`]).
    pub fn new(
        store: Arc<dyn Store>,
        cfg: &crate::config::WebhooksConfig,
        sender: Arc<WebhookSender>,
        keys: Arc<SigningKeys>,
        metrics: Arc<Metrics>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            store,
            router: RegionalRouter::local(sender, ezt_store::NodeId::LOCAL),
            timeout: Duration::from_millis(cfg.timeout_ms),
            schedule: cfg.schedule(),
            keys,
            metrics,
            clock,
            node: Arc::new(NodeFence::single(ezt_store::NodeId::local())),
        }
    }

    /// Names this node as the holder of its leases, under its self-fence.
    pub fn on_node(mut self, node: Arc<NodeFence>) -> Self {
        self.router.set_node(node.id().as_str());
        self.node = node;
        self
    }

    /// Cluster mode: a webhook with `regions` is sent by live nodes of those regions
    /// (`regional_delivery`), reached through `handoff`.
    pub fn with_regions(
        mut self,
        members: Arc<crate::members::LiveMembers>,
        handoff: Arc<crate::handoff::Handoff>,
    ) -> Self {
        self.router = self.router.clustered(members, handoff);
        self
    }

    /// Signs the POST once (every leg carries the same `webhook-id`, timestamp, signatures and
    /// body) and sends it from this node or from the webhook's regions.
    async fn send(&self, d: &LeasedDelivery, secrets: &[String]) -> Sent {
        let t = self.clock.now_ms() / 1000;
        let id = d.id.to_string();
        let refs: Vec<&str> = secrets.iter().map(String::as_str).collect();
        let mut headers = vec![
            ("content-type".to_string(), "application/json".to_string()),
            ("x-ezthrottle-job-id".into(), d.job_id.to_string()),
            ("x-ezthrottle-delivery-id".into(), id.clone()),
            (
                "x-ezthrottle-delivery-attempt".into(),
                d.attempt_no.to_string(),
            ),
            ("webhook-id".into(), id.clone()),
            ("webhook-timestamp".into(), t.to_string()),
        ];
        if !refs.is_empty() {
            headers.push((
                "x-ezthrottle-signature".into(),
                webhook::ezthrottle_signature(&refs, t, &d.payload),
            ));
            headers.push((
                "webhook-signature".into(),
                webhook::standard_signature(&refs, &id, t, &d.payload),
            ));
        }
        let call = DeliveryCall {
            url: d.url.clone(),
            headers,
            // Payloads are serialized JSON: UTF-8.
            body: String::from_utf8_lossy(&d.payload).into_owned(),
            timeout_ms: self.timeout.as_millis() as u64,
        };
        let routed = self.router.send(&d.regions, &call).await;
        let leg = routed.leg;
        Sent {
            status: leg.status,
            error: leg.call_error(),
            change: leg
                .status
                .map(|s| ratelimit_headers::parse(&leg.headers, s, self.clock.now_ms())),
            region: leg.region,
            node: leg.node,
            note: routed.note,
        }
    }
}

impl Runner for Deliverer {
    type Id = DeliveryId;

    #[tracing::instrument(level = "debug", skip_all, name = "delivery", fields(delivery_id = %id, lane = %lane))]
    async fn run(
        &self,
        id: DeliveryId,
        tenant: TenantId,
        lane: &LaneKey,
        gate: &mut GateTicket<DeliveryId>,
    ) -> Ran {
        let now = self.clock.now_ms();
        let token = rand::random::<u64>() >> 1;
        let lease = Lease {
            token,
            now_ms: now,
            expires_at: now + self.timeout.as_millis() as u64 + 30_000,
            holder: self.node.id().clone(),
            fence: None,
        };
        let finished = Ran {
            end: AttemptEnd::Finished,
            change: None,
            healthy: None,
        };
        // Keys first: a store error here leaves nothing leased (a held lease would strand the
        // delivery until a restart). Sending unsigned because the store hiccuped would surprise a
        // verifying receiver, so try again soon instead.
        let secrets = match self.keys.get(tenant).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read webhook secrets; retrying in 1 s");
                return Ran {
                    end: AttemptEnd::RetryAfter(Duration::from_secs(1)),
                    ..finished
                };
            }
        };
        let d = match self.store.lease_delivery(id, lease).await {
            Ok(Some(d)) => d,
            Ok(None) => return finished, // delivered, failed, or held elsewhere
            Err(e) => {
                tracing::warn!(error = %e, "cannot lease a delivery; retrying in 1 s");
                return Ran {
                    end: AttemptEnd::RetryAfter(Duration::from_secs(1)),
                    ..finished
                };
            }
        };
        gate.pass().await;
        let started = self.clock.now_ms();
        let t0 = Instant::now();
        let sent = self.send(&d, &secrets).await;
        let latency_ms = t0.elapsed().as_millis() as u64;
        if let Some(c) = &sent.change {
            gate.apply(c, Instant::now());
        }
        let done_ms = self.clock.now_ms();
        let ssrf = sent.error.as_ref().is_some_and(CallError::is_ssrf_denied);
        let plan = if ssrf {
            DeliveryPlan::Failed
        } else {
            self.schedule.plan(
                sent.status,
                d.failed_in_run,
                sent.change.as_ref().and_then(|c| c.pause_for_ms),
                done_ms,
                &mut rand::thread_rng(),
            )
        };
        let (outcome, next, end) = match plan {
            DeliveryPlan::Delivered => (
                DeliveryOutcome::Delivered,
                DeliveryNext::Delivered,
                AttemptEnd::Finished,
            ),
            DeliveryPlan::RetryAt(t) => (
                DeliveryOutcome::Retry,
                DeliveryNext::RetryAt(t),
                AttemptEnd::RetryAfter(Duration::from_millis(t.saturating_sub(done_ms))),
            ),
            DeliveryPlan::Failed => (
                DeliveryOutcome::Failed,
                DeliveryNext::Failed,
                AttemptEnd::Finished,
            ),
        };
        let attempt = DeliveryAttempt {
            n: d.attempt_no,
            at: started,
            status_code: sent.status,
            error: sent.error.as_ref().map(ToString::to_string),
            latency_ms,
            outcome: outcome.as_str().into(),
            wait_ms: match next {
                DeliveryNext::RetryAt(t) => Some(t.saturating_sub(done_ms)),
                _ => None,
            },
            region: Some(sent.region.clone()),
            node: Some(sent.node.clone()),
            note: sent.note.clone(),
        };
        let done = DeliveryDone {
            id,
            lease_token: token,
            attempt,
            next,
            now_ms: done_ms,
        };
        let applied = until_stored("delivery", || self.store.complete_delivery(done.clone())).await;
        // Logged after the store has the outcome.
        if outcome == DeliveryOutcome::Delivered {
            tracing::debug!(job_id = %d.job_id, attempt = d.attempt_no, status = ?sent.status, "delivery attempt");
        } else {
            tracing::info!(delivery_id = %id, job_id = %d.job_id, receiver = %log_target(&d.url), attempt = d.attempt_no, region = %sent.region, status = ?sent.status, error = ?sent.error.as_ref().map(ToString::to_string), outcome = outcome.as_str(), "delivery attempt");
        }
        let m = &self.metrics;
        match (plan, sent.status) {
            (DeliveryPlan::Delivered, _) => {
                m.deliveries_delivered.inc();
                if !d.acked_before {
                    m.delivery_latency
                        .observe(Duration::from_millis(done_ms.saturating_sub(d.created_at)));
                }
            }
            (DeliveryPlan::Failed, _) => m.deliveries_failed.inc(),
            (DeliveryPlan::RetryAt(_), None) => m.deliveries_network_error.inc(),
            (DeliveryPlan::RetryAt(_), Some(_)) => m.deliveries_retry.inc(),
        }
        let healthy = match sent.status {
            Some(s) if (200..300).contains(&s) => Some(true),
            None | Some(429) | Some(500..=599) => Some(false),
            Some(_) => None, // up, but refusing this one: says nothing about the others
        };
        Ran {
            end: if applied { end } else { AttemptEnd::Finished },
            change: sent.change,
            healthy,
        }
    }

    async fn expire(&self, _id: DeliveryId) {
        // Deliveries have no deadline: their schedule ends them.
    }
}
