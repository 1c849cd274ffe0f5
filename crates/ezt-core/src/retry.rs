//! Retry policy: how an attempt's outcome is classified and when the next attempt may start.
//!
//! The executor reports what happened; `plan_next` answers what to do, given the job's counters,
//! its deadline, any Retry-After the target sent, `now` and a random source for the jitter.
//! Backoff is exponential with full jitter (base 1 s, cap 10 min), and a Retry-After is honoured
//! in full (capped at 24 h and at the deadline): unlike svix, which clamps Retry-After to twice
//! its own schedule, pausing until the provider says so is our product.

use rand::Rng;
use serde::{Deserialize, Serialize};

/// Per-job retry behaviour, as on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RetryPolicy {
    /// Retries (in the same region) allowed after the first attempt.
    pub max_retries: u32,
    /// Reroutes (to another region; on one node, local retries counted separately) allowed.
    pub max_reroutes: u32,
    /// Statuses that are retried after backoff. Network errors always are.
    pub retry_codes: Vec<u16>,
    /// Statuses that move the call to another region.
    pub reroute_codes: Vec<u16>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_retries: 3,
            max_reroutes: 2,
            retry_codes: vec![429, 503],
            reroute_codes: vec![500, 502, 504],
        }
    }
}

/// What one attempt produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The target answered with this status.
    Status(u16),
    /// No answer: connect failure, reset, timeout, TLS error.
    NetworkError,
}

/// How an attempt's outcome is judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// 2xx: done.
    Success,
    /// Retry in the same region after backoff.
    Retry,
    /// Try another region.
    Reroute,
    /// Not retryable: the job fails.
    Fail,
    /// The server stopped (crash, kill -9) while the call was in flight; the outcome is unknown
    /// and the job ran again. Recorded at recovery, never judged from a response.
    Interrupted,
}

impl RetryPolicy {
    /// Classifies one outcome under this policy.
    pub fn judge(&self, outcome: &Outcome) -> Verdict {
        match *outcome {
            Outcome::Status(s) if (200..300).contains(&s) => Verdict::Success,
            Outcome::Status(s) if self.retry_codes.contains(&s) => Verdict::Retry,
            Outcome::Status(s) if self.reroute_codes.contains(&s) => Verdict::Reroute,
            Outcome::Status(_) => Verdict::Fail,
            Outcome::NetworkError => Verdict::Retry,
        }
    }
}

/// Backoff base and cap.
pub const BACKOFF_BASE_MS: u64 = 1_000;
/// Backoff ceiling before jitter.
pub const BACKOFF_CAP_MS: u64 = 10 * 60 * 1_000;
/// Longest wait a Retry-After can impose.
pub const RETRY_AFTER_CAP_MS: u64 = 24 * 3600 * 1_000;

/// Exponential backoff with full jitter: uniform in `[0, min(cap, base * 2^n)]` where `n` is the
/// number of retries already made.
pub fn backoff_ms<R: Rng + ?Sized>(retries_made: u32, rng: &mut R) -> u64 {
    let ceiling = BACKOFF_BASE_MS
        .saturating_mul(1u64 << retries_made.min(30))
        .min(BACKOFF_CAP_MS);
    rng.gen_range(0..=ceiling)
}

/// The job's counters that the plan depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counters {
    /// Retries made so far (same region).
    pub retries: u32,
    /// Reroutes made so far.
    pub reroutes: u32,
}

/// What to do after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// The job succeeded.
    Succeed,
    /// The job failed for good.
    Fail,
    /// The deadline leaves no room for another attempt.
    Expire,
    /// Try again, not before `at` (ms since epoch); `counters` are the updated counters.
    RetryAt {
        /// Earliest start of the next attempt.
        at: u64,
        /// Counters including this retry.
        counters: Counters,
    },
}

