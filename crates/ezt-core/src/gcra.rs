//! GCRA: the generic cell rate algorithm, as a value with no clock of its own.
//!
//! A lane allows `rate` requests per second with a `burst` of up to `burst` back-to-back
//! requests. GCRA keeps one number, the theoretical arrival time (TAT): a request at `now` is
//! allowed when `now >= TAT - tolerance`, and then moves TAT one emission interval forward. This
//! guarantees that in any window of length `w` at most `burst + floor(w * rate)` requests are let
//! through, with no step quantisation. Like governor, denial is a value (`Decision::Wait`) that
//! says exactly when to come back; the caller does the sleeping.

/// Nanoseconds on a monotonic axis chosen by the caller.
pub type Nanos = u64;

const NANOS_PER_SEC: f64 = 1e9;

/// The limiter's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Go now; the limiter has counted this request.
    Allow,
    /// Not before this instant; nothing was counted.
    Wait {
        /// Earliest instant at which `check` will allow.
        until: Nanos,
    },
}

/// A GCRA limiter for one lane.
#[derive(Debug, Clone, PartialEq)]
pub struct Gcra {
    interval: Nanos,
    tolerance: Nanos,
    tat: Nanos,
}

impl Gcra {
    /// A limiter for `rate_per_sec` (> 0) with `burst` (>= 1) back-to-back requests.
    pub fn new(rate_per_sec: f64, burst: u32) -> Self {
        let (interval, tolerance) = Self::params(rate_per_sec, burst);
        Self {
            interval,
            tolerance,
            tat: 0,
        }
    }

    fn params(rate_per_sec: f64, burst: u32) -> (Nanos, Nanos) {
        let rate = if rate_per_sec.is_finite() && rate_per_sec > 0.0 {
            rate_per_sec
        } else {
            1e-6
        };
        let interval = (NANOS_PER_SEC / rate).round().clamp(1.0, 1e18) as Nanos;
        let tolerance = interval.saturating_mul(u64::from(burst.max(1)) - 1);
        (interval, tolerance)
    }

    /// Changes rate and burst at once: the last granted request is re-spaced at the new
    /// interval (a faster limit applies to the very next request, a slower one delays it), and
    /// the other granted requests stay on the books, so a change never lets a burst through.
    pub fn set_limit(&mut self, rate_per_sec: f64, burst: u32) {
        let (interval, tolerance) = Self::params(rate_per_sec, burst);
        if self.tat > 0 {
            self.tat = self.tat.saturating_sub(self.interval) + interval;
        }
        self.interval = interval;
        self.tolerance = tolerance;
    }

    /// The emission interval (time per request at the sustained rate).
    pub fn interval(&self) -> Nanos {
        self.interval
    }

    /// Asks to send one request at `now`.
    pub fn check(&mut self, now: Nanos) -> Decision {
        let tat = self.tat.max(now);
        let allow_at = tat.saturating_sub(self.tolerance);
        if now >= allow_at {
            self.tat = tat + self.interval;
            Decision::Allow
        } else {
            Decision::Wait { until: allow_at }
        }
    }

    /// Like `check`, but a late caller (one that woke after its allowed time, as timers do) is
    /// counted at its allowed time rather than at `now`, as long as that is at most `catch_up`
    /// ago. Without this, every wake-up's lateness is lost and a 1 ms timer wheel turns 100/s
    /// into 91/s. `catch_up` is clamped below one interval, which keeps the window guarantee:
    /// in any 1 s window, at most `burst + rate` requests are allowed.
    pub fn check_catching_up(&mut self, now: Nanos, catch_up: Nanos) -> Decision {
        let allow_at = self.tat.saturating_sub(self.tolerance);
        if now < allow_at {
            return Decision::Wait { until: allow_at };
        }
        let catch_up = catch_up.min(self.interval.saturating_sub(1));
        let counted_at = allow_at.max(now.saturating_sub(catch_up));
        self.tat = self.tat.max(counted_at) + self.interval;
        Decision::Allow
    }

    /// When `check` would next allow, without counting anything.
    pub fn ready_at(&self, now: Nanos) -> Nanos {
        self.tat.max(now).saturating_sub(self.tolerance).max(now)
    }

    /// Counts requests that were sent before this limiter existed (another node's, for a lane
    /// it adopted): each `ages[i]` says how long before `now` one left. The limiter then stands
    /// as if it had allowed them itself, so a window spanning the hand-over holds no more than
    /// `burst + rate·w`. Ages need not be sorted; ages larger than `now` are fine (they are
    /// replayed on a shifted axis).
    pub fn replay(&mut self, now: Nanos, ages: &[Nanos]) {
        let Some(&oldest) = ages.iter().max() else {
            return;
        };
        let mut sorted = ages.to_vec();
        sorted.sort_unstable_by(|a, b| b.cmp(a));
        // On the shifted axis, `now` is `oldest` and a request `age` ago is `oldest - age`.
        let mut tat: Nanos = 0;
        for age in sorted {
            tat = tat.max(oldest - age) + self.interval;
        }
        if tat > oldest {
            self.tat = self.tat.max(now.saturating_add(tat - oldest));
        }
    }

