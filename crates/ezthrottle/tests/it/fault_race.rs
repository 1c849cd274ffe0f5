//! Racing a queued job over its regions (issue 15, `execution_mode: race`), with real
//! processes: three nodes of regions r1/r2/r3 on 127.0.0.2–4 sharing one PostgreSQL, each
//! sending from its own source address, and the target of `fault_regions` that delays or fails
//! by source address and logs each call's start, end (its connection closed) and key.
//! Cases: a GET races its regions: the fast one wins, the slow leg is cut at the target within
//! 5 ms of the win, both legs took a permit of the lane and carried the same key and body; a
//! POST without the operator's allowance hedges (a fast first leg: one call; a slow one: the
//! second leg only after the hedge delay); with the allowance a POST races at once; a region's
//! node SIGKILLed during a race loses nothing and the job ends; a leg that gets no permit of
//! the lane is not sent and the race goes on.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::fault_common::record;
use crate::fault_regions::{await_alive, start_region_node, Call, RegionTarget, IPS, JOB_PATH_ENV};
use crate::support::TestServer;

const CONFIG: &str =
    "[admin]\ntoken = \"operator-token-0123456789\"\n[metrics]\nbearer_token = \"scrape-me\"\n";

struct Cluster {
    nodes: Vec<TestServer>,
    _root: tempfile::TempDir,
}

fn region(i: usize) -> String {
    format!("r{}", i + 1)
}

fn index_of(region: &str) -> usize {
    region[1..].parse::<usize>().unwrap() - 1
}

fn ip(i: usize) -> IpAddr {
    IPS[i].parse().unwrap()
}

impl Cluster {
    async fn start(env: &[(&str, &str)]) -> Self {
        let url = ezt_store_postgres::testing::database_url().await;
        let root = tempfile::tempdir().unwrap();
        let mut nodes: Vec<TestServer> = Vec::new();
        for i in 0..IPS.len() {
            let key = nodes.first().map(|n| n.key.clone());
            let mut all = JOB_PATH_ENV.to_vec();
            all.push(("EZTHROTTLE_LOG", "info,ezt_runtime::dispatch=debug"));
            all.extend_from_slice(env);
            let (node, _) = start_region_node(root.path(), i, &url, key, true, CONFIG, &all);
            nodes.push(node);
        }
        let c = Self { nodes, _root: root };
        c.await_alive(3).await;
        c
    }

    async fn await_alive(&self, n: usize) {
        await_alive(&self.nodes[0], n).await;
    }

    async fn run_on(&self, i: usize, job: Value) -> Value {
        let id = self.nodes[i].submit(job).await;
        self.nodes[i].wait_final(&id, 30).await
    }

    /// The index of the node owning the target's lane (the owner runs every attempt, and a
    /// job without `regions` runs in its region).
    async fn owner(&self, target: &RegionTarget) -> usize {
        let v = self
            .run_on(0, json!({"url": target.url(), "body": "warm-up"}))
            .await;
        assert_eq!(v["state"], "succeeded", "{v}");
        index_of(v["attempts"][0]["region"].as_str().unwrap())
    }

    /// The target lane's calls dispatched on node `i` (jobs' attempts and extra legs' permits),
    /// from its metrics.
    async fn dispatched(&self, i: usize, target: &RegionTarget) -> u64 {
        let text = self.nodes[i]
            .http
            .get(self.nodes[i].url("/metrics"))
            .bearer_auth("scrape-me")
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let want = target.addr.to_string();
        text.lines()
            .filter(|l| l.starts_with("ezthrottle_lane_dispatched_total{") && l.contains(&want))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .map(|v| v as u64)
            .sum()
    }
}

fn legs(v: &Value) -> &Vec<Value> {
    v["attempts"][0]["legs"].as_array().expect("legs")
}

fn leg<'a>(v: &'a Value, region: &str) -> &'a Value {
    legs(v)
        .iter()
        .find(|l| l["region"] == region)
        .unwrap_or_else(|| panic!("no leg of {region}: {v}"))
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn from(calls: &[Call], i: usize) -> &Call {
    calls
        .iter()
        .find(|c| c.from == ip(i))
        .unwrap_or_else(|| panic!("no call from {}: {calls:?}", IPS[i]))
}

