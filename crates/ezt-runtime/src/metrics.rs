//! Prometheus metrics in the text exposition format.
//!
//! A handful of counters, gauges and one histogram do not justify a registry crate's generic
//! machinery; these are lock-free atomics rendered by hand.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::lanes::{LaneStats, LaneView};

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
    /// Sets it.
    pub fn set(&self, v: u64) {
        self.0.store(v, Ordering::Relaxed);
    }
    /// Current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Bucket bounds of a histogram, seconds.
pub trait Buckets {
    /// Upper bounds, ascending (at most 16).
    const BOUNDS: &'static [f64];
}

/// Sub-millisecond to one second: request paths.
#[derive(Debug, Default)]
pub struct Fast;
impl Buckets for Fast {
    const BOUNDS: &'static [f64] = &[
        0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0,
    ];
}

/// Milliseconds to days: deliveries that may wait out retries.
#[derive(Debug, Default)]
pub struct Slow;
impl Buckets for Slow {
    const BOUNDS: &'static [f64] = &[
        0.001, 0.005, 0.025, 0.1, 0.5, 1.0, 5.0, 30.0, 300.0, 1800.0, 7200.0, 36000.0, 86400.0,
        259200.0,
    ];
}

/// A latency histogram with fixed buckets (seconds).
#[derive(Debug, Default)]
pub struct Histogram<B: Buckets = Fast> {
    counts: [AtomicU64; 16],
    count: AtomicU64,
    sum_us: AtomicU64,
    _bounds: std::marker::PhantomData<B>,
}

