//! Racing a queued job across regions (issue 15): the per-lane hedge budget, the hedge delay
//! and how a leg of a race ended. Pure: callers pass `now` (ms, any monotonic origin).
//!
//! **Budget** (Finagle's `RetryBudget`, Envoy's retry budget): a lane's extra legs (every leg
//! of a race beyond its first) are allowed while, over a sliding [`WINDOW_MS`], they stay
//! within [`EXTRA_RATIO`] of the lane's first legs plus a floor of [`FLOOR_PER_S`] extra legs
//! per second. While the lane is failing (its last [`FAILING_AFTER`] first legs all ended in a
//! retry/reroute-class outcome) no extra leg is allowed: hedging a sick target only adds load.
//! A lane paused by a Retry-After refuses every leg's permit anyway (the lanes module).

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

/// The sliding window of the budget, ms.
pub const WINDOW_MS: u64 = 10_000;
/// Extra legs allowed per first leg in the window.
pub const EXTRA_RATIO: f64 = 0.2;
/// Extra legs allowed per second of the window regardless of traffic (the floor).
pub const FLOOR_PER_S: u64 = 10;
/// Consecutive failed first legs after which the lane counts as failing.
pub const FAILING_AFTER: u32 = 5;
/// Hedge delay when the lane has no latency figure for the region yet, ms.
pub const DEFAULT_HEDGE_DELAY_MS: u64 = 250;
/// Latency samples kept per (lane, region) for the p95.
pub const LATENCY_SAMPLES: usize = 64;
/// Samples needed before the observed p95 replaces the default delay.
pub const MIN_LATENCY_SAMPLES: usize = 20;

/// How one leg of a race ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum LegOutcome {
    /// Its 2xx is the answer.
    Won,
    /// It answered, not 2xx (or after a race without a winner, not the answer kept).
    Lost,
    /// Cut when another leg won: its connection was closed.
    Cancelled,
    /// No HTTP answer (connect failure, timeout, SSRF refusal, failed hand-off).
    Error,
    /// Not sent: no lane permit (rate, in-flight cap, pause) or no hedge budget.
    Refused,
}

/// One lane's hedge budget (see the module).
#[derive(Debug, Clone)]
pub struct HedgeBudget {
    /// Extra legs allowed per first leg in the window ([`EXTRA_RATIO`] unless the operator
    /// set `executor.hedge_budget_percent`).
    ratio: f64,
    /// First legs, (second bucket, count), oldest first.
    firsts: VecDeque<(u64, u64)>,
    /// Extra legs, (second bucket, count), oldest first.
    extras: VecDeque<(u64, u64)>,
    /// First legs in a row that failed.
    failing: u32,
}

impl Default for HedgeBudget {
    fn default() -> Self {
        Self::with_ratio(EXTRA_RATIO)
    }
}

fn add(q: &mut VecDeque<(u64, u64)>, sec: u64) {
    match q.back_mut() {
        Some((s, n)) if *s == sec => *n += 1,
        _ => q.push_back((sec, 1)),
    }
}

fn trim(q: &mut VecDeque<(u64, u64)>, now_ms: u64) {
    let oldest = (now_ms.saturating_sub(WINDOW_MS)) / 1000;
    while q
        .front()
        .is_some_and(|(s, _)| *s <= oldest && now_ms >= WINDOW_MS)
    {
        q.pop_front();
    }
}

fn sum(q: &VecDeque<(u64, u64)>) -> u64 {
    q.iter().map(|(_, n)| n).sum()
}

impl HedgeBudget {
    /// A budget allowing `ratio` extra legs per first leg (plus the floor).
    pub fn with_ratio(ratio: f64) -> Self {
        Self {
            ratio: ratio.max(0.0),
            firsts: VecDeque::new(),
            extras: VecDeque::new(),
            failing: 0,
        }
    }

    /// Counts one first leg (every attempt of a job of the lane, raced or not).
    pub fn first(&mut self, now_ms: u64) {
        trim(&mut self.firsts, now_ms);
        add(&mut self.firsts, now_ms / 1000);
    }

    /// How a first leg ended: `failed` for a retry/reroute-class outcome, else false.
    pub fn outcome(&mut self, failed: bool) {
        self.failing = if failed {
            self.failing.saturating_add(1)
        } else {
            0
        };
    }

    /// Whether the lane is failing (no extra leg now).
    pub fn failing(&self) -> bool {
        self.failing >= FAILING_AFTER
    }

    /// Extra legs the window allows in all.
    pub fn allowance(&mut self, now_ms: u64) -> u64 {
        trim(&mut self.firsts, now_ms);
        let ratio = (sum(&self.firsts) as f64 * self.ratio).floor() as u64;
        ratio + FLOOR_PER_S * (WINDOW_MS / 1000)
    }

    /// Takes one extra leg if the budget allows it (and counts it); false when it does not.
    pub fn try_extra(&mut self, now_ms: u64) -> bool {
        if self.failing() {
            return false;
        }
        trim(&mut self.extras, now_ms);
        if sum(&self.extras) >= self.allowance(now_ms) {
            return false;
        }
        add(&mut self.extras, now_ms / 1000);
        true
    }

    /// Extra legs counted in the window.
    pub fn extras(&mut self, now_ms: u64) -> u64 {
        trim(&mut self.extras, now_ms);
        sum(&self.extras)
    }
}

