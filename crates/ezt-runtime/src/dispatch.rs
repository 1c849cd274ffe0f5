//! Dispatch: makes one attempt of one job and records what happened (one attempt → one store
//! transition, whose consequences `followups` carries out).
//!
//! Every attempt runs under a lease whose fencing token must match when the result is written,
//! carries `Idempotency-Key: <job key>`, never follows redirects, and connects only to addresses
//! that pass the SSRF rules at connect time (the outbound resolver filters what it returns, so a
//! name that rebinds to a private address after admission is still refused).

use std::sync::Arc;
use std::time::Duration;

use ezt_core::hedge::LegOutcome;
use ezt_core::job::{ExecutionMode, JobSpec, Trigger};
use ezt_core::lane::LaneKey;
use ezt_core::ratelimit_headers::{self, LimitChange};
use ezt_core::retry::{plan_next, Counters, Outcome, Plan, Verdict};
use ezt_core::ssrf::SsrfPolicy;
use ezt_core::webhook::RegionOutcome;
use ezt_core::{JobId, JobState, TenantId};
use ezt_outbound::{log_target, CallError, SsrfResolver};
use ezt_store::{Attempt, AttemptDone, JobError, Lease, LeasedJob, Next, Response, Store};
use tokio::time::Instant;

use crate::clock::Clock;
use crate::events::{Events, JobEvent};
use crate::fence::NodeFence;
use crate::followups::{Followups, Transition};
use crate::handoff::{AttemptSpec, Handoff, LegAnswer};
use crate::lanes::{AttemptEnd, GateTicket, Ran, Runner};
use crate::metrics::Metrics;
use crate::regions::{Placement, Regions, Route};
use crate::store_retry::until_stored;

/// One link of a fallback chain: its spec, trigger and own key.
type Link<'a> = (&'a JobSpec, Option<&'a Trigger>, Option<&'a str>);
/// Cluster mode: how long an attempt lease outlasts its call's timeout (covers the send
/// gate's short wait and the completion write).
const CLUSTER_LEASE_MARGIN_MS: u64 = 2_000;

/// What the call produced.
struct CallResult {
    outcome: Outcome,
    response: Option<Response>,
    error: Option<CallError>,
    /// Not sent, never retried: a child whose templates could not be rendered.
    unsent: Option<JobError>,
    /// A hand-off broke after it was sent: the target may have acted on the call.
    unknown: bool,
    /// The node that made the call, when another region's node did.
    node: Option<String>,
    /// A fanout attempt: each region's leg; a raced attempt: each leg that was sent or refused.
    legs: Vec<RegionOutcome>,
    /// A raced attempt: the region whose call this result is (the winner's).
    region: Option<String>,
}

impl CallResult {
    /// A result with only its outcome: no answer, error, node or legs.
    fn of(outcome: Outcome) -> Self {
        Self {
            outcome,
            response: None,
            error: None,
            unsent: None,
            unknown: false,
            node: None,
            legs: Vec::new(),
            region: None,
        }
    }

    /// The target answered.
    fn answered(response: Response) -> Self {
        let outcome = Outcome::Status(response.status_code);
        Self {
            response: Some(response),
            ..Self::of(outcome)
        }
    }

    fn failed(error: CallError) -> Self {
        Self {
            error: Some(error),
            ..Self::of(Outcome::NetworkError)
        }
    }

    /// `template_error` of a child (`<code>: <message>`): the job fails with that code, unsent.
    fn unsent(template_error: &str) -> Self {
        let (code, message) = template_error
            .split_once(": ")
            .unwrap_or(("template_unresolved", template_error));
        Self {
            unsent: Some(JobError {
                code: code.into(),
                message: message.into(),
            }),
            ..Self::of(Outcome::NetworkError)
        }
    }

    /// The SSRF rules refused the target: a failure, never retried.
    fn ssrf(&self) -> bool {
        self.error.as_ref().is_some_and(CallError::is_ssrf_denied)
    }
}

/// Runs attempts.
pub struct Executor {
    store: Arc<dyn Store>,
    client: reqwest::Client,
    cfg: crate::config::ExecutorConfig,
    region: String,
    policy: SsrfPolicy,
    events: Arc<Events>,
    metrics: Arc<Metrics>,
    followups: Arc<Followups>,
    /// Opens the credential headers sealed at rest (see `credentials`).
    sealer: Arc<crate::sealing::Sealer>,
    /// The wall clock (leases, attempt times, retry plans, deadlines).
    clock: Arc<dyn Clock>,
    /// This node (holder of the leases; its self-fence is checked before sending).
    node: Arc<NodeFence>,
    /// Cluster mode: where each attempt runs, and the hand-off to other regions' nodes.
    regions: Option<(Arc<Regions>, Arc<Handoff>)>,
    /// Cluster mode: racing a job over its regions (budget, latencies, extra legs' permits).
    races: Option<Arc<crate::race::Races>>,
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
    // Eight shared parts of the runtime, each used; a parts struct (as `JobsParts`) is the
    // next step if another joins.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        store: Arc<dyn Store>,
        config: &crate::config::Config,
        policy: SsrfPolicy,
        events: Arc<Events>,
        metrics: Arc<Metrics>,
        followups: Arc<Followups>,
        sealer: Arc<crate::sealing::Sealer>,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, reqwest::Error> {
        let cfg = config.executor.clone();
        let client = ezt_outbound::client::build(ezt_outbound::client::ClientOptions {
            connect_timeout: Duration::from_millis(cfg.connect_timeout_ms),
            resolver: SsrfResolver::new(policy.clone()),
            user_agent: concat!("ezthrottle/", env!("CARGO_PKG_VERSION")),
            proxy: config.outbound.proxy.as_deref(),
            source_ip: config.outbound.source_ip,
        })?;
        Ok(Self {
            store,
            client,
            cfg,
            region: config.region.clone(),
            policy,
            events,
            metrics,
            followups,
            sealer,
            clock,
            node: Arc::new(NodeFence::single(ezt_store::NodeId::local())),
            regions: None,
            races: None,
        })
    }

