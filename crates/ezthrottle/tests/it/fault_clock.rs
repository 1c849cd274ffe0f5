//! Wall-clock steps of ±10 min under libfaketime (the server's CLOCK_REALTIME moves, its
//! monotonic clock does not, as with an NTP step or an operator's `date -s`).
//!
//! Semantics checked (see `Scheduler::promote_and_expire`):
//! - Relative waits (backoff, Retry-After) last their length in real time whatever the wall clock
//!   does: neither shortened by a step forward nor stretched by a step back.
//! - `retry_at` is "not before": never before the epoch time on the node's clock and never sooner
//!   than the delay it implied when the node accepted the job. A step forward does not start it
//!   early; a step back makes it wait for the wall clock again.
//! - A call in flight is not started a second time (no lease rescue while it runs).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::fault_common::{record, skip_privileged};
use crate::support::{Reply, Target, TestServer};

const STEP_S: i64 = 600;

/// The thread-safe build (libfaketimeMT): with the plain one, threads re-reading the offset file
/// at once now and then saw a wrong time (a `retry_at` job started at once).
fn libfaketime() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("EZT_LIBFAKETIME") {
        return Some(PathBuf::from(p));
    }
    let mut dirs = vec![PathBuf::from("/usr/lib/faketime")];
    if let Ok(rd) = std::fs::read_dir("/usr/lib") {
        dirs.extend(rd.flatten().map(|e| e.path().join("faketime")));
    }
    dirs.into_iter()
        .map(|d| d.join("libfaketimeMT.so.1"))
        .find(|p| p.exists())
}

fn real_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// The server under libfaketime, with its offset in a file the test rewrites.
struct FakedServer {
    server: TestServer,
    offset_file: PathBuf,
    kick: Target,
    _tmp: tempfile::TempDir, // after `server`: dropped once the server is gone
}

impl FakedServer {
    async fn start(lib: &Path) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let offset_file = tmp.path().join("faketime-offset");
        std::fs::write(&offset_file, "+0\n").unwrap();
        let dir = tmp.path().join("data");
        std::fs::create_dir(&dir).unwrap();
        let env = [
            ("LD_PRELOAD", lib.to_str().unwrap()),
            ("FAKETIME_TIMESTAMP_FILE", offset_file.to_str().unwrap()),
            ("FAKETIME_NO_CACHE", "1"),
            ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
            ("DONT_FAKE_MONOTONIC", "1"),
        ];
        let config = "[lanes.default]\nrate = 50.0\nburst = 5\nmax_in_flight = 4\n";
        let server = TestServer::spawn_env(&dir, config, None, &env);
        Self {
            server,
            offset_file,
            kick: Target::start().await,
            _tmp: tmp,
        }
    }

    /// Steps the server's wall clock to `offset_s` from real time, and returns once a job run
    /// after the step shows it: the attempt's recorded start time carries the offset.
    async fn step_to(&self, offset_s: i64) {
        std::fs::write(&self.offset_file, format!("{offset_s:+}\n")).unwrap();
        let key = format!("kick-{offset_s}-{}", real_now_ms());
        let id = self
            .server
            .submit(json!({"url": self.kick.url("kick"), "idempotent_key": key}))
            .await;
        let v = self.server.wait_final(&id, 30).await;
        let at = v["attempts"][0]["at"].as_i64().unwrap();
        let skew = at - real_now_ms();
        assert!(
            (skew - offset_s * 1000).abs() < 30_000,
            "the server's clock did not step to {offset_s:+} s (skew {skew} ms): {v}"
        );
    }
}

fn lib_or_skip() -> Option<PathBuf> {
    let lib = libfaketime();
    if lib.is_none() {
        skip_privileged(
            "clock test: libfaketimeMT.so.1 not found (apt-get install libfaketime, or set EZT_LIBFAKETIME)",
        );
    }
    lib
}

/// What runs across the step: a call in flight (5 s), a job waiting out a `Retry-After`
/// (relative), and a job delayed by `retry_at` (absolute), each on its own target (own lane, so
/// the Retry-After pause holds back only its own job).
struct Scene {
    fs: FakedServer,
    slow: Target,
    ra: Target,
    delayed: Target,
    inflight_id: String,
    delayed_id: String,
    /// When the Retry-After job's first call arrived.
    ra_first: Instant,
    /// Just before `retry_at` was computed.
    t_sub: Instant,
}