/// Decides the next step after an attempt judged `verdict`.
///
/// Single node: a reroute is retried locally after backoff and counted against `max_reroutes`.
pub fn plan_next<R: Rng + ?Sized>(
    policy: &RetryPolicy,
    verdict: Verdict,
    counters: Counters,
    retry_after_ms: Option<u64>,
    now_ms: u64,
    deadline_ms: u64,
    rng: &mut R,
) -> Plan {
    let mut next = counters;
    match verdict {
        Verdict::Success => return Plan::Succeed,
        Verdict::Fail => return Plan::Fail,
        Verdict::Retry if counters.retries < policy.max_retries => next.retries += 1,
        Verdict::Reroute if counters.reroutes < policy.max_reroutes => next.reroutes += 1,
        Verdict::Retry | Verdict::Reroute => return Plan::Fail,
        // Our failure, not the target's: it costs the job no retry.
        Verdict::Interrupted => {}
    }
    let made = counters.retries + counters.reroutes;
    let wait = backoff_ms(made, rng).max(retry_after_ms.unwrap_or(0).min(RETRY_AFTER_CAP_MS));
    let at = now_ms.saturating_add(wait);
    if at >= deadline_ms {
        Plan::Expire
    } else {
        Plan::RetryAt { at, counters: next }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::rngs::mock::StepRng;
    use rand::SeedableRng;

    #[test]
    fn default_classification() {
        let p = RetryPolicy::default();
        assert_eq!(p.judge(&Outcome::Status(200)), Verdict::Success);
        assert_eq!(p.judge(&Outcome::Status(204)), Verdict::Success);
        assert_eq!(p.judge(&Outcome::Status(429)), Verdict::Retry);
        assert_eq!(p.judge(&Outcome::Status(503)), Verdict::Retry);
        assert_eq!(p.judge(&Outcome::Status(502)), Verdict::Reroute);
        assert_eq!(p.judge(&Outcome::Status(400)), Verdict::Fail);
        assert_eq!(
            p.judge(&Outcome::Status(301)),
            Verdict::Fail,
            "redirects are not followed"
        );
        assert_eq!(p.judge(&Outcome::NetworkError), Verdict::Retry);
    }

    #[test]
    fn retries_run_out() {
        let p = RetryPolicy {
            max_retries: 1,
            ..Default::default()
        };
        let mut rng = StepRng::new(0, 0);
        let first = plan_next(
            &p,
            Verdict::Retry,
            Counters::default(),
            None,
            0,
            u64::MAX,
            &mut rng,
        );
        let Plan::RetryAt { counters, .. } = first else {
            panic!("first retry allowed: {first:?}")
        };
        assert_eq!(
            plan_next(&p, Verdict::Retry, counters, None, 0, u64::MAX, &mut rng),
            Plan::Fail
        );
    }

    #[test]
    fn an_interruption_costs_no_retry() {
        let p = RetryPolicy {
            max_retries: 0,
            ..Default::default()
        };
        let spent = Counters::default();
        let plan = plan_next(
            &p,
            Verdict::Interrupted,
            spent,
            None,
            0,
            u64::MAX,
            &mut StepRng::new(0, 0),
        );
        assert!(
            matches!(plan, Plan::RetryAt { counters, .. } if counters == spent),
            "{plan:?}"
        );
        assert_eq!(
            serde_json::to_value(Verdict::Interrupted).unwrap(),
            "interrupted"
        );
    }

    #[test]
    fn retry_after_is_honoured_and_capped() {
        let p = RetryPolicy::default();
        let mut rng = StepRng::new(0, 0);
        let plan = plan_next(
            &p,
            Verdict::Retry,
            Counters::default(),
            Some(30_000),
            1_000,
            u64::MAX,
            &mut rng,
        );
        assert!(
            matches!(plan, Plan::RetryAt { at, .. } if at >= 31_000),
            "{plan:?}"
        );
        let plan = plan_next(
            &p,
            Verdict::Retry,
            Counters::default(),
            Some(u64::MAX),
            0,
            u64::MAX,
            &mut rng,
        );
        assert!(
            matches!(plan, Plan::RetryAt { at, .. } if at == RETRY_AFTER_CAP_MS),
            "{plan:?}"
        );
        let plan = plan_next(
            &p,
            Verdict::Retry,
            Counters::default(),
            Some(30_000),
            0,
            10_000,
            &mut rng,
        );
        assert_eq!(plan, Plan::Expire, "no retry past the deadline");
    }

    proptest! {
        #[test]
        fn backoff_within_bounds(n in 0u32..100, seed in any::<u64>()) {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let b = backoff_ms(n, &mut rng);
            prop_assert!(b <= BACKOFF_CAP_MS);
            prop_assert!(b <= BACKOFF_BASE_MS << n.min(30));
        }
    }
}