    /// Cluster mode: places each attempt in a region of the job's (`regions`) and hands it to
    /// a live node of that region when it is not this node's.
    pub(crate) fn with_regions(mut self, regions: Arc<Regions>, handoff: Arc<Handoff>) -> Self {
        self.regions = Some((regions, handoff));
        self
    }

    /// Cluster mode: a job with `execution_mode: race` and several live listed regions races
    /// them (see `race_attempt`).
    pub(crate) fn with_races(mut self, races: Arc<crate::race::Races>) -> Self {
        self.races = Some(races);
        self
    }

    /// Names this node as the holder of its leases, under its self-fence.
    pub fn on_node(mut self, node: Arc<NodeFence>) -> Self {
        self.node = node;
        self
    }

    /// Ends a job whose deadline passed while it waited. The scheduler has already dropped it,
    /// so this keeps trying while the store is unavailable: giving up would leave the job
    /// queued on disk but unknown to the scheduler until the next restart.
    pub async fn expire(&self, id: JobId) {
        let expired = until_stored("expiry", || {
            self.store.expire(id, self.clock.now_ms(), &self.region)
        })
        .await;
        if let Some(deliveries) = expired {
            tracing::info!(job_id = %id, "job expired while waiting");
            self.followups
                .after(Transition::Final { id, deliveries })
                .await;
            // The store created the `on_failure` child with the expiry; hand it to its lane.
            if let Ok(Some(job)) = self.store.get_job(None, id).await {
                if let Some((relation, _)) = job.spec.child_for(JobState::Expired) {
                    let child = ezt_core::job::child_id(id, relation, job.series);
                    self.followups.after(Transition::Spawned(vec![child])).await;
                }
                if let Some((workflow, _)) = ezt_store::workflow_of(&job.spec) {
                    self.followups
                        .after(Transition::StepEnded { job: id, workflow })
                        .await;
                }
            }
        }
    }

    /// The job's attempts of this series (empty when it cannot be read).
    async fn history(&self, id: JobId, series: u32) -> Vec<Attempt> {
        match self.store.get_job(None, id).await {
            Ok(Some(job)) => job
                .attempts
                .into_iter()
                .filter(|a| a.series == series)
                .collect(),
            _ => Vec::new(),
        }
    }

