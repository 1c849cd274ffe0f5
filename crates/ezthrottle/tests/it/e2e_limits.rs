//! Lane limits: GCRA spacing, learned limits, Retry-After pauses, fair sharing between tenants.

use std::time::Duration;

use serde_json::json;

use crate::support::{cli, Reply, Target, TestServer};

/// Jitter between the limiter's decision and the mock target's arrival stamp: loopback plus the
/// test process's own scheduling, which on 2 cores shared with the fault suite's servers was
/// seen at 15 ms (a stamp taken late makes the next gap look short). A limiter fault shows as
/// gaps far below the interval (a burst) and in the 30 s window count, which stays exact.
const JITTER: Duration = Duration::from_millis(40);

/// What the lane promises (issue 11: the old per-gap assertion was stricter than that and failed
/// under load): never more than rate + burst calls in any 1 s window, and no faster than the rate
/// on average. Lateness is allowed for (a loaded machine delays calls, which is not a breach).
#[tokio::test]
async fn default_lane_makes_two_calls_per_second() {
    const N: usize = 21;
    let target = Target::start().await;
    let server = TestServer::start();
    let jobs: Vec<_> = (0..N)
        .map(|i| json!({"url": target.url("rate"), "body": i.to_string()}))
        .collect();
    let (s, _) = server
        .post("/api/v1/jobs/batch", json!({ "jobs": jobs }))
        .await;
    assert_eq!(s, 202);
    let seen = target.wait_for("rate", N, Duration::from_secs(60)).await;
    // Rate 2/s, burst 1: at most 3 calls in any 1 s window. A stamp taken late can squeeze two
    // calls by up to JITTER, hence the window shortened by it; a limiter fault is a burst of many.
    let window = Duration::from_secs(1) - JITTER;
    for (i, a) in seen.iter().enumerate() {
        let in_window = seen[i..]
            .iter()
            .take_while(|b| b.at.duration_since(a.at) <= window)
            .count();
        assert!(
            in_window <= 3,
            "{in_window} calls within {window:?} from call {i}; 2/s + burst 1 allows 3"
        );
    }
    // 20 intervals of 500 ms: the whole run can be late, never early.
    let span = seen[N - 1].at.duration_since(seen[0].at);
    assert!(
        span + JITTER >= Duration::from_millis(500) * (N as u32 - 1),
        "{N} calls in {span:?}: faster than 2/s on average"
    );
    assert!(
        span < Duration::from_secs(40),
        "{N} calls took {span:?}: the lane stalled (due 10 s at 2/s)"
    );
}

#[tokio::test]
async fn learned_rate_applies_from_the_next_call() {
    let target = Target::start().await;
    let server = TestServer::start();
    target.default_reply(
        "learn",
        Reply::status(200)
            .header("X-EZTHROTTLE-RPS", "10")
            .header("X-EZTHROTTLE-MAX-CONCURRENT", "4"),
    );
    let jobs: Vec<_> = (0..12)
        .map(|i| json!({"url": target.url("learn"), "body": i.to_string()}))
        .collect();
    server
        .post("/api/v1/jobs/batch", json!({ "jobs": jobs }))
        .await;
    let seen = target.wait_for("learn", 12, Duration::from_secs(20)).await;
    let gaps: Vec<Duration> = seen
        .windows(2)
        .map(|w| w[1].at.duration_since(w[0].at))
        .collect();
    assert!(
        gaps[0] < Duration::from_millis(400),
        "second call at the learned 10/s, not the default 2/s: {gaps:?}"
    );
    assert!(
        gaps.iter()
            .all(|g| *g + JITTER >= Duration::from_millis(100)),
        "never faster than learned 10/s: {gaps:?}"
    );
    let total = seen.last().unwrap().at.duration_since(seen[0].at);
    assert!(
        total < Duration::from_millis(2_500),
        "12 calls at 10/s take ~1.1 s, took {total:?}"
    );
}

