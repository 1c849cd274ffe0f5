//! The wall clock, behind a seam.
//!
//! Everything in the runtime that needs "now" as milliseconds since the epoch asks a [`Clock`]
//! (or, until every caller holds one, the free [`now_ms`], which reads [`SystemClock`]). This is
//! the only module allowed to read the system clock (`clippy.toml` forbids it elsewhere), so a
//! test can substitute a fake clock. Monotonic waits use `tokio::time::Instant`, which paused
//! tokio time drives in tests.

use std::fmt::Debug;

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

/// Wall-clock ms since the epoch, from [`SystemClock`].
pub fn now_ms() -> u64 {
    SystemClock.now_ms()
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
}