/// A GET listing two regions races them: the fast region (the owner's, its local leg) wins,
/// the slow region's leg (a hand-off, listed first so it is the job's first leg) is cut; both
/// legs took a permit of the lane and carried the same key and body.
#[tokio::test]
async fn a_raced_job_is_won_by_the_fast_region_and_the_slow_leg_is_cut() {
    let target = RegionTarget::start().await;
    let c = Cluster::start(&[]).await;
    let owner = c.owner(&target).await;
    let slow = (owner + 1) % 3;
    target.rule(IPS[owner], 20, 200);
    target.rule(IPS[slow], 3_000, 200);
    let mut cut = Vec::new();
    let mut took = Vec::new();
    for round in 0..5 {
        let body = format!("race-{round}");
        let key = format!("race-key-{round}");
        let before = c.dispatched(owner, &target).await;
        let t0 = Instant::now();
        let v = c
            .run_on(
                owner,
                json!({"url": target.url(), "method": "GET", "body": body, "idempotent_key": key,
                       "regions": [region(slow), region(owner)]}),
            )
            .await;
        took.push(t0.elapsed().as_secs_f64() * 1000.0);
        assert_eq!(v["state"], "succeeded", "{v}");
        let a = v["attempts"].as_array().unwrap();
        assert_eq!(a.len(), 1, "one attempt, raced: {v}");
        assert_eq!(a[0]["region"], region(owner), "the winner's region: {v}");
        assert_eq!(a[0]["node"], format!("n{}", owner + 2), "{v}");
        assert_eq!(v["response"]["body"], format!("from {}", IPS[owner]), "{v}");
        assert_eq!(legs(&v).len(), 2, "{v}");
        assert_eq!(leg(&v, &region(owner))["outcome"], "won", "{v}");
        assert_eq!(leg(&v, &region(owner))["status_code"], 200, "{v}");
        assert_eq!(leg(&v, &region(slow))["outcome"], "cancelled", "{v}");
        assert_eq!(
            leg(&v, &region(slow))["node"],
            format!("n{}", slow + 2),
            "{v}"
        );
        assert!(
            t0.elapsed() < Duration::from_secs(2),
            "the slow leg was not awaited"
        );
        // At the target: one call per region, same key and body, the slow one cut.
        let calls = target.wait_ended(&body, 2, Duration::from_secs(10)).await;
        assert_eq!(calls.len(), 2, "{calls:?}");
        assert!(
            calls.iter().all(|c| c.key.as_deref() == Some(key.as_str())),
            "the same Idempotency-Key on both legs: {calls:?}"
        );
        let (won, lost) = (from(&calls, owner), from(&calls, slow));
        assert!(won.answered && !lost.answered, "{calls:?}");
        let ms = lost
            .end
            .unwrap()
            .saturating_duration_since(won.end.unwrap())
            .as_secs_f64()
            * 1000.0;
        assert!(ms < 500.0, "the slow leg closed {ms:.2} ms after the win");
        cut.push(ms);
        // Both legs took a permit of the lane on its owner (the job's attempt and the extra
        // leg): dispatched grew by two.
        let after = c.dispatched(owner, &target).await;
        assert_eq!(after - before, 2, "both legs counted in the lane");
    }
    cut.sort_by(|a, b| a.partial_cmp(b).unwrap());
    took.sort_by(|a, b| a.partial_cmp(b).unwrap());
    assert!(
        pct(&cut, 0.5) <= 5.0,
        "the slow legs closed a median {:.2} ms after the win: {cut:?}",
        pct(&cut, 0.5)
    );
    // Every leg answers 409 (the request is outstanding under its key): not a failure of the
    // target, so the attempt is judged a retry (with no retries left: retries_exhausted).
    target.rule(IPS[owner], 0, 409);
    target.rule(IPS[slow], 30, 409);
    let v = c
        .run_on(
            owner,
            json!({"url": target.url(), "body": "all-409", "regions": [region(slow), region(owner)],
                   "retry_policy": {"max_retries": 0}}),
        )
        .await;
    assert_eq!(v["state"], "failed", "{v}");
    assert_eq!(v["error"]["code"], "retries_exhausted", "{v}");
    assert_eq!(v["attempts"][0]["decision"], "retry", "{v}");
    assert_eq!(v["attempts"][0]["status_code"], 409, "{v}");
    assert!(
        legs(&v).iter().all(|l| l["outcome"] == "lost"),
        "409 is not fatal: every leg was awaited: {v}"
    );
    record(
        "regions_race_job",
        json!({
            "rounds": cut.len(),
            "loser_closed_after_win_ms": {"p50": pct(&cut, 0.5), "max": cut.last()},
            "submit_to_final_ms": {"p50": pct(&took, 0.5), "max": took.last()},
        }),
    );
}

