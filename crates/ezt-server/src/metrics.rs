//! Prometheus metrics in the text exposition format.
//!
//! A handful of counters, gauges and one histogram do not justify a registry crate's generic
//! machinery; these are lock-free atomics rendered by hand.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

/// A monotonically increasing counter.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds one.
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    /// Current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down.
#[derive(Debug, Default)]
pub struct Gauge(AtomicU64);

impl Gauge {
    /// Adds one.
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    /// Subtracts one.
    pub fn dec(&self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
    /// Current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

const BUCKETS_S: [f64; 12] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0,
];

/// A latency histogram with fixed buckets (seconds).
#[derive(Debug, Default)]
pub struct Histogram {
    counts: [AtomicU64; 12],
    count: AtomicU64,
    sum_us: AtomicU64,
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&self, d: std::time::Duration) {
        let s = d.as_secs_f64();
        if let Some(i) = BUCKETS_S.iter().position(|b| s <= *b) {
            self.counts[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_us
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cum = 0;
        for (i, b) in BUCKETS_S.iter().enumerate() {
            cum += self.counts[i].load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {cum}");
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(
            out,
            "{name}_sum {}",
            self.sum_us.load(Ordering::Relaxed) as f64 / 1e6
        );
        let _ = writeln!(out, "{name}_count {count}");
    }
}

/// Every metric the server keeps.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Jobs stored by admission.
    pub admitted: Counter,
    /// Submissions answered as duplicates.
    pub duplicates: Counter,
    /// Submissions refused (4xx).
    pub rejected: Counter,
    /// Attempts handed to the executor.
    pub dispatched: Counter,
    /// Attempts by outcome: success, retry, reroute, fail.
    pub attempts_success: Counter,
    /// Attempts judged retry.
    pub attempts_retry: Counter,
    /// Attempts judged reroute.
    pub attempts_reroute: Counter,
    /// Attempts judged fail.
    pub attempts_fail: Counter,
    /// Attempts without an answer (network errors, timeouts).
    pub attempts_network_error: Counter,
    /// Attempts in flight.
    pub in_flight: Gauge,
    /// Time from request to durable ack.
    pub admission_latency: Histogram,
}

impl Metrics {
    /// Renders everything; `states` and `lanes` come from the store and the scheduler.
    pub fn render(
        &self,
        states: &[(ezt_core::JobState, u64)],
        lanes: &[crate::scheduler::LaneView],
    ) -> String {
        let mut out = String::with_capacity(4096);
        let mut counter = |name: &str, help: &str, v: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
            );
        };
        counter(
            "ezthrottle_jobs_admitted_total",
            "Jobs durably admitted.",
            self.admitted.get(),
        );
        counter(
            "ezthrottle_jobs_duplicate_total",
            "Submissions answered as duplicates.",
            self.duplicates.get(),
        );
        counter(
            "ezthrottle_jobs_rejected_total",
            "Submissions refused with a 4xx.",
            self.rejected.get(),
        );
        counter(
            "ezthrottle_dispatched_total",
            "Attempts handed to the executor.",
            self.dispatched.get(),
        );
        let _ = writeln!(out, "# HELP ezthrottle_attempts_total Attempts by outcome.\n# TYPE ezthrottle_attempts_total counter");
        for (o, c) in [
            ("success", &self.attempts_success),
            ("retry", &self.attempts_retry),
            ("reroute", &self.attempts_reroute),
            ("fail", &self.attempts_fail),
        ] {
            let _ = writeln!(
                out,
                "ezthrottle_attempts_total{{outcome=\"{o}\"}} {}",
                c.get()
            );
        }
        let _ = writeln!(
            out,
            "# HELP ezthrottle_attempt_network_errors_total Attempts that got no answer.\n# TYPE ezthrottle_attempt_network_errors_total counter\nezthrottle_attempt_network_errors_total {}",
            self.attempts_network_error.get()
        );
        let _ = writeln!(
            out,
            "# HELP ezthrottle_jobs Jobs by state.\n# TYPE ezthrottle_jobs gauge"
        );
        for (s, n) in states {
            let _ = writeln!(out, "ezthrottle_jobs{{state=\"{}\"}} {n}", s.as_str());
        }
        type LaneValue = fn(&crate::scheduler::LaneView) -> f64;
        let per_lane: [(&str, &str, &str, LaneValue); 4] = [
            (
                "ezthrottle_lane_queue_depth",
                "gauge",
                "Jobs waiting in a lane.",
                |l| l.queued as f64,
            ),
            (
                "ezthrottle_lane_rate",
                "gauge",
                "Requests per second allowed in a lane.",
                |l| l.rate,
            ),
            (
                "ezthrottle_lane_in_flight",
                "gauge",
                "Requests in flight in a lane.",
                |l| f64::from(l.in_flight),
            ),
            (
                "ezthrottle_lane_dispatched_total",
                "counter",
                "Calls dispatched in a lane.",
                |l| l.dispatched as f64,
            ),
        ];
        for (name, kind, help, value) in per_lane {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for l in lanes {
                let _ = writeln!(out, "{name}{{lane=\"{}\"}} {}", esc(&l.lane), value(l));
            }
        }
        let _ = writeln!(out, "# HELP ezthrottle_in_flight Attempts in flight.\n# TYPE ezthrottle_in_flight gauge\nezthrottle_in_flight {}", self.in_flight.get());
        self.admission_latency.render(
            &mut out,
            "ezthrottle_admission_seconds",
            "Time from request to durable ack.",
        );
        out
    }
}

fn esc(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}
