//! Per-job event fan-out for `/events` (SSE), `/wait` and `?wait=`.
//!
//! Only jobs somebody is watching have a channel, so the dispatch path pays one map lookup per
//! event and nothing more. A channel lives exactly as long as its watchers: every receiver is
//! handed out inside a [`Subscription`] whose drop removes the channel when it was the last one,
//! so a watcher that gives up (timeout, 404, closed stream) leaves nothing behind. Open watchers
//! are also counted per tenant ([`WaiterPermit`]), so one tenant cannot hold unbounded memory.

use std::collections::HashMap;
use std::fmt::Write;
use std::sync::{Arc, Mutex, MutexGuard};

use ezt_core::{JobId, TenantId};
use ezt_store::{Attempt, JobRecord};
use tokio::sync::broadcast;

pub use views::{DeliveryView, JobView, QuorumView};

pub mod views;

/// Events buffered per watched job; a watcher further behind sees `Lagged` and re-reads the job.
const CHANNEL_CAPACITY: usize = 64;

/// One event in a job's life, as watchers (`/events`, `/wait`, `?wait=`) receive it.
#[derive(Debug, Clone)]
pub enum JobEvent {
    /// The job was stored (only ever sent from a stream's backlog).
    Queued {
        /// The job.
        job_id: JobId,
        /// When it was created, ms since epoch.
        at: u64,
    },
    /// The job's place in its lane (0 = next).
    Position {
        /// The job.
        job_id: JobId,
        /// Place in the lane.
        position: usize,
    },
    /// An attempt is leaving.
    Dispatching {
        /// The job.
        job_id: JobId,
        /// The attempt's number (all series).
        attempt: u32,
    },
    /// An attempt was recorded.
    Attempt(Box<Attempt>),
    /// The job is final; its view. The last event of a job.
    Final(Arc<JobView>),
}

impl JobEvent {
    /// The event's name: `queued`, `position`, `dispatching`, `attempt`, or the final state.
    pub fn name(&self) -> &str {
        match self {
            Self::Queued { .. } => "queued",
            Self::Position { .. } => "position",
            Self::Dispatching { .. } => "dispatching",
            Self::Attempt(_) => "attempt",
            Self::Final(view) => &view.state,
        }
    }

    /// The event's data as JSON.
    pub fn data(&self) -> serde_json::Value {
        match self {
            Self::Queued { job_id, at } => serde_json::json!({"job_id": job_id, "at": at}),
            Self::Position { job_id, position } => {
                serde_json::json!({"job_id": job_id, "position": position})
            }
            Self::Dispatching { job_id, attempt } => {
                serde_json::json!({"job_id": job_id, "attempt": attempt})
            }
            Self::Attempt(a) => serde_json::to_value(a).unwrap_or_default(),
            Self::Final(view) => serde_json::to_value(view.as_ref()).unwrap_or_default(),
        }
    }

    /// True for the last event of a job (a final state).
    pub fn is_terminal(&self) -> bool {
        matches!(self, Self::Final(_))
    }
}

/// What a late subscriber missed, and which live events it already has.
///
/// A stream subscribes first and reads the job after, so the events published in between
/// arrive twice: once in the backlog built from the job, once live. `is_new` drops the live
/// copies by attempt number.
#[derive(Debug)]
pub struct Replay {
    /// The events to send first, oldest first (the final event last, when the job is final).
    pub backlog: Vec<JobEvent>,
    /// The last attempt recorded in the backlog.
    seen: u32,
    /// The last attempt whose `dispatching` is in the backlog.
    dispatched: u32,
}

impl Replay {
    /// The backlog of `job` as read after subscribing; its final view redacts
    /// `credential_headers`.
    pub fn of(job: &JobRecord, credential_headers: &[String]) -> Self {
        let mut backlog = vec![JobEvent::Queued {
            job_id: job.id,
            at: job.created_at,
        }];
        for a in &job.attempts {
            backlog.push(JobEvent::Dispatching {
                job_id: job.id,
                attempt: a.n,
            });
            backlog.push(JobEvent::Attempt(Box::new(a.clone())));
        }
        let seen = job.attempts.last().map_or(0, |a| a.n);
        // An attempt in flight now was dispatched before we subscribed: tell it from here.
        let dispatched = if job.state == ezt_core::JobState::Running {
            backlog.push(JobEvent::Dispatching {
                job_id: job.id,
                attempt: job.attempt_count,
            });
            job.attempt_count
        } else {
            seen
        };
        if job.state.is_final() {
            let view = JobView::from_record(job, credential_headers);
            backlog.push(JobEvent::Final(Arc::new(view)));
        }
        Self {
            backlog,
            seen,
            dispatched,
        }
    }

