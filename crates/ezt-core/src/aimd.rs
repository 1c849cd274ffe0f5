//! Adaptive pacing for targets that announce no limit: AIMD, as TCP does it.
//!
//! A lane whose target sends no rate-limit headers would otherwise stay at its configured
//! default forever (Stripe answers a bare 429). With adaptive pacing on (opt-in: it provokes a
//! few 429s by design), the lane's rate
//! - doubles per second of successful calls at full pace until the first "slow down"
//!   (slow start), then grows by [`AimdParams::increase`] x the last safe rate per second
//!   (additive increase), and only while the lane has work waiting (an idle lane proves
//!   nothing about a faster pace);
//! - is multiplied by [`AimdParams::decrease`] on a 429 or 503 (multiplicative decrease),
//!   at most once per [`AimdParams::cooldown_ms`], since the calls already in flight when the
//!   first "slow down" arrives would otherwise cut it again for the same overshoot;
//! - stays within `[floor, ceiling]`.
//!
//! Pure: the caller passes `now_ms` and says whether the lane was backlogged.

use serde::{Deserialize, Serialize};

/// Bounds and gains of adaptive pacing.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AimdParams {
    /// Lowest rate, requests/s (> 0).
    pub floor: f64,
    /// Highest rate, requests/s (>= floor).
    pub ceiling: f64,
    /// Additive increase per second at full pace, as a fraction of the rate at the last
    /// decrease (scale-free: 0.03 gives back a 30% cut in about 10 s at any speed).
    pub increase: f64,
    /// Factor applied on a 429/503, in (0, 1).
    pub decrease: f64,
    /// No second decrease within this many ms of the last.
    pub cooldown_ms: u64,
}

impl Default for AimdParams {
    fn default() -> Self {
        Self {
            floor: 0.1,
            ceiling: 100.0,
            increase: 0.03,
            decrease: 0.7,
            cooldown_ms: 1_000,
        }
    }
}

impl AimdParams {
    /// Checks the bounds; the message names the offending field.
    pub fn validate(&self) -> Result<(), String> {
        let pos = |v: f64| v.is_finite() && v > 0.0;
        if !pos(self.floor) {
            return Err("floor must be a number > 0".into());
        }
        if !pos(self.ceiling) || self.ceiling < self.floor {
            return Err("ceiling must be a number >= floor".into());
        }
        if !pos(self.increase) || self.increase > 1.0 {
            return Err("increase must be in (0, 1]".into());
        }
        if !pos(self.decrease) || self.decrease >= 1.0 {
            return Err("decrease must be in (0, 1)".into());
        }
        Ok(())
    }
}

/// One lane's adaptive state.
#[derive(Debug, Clone, PartialEq)]
pub struct Aimd {
    rate: f64,
    /// Rate at the last decrease; `None` while in slow start.
    safe: Option<f64>,
    last_decrease_ms: Option<u64>,
}

impl Aimd {
    /// Starts at `rate` (clamped into bounds) in slow start.
    pub fn new(rate: f64, p: &AimdParams) -> Self {
        Self {
            rate: clamp(rate, p),
            safe: None,
            last_decrease_ms: None,
        }
    }

    /// Resumes at a rate learned before (a restart): no slow start, since that rate was
    /// reached by probing.
    pub fn resume(rate: f64, p: &AimdParams) -> Self {
        let rate = clamp(rate, p);
        Self {
            rate,
            safe: Some(rate),
            last_decrease_ms: None,
        }
    }

    /// The rate now, requests/s.
    pub fn rate(&self) -> f64 {
        self.rate
    }

    /// Whether the first "slow down" has been seen.
    pub fn probing(&self) -> bool {
        self.safe.is_none()
    }

    /// A call succeeded. Grows the rate only if the lane had work waiting (`backlogged`).
    /// Returns the new rate.
    pub fn on_success(&mut self, backlogged: bool, p: &AimdParams) -> f64 {
        if backlogged {
            // Per success: 1/rate of the per-second step, so that a second at full pace adds it.
            let step = match self.safe {
                None => self.rate,
                Some(safe) => p.increase * safe.max(p.floor),
            };
            self.rate = clamp(self.rate + step / self.rate, p);
        }
        self.rate
    }

    /// The target said "slow down" (429/503) at `now_ms`. Returns the new rate.
    pub fn on_throttle(&mut self, now_ms: u64, p: &AimdParams) -> f64 {
        let cooling = self
            .last_decrease_ms
            .is_some_and(|t| now_ms < t.saturating_add(p.cooldown_ms));
        if !cooling {
            self.rate = clamp(self.rate * p.decrease, p);
            self.safe = Some(self.rate);
            self.last_decrease_ms = Some(now_ms);
        }
        self.rate
    }
}