/// A POST without `executor.race_unsafe_methods` hedges: a first leg that answers before the
/// hedge delay is the only call; a slow one gets the second region's leg only after the
/// delay (250 ms by default: the lane's p95 there is not known yet), and that leg wins; the
/// webhook carries the winner's region.
#[tokio::test]
async fn a_post_hedges_without_the_operators_allowance() {
    let target = RegionTarget::start().await;
    let c = Cluster::start(&[]).await;
    let owner = c.owner(&target).await;
    let other = (owner + 1) % 3;
    target.rule(IPS[owner], 0, 200);
    target.rule(IPS[other], 0, 200);
    let v = c
        .run_on(
            owner,
            json!({"url": target.url(), "method": "POST", "body": "hedge-fast",
                   "regions": [region(owner), region(other)]}),
        )
        .await;
    assert_eq!(v["state"], "succeeded", "{v}");
    assert_eq!(legs(&v).len(), 1, "the hedge was not sent: {v}");
    assert_eq!(leg(&v, &region(owner))["outcome"], "won", "{v}");
    let calls = target
        .wait_ended("hedge-fast", 1, Duration::from_secs(5))
        .await;
    assert_eq!(calls.len(), 1, "one call only: {calls:?}");

    // The first leg is slow: the hedge goes after the delay, from the other region, and wins.
    target.rule(IPS[owner], 2_000, 200);
    let mut gaps = Vec::new();
    for round in 0..3 {
        let body = format!("hedge-slow-{round}");
        let v = c
            .run_on(
                owner,
                json!({"url": target.url(), "method": "POST", "body": body,
                       "regions": [region(owner), region(other)]}),
            )
            .await;
        assert_eq!(v["state"], "succeeded", "{v}");
        assert_eq!(v["attempts"][0]["region"], region(other), "{v}");
        assert_eq!(leg(&v, &region(other))["outcome"], "won", "{v}");
        assert_eq!(leg(&v, &region(owner))["outcome"], "cancelled", "{v}");
        let calls = target.wait_ended(&body, 2, Duration::from_secs(10)).await;
        assert_eq!(calls.len(), 2, "{calls:?}");
        let (first, hedge) = (from(&calls, owner), from(&calls, other));
        assert_eq!(first.key, hedge.key, "{calls:?}");
        let gap = hedge.start.saturating_duration_since(first.start);
        gaps.push(gap.as_secs_f64() * 1000.0);
        assert!(
            gap >= Duration::from_millis(200) && gap < Duration::from_millis(1_500),
            "the hedge left {gap:?} after the first leg"
        );
        assert!(!first.answered, "the first leg was cut: {calls:?}");
    }
    // The webhook carries the winner's region (another region's node made the winning call;
    // the owner, in its own region, ended the job).
    let hook = crate::support::Target::start().await;
    let v = c
        .run_on(
            owner,
            json!({"url": target.url(), "method": "POST", "body": "hedge-hook",
                   "regions": [region(owner), region(other)], "webhooks": [{"url": hook.url("hook")}]}),
        )
        .await;
    assert_eq!(v["state"], "succeeded", "{v}");
    assert_eq!(v["attempts"][0]["region"], region(other), "{v}");
    let got = hook.wait_for("hook", 1, Duration::from_secs(10)).await;
    let payload: Value = serde_json::from_str(&got[0].body).unwrap();
    assert_eq!(payload["region"], region(other), "{payload}");
    gaps.sort_by(|a, b| a.partial_cmp(b).unwrap());
    record(
        "regions_race_hedge",
        json!({"hedge_delay_configured_ms": 250, "hedge_gap_at_target_ms": gaps}),
    );
}