impl Scene {
    async fn start(lib: &Path, retry_after_s: u64, retry_at_in_ms: i64) -> Self {
        let fs = FakedServer::start(lib).await;
        let (slow, ra, delayed) = (
            Target::start().await,
            Target::start().await,
            Target::start().await,
        );
        slow.default_reply(
            "inflight",
            Reply {
                status: 200,
                headers: vec![],
                delay_ms: 5000,
            },
        );
        let inflight_id = fs.server.submit(json!({"url": slow.url("inflight")})).await;
        slow.wait_for("inflight", 1, Duration::from_secs(10)).await;
        ra.script(
            "ra",
            vec![Reply::status(503).header("Retry-After", &retry_after_s.to_string())],
        );
        fs.server.submit(json!({"url": ra.url("ra")})).await;
        let ra_first = ra.wait_for("ra", 1, Duration::from_secs(10)).await[0].at;
        let t_sub = Instant::now();
        let retry_at = real_now_ms() + retry_at_in_ms;
        let delayed_id = fs
            .server
            .submit(json!({"url": delayed.url("d"), "retry_at": retry_at}))
            .await;
        // The scheduler learns of an accepted job a moment after the 202 and converts retry_at
        // to a monotonic wait with its own reading of the wall clock; a step inside that window
        // would count as one before acceptance. A job run through the same (FIFO) channel after
        // this one shows the hand-off is done.
        fs.step_to(0).await;
        Self {
            fs,
            slow,
            ra,
            delayed,
            inflight_id,
            delayed_id,
            ra_first,
            t_sub,
        }
    }

    /// How long after its first call the Retry-After job's second call came.
    async fn retry_after_wait(&self) -> Duration {
        let second = self.ra.wait_for("ra", 2, Duration::from_secs(15)).await[1].at;
        second.duration_since(self.ra_first)
    }

    /// The call in flight across the step ran once and its job succeeded with one attempt.
    async fn assert_in_flight_ran_once(&self) {
        let v = self.fs.server.wait_final(&self.inflight_id, 30).await;
        assert_eq!(v["state"], "succeeded", "{v}");
        assert_eq!(v["attempts"].as_array().unwrap().len(), 1, "{v}");
        assert_eq!(
            self.slow.arrivals("inflight").len(),
            1,
            "a call in flight across the clock step was started again"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_clock_step_forward_starts_nothing_early() {
    let Some(lib) = lib_or_skip() else { return };
    let sc = Scene::start(&lib, 4, 4000).await;

    sc.fs.step_to(STEP_S).await;

    let d_at = sc.delayed.wait_for("d", 1, Duration::from_secs(15)).await[0].at;
    let d_wait = d_at.duration_since(sc.t_sub);
    assert!(
        d_wait >= Duration::from_millis(3900),
        "retry_at 4 s ahead ran after {d_wait:?}: the step forward started it early"
    );
    let ra_wait = sc.retry_after_wait().await;
    assert!(
        ra_wait >= Duration::from_millis(3900),
        "Retry-After: 4 honoured for {ra_wait:?} only"
    );
    sc.assert_in_flight_ran_once().await;
    record(
        "clock_step_forward",
        json!({"step_s": STEP_S, "retry_at_wait_ms": d_wait.as_millis() as u64,
               "retry_after_wait_ms": ra_wait.as_millis() as u64, "in_flight_repeats": 0}),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_clock_step_back_keeps_relative_waits_and_retry_at() {
    let Some(lib) = lib_or_skip() else { return };
    let sc = Scene::start(&lib, 3, 2000).await;

    sc.fs.step_to(-STEP_S).await;

    // The relative wait is not stretched by the step back...
    let ra_wait = sc.retry_after_wait().await;
    assert!(
        (Duration::from_millis(2900)..Duration::from_secs(7)).contains(&ra_wait),
        "Retry-After: 3 waited {ra_wait:?} across a {STEP_S} s step back"
    );
    // ...while retry_at (now 10 min ahead on the server's clock, 1+ s past in real time) waits.
    assert!(
        sc.delayed.arrivals("d").is_empty(),
        "retry_at ran before the server's clock reached it"
    );
    let (_, v) = sc
        .fs
        .server
        .get(&format!("/api/v1/jobs/{}", sc.delayed_id))
        .await;
    assert_eq!(v["state"], "scheduled", "{v}");

    sc.fs.step_to(0).await;
    sc.delayed.wait_for("d", 1, Duration::from_secs(10)).await;
    sc.assert_in_flight_ran_once().await;
    record(
        "clock_step_back",
        json!({"step_s": -STEP_S, "retry_after_wait_ms": ra_wait.as_millis() as u64,
               "retry_at_held_until_clock_reached_it": true, "in_flight_repeats": 0}),
    );
}
