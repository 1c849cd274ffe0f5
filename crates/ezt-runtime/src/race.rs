//! Racing legs (issue 15): the one racer TORRENT and a queued job's `execution_mode: race`
//! share, and the job path's per-lane state for it (hedge budget, observed latencies).
//!
//! [`run`] starts each leg at its offset from the race's start (0: at once; later: a hedge,
//! started only if no leg has ended meanwhile), ends the race at the first winning leg and
//! drops every leg still running, which closes their connections (a hand-off's closes the
//! executing node's upstream call too). Without a winner it waits for every leg it started.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use ezt_core::hedge::{HedgeBudget, Latencies};
use ezt_core::lane::LaneKey;
use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, StreamExt};
use tokio::time::Instant;

/// Most lanes whose race state a node keeps; beyond it the state is forgotten and rebuilt.
const LANES_MAX: usize = 10_000;
/// How long an extra leg of a queued job waits for a permit of its lane before it is refused
/// (not sent). Short: the job's own leg holds a slot of the lane meanwhile.
pub(crate) const LEG_PERMIT_WAIT: Duration = Duration::from_millis(100);

/// What the racer needs to know of a leg's result.
pub(crate) trait Leg {
    /// A 2xx: the race is won.
    fn won(&self) -> bool;
    /// An HTTP answer or an error came back (a hedge is not sent after it); false for a leg
    /// that was not sent (refused).
    fn ended_sent(&self) -> bool;
}

/// How one leg of a race ended.
#[derive(Debug)]
pub(crate) enum End<T> {
    /// A hedge not sent: a leg had ended before its time.
    NotSent,
    /// Still running when the race ended: dropped (its connection closed) at `Raced::cut_at`.
    Cut,
    /// Its result, and when it came (since the race's start).
    Done(T, Duration),
}

/// A race's legs, in the order given.
#[derive(Debug)]
pub(crate) struct Raced<T> {
    pub(crate) ends: Vec<End<T>>,
    pub(crate) winner: Option<usize>,
    /// When the legs still running were dropped (since the race's start).
    pub(crate) cut_at: Duration,
}