/// With `executor.race_unsafe_methods` a POST races at once; a region's node SIGKILLed during a
/// race is one failed leg: the job succeeds from the surviving leg, and jobs acknowledged
/// around the kill all end.
#[tokio::test]
async fn allowed_posts_race_at_once_and_a_killed_region_loses_nothing() {
    let target = RegionTarget::start().await;
    let mut c = Cluster::start(&[("EZTHROTTLE_EXECUTOR_RACE_UNSAFE_METHODS", "true")]).await;
    let owner = c.owner(&target).await;
    let (die, third) = ((owner + 1) % 3, (owner + 2) % 3);
    target.rule(IPS[owner], 300, 200);
    target.rule(IPS[third], 300, 200);
    target.rule(IPS[die], 0, 200);
    let v = c
        .run_on(
            owner,
            json!({"url": target.url(), "method": "POST", "body": "post-race",
                   "regions": [region(owner), region(die)]}),
        )
        .await;
    assert_eq!(v["state"], "succeeded", "{v}");
    assert_eq!(leg(&v, &region(die))["outcome"], "won", "{v}");
    let calls = target
        .wait_ended("post-race", 2, Duration::from_secs(5))
        .await;
    let gap = from(&calls, die)
        .start
        .saturating_duration_since(from(&calls, owner).start);
    assert!(
        gap < Duration::from_millis(150),
        "both legs at once: {gap:?}"
    );

    // The kill: the doomed region's leg hangs; the owner's answers after 1.5 s.
    target.rule(IPS[owner], 1_500, 200);
    target.rule(IPS[die], 10_000, 200);
    let entry = &c.nodes[owner];
    let id = entry
        .submit(json!({"url": target.url(), "body": "kill-race", "regions": [region(die), region(owner)]}))
        .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let notified = target.state.notify.notified();
        if target
            .calls()
            .iter()
            .any(|c| c.from == ip(die) && c.body == "kill-race")
        {
            break;
        }
        assert!(
            tokio::time::timeout_at(deadline, notified).await.is_ok(),
            "the doomed leg never arrived"
        );
    }
    let mut ids = vec![
        entry
            .submit(json!({"url": target.url(), "body": "before-kill", "regions": [region(third), region(owner)]}))
            .await,
    ];
    let killed_at = Instant::now();
    c.nodes[die].kill9();
    for i in 0..3 {
        ids.push(
            c.nodes[owner]
                .submit(json!({"url": target.url(), "body": format!("after-kill-{i}"), "regions": [region(die), region(owner)]}))
                .await,
        );
    }
    let v = c.nodes[owner].wait_final(&id, 30).await;
    assert_eq!(v["state"], "succeeded", "{v}");
    let last = v["attempts"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["region"], region(owner), "{v}");
    assert!(
        killed_at.elapsed() < Duration::from_secs(10),
        "ended {:?} after the kill",
        killed_at.elapsed()
    );
    let dead = target
        .wait_ended("kill-race", 2, Duration::from_secs(10))
        .await;
    assert!(
        !from(&dead, die).answered,
        "the dead node's call was cut: {dead:?}"
    );
    for id in ids {
        let v = c.nodes[owner].wait_final(&id, 30).await;
        assert_eq!(v["state"], "succeeded", "{v}");
    }
}

/// Every leg needs a permit of the lane: with one call in flight allowed, the job's own leg
/// holds it, so the second region's leg is refused (not sent) and the race goes on with the
/// first, which succeeds; the target sees one call.
#[tokio::test]
async fn a_leg_without_a_permit_is_not_sent_and_the_race_goes_on() {
    let target = RegionTarget::start().await;
    let c = Cluster::start(&[("EZTHROTTLE_LANES_DEFAULT_MAX_IN_FLIGHT", "1")]).await;
    let owner = c.owner(&target).await;
    let other = (owner + 1) % 3;
    target.rule(IPS[owner], 300, 200);
    target.rule(IPS[other], 0, 200);
    let v = c
        .run_on(
            owner,
            json!({"url": target.url(), "body": "refused-1", "regions": [region(owner), region(other)]}),
        )
        .await;
    assert_eq!(v["state"], "succeeded", "{v}");
    assert_eq!(v["attempts"][0]["region"], region(owner), "{v}");
    assert_eq!(leg(&v, &region(owner))["outcome"], "won", "{v}");
    let refused = leg(&v, &region(other));
    assert_eq!(refused["outcome"], "refused", "{v}");
    assert!(refused["status_code"].is_null(), "{v}");
    assert!(
        refused["error"].as_str().unwrap().contains("no permit"),
        "{v}"
    );
    let calls = target
        .wait_ended("refused-1", 1, Duration::from_secs(5))
        .await;
    assert_eq!(calls.len(), 1, "the refused leg was not sent: {calls:?}");
    assert_eq!(calls[0].from, ip(owner));
}
