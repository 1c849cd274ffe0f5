//! The scheduler: one task that owns every lane, its limiter and its fair queue.
//!
//! It keeps a small in-memory index of waiting work (id, lane, tenant, times; bodies stay in
//! the store), rebuilt from the store at start-up. Lanes become due when work arrives, an
//! in-flight slot frees or the limiter's wait ends; the scheduler then pops items by weighted
//! round robin and hands each to its `Runner`. Owning all of this in one task means no locks on
//! the dispatch path and a single, easily-reasoned order of events.
//!
//! Two schedulers run: one for jobs (the executor) and one for webhook deliveries (the
//! deliverer), because deliveries are calls too and need the same per-host limits and fairness;
//! keeping them apart means a slow receiver never holds up jobs, and the reverse.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::fmt::{Debug, Display};
use std::future::Future;
use std::hash::Hash;
use std::sync::Arc;

use ezt_core::fair_queue::FairQueue;
use ezt_core::gcra::{Gcra, Nanos};
use ezt_core::lane::LaneKey;
use ezt_core::ratelimit_headers::LimitChange;
use ezt_core::{JobId, TenantId};
use ezt_store::PendingJob;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::{LaneLimit, LanesConfig};
use crate::metrics::{Counter, Gauge, Metrics};

/// A job the scheduler should run, with its tenant's weight.
#[derive(Debug, Clone)]
pub struct Enqueue {
    /// The job.
    pub job: PendingJob,
    /// Its tenant's fair-share weight.
    pub weight: u32,
}

/// A piece of work as the scheduler indexes it.
#[derive(Debug, Clone)]
pub struct Item<Id> {
    /// Its id.
    pub id: Id,
    /// Owner, for fair sharing.
    pub tenant: TenantId,
    /// The tenant's weight.
    pub weight: u32,
    /// Lane it runs in.
    pub lane: LaneKey,
    /// Not before, ms since epoch.
    pub run_at: u64,
    /// Expiry, ms since epoch (`u64::MAX`: never).
    pub deadline_at: u64,
}

impl From<Enqueue> for Item<JobId> {
    fn from(e: Enqueue) -> Self {
        Self {
            id: e.job.id,
            tenant: e.job.tenant_id,
            weight: e.weight,
            lane: e.job.lane,
            run_at: e.job.run_at,
            deadline_at: e.job.deadline_at,
        }
    }
}

/// What an attempt reports back to its scheduler.
#[derive(Debug, Clone)]
pub struct Ran {
    /// Finished, or when to try again.
    pub end: AttemptEnd,
    /// What the response taught about the lane's limits.
    pub change: Option<LimitChange>,
    /// Whether the far end answered well (`Some(true)`), badly (`Some(false)`) or this says
    /// nothing about it. When a lane that was failing answers well again, its delayed items
    /// are run at once instead of waiting out their backoff (used for webhook receivers that
    /// come back).
    pub healthy: Option<bool>,
}

/// Runs the work a scheduler dispatches.
pub trait Runner: Send + Sync + 'static {
    /// Id of one piece of work.
    type Id: Copy + Eq + Hash + Ord + Debug + Display + Send + Sync + 'static;
    /// Makes one attempt of `id`, owned by `tenant`; `gate` must be passed right before sending.
    fn run<'a>(
        &'a self,
        id: Self::Id,
        tenant: TenantId,
        lane: &'a LaneKey,
        gate: &'a mut GateTicket<Self::Id>,
    ) -> impl Future<Output = Ran> + Send + 'a;
    /// Ends work whose deadline passed while it waited.
    fn expire(&self, id: Self::Id) -> impl Future<Output = ()> + Send + '_;
}

/// Which metrics a scheduler counts into.
pub type MetricsOf = fn(&Metrics) -> (&Counter, &Gauge);

