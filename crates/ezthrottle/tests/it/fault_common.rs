//! Shared pieces of the fault suite (`fault_*` modules): the small/full switch, a seeded random
//! source, result records, signals, the CLI's view of a stopped server's store, and checks of
//! "every accepted job is there and final".
//!
//! Small by default (CI); `EZT_FAULT_FULL=1` runs the full form (`scripts/fault-suite.sh`).
//! `EZT_FAULT_SEED` replays a run's random choices; `EZT_FAULT_OUT` names a file that each test
//! appends its counts to, one JSON object a line.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};

use crate::support::{cli, TestServer};

/// Whether the full form was asked for.
pub fn full() -> bool {
    std::env::var("EZT_FAULT_FULL").is_ok_and(|v| v == "1")
}

/// `small` in CI, `big` with `EZT_FAULT_FULL=1`.
pub fn scale(small: usize, big: usize) -> usize {
    if full() {
        big
    } else {
        small
    }
}

/// Tests that need root (mount) or system packages (libfaketime) fail with this message unless
/// `EZT_SKIP_PRIVILEGED=1`, in which case this returns and the test ends early (and says so).
pub fn skip_privileged(why: &str) {
    if std::env::var("EZT_SKIP_PRIVILEGED").is_ok_and(|v| v == "1") {
        eprintln!("SKIPPED (EZT_SKIP_PRIVILEGED=1): {why}");
        return;
    }
    panic!("{why}\n(set EZT_SKIP_PRIVILEGED=1 to skip this test on a machine that cannot run it)");
}

/// A small xorshift generator: seeded from `EZT_FAULT_SEED` or the clock, and printed, so a
/// failing trial can be replayed.
pub struct Rng(u64, u64);

impl Rng {
    pub fn new(test: &str) -> Self {
        let seed = std::env::var("EZT_FAULT_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
            });
        eprintln!("{test}: EZT_FAULT_SEED={seed}");
        Self(seed | 1, seed)
    }

    /// The seed (to record with the results).
    pub fn seed(&self) -> u64 {
        self.1
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        lo + (self.0 % (hi - lo + 1) as u64) as usize
    }
}

/// Prints a test's counts and appends them to `EZT_FAULT_OUT` when set.
pub fn record(test: &str, counts: Value) {
    let mut line = json!({ "test": test, "full": full() });
    if let (Some(l), Some(c)) = (line.as_object_mut(), counts.as_object()) {
        l.extend(c.clone());
    }
    eprintln!("FAULT-RESULT {line}");
    if let Ok(path) = std::env::var("EZT_FAULT_OUT") {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .expect("open EZT_FAULT_OUT");
        writeln!(f, "{line}").expect("write EZT_FAULT_OUT");
    }
}

/// Sends SIGTERM and waits (bounded) for the process to exit; returns its exit code.
pub async fn sigterm_and_wait(server: &mut TestServer, within: Duration) -> Option<i32> {
    let pid = server.child.id().to_string();
    let st = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("run kill");
    assert!(st.success(), "kill -TERM {pid} failed");
    // The exit is an event: the server's stderr closes.
    let mut exited = server.exited.clone();
    if tokio::time::timeout(within, exited.wait_for(|e| *e))
        .await
        .is_err()
    {
        panic!(
            "server did not exit within {within:?} of SIGTERM; log:\n{}",
            server.logs()
        );
    }
    server.child.wait().expect("reap").code()
}

/// Peak and current resident set of a process, in KiB (`VmHWM`, `VmRSS` from /proc).
pub fn rss_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

/// Jobs (in `state`, or all) as the CLI sees them in a (stopped or running) server's data dir.
pub fn cli_jobs(dir: &Path, state: Option<&str>) -> Vec<Value> {
    let mut args = vec!["jobs", "list", "--limit", "1000000"];
    if let Some(s) = state {
        args.extend(["--state", s]);
    }
    serde_json::from_str::<Vec<Value>>(&cli(dir, &args)).expect("jobs list JSON")
}

/// Waits until every job in `ids` is final. Returns each job's final view, and the ids the
/// server does not know (lost). Panics on a job still not final after `per_job`.
pub async fn await_final(
    server: &TestServer,
    ids: &[String],
    per_job: Duration,
) -> (HashMap<String, Value>, Vec<String>) {
    let mut views = HashMap::new();
    let mut lost = Vec::new();
    for id in ids {
        let (s, v) = server
            .get(&format!(
                "/api/v1/jobs/{id}/wait?timeout={}ms",
                per_job.as_millis()
            ))
            .await;
        match s {
            200 => {
                views.insert(id.clone(), v);
            }
            404 => lost.push(id.clone()),
            _ => panic!("job {id} not final within {per_job:?} ({s}): {v}"),
        }
    }
    (views, lost)
}

/// Calls per Idempotency-Key among a target's arrivals (panics on an arrival without one).
pub fn calls_per_key(arrivals: &[crate::support::Arrival]) -> HashMap<String, usize> {
    let mut calls: HashMap<String, usize> = HashMap::new();
    for a in arrivals {
        let key = a
            .headers
            .get("idempotency-key")
            .unwrap_or_else(|| panic!("a call without Idempotency-Key: {:?}", a.headers));
        *calls.entry(key.clone()).or_default() += 1;
    }
    calls
}