/// The last latencies of one lane in one region (ms), for the hedge delay.
#[derive(Debug, Clone, Default)]
pub struct Latencies {
    samples: VecDeque<u64>,
}

impl Latencies {
    /// Records one answered leg's latency.
    pub fn add(&mut self, ms: u64) {
        if self.samples.len() == LATENCY_SAMPLES {
            self.samples.pop_front();
        }
        self.samples.push_back(ms);
    }

    /// The 95th percentile, once [`MIN_LATENCY_SAMPLES`] are known.
    pub fn p95(&self) -> Option<u64> {
        if self.samples.len() < MIN_LATENCY_SAMPLES {
            return None;
        }
        let mut v: Vec<u64> = self.samples.iter().copied().collect();
        v.sort_unstable();
        let i = ((v.len() - 1) as f64 * 0.95).round() as usize;
        Some(v[i])
    }

    /// The hedge delay: the p95 when known, else `default_ms` (at least 1 ms).
    pub fn hedge_delay_ms(&self, default_ms: u64) -> u64 {
        self.p95().unwrap_or(default_ms).max(1)
    }
}

/// Methods raced in parallel without the operator's allowance (safe or idempotent by RFC 9110).
pub fn parallel_by_default(method: &str) -> bool {
    matches!(
        method.to_ascii_uppercase().as_str(),
        "GET" | "HEAD" | "PUT" | "DELETE" | "OPTIONS"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn an_operators_ratio_sets_the_allowance() {
        let mut b = HedgeBudget::with_ratio(2.0);
        for _ in 0..100 {
            b.first(20_000);
        }
        assert_eq!(
            b.allowance(20_000),
            200 + 100,
            "2 per first leg plus the floor"
        );
        let allowed = (0..1000).filter(|_| b.try_extra(20_000)).count();
        assert_eq!(allowed, 300);
        assert_eq!(
            HedgeBudget::with_ratio(-1.0).allowance(20_000),
            100,
            "never below the floor"
        );
    }

    #[test]
    fn the_floor_allows_ten_extra_per_second_of_the_window() {
        let mut b = HedgeBudget::default();
        let allowed = (0..200).filter(|_| b.try_extra(50_000)).count();
        assert_eq!(allowed as u64, FLOOR_PER_S * WINDOW_MS / 1000);
        assert!(!b.try_extra(50_000));
        // Ten seconds later the window has slid past them.
        assert!(b.try_extra(61_000));
    }

    #[test]
    fn first_legs_add_a_fifth() {
        let mut b = HedgeBudget::default();
        for _ in 0..1000 {
            b.first(5_000);
        }
        assert_eq!(b.allowance(5_000), 200 + 100);
        let allowed = (0..1000).filter(|_| b.try_extra(5_500)).count();
        assert_eq!(allowed, 300);
        // Once the first legs leave the window only the floor is left.
        assert_eq!(b.allowance(16_000), 100);
    }

    #[test]
    fn a_failing_lane_gets_no_extra_leg_until_a_success() {
        let mut b = HedgeBudget::default();
        for _ in 0..FAILING_AFTER - 1 {
            b.outcome(true);
        }
        assert!(b.try_extra(1_000));
        b.outcome(true);
        assert!(b.failing());
        assert!(!b.try_extra(1_000));
        b.outcome(false);
        assert!(b.try_extra(1_000));
    }

    #[test]
    fn delay_is_the_p95_once_known() {
        let mut l = Latencies::default();
        assert_eq!(l.hedge_delay_ms(250), 250);
        for ms in 1..=100 {
            l.add(ms);
        }
        // The last 64 samples: 37..=100; the p95 of those.
        assert_eq!(l.p95(), Some(97));
        assert_eq!(l.hedge_delay_ms(250), 97);
        assert_eq!(Latencies::default().hedge_delay_ms(0), 1);
    }

    #[test]
    fn methods() {
        for m in ["GET", "head", "PUT", "DELETE", "OPTIONS"] {
            assert!(parallel_by_default(m), "{m}");
        }
        for m in ["POST", "PATCH", "post"] {
            assert!(!parallel_by_default(m), "{m}");
        }
    }

    proptest! {
        /// Over any sequence of first and extra legs at rising times, an extra leg is allowed only
        /// while the extra legs of the last 10 s (itself included) do not exceed a fifth of the first legs in it plus the floor.
        #[test]
        fn extras_stay_within_the_budget(
            steps in proptest::collection::vec((0u64..400, any::<bool>()), 1..600)
        ) {
            let mut b = HedgeBudget::default();
            let mut now = 20_000u64;
            let mut firsts: Vec<u64> = Vec::new();
            let mut extras: Vec<u64> = Vec::new();
            for (dt, is_first) in steps {
                now += dt;
                if is_first {
                    b.first(now);
                    firsts.push(now);
                } else if b.try_extra(now) {
                    extras.push(now);
                    // The window as the budget counts it: whole seconds after now - 10 s.
                    let from = (now - WINDOW_MS) / 1000;
                    let f = firsts.iter().filter(|t| **t / 1000 > from).count() as f64;
                    let e = extras.iter().filter(|t| **t / 1000 > from).count() as f64;
                    prop_assert!(e <= (f * EXTRA_RATIO).floor() + (FLOOR_PER_S * WINDOW_MS / 1000) as f64);
                }
            }
        }
    }
}
