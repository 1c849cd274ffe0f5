//! The wall clock, behind a seam.
//!
//! Everything in the runtime that needs "now" as milliseconds since the epoch asks the
//! [`Clock`] it was given (the runtime holds one in `Runtime::clock` and hands it to the lanes,
//! dispatch, delivery, the jobs service and retention; the CLI uses [`SystemClock`]). This is
//! the only module allowed to read the system clock (`clippy.toml` forbids it elsewhere), so a
//! test can substitute another clock everywhere. Monotonic waits (sleeps, intervals, the
//! lanes' pacing) use `tokio::time::Instant`, which paused tokio time drives in tests.
//!
//! Two clocks for tests, because the runtime reads two clocks:
//!
//! - [`FakeClock`] is a number a test sets and advances by hand (as in governor). Right for code
//!   that only reads the wall clock (admission: `run_at`, deadlines; the scheduler's
//!   `Lanes` view).
//! - [`TokioClock`] derives the wall clock from tokio's clock: a fixed epoch time plus the
//!   tokio time elapsed since it was made. The scheduler compares the two clocks (a job's
//!   `run_at` and deadline are wall-clock ms; its pacing, backoff and pauses run on tokio
//!   `Instant`s), so a test with paused time (`#[tokio::test(start_paused = true)]`) needs a
//!   wall clock that moves exactly when tokio's auto-advance does; with this one, a test of the
//!   lanes, dispatch or delivery runs hours of schedule in milliseconds of wall time, and the
//!   numbers it sees are exact.
//!
//! A free `now_ms()` reading the system clock existed until every caller held a clock; it is
//! gone, so no code path can bypass the seam.

use std::fmt::Debug;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A source of wall-clock time.
pub trait Clock: Send + Sync + Debug + 'static {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> u64;
}

/// The operating system's clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    #[allow(clippy::disallowed_methods)] // the one place that reads the system clock
    fn now_ms(&self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
    }
}

/// A clock that only moves when told to. Clones share the same time.
#[derive(Debug, Clone, Default)]
pub struct FakeClock(Arc<AtomicU64>);

impl FakeClock {
    /// A clock reading `ms` since the epoch.
    pub fn new(ms: u64) -> Self {
        Self(Arc::new(AtomicU64::new(ms)))
    }
    /// Moves the clock forward by `d`.
    pub fn advance(&self, d: Duration) {
        self.0.fetch_add(d.as_millis() as u64, Ordering::SeqCst);
    }
    /// Sets the clock to `ms` since the epoch (backwards too: a wall-clock step).
    pub fn set(&self, ms: u64) {
        self.0.store(ms, Ordering::SeqCst);
    }
}

impl Clock for FakeClock {
    fn now_ms(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// A wall clock that follows tokio's clock: `base_ms` plus the tokio time elapsed since it was
/// made. Under paused tokio time it agrees exactly with every `tokio::time::Instant` the
/// runtime compares it with (see the module comment).
#[derive(Debug, Clone, Copy)]
pub struct TokioClock {
    base_ms: u64,
    origin: tokio::time::Instant,
}

impl TokioClock {
    /// A clock reading `base_ms` now, moving with tokio's clock.
    pub fn new(base_ms: u64) -> Self {
        Self {
            base_ms,
            origin: tokio::time::Instant::now(),
        }
    }
}

impl Clock for TokioClock {
    fn now_ms(&self) -> u64 {
        self.base_ms + self.origin.elapsed().as_millis() as u64
    }
}

/// Monotonic time for measuring elapsed spans (latencies, recovery time): tokio's clock, so it
/// follows paused time in tests.
pub fn monotonic() -> tokio::time::Instant {
    tokio::time::Instant::now()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_clock_is_after_2020() {
        assert!(
            SystemClock.now_ms() > 1_577_836_800_000,
            "the clock reads ms since 1970"
        );
    }

    #[test]
    fn fake_clock_moves_only_when_told_and_clones_share_it() {
        let c = FakeClock::new(1_000);
        let twin = c.clone();
        assert_eq!(c.now_ms(), 1_000);
        c.advance(Duration::from_millis(250));
        assert_eq!(twin.now_ms(), 1_250);
        twin.set(500);
        assert_eq!(c.now_ms(), 500, "set may step backwards");
    }

    #[tokio::test(start_paused = true)]
    async fn tokio_clock_follows_paused_time_exactly() {
        let c = TokioClock::new(1_700_000_000_000);
        assert_eq!(c.now_ms(), 1_700_000_000_000);
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        assert_eq!(c.now_ms(), 1_700_000_001_500);
    }
}