#[tokio::test]
async fn retry_after_pauses_the_whole_lane() {
    let target = Target::start().await;
    let server =
        TestServer::start_with("[lanes.default]\nrate = 50.0\nburst = 1\nmax_in_flight = 1\n");
    target.script(
        "limited",
        vec![Reply::status(429).header("Retry-After", "2")],
    );
    let a = server
        .submit(json!({"url": target.url("limited"), "body": "a"}))
        .await;
    let first = target.wait_for("limited", 1, Duration::from_secs(10)).await[0].at;
    let b = server
        .submit(json!({"url": target.url("limited"), "body": "b"}))
        .await;
    let seen = target.wait_for("limited", 3, Duration::from_secs(15)).await;
    for later in &seen[1..] {
        assert!(
            later.at.duration_since(first) >= Duration::from_secs(2),
            "a call {:?} after the 429, before Retry-After: 2",
            later.at.duration_since(first)
        );
    }
    for id in [a, b] {
        assert_eq!(server.wait_final(&id, 15).await["state"], "succeeded");
    }
}

#[tokio::test]
async fn retry_after_http_date_is_honoured() {
    let target = Target::start().await;
    let server =
        TestServer::start_with("[lanes.default]\nrate = 50.0\nburst = 1\nmax_in_flight = 1\n");
    let when = httpdate_in(3);
    target.script(
        "dated",
        vec![Reply::status(503).header("Retry-After", &when)],
    );
    let id = server.submit(json!({"url": target.url("dated")})).await;
    let seen = target.wait_for("dated", 2, Duration::from_secs(15)).await;
    let gap = seen[1].at.duration_since(seen[0].at);
    assert!(
        gap >= Duration::from_millis(1_900),
        "HTTP-date Retry-After ~3 s (1 s resolution) honoured, got {gap:?}"
    );
    assert_eq!(server.wait_final(&id, 10).await["state"], "succeeded");
}

fn httpdate_in(secs: u64) -> String {
    let t = std::time::SystemTime::now() + Duration::from_secs(secs);
    // RFC 9110 IMF-fixdate, formatted by hand to avoid a dependency.
    let d = t.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let (days, rem) = (d / 86_400, d % 86_400);
    let (h, m, s) = (rem / 3600, rem % 3600 / 60, rem % 60);
    let wd = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"][(days % 7) as usize];
    let (y, mo, da) = civil(days as i64);
    let mon = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ][mo as usize - 1];
    format!("{wd}, {da:02} {mon} {y} {h:02}:{m:02}:{s:02} GMT")
}

fn civil(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[tokio::test]
async fn a_quiet_tenant_is_not_stuck_behind_a_noisy_one() {
    let target = Target::start().await;
    let server =
        TestServer::start_with("[lanes.default]\nrate = 20.0\nburst = 1\nmax_in_flight = 2\n");
    cli(
        &server.dir,
        &["tenants", "create", "quiet", "--tier", "paid"],
    );
    let quiet_key = cli(&server.dir, &["keys", "create", "--tenant", "quiet"])
        .trim()
        .to_string();
    let noisy: Vec<_> = (0..400).map(|i| json!({"url": target.url("shared"), "body": format!("n{i}"), "headers": {"X-Who": "noisy"}})).collect();
    let (s, _) = server
        .post("/api/v1/jobs/batch", json!({ "jobs": noisy }))
        .await;
    assert_eq!(s, 202);
    target.wait_for("shared", 5, Duration::from_secs(10)).await;
    let before = target.arrivals("shared").len();
    let quiet: Vec<_> = (0..10).map(|i| json!({"url": target.url("shared"), "body": format!("q{i}"), "headers": {"X-Who": "quiet"}})).collect();
    let (s, _) = server
        .post_as(&quiet_key, "/api/v1/jobs/batch", json!({ "jobs": quiet }))
        .await;
    assert_eq!(s, 202);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let seen = target.arrivals("shared");
        let after = &seen[before.min(seen.len())..];
        let quiet_done = after
            .iter()
            .filter(|a| a.headers.get("x-who").map(String::as_str) == Some("quiet"))
            .count();
        if quiet_done == 10 {
            let last_quiet = after
                .iter()
                .rposition(|a| a.headers["x-who"] == "quiet")
                .unwrap();
            // Equal weights: turns alternate in runs of 4, so 10 quiet calls are done within
            // ~10 + 12 noisy ones (plus those already in flight when they arrived).
            assert!(
                last_quiet < 26,
                "quiet tenant's 10 calls took {} slots behind a 400-job backlog",
                last_quiet + 1
            );
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "quiet tenant starved: {quiet_done}/10 after {} calls",
            after.len()
        );
        target
            .wait_for("shared", seen.len() + 1, Duration::from_secs(5))
            .await;
    }
}