/// How an attempt ended, as far as the scheduler cares.
#[derive(Debug, Clone)]
pub enum AttemptEnd {
    /// The job is final (or was never leased): forget it.
    Finished,
    /// Try again after this relative wait (backoff or Retry-After). It is measured on the
    /// monotonic clock, so a step of the wall clock neither shortens nor stretches it.
    RetryAfter(std::time::Duration),
}

/// Messages to the scheduler.
#[derive(Debug)]
pub(crate) enum Command<Id> {
    Enqueue(Vec<Item<Id>>),
    Done {
        id: Id,
        lane: usize,
        ran: Ran,
        at: Instant,
    },
    Remove(Id),
    Position(Id, oneshot::Sender<Option<usize>>),
    Lanes(oneshot::Sender<Vec<LaneView>>),
    Kick(usize),
}

/// A lane as shown to operators and metrics.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LaneView {
    /// Lane key.
    pub lane: String,
    /// Requests per second now in force.
    pub rate: f64,
    /// Burst.
    pub burst: u32,
    /// In-flight cap.
    pub max_in_flight: u32,
    /// In flight now.
    pub in_flight: u32,
    /// Jobs waiting for the limiter.
    pub queued: usize,
    /// Paused until (ms since epoch), after a Retry-After or exhausted quota.
    pub paused_until: Option<u64>,
    /// Whether the limit was pinned by the operator.
    pub pinned: bool,
    /// Calls dispatched since start.
    pub dispatched: u64,
}

/// Cheap handle for talking to a scheduler.
#[derive(Debug)]
pub struct SchedulerHandle<Id = JobId> {
    tx: mpsc::UnboundedSender<Command<Id>>,
}

impl<Id> Clone for SchedulerHandle<Id> {
    fn clone(&self) -> Self {
        Self {
            tx: self.tx.clone(),
        }
    }
}

impl<Id: Debug> SchedulerHandle<Id> {
    /// Hands newly admitted (or replayed) work to the scheduler.
    pub fn enqueue<I: Into<Item<Id>>>(&self, items: Vec<I>) {
        if !items.is_empty() {
            let items = items.into_iter().map(Into::into).collect();
            let _ = self.tx.send(Command::Enqueue(items));
        }
    }
    /// Drops cancelled work from its queue.
    pub fn remove(&self, id: Id) {
        let _ = self.tx.send(Command::Remove(id));
    }
    pub(crate) fn done(&self, id: Id, lane: usize, ran: Ran) {
        let _ = self.tx.send(Command::Done {
            id,
            lane,
            ran,
            at: Instant::now(),
        });
    }
    /// The item's place in its lane (0 = next), if it is waiting there.
    pub async fn position(&self, id: Id) -> Option<usize> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(Command::Position(id, tx)).ok()?;
        rx.await.ok().flatten()
    }
    /// Every lane's state.
    pub async fn lanes(&self) -> Vec<LaneView> {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Command::Lanes(tx)).is_err() {
            return Vec::new();
        }
        rx.await.unwrap_or_default()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Where {
    Delayed,
    Queued,
    Running,
}

#[derive(Debug)]
struct Entry {
    lane: usize,
    tenant: TenantId,
    weight: u32,
    /// When a delayed item is due (monotonic); older heap entries for it are stale.
    due: Instant,
    deadline_at: u64,
    /// Wall-clock lower bound (ms since epoch) of a delayed job's start: its `run_at` when the
    /// scheduler learned it as an absolute time (admission, recovery), 0 for relative waits.
    not_before_ms: u64,
    at: Where,
}

/// How much timer lateness a lane may make up (tokio's timer wheel has 1 ms ticks).
const CATCH_UP: Nanos = 2_000_000;

/// The lane's limiter as seen at the moment of sending.
///
/// The scheduler paces dispatch with its own GCRA, but between that decision and the bytes
/// leaving there is a lease write whose latency varies; two calls could then leave closer
/// together than the limit allows. Each attempt therefore passes this gate (same limit, same
/// pauses) right before sending, so the spacing holds where the target sees it.
#[derive(Debug)]
pub struct SendGate {
    state: std::sync::Mutex<(Gcra, f64, u32)>,
    waiting: std::sync::atomic::AtomicU32,
    origin: Instant,
    pinned: bool,
}