impl<B: Buckets> Histogram<B> {
    /// Records one observation.
    pub fn observe(&self, d: std::time::Duration) {
        let s = d.as_secs_f64();
        if let Some(i) = B::BOUNDS.iter().position(|b| s <= *b) {
            self.counts[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_us
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cum = 0;
        for (i, b) in B::BOUNDS.iter().enumerate() {
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
    /// The job lanes' dispatch counters (attempts handed to dispatch, in flight).
    pub job_lanes: Arc<LaneStats>,
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
    /// Time from request to durable ack.
    pub admission_latency: Histogram,
    /// The webhook lanes' dispatch counters (delivery attempts handed out, in flight).
    pub webhook_lanes: Arc<LaneStats>,
    /// Delivery attempts acknowledged with a 2xx.
    pub deliveries_delivered: Counter,
    /// Delivery attempts answered with a non-2xx, to be retried.
    pub deliveries_retry: Counter,
    /// Delivery attempts without an answer, to be retried.
    pub deliveries_network_error: Counter,
    /// Deliveries given up (schedule exhausted, 410 Gone, refused address).
    pub deliveries_failed: Counter,
    /// Time from a job's end to its webhook's first acknowledgement.
    pub delivery_latency: Histogram<Slow>,
    /// Jobs admitted into the node's spool (the database was unreachable).
    pub spool_admitted: Counter,
    /// Spooled jobs forwarded to the database.
    pub spool_forwarded: Counter,
    /// Jobs waiting in the node's spool.
    pub spool_waiting: Gauge,
}

/// What the scrape reads from elsewhere.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Jobs by state, from the store.
    pub states: Vec<(ezt_core::JobState, u64)>,
    /// Job lanes, from the scheduler.
    pub lanes: Vec<LaneView>,
    /// Webhook lanes, from the webhook scheduler.
    pub webhook_lanes: Vec<LaneView>,
    /// Age of the oldest pending delivery, seconds.
    pub oldest_pending_delivery_s: Option<f64>,
    /// Per-lane series are rendered for this many of the busiest lanes of each scheduler.
    pub max_lane_series: usize,
}

/// The `k` busiest lanes (queued + in flight, then most dispatched, then by name so the
/// choice is stable between scrapes): per-lane series for every lane would make the scrape
/// grow with the number of distinct hosts and credentials, which callers control.
fn busiest(lanes: &[LaneView], k: usize) -> Vec<&LaneView> {
    let mut v: Vec<_> = lanes.iter().collect();
    let load = |l: &LaneView| l.queued as u64 + u64::from(l.in_flight);
    v.sort_unstable_by(|a, b| {
        (load(b), b.dispatched)
            .cmp(&(load(a), a.dispatched))
            .then_with(|| a.lane.cmp(&b.lane))
    });
    v.truncate(k);
    v
}

impl Metrics {
    /// Renders everything, with what the store and the schedulers report.
    pub fn render(&self, snap: &Snapshot) -> String {
        let (states, lanes) = (&snap.states, &snap.lanes);
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
            "ezthrottle_spool_admitted_total",
            "Jobs admitted into this node's spool while the database was unreachable.",
            self.spool_admitted.get(),
        );
        counter(
            "ezthrottle_spool_forwarded_total",
            "Spooled jobs forwarded to the database.",
            self.spool_forwarded.get(),
        );
        counter(
            "ezthrottle_dispatched_total",
            "Attempts handed to the executor.",
            self.job_lanes.dispatched(),
        );
        by_outcome(
            &mut out,
            "ezthrottle_attempts_total",
            "Attempts by outcome.",
            &[
                ("success", &self.attempts_success),
                ("retry", &self.attempts_retry),
                ("reroute", &self.attempts_reroute),
                ("fail", &self.attempts_fail),
            ],
        );
        let _ = writeln!(
            out,
            "# HELP ezthrottle_spool_waiting Jobs waiting in this node's spool.\n# TYPE ezthrottle_spool_waiting gauge\nezthrottle_spool_waiting {}",
            self.spool_waiting.get()
        );
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
        type LaneValue = fn(&LaneView) -> f64;
        let per_lane: [(&str, &str, &str, LaneValue); 8] = [
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
                "ezthrottle_lane_burst",
                "gauge",
                "Back-to-back requests allowed in a lane.",
                |l| f64::from(l.burst),
            ),
            (
                "ezthrottle_lane_max_in_flight",
                "gauge",
                "In-flight cap of a lane.",
                |l| f64::from(l.max_in_flight),
            ),
            (
                "ezthrottle_lane_remaining",
                "gauge",
                "Requests left in the target's window, as it last said (NaN: it never said).",
                |l| l.remaining.map_or(f64::NAN, |r| r as f64),
            ),
            (
                "ezthrottle_lane_paused_until_seconds",
                "gauge",
                "End of the pause the target asked for, Unix seconds (0: not paused).",
                |l| l.paused_until.map_or(0.0, |p| p as f64 / 1000.0),
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
        let k = snap.max_lane_series;
        let shown = [busiest(lanes, k), busiest(&snap.webhook_lanes, k)];
        for (name, kind, help, value) in per_lane {
            for (prefix, what, lanes) in [
                ("ezthrottle_lane", " (busiest lanes only)", &shown[0]),
                (
                    "ezthrottle_webhook_lane",
                    " (webhook receivers, busiest only)",
                    &shown[1],
                ),
            ] {
                let name = name.replacen("ezthrottle_lane", prefix, 1);
                let _ = writeln!(out, "# HELP {name} {help}{what}\n# TYPE {name} {kind}");
                for l in lanes.iter() {
                    let _ = writeln!(out, "{name}{{lane=\"{}\"}} {}", esc(&l.lane), value(l));
                }
            }
        }
        let _ = writeln!(
            out,
            "# HELP ezthrottle_lane_rate_source Where a lane's rate comes from: default, config, header (with its name), adaptive, tenant (busiest lanes only).\n# TYPE ezthrottle_lane_rate_source gauge"
        );
        for l in shown[0].iter() {
            let (kind, header) = l.detail.rate.as_ref().map_or(("default", ""), |r| {
                (source_kind(r.kind), r.header.as_deref().unwrap_or(""))
            });
            let _ = writeln!(
                out,
                "ezthrottle_lane_rate_source{{lane=\"{}\",kind=\"{kind}\",header=\"{}\"}} 1",
                esc(&l.lane),
                esc(header)
            );
        }
        for (prefix, what, all) in [
            ("ezthrottle_lanes", "", lanes),
            (
                "ezthrottle_webhook_lanes",
                " (webhook receivers)",
                &snap.webhook_lanes,
            ),
        ] {
            let paused = all.iter().filter(|l| l.paused_until.is_some()).count();
            let queued: usize = all.iter().map(|l| l.queued).sum();
            let _ = writeln!(
                out,
                "# HELP {prefix} Lanes in memory{what}.\n# TYPE {prefix} gauge\n{prefix} {}\n\
                 # HELP {prefix}_paused Lanes paused by their target{what}.\n# TYPE {prefix}_paused gauge\n{prefix}_paused {paused}\n\
                 # HELP {prefix}_queued Items waiting in all lanes{what}.\n# TYPE {prefix}_queued gauge\n{prefix}_queued {queued}\n\
                 # HELP {prefix}_without_series Lanes left out of the per-lane series{what}.\n# TYPE {prefix}_without_series gauge\n{prefix}_without_series {}",
                all.len(),
                all.len().saturating_sub(k),
            );
        }
        let _ = writeln!(out, "# HELP ezthrottle_in_flight Attempts in flight.\n# TYPE ezthrottle_in_flight gauge\nezthrottle_in_flight {}", self.job_lanes.in_flight());
        self.admission_latency.render(
            &mut out,
            "ezthrottle_admission_seconds",
            "Time from request to durable ack.",
        );
        by_outcome(
            &mut out,
            "ezthrottle_webhook_deliveries_total",
            "Delivery attempts by outcome.",
            &[
                ("delivered", &self.deliveries_delivered),
                ("retry", &self.deliveries_retry),
                ("network_error", &self.deliveries_network_error),
                ("failed", &self.deliveries_failed),
            ],
        );
        let _ = writeln!(out, "# HELP ezthrottle_webhook_in_flight Delivery attempts in flight.\n# TYPE ezthrottle_webhook_in_flight gauge\nezthrottle_webhook_in_flight {}", self.webhook_lanes.in_flight());
        let _ = writeln!(
            out,
            "# HELP ezthrottle_webhook_oldest_pending_seconds Age of the oldest delivery not yet acknowledged or failed (0 when none).\n# TYPE ezthrottle_webhook_oldest_pending_seconds gauge\nezthrottle_webhook_oldest_pending_seconds {}",
            snap.oldest_pending_delivery_s.unwrap_or(0.0)
        );
        self.delivery_latency.render(
            &mut out,
            "ezthrottle_webhook_delivery_seconds",
            "Time from a job's end to its webhook's first acknowledgement.",
        );
        out
    }
}

fn esc(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}
/// One counter family labelled by `outcome`.
fn by_outcome(out: &mut String, name: &str, help: &str, counters: &[(&str, &Counter)]) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
    for (o, c) in counters {
        let _ = writeln!(out, "{name}{{outcome=\"{o}\"}} {}", c.get());
    }
}

/// A source kind as its API name.
fn source_kind(k: ezt_store::SourceKind) -> &'static str {
    use ezt_store::SourceKind::*;
    match k {
        Default => "default",
        Config => "config",
        Header => "header",
        Adaptive => "adaptive",
        Tenant => "tenant",
        Derived => "derived",
    }
}

/// This node's series: which node answers the scrape (so series from several nodes can be told
/// apart and summed) and whether it is self-fenced.
pub fn render_node(node: &crate::fence::NodeFence) -> String {
    let mut out = String::with_capacity(256);
    let _ = writeln!(
        out,
        "# HELP ezthrottle_node_info This node (id, membership epoch, whether clustered).\n# TYPE ezthrottle_node_info gauge\nezthrottle_node_info{{node=\"{}\",epoch=\"{}\",clustered=\"{}\"}} 1",
        node.id(),
        node.epoch(),
        node.is_clustered()
    );
    let _ = writeln!(
        out,
        "# HELP ezthrottle_node_fenced 1 while this node may not send (its membership lease is not renewed).\n# TYPE ezthrottle_node_fenced gauge\nezthrottle_node_fenced{{node=\"{}\"}} {}",
        node.id(),
        u8::from(!node.is_open())
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lane(i: usize, queued: usize) -> LaneView {
        LaneView {
            lane: format!("api.example.com:443#{i:016x}"),
            rate: 2.0,
            burst: 1,
            max_in_flight: 2,
            in_flight: 0,
            queued,
            paused_until: None,
            pinned: false,
            dispatched: i as u64,
            ..LaneView::default()
        }
    }

    #[test]
    fn the_node_is_named_in_its_series() {
        let n = crate::fence::NodeFence::clustered(ezt_store::NodeId::new("n-2"));
        let text = render_node(&n);
        assert!(
            text.contains("ezthrottle_node_info{node=\"n-2\",epoch=\"0\",clustered=\"true\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("ezthrottle_node_fenced{node=\"n-2\"} 1"),
            "fenced before joining: {text}"
        );
    }

    #[test]
    fn five_thousand_lanes_keep_the_scrape_small() {
        let snap = Snapshot {
            lanes: (0..5000)
                .map(|i| lane(i, usize::from(i == 7) * 9))
                .collect(),
            max_lane_series: 50,
            ..Default::default()
        };
        let text = Metrics::default().render(&snap);
        assert!(text.len() < 64 * 1024, "scrape is {} bytes", text.len());
        for family in ["ezthrottle_lane_queue_depth{", "ezthrottle_lane_rate{"] {
            let n = text.lines().filter(|l| l.starts_with(family)).count();
            assert_eq!(n, 50, "{family} series");
        }
        assert!(text.contains("\nezthrottle_lanes 5000\n"), "{text}");
        assert!(text.contains("\nezthrottle_lanes_queued 9\n"));
        assert!(text.contains("\nezthrottle_lanes_without_series 4950\n"));
        let busiest = format!(
            "ezthrottle_lane_queue_depth{{lane=\"{}\"}} 9",
            lane(7, 0).lane
        );
        assert!(text.contains(&busiest), "the lane with work is shown");
    }
}