    /// Whether a live event is not already in the backlog.
    pub fn is_new(&self, ev: &JobEvent) -> bool {
        match ev {
            JobEvent::Attempt(a) => a.n > self.seen,
            JobEvent::Dispatching { attempt, .. } => *attempt > self.dispatched,
            _ => true,
        }
    }
}

/// The hub.
#[derive(Debug, Default)]
pub struct Events {
    subs: Mutex<HashMap<JobId, broadcast::Sender<JobEvent>>>,
    waiters: Mutex<HashMap<TenantId, usize>>,
    /// Set at shutdown: new subscriptions start closed, so long polls answer at once.
    closed: std::sync::atomic::AtomicBool,
}

/// A tenant already holds as many open streams and long polls as allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooManyWaiters {
    /// The configured cap.
    pub limit: usize,
}

/// One open stream or long poll of a tenant; dropping it gives the slot back.
#[derive(Debug)]
pub struct WaiterPermit {
    hub: Arc<Events>,
    tenant: TenantId,
}

impl Drop for WaiterPermit {
    fn drop(&mut self) {
        let mut g = lock(&self.hub.waiters);
        if let Some(n) = g.get_mut(&self.tenant) {
            *n -= 1;
            if *n == 0 {
                g.remove(&self.tenant);
            }
        }
    }
}

/// A receiver of one job's events that removes the job's channel when it is the last one.
#[derive(Debug)]
pub struct Subscription {
    hub: Arc<Events>,
    id: JobId,
    // `Option` only so `drop` can release the receiver before counting what is left.
    rx: Option<broadcast::Receiver<JobEvent>>,
}