impl SendGate {
    fn new(limit: LaneLimit, origin: Instant, pinned: bool) -> Self {
        let g = Gcra::new(limit.rate, limit.burst);
        Self {
            state: std::sync::Mutex::new((g, limit.rate, limit.burst)),
            waiting: Default::default(),
            origin,
            pinned,
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut (Gcra, f64, u32)) -> R) -> R {
        f(&mut self.state.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Applies what a response taught at once, so calls already dispatched in this lane wait
    /// for a Retry-After too (the scheduler applies the same change to its own pacing).
    pub fn apply(&self, c: &LimitChange, at: Instant) {
        let at_n = at.saturating_duration_since(self.origin).as_nanos() as Nanos;
        self.with(|(g, rate, burst)| {
            if !self.pinned {
                let r = c
                    .rate_per_sec
                    .filter(|r| r.is_finite() && *r > 0.0)
                    .unwrap_or(*rate);
                let b = c.burst.filter(|b| *b >= 1).unwrap_or(*burst);
                if (r, b) != (*rate, *burst) {
                    g.set_limit(r, b);
                    (*rate, *burst) = (r, b);
                }
            }
            if let Some(p) = c.pause_for_ms.filter(|p| *p > 0) {
                g.pause_until(at_n + p * 1_000_000);
            }
        });
    }

    /// Waits until the limiter lets one request leave now, and counts it.
    async fn pass(&self) {
        loop {
            let now = Instant::now();
            let n = now.saturating_duration_since(self.origin).as_nanos() as Nanos;
            match self.with(|(g, _, _)| g.check_catching_up(n, CATCH_UP)) {
                ezt_core::gcra::Decision::Allow => return,
                ezt_core::gcra::Decision::Wait { until } => {
                    tokio::time::sleep_until(self.origin + std::time::Duration::from_nanos(until))
                        .await
                }
            }
        }
    }
}

/// Jobs dispatched but not yet past the send gate, per lane. Keeping this pipeline short means
/// the gate never holds a queue of its own (which would be FIFO and undo the fair queue's order:
/// a sparse tenant's job would wait behind every noisy job already at the gate), while still
/// hiding the lease write behind the limiter's wait: the pipeline covers `LEASE_COVER` worth of
/// slots (1 at 200/s, 4 at 1000/s).
fn gate_pipeline(rate: f64) -> u32 {
    const LEASE_COVER_S: f64 = 0.004;
    (rate * LEASE_COVER_S).ceil().clamp(1.0, 64.0) as u32
}

/// One dispatched attempt's place at its lane's send gate. Passing the gate (or dropping the
/// ticket unsent, e.g. when the job was cancelled meanwhile) frees the place and wakes the lane.
#[derive(Debug)]
pub struct GateTicket<Id = JobId> {
    gate: Arc<SendGate>,
    lane: usize,
    handle: SchedulerHandle<Id>,
    held: bool,
}

impl<Id> GateTicket<Id> {
    /// Waits for the limiter, then frees the pipeline place.
    pub async fn pass(&mut self) {
        self.gate.pass().await;
        self.release();
    }

    /// What a response taught, applied at once to the lane's send gate.
    pub fn apply(&self, c: &LimitChange, at: Instant) {
        self.gate.apply(c, at);
    }

    fn release(&mut self) {
        if std::mem::take(&mut self.held) {
            self.gate
                .waiting
                .fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
            let _ = self.handle.tx.send(Command::Kick(self.lane));
        }
    }
}

impl<Id> Drop for GateTicket<Id> {
    fn drop(&mut self) {
        self.release();
    }
}

#[derive(Debug)]
struct Lane<Id> {
    key: LaneKey,
    gcra: Gcra,
    gate: Arc<SendGate>,
    limit: LaneLimit,
    pinned: bool,
    in_flight: u32,
    queue: FairQueue<TenantId, Id>,
    wake_at: Option<Instant>,
    paused_until_ms: Option<u64>,
    dispatched: u64,
    failing: bool,
}

/// The scheduler's state; runs as one task.
pub(crate) struct Scheduler<R: Runner> {
    rx: mpsc::UnboundedReceiver<Command<R::Id>>,
    handle: SchedulerHandle<R::Id>,
    lanes_cfg: LanesConfig,
    lane_ids: HashMap<LaneKey, usize>,
    lanes: Vec<Lane<R::Id>>,
    jobs: HashMap<R::Id, Entry>,
    /// Delayed items by monotonic due time (see `promote_and_expire` for the clock rules).
    delayed: BinaryHeap<Reverse<(Instant, R::Id)>>,
    deadlines: BinaryHeap<Reverse<(u64, R::Id)>>,
    wakeups: BinaryHeap<Reverse<(Instant, usize)>>,
    due: Vec<usize>,
    origin: Instant,
    runner: Arc<R>,
    metrics: Arc<Metrics>,
    metrics_of: MetricsOf,
}

/// Wall-clock ms since the epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl<R: Runner> Scheduler<R> {
    pub(crate) fn new(
        lanes_cfg: LanesConfig,
        runner: Arc<R>,
        metrics: Arc<Metrics>,
        metrics_of: MetricsOf,
    ) -> (Self, SchedulerHandle<R::Id>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let handle = SchedulerHandle { tx };
        let s = Self {
            rx,
            handle: handle.clone(),
            lanes_cfg,
            lane_ids: HashMap::new(),
            lanes: Vec::new(),
            jobs: HashMap::new(),
            delayed: BinaryHeap::new(),
            deadlines: BinaryHeap::new(),
            wakeups: BinaryHeap::new(),
            due: Vec::new(),
            origin: Instant::now(),
            runner,
            metrics,
            metrics_of,
        };
        (s, handle)
    }

    fn nanos(&self, t: Instant) -> Nanos {
        t.saturating_duration_since(self.origin).as_nanos() as Nanos
    }

    fn lane_index(&mut self, key: &LaneKey) -> usize {
        if let Some(&i) = self.lane_ids.get(key) {
            return i;
        }
        let authority = key.authority();
        let host = authority.rsplit_once(':').map_or(authority, |(h, _)| h);
        let pinned = self
            .lanes_cfg
            .hosts
            .get(authority)
            .or_else(|| self.lanes_cfg.hosts.get(host))
            .copied();
        let limit = pinned.unwrap_or(self.lanes_cfg.default);
        let i = self.lanes.len();
        self.lanes.push(Lane {
            key: key.clone(),
            gcra: Gcra::new(limit.rate, limit.burst),
            gate: Arc::new(SendGate::new(limit, self.origin, pinned.is_some())),
            limit,
            pinned: pinned.is_some(),
            in_flight: 0,
            queue: FairQueue::new(),
            wake_at: None,
            paused_until_ms: None,
            dispatched: 0,
            failing: false,
        });
        self.lane_ids.insert(key.clone(), i);
        i
    }

    fn admit(&mut self, e: Item<R::Id>, now: u64, now_i: Instant) {
        if self.jobs.contains_key(&e.id) {
            return; // already known (e.g. a wakeup for a job the API already handed us)
        }
        let lane = self.lane_index(&e.lane);
        let at = if e.run_at > now {
            Where::Delayed
        } else {
            Where::Queued
        };
        self.jobs.insert(
            e.id,
            Entry {
                lane,
                tenant: e.tenant,
                weight: e.weight,
                due: now_i + std::time::Duration::from_millis(e.run_at.saturating_sub(now)),
                deadline_at: e.deadline_at,
                not_before_ms: e.run_at,
                at,
            },
        );
        if e.deadline_at != u64::MAX {
            self.deadlines.push(Reverse((e.deadline_at, e.id)));
        }
        match at {
            Where::Delayed => self.delayed.push(Reverse((self.jobs[&e.id].due, e.id))),
            _ => {
                self.lanes[lane].queue.push(e.tenant, e.weight, e.id);
                self.due.push(lane);
            }
        }
    }

    /// A lane whose far end failed answers well again: everything waiting out a backoff in it
    /// runs now, oldest id first.
    fn hasten(&mut self, lane: usize) {
        let mut ids: Vec<R::Id> = self
            .jobs
            .iter()
            .filter(|(_, e)| e.lane == lane && e.at == Where::Delayed)
            .map(|(id, _)| *id)
            .collect();
        if ids.is_empty() {
            return;
        }
        ids.sort_unstable();
        tracing::info!(lane = %self.lanes[lane].key, items = ids.len(), "lane answers again: running its delayed items now");
        for id in ids {
            let e = self.jobs.get_mut(&id).expect("listed");
            e.at = Where::Queued;
            let (tenant, weight) = (e.tenant, e.weight);
            self.lanes[lane].queue.push(tenant, weight, id);
        }
        self.due.push(lane);
    }

    fn handle(&mut self, cmd: Command<R::Id>) {
        let now = now_ms();
        let now_i = Instant::now();
        match cmd {
            Command::Enqueue(jobs) => {
                for e in jobs {
                    self.admit(e, now, now_i);
                }
            }
            Command::Done { id, lane, ran, at } => {
                let l = &mut self.lanes[lane];
                l.in_flight = l.in_flight.saturating_sub(1);
                if let Some(c) = ran.change {
                    self.learn(lane, &c, at);
                }
                self.due.push(lane);
                match ran.end {
                    AttemptEnd::Finished => {
                        self.jobs.remove(&id);
                    }
                    AttemptEnd::RetryAfter(wait) => {
                        if let Some(e) = self.jobs.get_mut(&id) {
                            e.at = Where::Delayed;
                            e.not_before_ms = 0;
                            e.due = at + wait;
                            self.delayed.push(Reverse((e.due, id)));
                        }
                    }
                }
                match ran.healthy {
                    Some(false) => self.lanes[lane].failing = true,
                    Some(true) if self.lanes[lane].failing => {
                        self.lanes[lane].failing = false;
                        self.hasten(lane);
                    }
                    _ => {}
                }
            }
            Command::Remove(id) => {
                if let Some(e) = self.jobs.get(&id) {
                    if e.at != Where::Running {
                        let lane = e.lane;
                        self.jobs.remove(&id);
                        // Removing from the lane's queue keeps positions right; cost is O(queue).
                        self.lanes[lane].queue.remove_where(|j| *j == id);
                    }
                }
            }
            Command::Kick(lane) => self.due.push(lane),
            Command::Position(id, reply) => {
                let pos = self
                    .jobs
                    .get(&id)
                    .filter(|e| e.at == Where::Queued)
                    .and_then(|e| self.lanes[e.lane].queue.position(&e.tenant, |j| *j == id));
                let _ = reply.send(pos);
            }
            Command::Lanes(reply) => {
                let views = self
                    .lanes
                    .iter()
                    .map(|l| LaneView {
                        lane: l.key.0.clone(),
                        rate: l.limit.rate,
                        burst: l.limit.burst,
                        max_in_flight: l.limit.max_in_flight,
                        in_flight: l.in_flight,
                        queued: l.queue.len(),
                        paused_until: l.paused_until_ms.filter(|&p| p > now),
                        pinned: l.pinned,
                        dispatched: l.dispatched,
                    })
                    .collect();
                let _ = reply.send(views);
            }
        }
    }

    /// Applies what a response taught: a pause for the whole lane, and (unless pinned) a new
    /// rate, burst or concurrency.
    fn learn(&mut self, lane: usize, c: &LimitChange, at: Instant) {
        let at_n = self.nanos(at);
        let l = &mut self.lanes[lane];
        if !l.pinned {
            let mut limit = l.limit;
            if let Some(r) = c.rate_per_sec.filter(|r| r.is_finite() && *r > 0.0) {
                limit.rate = r;
            }
            if let Some(b) = c.burst.filter(|b| *b >= 1) {
                limit.burst = b;
            }
            if let Some(m) = c.max_in_flight.filter(|m| *m >= 1) {
                limit.max_in_flight = m;
            }
            if limit != l.limit {
                tracing::info!(lane = %l.key, rate = limit.rate, burst = limit.burst, max_in_flight = limit.max_in_flight, "lane limit learned");
                l.gcra.set_limit(limit.rate, limit.burst);
                l.limit = limit;
            }
        }
        if let Some(p) = c.pause_for_ms.filter(|p| *p > 0) {
            l.gcra.pause_until(at_n + p * 1_000_000);
            l.paused_until_ms = Some(now_ms() + p);
            tracing::info!(lane = %l.key, pause_ms = p, "lane paused by the target");
        }
    }

    /// Moves due delayed jobs into their lanes and expires jobs whose deadline passed while
    /// they waited.
    ///
    /// Clock rules (a wall-clock step, e.g. NTP or an operator, must never start work early):
    /// a relative wait (backoff, Retry-After) is due when that much monotonic time has passed. A
    /// job delayed to an absolute `run_at` (the API's `retry_at`, or any delay read back from the
    /// store) is due when both clocks agree: the monotonic delay it implied when the scheduler
    /// learned it has passed, and the wall clock has reached `run_at`. A step forward therefore
    /// does not start it early, and a step back makes it wait for the wall clock again (checked
    /// every second). Deadlines (`timeout`) stay absolute wall-clock times.
    fn promote_and_expire(&mut self, now: u64, now_i: Instant) {
        while let Some(Reverse((t, id))) = self.delayed.peek().copied() {
            if t > now_i {
                break;
            }
            self.delayed.pop();
            if let Some(e) = self.jobs.get_mut(&id) {
                // A stale entry (the item was hastened and re-scheduled since) is skipped.
                if e.at == Where::Delayed && e.due == t {
                    if e.not_before_ms > now {
                        let wait = (e.not_before_ms - now).min(1000);
                        e.due = now_i + std::time::Duration::from_millis(wait);
                        self.delayed.push(Reverse((e.due, id)));
                        continue;
                    }
                    e.at = Where::Queued;
                    let (lane, tenant, weight) = (e.lane, e.tenant, e.weight);
                    self.lanes[lane].queue.push(tenant, weight, id);
                    self.due.push(lane);
                }
            }
        }
        while let Some(Reverse((t, id))) = self.deadlines.peek().copied() {
            if t > now {
                break;
            }
            self.deadlines.pop();
            let Some(e) = self.jobs.get(&id) else {
                continue;
            };
            if e.deadline_at != t || e.at == Where::Running {
                continue; // a replay moved the deadline, or the attempt will decide
            }
            let lane = e.lane;
            let was_queued = e.at == Where::Queued;
            self.jobs.remove(&id);
            if was_queued {
                self.lanes[lane].queue.remove_where(|j| *j == id);
            }
            let runner = self.runner.clone();
            tokio::spawn(async move { runner.expire(id).await });
        }
    }

    fn dispatch_due(&mut self, now_i: Instant) {
        let now_n = self.nanos(now_i);
        let origin = self.origin;
        let mut due = std::mem::take(&mut self.due);
        due.sort_unstable();
        due.dedup();
        for lane in due {
            loop {
                let l = &mut self.lanes[lane];
                if l.queue.is_empty()
                    || l.in_flight >= l.limit.max_in_flight
                    || l.gate.waiting.load(std::sync::atomic::Ordering::Acquire)
                        >= gate_pipeline(l.limit.rate)
                {
                    break;
                }
                let ready = l.gcra.ready_at(now_n);
                if ready > now_n {
                    let at = origin + std::time::Duration::from_nanos(ready);
                    if l.wake_at.is_none_or(|w| w > at || w <= now_i) {
                        l.wake_at = Some(at);
                        self.wakeups.push(Reverse((at, lane)));
                    }
                    break;
                }
                let Some((tenant, id)) = l.queue.pop() else {
                    break;
                };
                let allowed = l.gcra.check_catching_up(now_n, CATCH_UP);
                debug_assert_eq!(allowed, ezt_core::gcra::Decision::Allow);
                l.in_flight += 1;
                l.dispatched += 1;
                let key = l.key.clone();
                l.gate
                    .waiting
                    .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
                let mut ticket = GateTicket {
                    gate: l.gate.clone(),
                    lane,
                    handle: self.handle.clone(),
                    held: true,
                };
                if let Some(e) = self.jobs.get_mut(&id) {
                    e.at = Where::Running;
                }
                let (dispatched, in_flight) = (self.metrics_of)(&self.metrics);
                dispatched.inc();
                in_flight.inc();
                let runner = self.runner.clone();
                let handle = self.handle.clone();
                let metrics = self.metrics.clone();
                let metrics_of = self.metrics_of;
                tokio::spawn(async move {
                    let ran = runner.run(id, tenant, &key, &mut ticket).await;
                    drop(ticket);
                    handle.done(id, lane, ran);
                    metrics_of(&metrics).1.dec();
                });
            }
        }
    }

    fn next_timer(&mut self) -> Option<Instant> {
        let now_i = Instant::now();
        let now = now_ms();
        let mut next: Option<Instant> = None;
        let mut consider = |t: Instant| next = Some(next.map_or(t, |n: Instant| n.min(t)));
        // Discard stale lane wakeups (an earlier one replaced them).
        while let Some(Reverse((t, lane))) = self.wakeups.peek().copied() {
            if self.lanes[lane].wake_at == Some(t) {
                break;
            }
            self.wakeups.pop();
        }
        if let Some(Reverse((t, _))) = self.wakeups.peek() {
            consider(*t);
        }
        if let Some(Reverse((t, _))) = self.delayed.peek() {
            consider(*t);
        }
        if let Some(Reverse((t, _))) = self.deadlines.peek() {
            consider(now_i + std::time::Duration::from_millis(t.saturating_sub(now)));
        }
        next
    }

    fn fire_wakeups(&mut self, now_i: Instant) {
        while let Some(Reverse((t, lane))) = self.wakeups.peek().copied() {
            if t > now_i {
                break;
            }
            self.wakeups.pop();
            if self.lanes[lane].wake_at == Some(t) {
                self.lanes[lane].wake_at = None;
                self.due.push(lane);
            }
        }
    }

    /// Runs until `shutdown` fires; then stops dispatching (in-flight attempts finish on their own).
    pub(crate) async fn run(mut self, shutdown: CancellationToken) {
        loop {
            let timer = self.next_timer();
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                cmd = self.rx.recv() => {
                    let Some(cmd) = cmd else { break };
                    self.handle(cmd);
                    // Drain whatever else is waiting before dispatching, so a burst of
                    // submissions is scheduled in one pass.
                    for _ in 0..4096 {
                        match self.rx.try_recv() {
                            Ok(cmd) => self.handle(cmd),
                            Err(_) => break,
                        }
                    }
                }
                _ = sleep_until_opt(timer) => {}
            }
            let now_i = Instant::now();
            self.fire_wakeups(now_i);
            self.promote_and_expire(now_ms(), now_i);
            self.dispatch_due(now_i);
        }
    }
}

async fn sleep_until_opt(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}