    /// Blocks everything until `until` (a provider said "come back later"): nothing will be
    /// allowed before it, and then at most one request, then the normal rate.
    pub fn pause_until(&mut self, until: Nanos) {
        self.tat = self.tat.max(until.saturating_add(self.tolerance));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const S: u64 = 1_000_000_000;

    #[test]
    fn replayed_history_holds_the_window_across_a_hand_over() {
        // 10/s, burst 1: another node sent at 0.0, 0.1 and 0.2 s; the adopter starts at 0.25 s
        // (on its own axis, 5 s) and may send next at 0.3 s, not at once.
        let mut g = Gcra::new(10.0, 1);
        let now = 5 * S;
        g.replay(now, &[S / 4, S / 20, S * 3 / 20]);
        assert_eq!(
            g.check(now),
            Decision::Wait {
                until: now + S / 20
            }
        );
        assert_eq!(g.check(now + S / 20), Decision::Allow);
        // History older than one interval costs nothing.
        let mut g = Gcra::new(10.0, 1);
        g.replay(S, &[3 * S, 2 * S]);
        assert_eq!(g.check(S), Decision::Allow);
        // Ages beyond `now` (a node that just started) are fine.
        let mut g = Gcra::new(1.0, 2);
        g.replay(10, &[S / 2, S / 4]);
        assert_eq!(g.check(10), Decision::Wait { until: 10 + S / 2 });
    }

    #[test]
    fn two_per_second_spaces_by_half_a_second() {
        let mut g = Gcra::new(2.0, 1);
        assert_eq!(g.check(0), Decision::Allow);
        assert_eq!(
            g.check(1),
            Decision::Wait { until: S / 2 },
            "second call must wait 500ms"
        );
        assert_eq!(g.check(S / 2), Decision::Allow);
    }

    #[test]
    fn burst_allows_back_to_back_then_rate() {
        let mut g = Gcra::new(10.0, 5);
        for i in 0..5 {
            assert_eq!(g.check(S), Decision::Allow, "burst call {i}");
        }
        assert!(
            matches!(g.check(S), Decision::Wait { .. }),
            "sixth call waits"
        );
    }

    #[test]
    fn faster_limit_applies_to_the_next_request() {
        let mut g = Gcra::new(2.0, 1);
        assert_eq!(g.check(0), Decision::Allow);
        g.set_limit(10.0, 1);
        assert_eq!(
            g.check(S / 20),
            Decision::Wait { until: S / 10 },
            "next request 100ms after the last"
        );
        g.set_limit(1.0, 1);
        assert_eq!(
            g.check(S / 10),
            Decision::Wait { until: S },
            "a slower limit delays it"
        );
    }

    #[test]
    fn pause_blocks_until_then() {
        let mut g = Gcra::new(100.0, 3);
        g.pause_until(10 * S);
        assert_eq!(g.check(5 * S), Decision::Wait { until: 10 * S });
        assert_eq!(g.check(10 * S), Decision::Allow);
    }

    fn max_in_any_second(allowed: &[u64]) -> usize {
        let mut lo = 0;
        let mut best = 0;
        for hi in 0..allowed.len() {
            while allowed[hi] - allowed[lo] >= S {
                lo += 1;
            }
            best = best.max(hi - lo + 1);
        }
        best
    }

    #[test]
    fn catching_up_keeps_the_rate_despite_late_wakeups() {
        let mut g = Gcra::new(100.0, 1);
        let (mut now, mut n) = (0u64, 0);
        while now < 10 * S {
            match g.check_catching_up(now, 2_000_000) {
                Decision::Allow => n += 1,
                Decision::Wait { until } => now = until + 1_000_000, // every wake-up 1 ms late
            }
        }
        assert!(
            n >= 999,
            "100/s for 10 s with 1 ms-late wake-ups: {n} allowed"
        );
    }

    proptest! {
        /// Late callers catching up still never see more than burst + rate in any second.
        #[test]
        fn catching_up_never_exceeds_rate_plus_burst(rate in 1u32..2000, burst in 1u32..10, catch_up in 0u64..5_000_000,
                                                      late in proptest::collection::vec(0u64..3_000_000, 1..3000)) {
            let mut g = Gcra::new(rate as f64, burst);
            let mut now = 0u64;
            let mut allowed = Vec::new();
            for l in late {
                match g.check_catching_up(now, catch_up) {
                    Decision::Allow => allowed.push(now),
                    Decision::Wait { until } => now = until + l,
                }
            }
            let worst = max_in_any_second(&allowed);
            prop_assert!(worst as u32 <= burst + rate, "{} arrivals in a 1s window, limit {}", worst, burst + rate);
        }

        /// No window of one second ever sees more than burst + rate arrivals.
        #[test]
        fn never_exceeds_rate_plus_burst(rate in 1u32..2000, burst in 1u32..20,
                                         gaps in proptest::collection::vec(0u64..3_000_000, 1..3000)) {
            let mut g = Gcra::new(rate as f64, burst);
            let mut now = 0u64;
            let mut allowed = Vec::new();
            for gap in gaps {
                now += gap;
                match g.check(now) {
                    Decision::Allow => allowed.push(now),
                    Decision::Wait { until } => {
                        prop_assert!(until > now);
                        now = until;
                        prop_assert_eq!(g.check(now), Decision::Allow);
                        allowed.push(now);
                    }
                }
            }
            let mut lo = 0;
            for hi in 0..allowed.len() {
                while allowed[hi] - allowed[lo] >= S { lo += 1; }
                prop_assert!((hi - lo + 1) as u32 <= burst + rate,
                    "{} arrivals in a 1s window, limit {}", hi - lo + 1, burst + rate);
            }
        }
    }
}