/// Races `legs` (each with its start offset, non-decreasing) from `t0`; `guard` bounds a leg
/// that never ends.
pub(crate) async fn run<'a, T: Leg + Send + 'a>(
    legs: Vec<(Duration, BoxFuture<'a, T>)>,
    t0: Instant,
    guard: Instant,
) -> Raced<T> {
    let n = legs.len();
    let mut ends: Vec<End<T>> = (0..n).map(|_| End::Cut).collect();
    let mut running: FuturesUnordered<BoxFuture<'a, (usize, T)>> = FuturesUnordered::new();
    let mut pending: std::collections::VecDeque<(usize, Duration, BoxFuture<'a, T>)> =
        std::collections::VecDeque::new();
    for (i, (after, f)) in legs.into_iter().enumerate() {
        if after.is_zero() {
            running.push(Box::pin(async move { (i, f.await) }));
        } else {
            pending.push_back((i, after, f));
        }
    }
    let mut winner = None;
    let mut some_ended = false;
    let guard = tokio::time::sleep_until(guard);
    tokio::pin!(guard);
    loop {
        let next_hedge = pending.front().map(|(_, after, _)| t0 + *after);
        if running.is_empty() && (next_hedge.is_none() || some_ended) {
            break;
        }
        tokio::select! {
            Some((i, r)) = running.next(), if !running.is_empty() => {
                let won = r.won();
                some_ended |= r.ended_sent();
                ends[i] = End::Done(r, t0.elapsed());
                if won {
                    winner = Some(i);
                    break;
                }
                if some_ended {
                    for (j, _, _) in pending.drain(..) {
                        ends[j] = End::NotSent;
                    }
                }
            }
            () = sleep_until_opt(next_hedge), if next_hedge.is_some() && !some_ended => {
                if let Some((i, _, f)) = pending.pop_front() {
                    running.push(Box::pin(async move { (i, f.await) }));
                }
            }
            _ = &mut guard => break,
        }
    }
    for (j, _, _) in pending.drain(..) {
        ends[j] = End::NotSent;
    }
    // The legs still running are dropped here: their connections close now.
    drop(running);
    Raced {
        ends,
        winner,
        cut_at: t0.elapsed(),
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Per-lane race state of one node's job path.
#[derive(Debug, Default)]
struct LaneRace {
    budget: HedgeBudget,
    latencies: HashMap<String, Latencies>,
}

/// The job path's racing: settings and per-lane state.
#[derive(Debug)]
pub(crate) struct Races {
    lanes: crate::lanes::SchedulerHandle,
    /// POST and PATCH race in parallel too (`executor.race_unsafe_methods`).
    pub(crate) unsafe_methods: bool,
    /// Hedge delay before a lane's p95 in a region is known, ms.
    pub(crate) default_delay_ms: u64,
    /// Extra legs per first leg a lane's budget allows.
    budget_ratio: f64,
    state: Mutex<HashMap<LaneKey, LaneRace>>,
    origin: Instant,
}

impl Races {
    pub(crate) fn new(lanes: crate::lanes::SchedulerHandle, cfg: &crate::config::Config) -> Self {
        Self {
            lanes,
            unsafe_methods: cfg.executor.race_unsafe_methods,
            default_delay_ms: cfg.executor.hedge_delay_ms,
            budget_ratio: f64::from(cfg.executor.hedge_budget_percent) / 100.0,
            state: Mutex::new(HashMap::new()),
            origin: Instant::now(),
        }
    }

    fn now_ms(&self) -> u64 {
        // Offset so that the budget's 10 s window never starts before its origin.
        self.origin.elapsed().as_millis() as u64 + ezt_core::hedge::WINDOW_MS
    }

    fn with<R>(&self, lane: &LaneKey, f: impl FnOnce(&mut LaneRace) -> R) -> R {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if s.len() >= LANES_MAX && !s.contains_key(lane) {
            s.clear();
        }
        f(s.entry(lane.clone()).or_insert_with(|| LaneRace {
            budget: HedgeBudget::with_ratio(self.budget_ratio),
            latencies: HashMap::new(),
        }))
    }

    /// A job's attempt in `lane` ended (its first leg): counted for the budget; `failed` for a
    /// retry/reroute-class outcome.
    pub(crate) fn first(&self, lane: &LaneKey, failed: bool) {
        let now = self.now_ms();
        self.with(lane, |l| {
            l.budget.first(now);
            l.budget.outcome(failed);
        });
    }

    /// Takes one extra leg of the lane's budget; false when none is left (or it is failing).
    pub(crate) fn try_extra(&self, lane: &LaneKey) -> bool {
        let now = self.now_ms();
        self.with(lane, |l| l.budget.try_extra(now))
    }

    /// An answered call's latency in `region`.
    pub(crate) fn latency(&self, lane: &LaneKey, region: &str, ms: u64) {
        self.with(lane, |l| {
            l.latencies.entry(region.to_string()).or_default().add(ms)
        });
    }

    /// How long a hedge waits for a leg in `region`: the lane's p95 there, else the default.
    pub(crate) fn hedge_delay(&self, lane: &LaneKey, region: &str) -> Duration {
        let d = self.default_delay_ms;
        Duration::from_millis(self.with(lane, |l| {
            l.latencies
                .get(region)
                .map_or(d.max(1), |x| x.hedge_delay_ms(d))
        }))
    }

    /// Whether `method` races in parallel (else it hedges).
    pub(crate) fn parallel(&self, method: &str) -> bool {
        self.unsafe_methods || ezt_core::hedge::parallel_by_default(method)
    }

    /// One permit of `lane` for an extra leg, waiting at most [`LEG_PERMIT_WAIT`].
    pub(crate) async fn permit(
        &self,
        lane: &LaneKey,
    ) -> Result<crate::lanes::Permit, crate::lanes::PermitRefused> {
        self.lanes
            .permit(lane.clone(), Instant::now() + LEG_PERMIT_WAIT)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct R(u16);
    impl Leg for R {
        fn won(&self) -> bool {
            (200..300).contains(&self.0)
        }
        fn ended_sent(&self) -> bool {
            self.0 != 0
        }
    }

    fn leg(after_ms: u64, takes_ms: u64, status: u16) -> (Duration, BoxFuture<'static, R>) {
        (
            Duration::from_millis(after_ms),
            Box::pin(async move {
                tokio::time::sleep(Duration::from_millis(takes_ms)).await;
                R(status)
            }),
        )
    }

    #[tokio::test(start_paused = true)]
    async fn the_first_2xx_wins_and_the_rest_are_cut() {
        let t0 = Instant::now();
        let r = run(
            vec![leg(0, 300, 200), leg(0, 50, 409), leg(0, 100, 201)],
            t0,
            t0 + Duration::from_secs(60),
        )
        .await;
        assert_eq!(r.winner, Some(2), "409 is not fatal: the race went on");
        assert!(matches!(r.ends[0], End::Cut));
        assert!(matches!(r.ends[1], End::Done(R(409), _)));
        assert_eq!(r.cut_at, Duration::from_millis(100));
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_winner_every_leg_is_awaited() {
        let t0 = Instant::now();
        let r = run(
            vec![leg(0, 30, 500), leg(0, 70, 502)],
            t0,
            t0 + Duration::from_secs(60),
        )
        .await;
        assert_eq!(r.winner, None);
        assert!(matches!(r.ends[1], End::Done(R(502), d) if d == Duration::from_millis(70)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_hedge_goes_only_when_nothing_answered_before_its_time() {
        let t0 = Instant::now();
        // The first leg is slow: the hedge goes at 250 ms and wins.
        let r = run(
            vec![leg(0, 1_000, 200), leg(250, 10, 200)],
            t0,
            t0 + Duration::from_secs(60),
        )
        .await;
        assert_eq!(r.winner, Some(1));
        assert!(matches!(r.ends[1], End::Done(_, d) if d == Duration::from_millis(260)));
        // The first leg answers (even a failure) before the delay: the hedge is not sent.
        let t0 = Instant::now();
        let r = run(
            vec![leg(0, 100, 500), leg(250, 10, 200)],
            t0,
            t0 + Duration::from_secs(60),
        )
        .await;
        assert_eq!(r.winner, None);
        assert!(matches!(r.ends[1], End::NotSent));
        assert_eq!(r.cut_at, Duration::from_millis(100));
        // A refused leg (not sent) does not stop the next hedge.
        let t0 = Instant::now();
        let r = run(
            vec![leg(0, 1_000, 200), leg(100, 0, 0), leg(200, 10, 200)],
            t0,
            t0 + Duration::from_secs(60),
        )
        .await;
        assert_eq!(r.winner, Some(2));
    }

    #[tokio::test(start_paused = true)]
    async fn the_guard_ends_a_leg_that_never_ends() {
        let t0 = Instant::now();
        let r = run(vec![leg(0, 100_000, 200)], t0, t0 + Duration::from_secs(5)).await;
        assert_eq!(r.winner, None);
        assert!(matches!(r.ends[0], End::Cut));
    }
}