    /// Calls link `k` of the chain; when link `k + 1` is an `on_timeout` fallback and link `k`
    /// has not answered by then, starts it too (and so on down the chain): the first 2xx
    /// wins and the other call is dropped (cancelled). Without a 2xx, the latest link's answer
    /// counts. Answers the result and the link that produced it.
    fn call_chain<'a>(
        &'a self,
        job: &'a LeasedJob,
        links: &'a [Link<'a>],
        k: usize,
        timeout: Duration,
        route: &'a Route,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = (CallResult, usize)> + Send + 'a>> {
        Box::pin(async move {
            let (spec, _, key) = links[k];
            let key = key.unwrap_or(job.idempotent_key.as_str());
            let primary = self.call(job.tenant_id, spec, key, timeout, route);
            let race_after = match links.get(k + 1) {
                Some((_, Some(Trigger::OnTimeout { timeout_ms }), _)) => *timeout_ms,
                _ => return (primary.await, k),
            };
            tokio::pin!(primary);
            tokio::select! {
                r = &mut primary => return (r, k),
                () = tokio::time::sleep(Duration::from_millis(race_after)) => {}
            }
            tracing::info!(
                link = k + 1,
                "fallback link started: the previous link is slow"
            );
            let racer = self.call_chain(job, links, k + 1, timeout, route);
            tokio::pin!(racer);
            let ok =
                |r: &CallResult| matches!(r.outcome, Outcome::Status(s) if (200..300).contains(&s));
            tokio::select! {
                r = &mut primary => {
                    if ok(&r) {
                        return (r, k);
                    }
                    racer.await
                }
                (r, l) = &mut racer => {
                    if ok(&r) {
                        return (r, l);
                    }
                    let p = primary.await;
                    if ok(&p) { (p, k) } else { (r, l) }
                }
            }
        })
    }

    /// Why a lease was refused: with a fence, a lane this node no longer owns as claimed
    /// (then the lane is claimed again) — else the job was cancelled or is final. Asked only
    /// after a refusal, so the common path pays nothing.
    async fn refused(&self, fence: Option<ezt_store::Fence>) -> AttemptEnd {
        let Some(f) = fence else {
            return AttemptEnd::Finished;
        };
        match self.store.lane_owners(std::slice::from_ref(&f.lane)).await {
            Ok(owners) => {
                let still = owners.iter().any(|o| {
                    o.owner_alive
                        && o.owner_node.as_deref() == Some(self.node.id().as_str())
                        && o.owner_node_epoch == Some(f.node_epoch)
                        && o.lane_epoch == f.lane_epoch
                });
                if still {
                    AttemptEnd::Finished
                } else {
                    AttemptEnd::LaneLost
                }
            }
            // Unknown: the job stays, and the next lease decides.
            Err(_) => AttemptEnd::RetryAfter(Duration::from_secs(1)),
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
        let now = self.clock.now_ms();
        let token = rand::random::<u64>() >> 1;
        let lease = Lease {
            token,
            now_ms: now,
            // The lease outlasts the call by a margin. On one node nobody takes a live lease, so
            // a generous one costs nothing; in a cluster an adopter counts a dead owner's
            // unexpired leases as calls in flight, so it is kept short there.
            expires_at: now
                + self.cfg.attempt_timeout_ms
                + if self.node.is_clustered() {
                    CLUSTER_LEASE_MARGIN_MS
                } else {
                    30_000
                },
            holder: self.node.id().clone(),
            fence: gate.fence(),
        };
        let lease_expires = lease.expires_at;
        let fence = lease.fence.clone();
        let leased = match self.store.lease(id, lease).await {
            Ok(Some(l)) => l,
            // Cancelled or already final, or (cluster mode) the lane is not this node's under
            // the claim the lease named.
            Ok(None) => return (self.refused(fence).await, None),
            Err(e) => {
                tracing::warn!(error = %e, "cannot lease; retrying in 1 s");
                return (AttemptEnd::RetryAfter(Duration::from_secs(1)), None);
            }
        };
        self.events.publish(id, || JobEvent::Dispatching {
            job_id: id,
            attempt: leased.attempt_no,
        });
        let started_ms = self.clock.now_ms();
        let left = leased.deadline_at.saturating_sub(started_ms);
        // A fallback chain: which link to call (only chained jobs, and in a cluster every job
        // past its first attempt, read their history).
        let links = leased.spec.links();
        // (A first attempt has no history: no read.)
        let history = if links.len() > 1 || (self.regions.is_some() && leased.attempt_no > 1) {
            self.history(id, leased.series).await
        } else {
            Vec::new()
        };
        // The link a job stands at: 0, or where its attempts of this series moved it (a link
        // never goes back, so the furthest one named counts; an attempt a crash cut off names
        // none).
        let current = if links.len() > 1 {
            (history
                .iter()
                .map(|a| a.next_link.unwrap_or(a.link))
                .max()
                .unwrap_or(0) as usize)
                .min(links.len() - 1)
        } else {
            0
        };
        // Cluster mode: the region (and node) of this attempt.
        let host = log_target(&links[current].0.url);
        let fanout = self.regions.is_some() && leased.spec.execution_mode == ExecutionMode::Fanout;
        let placement: Option<Result<Placement, String>> = match &self.regions {
            Some((regions, _)) if !fanout => Some(
                regions
                    .place(
                        &host,
                        &leased.spec.regions,
                        leased.spec.region_policy,
                        &rerouted_from(&history),
                    )
                    .await,
            ),
            _ => None,
        };
        let placed = placement.as_ref().and_then(|p| p.as_ref().ok());
        // A race: the job's other listed live regions (a chain's links are not raced).
        let race_legs = match (&self.regions, placed) {
            (Some((regions, _)), Some(p))
                if self.races.is_some()
                    && leased.spec.execution_mode == ExecutionMode::Race
                    && links.len() == 1
                    && leased.spec.regions.len() > 1 =>
            {
                regions
                    .race_legs(
                        &host,
                        &leased.spec.regions,
                        &p.region,
                        &rerouted_from(&history),
                    )
                    .await
            }
            _ => Vec::new(),
        };
        let (call, latency_ms, change, link) = if left == 0 {
            (
                CallResult::failed(CallError::DeadlinePassed),
                0,
                None,
                current,
            )
        } else if let Some(e) = &leased.spec.template_error {
            (CallResult::unsent(e), 0, None, current)
        } else if let Some(Err(why)) = &placement {
            // `strict` and none of its regions is live: the job fails, unsent.
            (
                CallResult::unsent(&format!("region_unavailable: {why}")),
                0,
                None,
                current,
            )
        } else {
            let timeout = Duration::from_millis(self.cfg.attempt_timeout_ms.min(left));
            gate.pass().await;
            if !gate.may_send() {
                // Self-fenced between the lease and the send (cluster mode): nothing left, so
                // the lease is undone and the job waits for its lane's (next) owner.
                tracing::info!("self-fenced before sending; the attempt is undone");
                let undone = until_stored("unlease", || self.store.unlease(id, token)).await;
                tracing::debug!(undone, "unlease");
                return (AttemptEnd::Finished, None);
            }
            let t0 = Instant::now();
            let route = placed.map_or(Route::Local, |p| p.route.clone());
            let (r, link) = if fanout {
                (self.fanout(&leased, &history, timeout).await, current)
            } else if let (Some(p), false) = (placed, race_legs.is_empty()) {
                (
                    self.race_attempt(&leased, lane, timeout, (&p.region, &route), race_legs)
                        .await,
                    current,
                )
            } else {
                self.call_chain(&leased, &links, current, timeout, &route)
                    .await
            };
            let latency = t0.elapsed().as_millis() as u64;
            if let (Some(races), Some(p), Some(_)) = (&self.races, placed, &r.response) {
                if r.legs.is_empty() {
                    races.latency(lane, &p.region, latency);
                }
            }
            // Only the job's own target paces its lane; a fallback link's host is another.
            let change = r.response.as_ref().filter(|_| link == 0).map(|resp| {
                ratelimit_headers::parse(&resp.headers, resp.status_code, self.clock.now_ms())
            });
            if let Some(c) = &change {
                gate.apply(c, Instant::now());
            }
            (r, latency, change, link)
        };
        let policy = &links[link].0.retry_policy;
        let mut verdict = if call.ssrf() || call.unsent.is_some() {
            Verdict::Fail
        } else {
            policy.judge(&call.outcome)
        };
        // A race left with a 409 only (the target says the request is outstanding under its
        // key: another leg of ours): not a failure, it is retried (the stored result comes).
        if verdict == Verdict::Fail
            && matches!(call.outcome, Outcome::Status(409))
            && call.legs.iter().any(|l| l.outcome.is_some())
        {
            verdict = Verdict::Retry;
        }
        let movable = placed.is_some_and(|p| p.alternatives);
        // The region whose call counts: a race's winner (or kept answer), else the placed one.
        let ran_in = call
            .region
            .clone()
            .or_else(|| placed.map(|p| p.region.clone()));
        if let Some(races) = self.races.as_ref().filter(|_| !fanout && placed.is_some()) {
            races.first(lane, matches!(verdict, Verdict::Retry | Verdict::Reroute));
        }
        if let Some(p) = placed.filter(|_| call.unsent.is_none() && left > 0) {
            let p_region = ran_in.as_deref().unwrap_or(&p.region);
            // No connection (or a region's node lost mid-call): another region may do better.
            if verdict == Verdict::Retry
                && movable
                && (call.unknown || matches!(call.error, Some(CallError::Connect(_))))
            {
                verdict = Verdict::Reroute;
            }
            if let Some((regions, _)) = &self.regions {
                if regions.observe(&host, p_region, verdict == Verdict::Reroute) {
                    tracing::warn!(region = %p_region, target = %host, "region ejected for this host: its calls keep failing");
                }
            }
        }
        let done_ms = self.clock.now_ms();
        let pause = change.as_ref().and_then(|c| c.pause_for_ms);
        // A link that took over starts its own retry counters.
        let counters = if link == current {
            leased.counters
        } else {
            Counters::default()
        };
        let plan = if left == 0 {
            Plan::Expire
        } else {
            plan_next(
                policy,
                verdict,
                counters,
                pause,
                done_ms,
                leased.deadline_at,
                &mut rand::thread_rng(),
            )
        };
        // A reroute to another region goes at once (unless the target asked for a pause).
        let plan = match plan {
            Plan::RetryAt { counters, .. }
                if verdict == Verdict::Reroute && movable && pause.is_none() =>
            {
                Plan::RetryAt {
                    at: done_ms,
                    counters,
                }
            }
            p => p,
        };
        let mut next_link = (link != current).then_some(link as u32);
        // A link that failed for good with one of the next link's `on_error` codes hands over
        // to it, now.
        let plan = match (plan, &call.outcome, links.get(link + 1)) {
            (Plan::Fail, Outcome::Status(s), Some((_, Some(Trigger::OnError { codes }), _)))
                if codes.contains(s) && !call.ssrf() =>
            {
                next_link = Some(link as u32 + 1);
                tracing::info!(job_id = %id, link = link + 1, status = s, "fallback link takes over");
                Plan::RetryAt {
                    at: done_ms,
                    counters: Counters::default(),
                }
            }
            (p, _, _) => p,
        };
        match (&call.outcome, verdict) {
            // Refused before sending (a child's template): no network involved.
            _ if call.unsent.is_some() => self.metrics.attempts_fail.inc(),
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
            region: ran_in.clone().unwrap_or_else(|| self.region.clone()),
            status_code: match call.outcome {
                Outcome::Status(s) => Some(s),
                Outcome::NetworkError => None,
            },
            error: call.error.as_ref().map(ToString::to_string).or_else(|| {
                call.unsent
                    .as_ref()
                    .map(|e| format!("{}: {}", e.code, e.message))
            }),
            latency_ms,
            decision: verdict,
            wait_ms,
            link: link as u32,
            next_link,
            node: match (&self.regions, &call.node) {
                (_, Some(n)) => Some(n.clone()),
                (Some(_), None) => Some(self.node.id().to_string()),
                (None, None) => None,
            },
            reason: ran_in
                .as_deref()
                .filter(|_| placed.is_some())
                .and_then(|r| moved_because(&history, r)),
            legs: call.legs.clone(),
        };
        let (next, end) = self.next_state(plan, &call, verdict, done_ms);
        let done_next_state = match &next {
            Next::Final { state, .. } => Some(*state),
            Next::Retry { .. } => None,
        };
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
            tracing::info!(job_id = %id, lane = %lane, target = %log_target(&links[link].0.url), attempt = leased.attempt_no, status = ?attempt.status_code, error = ?attempt.error, decision = ?verdict, wait_ms = ?wait_ms, "attempt finished");
        }
        let Some(deliveries) = recorded else {
            tracing::info!(
                "attempt result discarded: the job was cancelled or re-leased meanwhile"
            );
            return (AttemptEnd::Finished, change);
        };
        self.events
            .publish(id, || JobEvent::Attempt(Box::new(attempt)));
        if call.unknown {
            // The hand-off broke after it was sent: the other node may still be calling. The
            // slot stays held (the lane's limit counts that call) until the lease runs out.
            let hold = lease_expires.saturating_sub(self.clock.now_ms());
            tracing::info!(job_id = %id, hold_ms = hold, "hand-off lost mid-call; holding its slot until the lease expires");
            tokio::time::sleep(Duration::from_millis(hold)).await;
        }
        let final_state = match &done_next_state {
            Some(state) => leased.spec.child_for(*state).map(|(r, _)| r),
            None => None,
        };
        let transition = match end {
            AttemptEnd::Finished => Transition::Final { id, deliveries },
            AttemptEnd::RetryAfter(_) | AttemptEnd::LaneLost => Transition::Retrying { deliveries },
        };
        self.followups.after(transition).await;
        // The store created the outcome's child with it; hand it to its lane.
        if let Some(relation) = final_state {
            let child = ezt_core::job::child_id(id, relation, leased.series);
            self.followups.after(Transition::Spawned(vec![child])).await;
        }
        // A workflow step: the store advanced its run; what it released goes to the lanes.
        if let (Some(_), Some((workflow, _))) =
            (done_next_state, ezt_store::workflow_of(&leased.spec))
        {
            self.followups
                .after(Transition::StepEnded { job: id, workflow })
                .await;
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
            if let Some(e) = &call.unsent {
                e.clone()
            } else if call.ssrf() {
                JobError {
                    code: "ssrf_denied".into(),
                    message: call
                        .error
                        .as_ref()
                        .map(ToString::to_string)
                        .unwrap_or_default(),
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
                    message: call
                        .error
                        .as_ref()
                        .map_or_else(|| "network error".into(), ToString::to_string),
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

    async fn call(
        &self,
        tenant: TenantId,
        spec: &JobSpec,
        idempotent_key: &str,
        timeout: Duration,
        route: &Route,
    ) -> CallResult {
        if let Route::Remote { node, url, region } = route {
            return self
                .call_remote(tenant, spec, idempotent_key, timeout, (node, url, region))
                .await;
        }
        let target = match ezt_core::ssrf::check_url(&self.policy, &spec.url) {
            Ok(t) => t,
            Err(e) => return CallResult::failed(CallError::ssrf_denied(e)),
        };
        // check_url refused a denied IP literal; names are filtered by the resolver at connect time.
        let method =
            reqwest::Method::from_bytes(spec.method.as_bytes()).unwrap_or(reqwest::Method::GET);
        let opened = match crate::credentials::open_headers(&self.sealer, tenant, &spec.headers) {
            Ok(o) => o,
            Err(e) => return CallResult::failed(CallError::SealedHeader(e.to_string())),
        };
        let headers = opened.as_deref().unwrap_or(&spec.headers);
        let req = self.client.request(method, target.url).timeout(timeout);
        let req = crate::call::prepare(req, headers, idempotent_key, spec.body.as_ref());
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => return CallResult::failed(CallError::from_reqwest(&e)),
        };
        let (response, read_error) = crate::call::answer(resp, self.cfg.max_response_bytes).await;
        if let Some(err) = read_error {
            // The head arrived but the body did not: the call did not complete.
            return CallResult {
                response: Some(response),
                ..CallResult::failed(err)
            };
        }
        CallResult::answered(response)
    }

    /// Fanout: the call runs at once in every listed region that has not answered 2xx yet in
    /// this attempt series. The attempt's outcome is the first failing leg's (a non-retryable
    /// answer first, else a retry/reroute one, else a leg with no answer), else the first
    /// region's 2xx: the job succeeds once every listed region has answered 2xx (rule "all"),
    /// and its retries run only the regions still missing. A region without a live node is a
    /// leg with no answer (retried like a network error).
    async fn fanout(&self, job: &LeasedJob, history: &[Attempt], timeout: Duration) -> CallResult {
        let Some((regions, _)) = &self.regions else {
            return CallResult::unsent("not_supported: fanout needs cluster mode");
        };
        let spec = &job.spec;
        let mut listed: Vec<&String> = Vec::new();
        for r in &spec.regions {
            if !listed.contains(&r) {
                listed.push(r);
            }
        }
        // Each region's latest leg in this series.
        let mut latest: std::collections::HashMap<&str, &RegionOutcome> =
            std::collections::HashMap::new();
        for leg in history.iter().flat_map(|a| a.legs.iter()) {
            latest.insert(leg.region.as_str(), leg);
        }
        let pending: Vec<&String> = listed
            .iter()
            .copied()
            .filter(|r| {
                latest
                    .get(r.as_str())
                    .is_none_or(|l| l.decision != Verdict::Success)
            })
            .collect();
        let me = self.node.id().to_string();
        let legs = futures::future::join_all(pending.iter().map(|&r| async move {
            let t0 = Instant::now();
            let call = match regions.route_to(r).await {
                Some(route) => {
                    self.call(job.tenant_id, spec, &job.idempotent_key, timeout, &route)
                        .await
                }
                None => {
                    CallResult::failed(CallError::Connect(format!("no live node of region {r:?}")))
                }
            };
            (r.to_string(), call, t0.elapsed().as_millis() as u64)
        }))
        .await;
        let judged: Vec<(String, CallResult, RegionOutcome)> = legs
            .into_iter()
            .map(|(region, call, ms)| {
                let decision = if call.ssrf() {
                    Verdict::Fail
                } else {
                    spec.retry_policy.judge(&call.outcome)
                };
                let node = match (&call.node, &call.error) {
                    (Some(n), _) => Some(n.clone()),
                    (None, Some(CallError::Connect(m))) if m.starts_with("no live node") => None,
                    (None, _) => Some(me.clone()),
                };
                let outcome = RegionOutcome {
                    region: region.clone(),
                    node,
                    status_code: call.response.as_ref().map(|r| r.status_code),
                    error: call.error.as_ref().map(ToString::to_string),
                    latency_ms: ms,
                    decision,
                    outcome: None,
                };
                (region, call, outcome)
            })
            .collect();
        let rank = |v: Verdict| match v {
            Verdict::Fail => 0,
            Verdict::Reroute | Verdict::Retry | Verdict::Interrupted => 1,
            Verdict::Success => 2,
        };
        let this: Vec<RegionOutcome> = judged.iter().map(|(_, _, o)| o.clone()).collect();
        // Every listed region's outcome: this attempt's leg, else its earlier success.
        let all: Vec<RegionOutcome> = listed
            .iter()
            .filter_map(|r| {
                this.iter()
                    .find(|o| o.region == **r)
                    .or_else(|| latest.get(r.as_str()).copied())
                    .cloned()
            })
            .collect();
        let Some(pick) = (0..judged.len()).min_by_key(|&i| rank(judged[i].2.decision)) else {
            // Every region had answered 2xx already (a crash after the last leg): done.
            return CallResult::answered(Response {
                status_code: 200,
                headers: Vec::new(),
                body: String::new(),
                body_truncated: false,
                regions: all,
            });
        };
        let mut judged = judged;
        let (_, mut call, _) = judged.swap_remove(pick);
        if let Some(r) = call.response.as_mut() {
            r.regions = all;
        }
        call.unknown = false;
        call.legs = this;
        call
    }

    /// A raced attempt (`execution_mode: race`, issue 15): the first leg (`first`: its region
    /// and route, under the job's lease and lane slot) and one leg per other region in
    /// `others`, each sent with the job's key and byte-identical body. GET, HEAD, PUT, DELETE
    /// and OPTIONS (and every method with `executor.race_unsafe_methods`) start every leg at
    /// once; POST and PATCH hedge: each next leg only after the lane's p95 latency in the
    /// previous leg's region (else `executor.hedge_delay_ms`), and only if no leg has ended
    /// meanwhile. Each extra leg takes one unit of the lane's hedge budget and one permit of
    /// the lane (rate and in-flight) before it is sent, else it is refused (not sent) and the
    /// race goes on. The first 2xx wins and the legs still running are dropped (connections
    /// closed); without a winner the attempt's result is the last HTTP answer other than 409,
    /// else the last 409, else the last error.
    async fn race_attempt(
        &self,
        job: &LeasedJob,
        lane: &LaneKey,
        timeout: Duration,
        first: (&str, &Route),
        others: Vec<(String, Route)>,
    ) -> CallResult {
        let Some(races) = &self.races else {
            return self
                .call(
                    job.tenant_id,
                    &job.spec,
                    &job.idempotent_key,
                    timeout,
                    first.1,
                )
                .await;
        };
        let spec = &job.spec;
        let parallel = races.parallel(&spec.method);
        let t0 = Instant::now();
        let mut plan: Vec<(String, Route)> = vec![(first.0.to_string(), first.1.clone())];
        plan.extend(others);
        let mut legs: Vec<(Duration, futures::future::BoxFuture<'_, RaceLeg>)> = Vec::new();
        let mut at = Duration::ZERO;
        for (i, (region, route)) in plan.iter().enumerate() {
            if i > 0 && !parallel {
                at += races.hedge_delay(lane, &plan[i - 1].0);
            }
            let fut = async move {
                let refused = |why: String| RaceLeg {
                    call: CallResult::failed(CallError::Request(why)),
                    sent: false,
                    ms: 0,
                };
                let mut permit = None;
                if i > 0 {
                    if !races.try_extra(lane) {
                        return refused(
                            "not sent: the lane's hedge budget is spent (or the lane is failing)"
                                .into(),
                        );
                    }
                    match races.permit(lane).await {
                        Ok(mut p) => {
                            p.pass().await;
                            permit = Some(p);
                        }
                        Err(e) => return refused(format!("not sent: no permit of the lane ({e})")),
                    }
                }
                let started = Instant::now();
                let left = timeout
                    .saturating_sub(t0.elapsed())
                    .max(Duration::from_millis(1));
                let call = self
                    .call(job.tenant_id, spec, &job.idempotent_key, left, route)
                    .await;
                let ms = started.elapsed().as_millis() as u64;
                if let (Some(p), Some(r)) = (permit.as_mut(), &call.response) {
                    p.learned(ratelimit_headers::parse(
                        &r.headers,
                        r.status_code,
                        self.clock.now_ms(),
                    ));
                }
                if call.response.is_some() {
                    races.latency(lane, region, ms);
                }
                // The permit is dropped with the leg: its in-flight slot is freed now.
                drop(permit);
                RaceLeg {
                    call,
                    sent: true,
                    ms,
                }
            };
            legs.push((at, Box::pin(fut)));
        }
        let guard = t0 + timeout + Duration::from_secs(3);
        let raced = crate::race::run(legs, t0, guard).await;
        let cut_ms = raced.cut_at.as_millis() as u64;
        let me = self.node.id().to_string();
        // The result kept: the winner, else the best answer (later beats earlier).
        let rank = |l: &RaceLeg| match (&l.call.response, l.sent) {
            (Some(r), _) if r.status_code != 409 => 3,
            (Some(_), _) => 2,
            (None, true) => 1,
            (None, false) => 0,
        };
        let mut kept: Option<(usize, u8, Duration)> = None;
        for (i, e) in raced.ends.iter().enumerate() {
            if let crate::race::End::Done(l, d) = e {
                let r = rank(l);
                if kept.is_none_or(|(_, kr, kd)| (r, *d) >= (kr, kd)) {
                    kept = Some((i, r, *d));
                }
            }
        }
        let kept = raced.winner.or(kept.map(|k| k.0));
        let mut views: Vec<RegionOutcome> = Vec::new();
        let mut result: Option<CallResult> = None;
        let first_end = match raced.ends.first() {
            Some(crate::race::End::Done(l, _)) => Some(l.call.unknown),
            _ => None,
        };
        for (i, end) in raced.ends.into_iter().enumerate() {
            let (region, route) = &plan[i];
            let route_node = match route {
                Route::Local => me.clone(),
                Route::Remote { node, .. } => node.clone(),
            };
            let view = match end {
                crate::race::End::NotSent => continue,
                crate::race::End::Cut => RegionOutcome {
                    region: region.clone(),
                    node: Some(route_node),
                    status_code: None,
                    error: Some(if raced.winner.is_some() {
                        "cancelled: another region won; the connection was closed".into()
                    } else {
                        "the leg did not end within the attempt's timeout".into()
                    }),
                    latency_ms: cut_ms,
                    decision: Verdict::Interrupted,
                    outcome: Some(if raced.winner.is_some() {
                        LegOutcome::Cancelled
                    } else {
                        LegOutcome::Error
                    }),
                },
                crate::race::End::Done(leg, _) => {
                    let outcome = if Some(i) == raced.winner {
                        LegOutcome::Won
                    } else if !leg.sent {
                        LegOutcome::Refused
                    } else if leg.call.response.is_some() {
                        LegOutcome::Lost
                    } else {
                        LegOutcome::Error
                    };
                    let decision = if call_is_ssrf(&leg.call) {
                        Verdict::Fail
                    } else {
                        spec.retry_policy.judge(&leg.call.outcome)
                    };
                    let view = RegionOutcome {
                        region: region.clone(),
                        node: Some(leg.call.node.clone().unwrap_or(route_node)),
                        status_code: leg.call.response.as_ref().map(|r| r.status_code),
                        error: leg.call.error.as_ref().map(ToString::to_string),
                        latency_ms: leg.ms,
                        decision,
                        outcome: Some(outcome),
                    };
                    if Some(i) == kept {
                        let mut c = leg.call;
                        c.region = Some(region.clone());
                        result = Some(c);
                    }
                    view
                }
            };
            views.push(view);
        }
        // The first leg runs in the job's lane slot: a hand-off of it lost mid-call may still
        // be running at the target, so the slot is held as for an unraced attempt.
        let first_unknown = matches!(&first_end, Some(true));
        let mut call = result.unwrap_or_else(|| {
            CallResult::failed(CallError::Timeout(
                "no leg of the race ended within the attempt's timeout".into(),
            ))
        });
        if let Some(w) = raced.winner {
            tracing::debug!(winner = %plan[w].0, legs = views.len(), cut_ms, "race won");
        }
        call.unknown |= first_unknown;
        call.legs = views;
        call
    }

    /// Hands the call to a live node of another region (`handoff`); this node keeps the
    /// attempt's lease and records the outcome when the leg answers.
    async fn call_remote(
        &self,
        tenant: TenantId,
        spec: &JobSpec,
        idempotent_key: &str,
        timeout: Duration,
        (node, url, region): (&str, &str, &str),
    ) -> CallResult {
        let Some((regions, handoff)) = &self.regions else {
            return CallResult::failed(CallError::Request("no hand-off in this mode".into()));
        };
        let opened = match crate::credentials::open_headers(&self.sealer, tenant, &spec.headers) {
            Ok(o) => o,
            Err(e) => return CallResult::failed(CallError::SealedHeader(e.to_string())),
        };
        let leg = AttemptSpec {
            url: spec.url.clone(),
            method: spec.method.clone(),
            headers: opened.unwrap_or_else(|| spec.headers.clone()),
            body: spec.body.clone(),
            idempotency_key: idempotent_key.to_string(),
            timeout_ms: timeout.as_millis() as u64,
        };
        match handoff.send_leg(url, region, node, &leg).await {
            Err(e) => CallResult::failed(CallError::Connect(e.to_string())),
            Ok((answer, reached)) => {
                if answer.error.as_ref().is_some_and(|e| e.code == "handoff") {
                    regions.stale();
                }
                from_leg(answer, reached)
            }
        }
    }
}

/// One leg of a raced attempt, for the racer.
struct RaceLeg {
    call: CallResult,
    /// False: refused (no budget or permit), not sent.
    sent: bool,
    /// The leg's own latency (from its send), ms.
    ms: u64,
}

impl crate::race::Leg for RaceLeg {
    fn won(&self) -> bool {
        matches!(self.call.outcome, Outcome::Status(s) if (200..300).contains(&s))
    }
    fn ended_sent(&self) -> bool {
        self.sent
    }
}

fn call_is_ssrf(c: &CallResult) -> bool {
    c.ssrf()
}

/// A hand-off's leg as a call result: its answer, or its error by kind (a node that was never
/// reached counts as a connect failure; one lost after the send leaves the outcome unknown).
fn from_leg(leg: LegAnswer, reached: bool) -> CallResult {
    let node = Some(leg.node);
    match (leg.response, leg.error) {
        (Some(r), _) => CallResult {
            node,
            ..CallResult::answered(r)
        },
        (None, e) => {
            let e = e.unwrap_or(crate::handoff::LegError {
                code: "request".into(),
                message: "the leg carried neither an answer nor an error".into(),
            });
            let unknown = e.code == "handoff" && reached;
            let error = match e.code.as_str() {
                "ssrf_denied" => CallError::SsrfDenied(e.message),
                "connect" => CallError::Connect(e.message),
                "handoff" if !reached => CallError::Connect(e.message),
                "timeout" => CallError::Timeout(e.message),
                "body" => CallError::Body(e.message),
                _ => CallError::Request(e.message),
            };
            CallResult {
                unknown,
                node,
                ..CallResult::failed(error)
            }
        }
    }
}

/// The regions this attempt series moved away from (their answer was a reroute), in order.
fn rerouted_from(history: &[Attempt]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for a in history.iter() {
        // A raced attempt's legs that answered a reroute code (or no answer) count too.
        let legs = a
            .legs
            .iter()
            .filter(|l| {
                l.outcome.is_some() && l.decision == Verdict::Reroute && l.region != a.region
            })
            .map(|l| &l.region);
        let own = (a.decision == Verdict::Reroute).then_some(&a.region);
        for r in legs.chain(own) {
            out.retain(|o| o != r);
            out.push(r.clone());
        }
    }
    out
}

/// Why an attempt in `region` runs there: the previous attempt was rerouted from another.
fn moved_because(history: &[Attempt], region: &str) -> Option<String> {
    let last = history.last()?;
    (last.decision == Verdict::Reroute && last.region != region).then(|| {
        let what = last
            .status_code
            .map_or_else(|| "no answer".to_string(), |s| s.to_string());
        format!("reroute: {what} from {}", last.region)
    })
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

#[cfg(test)]
mod race_history_tests {
    use super::*;

    fn leg(region: &str, decision: Verdict, outcome: Option<LegOutcome>) -> RegionOutcome {
        RegionOutcome {
            region: region.into(),
            node: None,
            status_code: None,
            error: None,
            latency_ms: 0,
            decision,
            outcome,
        }
    }

    #[test]
    fn a_race_legs_reroutes_count_as_failed_regions() {
        let mut a = Attempt::interrupted(1, 1, 0, "r1");
        a.decision = Verdict::Reroute;
        a.legs = vec![
            leg("r1", Verdict::Reroute, Some(LegOutcome::Lost)),
            leg("r2", Verdict::Reroute, Some(LegOutcome::Lost)),
            leg("r3", Verdict::Interrupted, Some(LegOutcome::Cancelled)),
            // A fanout leg (no outcome) is not a race's.
            leg("r4", Verdict::Reroute, None),
        ];
        assert_eq!(rerouted_from(&[a.clone()]), vec!["r2", "r1"]);
        // A won race moves nothing; its lost legs still count.
        a.decision = Verdict::Success;
        assert_eq!(rerouted_from(&[a]), vec!["r2"]);
    }
}