fn clamp(rate: f64, p: &AimdParams) -> f64 {
    if rate.is_finite() {
        rate.clamp(p.floor, p.ceiling)
    } else {
        p.floor
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn slow_start_doubles_per_second_of_successes() {
        let p = AimdParams::default();
        let mut a = Aimd::new(2.0, &p);
        // One "second" at full pace: as many successes as the rate.
        for _ in 0..2 {
            a.on_success(true, &p);
        }
        assert!((a.rate() - 4.0).abs() < 1e-9, "{}", a.rate());
        assert!(a.probing());
    }

    #[test]
    fn idle_successes_prove_nothing() {
        let p = AimdParams::default();
        let mut a = Aimd::new(2.0, &p);
        for _ in 0..1000 {
            a.on_success(false, &p);
        }
        assert_eq!(a.rate(), 2.0);
    }

    #[test]
    fn throttle_cuts_once_per_cooldown_then_grows_additively() {
        let p = AimdParams::default();
        let mut a = Aimd::new(50.0, &p);
        assert!((a.on_throttle(10_000, &p) - 35.0).abs() < 1e-9);
        // The calls that were in flight answer 429 too: no second cut within the cooldown.
        assert!((a.on_throttle(10_500, &p) - 35.0).abs() < 1e-9);
        assert!(!a.probing());
        // One second at full pace adds 3% of 35.
        for _ in 0..35 {
            a.on_success(true, &p);
        }
        assert!((a.rate() - 36.05).abs() < 0.02, "{}", a.rate());
        let before = a.rate();
        assert!((a.on_throttle(10_999, &p) - before).abs() < 1e-9);
        assert!((a.on_throttle(11_000, &p) - before * 0.7).abs() < 1e-9);
    }

    #[test]
    fn resume_skips_slow_start() {
        let p = AimdParams::default();
        let a = Aimd::resume(40.0, &p);
        assert!(!a.probing());
        assert_eq!(Aimd::resume(1e9, &p).rate(), p.ceiling);
    }

    #[test]
    fn params_are_validated() {
        assert!(AimdParams::default().validate().is_ok());
        let bad = |f: fn(&mut AimdParams)| {
            let mut p = AimdParams::default();
            f(&mut p);
            p.validate().is_err()
        };
        assert!(bad(|p| p.floor = 0.0));
        assert!(bad(|p| p.ceiling = 0.05));
        assert!(bad(|p| p.decrease = 1.0));
        assert!(bad(|p| p.increase = f64::NAN));
    }

    proptest! {
        #[test]
        fn rate_stays_within_bounds(
            floor in 0.01f64..10.0,
            span in 0.0f64..1000.0,
            start in -10.0f64..5000.0,
            events in prop::collection::vec((any::<bool>(), any::<bool>(), 0u64..3000), 0..400),
        ) {
            let p = AimdParams { floor, ceiling: floor + span, ..AimdParams::default() };
            let mut a = Aimd::new(start, &p);
            let mut now = 0u64;
            for (throttled, backlogged, dt) in events {
                now += dt;
                let before = a.rate();
                let r = if throttled { a.on_throttle(now, &p) } else { a.on_success(backlogged, &p) };
                prop_assert!(r >= p.floor && r <= p.ceiling, "{r} outside [{}, {}]", p.floor, p.ceiling);
                if throttled {
                    prop_assert!(r <= before);
                } else {
                    prop_assert!(r >= before);
                }
            }
        }

        #[test]
        fn a_sustained_limit_is_found_and_held(limit in 5.0f64..500.0) {
            // A target that allows `limit`/s and throttles above it; one step = 1/rate s.
            let p = AimdParams { ceiling: 1000.0, ..AimdParams::default() };
            let mut a = Aimd::new(2.0, &p);
            let (mut now_ms, mut sent, mut throttled, mut used) = (0.0f64, 0u64, 0u64, 0.0f64);
            while now_ms < 120_000.0 {
                let r = a.rate();
                now_ms += 1000.0 / r;
                sent += 1;
                if r > limit {
                    throttled += 1;
                    a.on_throttle(now_ms as u64, &p);
                } else {
                    a.on_success(true, &p);
                }
                if now_ms >= 60_000.0 {
                    used += r.min(limit) / limit / r;
                }
            }
            // Time-weighted share of the limit over the second minute.
            let share = used / 60.0;
            prop_assert!(share >= 0.8, "share {share}");
            prop_assert!((throttled as f64) / (sent as f64) <= 0.05, "{throttled}/{sent}");
        }
    }
}