impl Subscription {
    /// The next event (see `broadcast::Receiver::recv`).
    pub async fn recv(&mut self) -> Result<JobEvent, broadcast::error::RecvError> {
        match self.rx.as_mut() {
            Some(rx) => rx.recv().await,
            None => Err(broadcast::error::RecvError::Closed),
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        // Under the map lock, so a concurrent `subscribe` either sees the entry with its new
        // receiver counted or finds it gone and makes a fresh one: never a channel nobody owns.
        let mut g = lock(&self.hub.subs);
        drop(self.rx.take());
        if g.get(&self.id).is_some_and(|tx| tx.receiver_count() == 0) {
            g.remove(&self.id);
            shrink_if_sparse(&mut g);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Gives memory back after a burst of watchers (a `HashMap` never shrinks by itself).
fn shrink_if_sparse<K: std::hash::Hash + Eq, V>(m: &mut HashMap<K, V>) {
    if m.capacity() > 1024 && m.len() * 4 < m.capacity() {
        m.shrink_to(m.len() * 2);
    }
}

impl Events {
    /// Takes one of `tenant`'s `limit` slots for an open stream or long poll.
    pub fn admit_waiter(
        self: &Arc<Self>,
        tenant: TenantId,
        limit: usize,
    ) -> Result<WaiterPermit, TooManyWaiters> {
        let mut g = lock(&self.waiters);
        let n = g.entry(tenant).or_insert(0);
        if *n >= limit {
            if *n == 0 {
                g.remove(&tenant);
            }
            return Err(TooManyWaiters { limit });
        }
        *n += 1;
        Ok(WaiterPermit {
            hub: self.clone(),
            tenant,
        })
    }

    /// Starts receiving `id`'s future events. Call it only for a job that exists and is not
    /// final, then re-read the job: an event sent between that read and this call is missed.
    pub fn subscribe(self: &Arc<Self>, id: JobId) -> Subscription {
        let rx = if self.closed.load(std::sync::atomic::Ordering::Acquire) {
            None // shutting down: `recv` answers `Closed` at once
        } else {
            let mut g = lock(&self.subs);
            Some(
                g.entry(id)
                    .or_insert_with(|| broadcast::channel(CHANNEL_CAPACITY).0)
                    .subscribe(),
            )
        };
        Subscription {
            hub: self.clone(),
            id,
            rx,
        }
    }

    /// Whether anyone watches `id` (so callers can skip building an event nobody reads).
    pub fn is_watched(&self, id: JobId) -> bool {
        lock(&self.subs).contains_key(&id)
    }

    /// Sends an event to whoever watches `id`; `make` runs only when someone does, which keeps
    /// serialisation off the dispatch path of unwatched jobs.
    pub fn publish(&self, id: JobId, make: impl FnOnce() -> JobEvent) {
        let mut g = lock(&self.subs);
        if let Some(tx) = g.get(&id) {
            let event = make();
            let terminal = event.is_terminal();
            let _ = tx.send(event);
            if terminal || tx.receiver_count() == 0 {
                g.remove(&id);
                shrink_if_sparse(&mut g);
            }
        }
    }

    /// Ends every subscription (their `recv` answers `Closed`), now and later: at shutdown, so
    /// long polls and event streams answer instead of holding the drain.
    pub fn close_all(&self) {
        self.closed
            .store(true, std::sync::atomic::Ordering::Release);
        lock(&self.subs).clear();
    }

    /// Jobs with a channel (watched by at least one receiver).
    pub fn subscriptions(&self) -> usize {
        lock(&self.subs).len()
    }

    /// Open streams and long polls, all tenants.
    pub fn waiters(&self) -> usize {
        lock(&self.waiters).values().sum()
    }

    /// The hub's gauges in the Prometheus text format (appended to `/metrics`).
    pub fn render_metrics(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP ezthrottle_event_subscriptions Jobs with an open event channel (watched by a stream or long poll).\n# TYPE ezthrottle_event_subscriptions gauge\nezthrottle_event_subscriptions {}",
            self.subscriptions()
        );
        let _ = writeln!(
            out,
            "# HELP ezthrottle_waiters Open event streams and long polls.\n# TYPE ezthrottle_waiters gauge\nezthrottle_waiters {}",
            self.waiters()
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(terminal: bool) -> JobEvent {
        if terminal {
            JobEvent::Final(Arc::new(views::sample("succeeded")))
        } else {
            JobEvent::Dispatching {
                job_id: job(0),
                attempt: 1,
            }
        }
    }

    fn job(n: u64) -> JobId {
        JobId::new(1_700_000_000_000 + n, u128::from(n))
    }

    fn attempt(n: u32) -> Attempt {
        Attempt {
            n,
            series: 1,
            at: 0,
            region: "local".into(),
            status_code: Some(500),
            error: None,
            latency_ms: 1,
            decision: ezt_core::retry::Verdict::Retry,
            wait_ms: Some(10),
            link: 0,
            next_link: None,
            node: None,
            reason: None,
            legs: Vec::new(),
        }
    }

    fn record(state: ezt_core::JobState, attempts: Vec<Attempt>, attempt_count: u32) -> JobRecord {
        let v = views::sample("queued");
        JobRecord {
            id: job(7),
            tenant_id: TenantId::new(1, 1),
            lane: ezt_core::lane::LaneKey(v.lane),
            state,
            spec: v.spec,
            idempotent_key: v.idempotent_key,
            created_at: 5,
            updated_at: 5,
            run_at: 5,
            deadline_at: u64::MAX,
            attempt_count,
            retries: 0,
            reroutes: 0,
            series: 1,
            response: None,
            error: None,
            finished_at: None,
            attempts,
            deliveries: Vec::new(),
        }
    }

    #[test]
    fn a_replay_holds_what_was_missed_and_drops_its_live_copies() {
        let running = record(ezt_core::JobState::Running, vec![attempt(1), attempt(2)], 3);
        let r = Replay::of(&running, &[]);
        let names: Vec<&str> = r.backlog.iter().map(JobEvent::name).collect();
        assert_eq!(
            names,
            [
                "queued",
                "dispatching",
                "attempt",
                "dispatching",
                "attempt",
                "dispatching"
            ],
            "attempts in order, then the attempt in flight"
        );
        let dispatching = |attempt| JobEvent::Dispatching {
            job_id: job(7),
            attempt,
        };
        assert!(
            !r.is_new(&JobEvent::Attempt(Box::new(attempt(2)))),
            "already sent"
        );
        assert!(
            r.is_new(&JobEvent::Attempt(Box::new(attempt(3)))),
            "the one in flight"
        );
        assert!(
            !r.is_new(&dispatching(3)),
            "its dispatching was in the backlog"
        );
        assert!(r.is_new(&dispatching(4)));
        assert!(r.is_new(&ev(true)), "the final event always goes out");
    }

    #[test]
    fn a_final_jobs_replay_ends_with_its_final_event() {
        let mut done = record(ezt_core::JobState::Failed, vec![attempt(1)], 1);
        done.finished_at = Some(9);
        let r = Replay::of(&done, &[]);
        let last = r.backlog.last().expect("not empty");
        assert!(last.is_terminal(), "ends with the final state");
        assert_eq!(last.name(), "failed");
        assert_eq!(
            last.data()["job_id"],
            job(7).to_string(),
            "the final event carries the view"
        );
    }

    #[tokio::test]
    async fn dropping_the_last_receiver_removes_the_channel() {
        let hub = Arc::new(Events::default());
        let a = hub.subscribe(job(1));
        let b = hub.subscribe(job(1));
        assert_eq!(hub.subscriptions(), 1);
        drop(a);
        assert!(hub.is_watched(job(1)), "one receiver is left");
        drop(b);
        assert_eq!(hub.subscriptions(), 0, "nothing left behind");
        assert!(!hub.is_watched(job(1)));
    }

    #[tokio::test]
    async fn a_final_event_reaches_the_watcher_and_removes_the_channel() {
        let hub = Arc::new(Events::default());
        let mut s = hub.subscribe(job(2));
        hub.publish(job(2), || ev(false));
        hub.publish(job(2), || ev(true));
        assert_eq!(hub.subscriptions(), 0, "removed at the final event");
        assert!(!s.recv().await.unwrap().is_terminal());
        assert!(s.recv().await.unwrap().is_terminal());
        drop(s);
        assert_eq!(hub.subscriptions(), 0);
    }

    #[tokio::test]
    async fn a_late_receiver_drop_keeps_a_newer_channel() {
        let hub = Arc::new(Events::default());
        let old = hub.subscribe(job(3));
        hub.publish(job(3), || ev(true)); // channel removed, `old` still holds its receiver
        let new = hub.subscribe(job(3)); // a replay: a fresh channel
        drop(old);
        assert!(hub.is_watched(job(3)), "the new watcher's channel stays");
        drop(new);
        assert_eq!(hub.subscriptions(), 0);
    }

    #[tokio::test]
    async fn many_watchers_that_give_up_leave_nothing() {
        let hub = Arc::new(Events::default());
        for n in 0..10_000 {
            drop(hub.subscribe(job(n)));
        }
        assert_eq!(hub.subscriptions(), 0);
        assert!(lock(&hub.subs).capacity() <= 2048, "the map shrank back");
    }

    #[test]
    fn waiters_are_capped_per_tenant_and_released_on_drop() {
        let hub = Arc::new(Events::default());
        let (t1, t2) = (TenantId::new(1, 1), TenantId::new(2, 2));
        let a = hub.admit_waiter(t1, 2).unwrap();
        let _b = hub.admit_waiter(t1, 2).unwrap();
        assert_eq!(
            hub.admit_waiter(t1, 2).unwrap_err(),
            TooManyWaiters { limit: 2 }
        );
        let _c = hub
            .admit_waiter(t2, 2)
            .expect("another tenant has its own slots");
        drop(a);
        let _d = hub.admit_waiter(t1, 2).expect("a slot came back");
        assert_eq!(hub.waiters(), 3);
        assert!(hub.admit_waiter(t1, 0).is_err());
        assert!(!lock(&hub.waiters).contains_key(&TenantId::new(9, 9)));
    }

    #[tokio::test]
    async fn after_close_all_subscriptions_end_at_once() {
        let hub = Arc::new(Events::default());
        let mut before = hub.subscribe(job(4));
        hub.close_all();
        let mut after = hub.subscribe(job(5));
        assert!(before.recv().await.is_err());
        assert!(after.recv().await.is_err());
        assert_eq!(hub.subscriptions(), 0);
    }
}
