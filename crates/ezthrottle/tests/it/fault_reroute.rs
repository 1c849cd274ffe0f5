//! The job path goes to regions (issue 15), with real processes: three nodes of regions r1/r2/r3
//! on 127.0.0.2–4 sharing one PostgreSQL, each sending from its own source address, and the
//! target of `fault_regions` that answers by source address. Cases: a region answering 500 is
//! left for another after one reroute (the view names both regions and why); `strict` with its
//! only region down fails `region_unavailable`; `max_reroutes` runs out cleanly; a region's
//! node SIGKILLed while a rerouted attempt runs there loses nothing and the job ends; on one
//! node, regions keep their single-node meaning. Jobs listing several regions here are POSTs
//! and the hedge delay outlasts every attempt, so each attempt runs in one region (racing is
//! `fault_race`'s).

use std::net::IpAddr;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::fault_common::record;
use crate::fault_regions::{
    await_alive, start_region_node, RegionTarget, CONFIG, IPS, JOB_PATH_ENV,
};
use crate::support::TestServer;

struct Cluster {
    nodes: Vec<TestServer>,
    _root: tempfile::TempDir,
}

/// Region of node `i` (`r1`..`r3`) and its node id (`n2`..`n4`).
fn region(i: usize) -> String {
    format!("r{}", i + 1)
}

fn node_name(i: usize) -> String {
    format!("n{}", i + 2)
}

fn index_of(region: &str) -> usize {
    region[1..].parse::<usize>().unwrap() - 1
}

impl Cluster {
    async fn start() -> Self {
        let url = ezt_store_postgres::testing::database_url().await;
        let root = tempfile::tempdir().unwrap();
        let mut nodes: Vec<TestServer> = Vec::new();
        for i in 0..IPS.len() {
            let key = nodes.first().map(|n| n.key.clone());
            let mut env = JOB_PATH_ENV.to_vec();
            env.extend([
                // These cases are about reroutes, one region per attempt: their jobs listing
                // several regions are POSTs, which hedge rather than race (fault_race), and
                // the hedge waits longer than any attempt here, so it is never sent.
                ("EZTHROTTLE_EXECUTOR_HEDGE_DELAY_MS", "60000"),
                ("EZTHROTTLE_LOG", "info"),
            ]);
            let (node, _) = start_region_node(root.path(), i, &url, key, true, CONFIG, &env);
            nodes.push(node);
        }
        let c = Self { nodes, _root: root };
        c.await_alive(3).await;
        c
    }

    async fn await_alive(&self, n: usize) {
        await_alive(&self.nodes[0], n).await;
    }

    /// Submits to node `i` and long-polls it (`/wait`: woken at once when that node ran the job,
    /// within 0.5 s when its lane's owner is another node).
    async fn run_on(&self, i: usize, job: Value) -> Value {
        let id = self.nodes[i].submit(job).await;
        self.nodes[i].wait_final(&id, 30).await
    }

    /// The region of the target's lane owner: a job without `regions` runs in its owner's.
    async fn owner_region(&self, target: &RegionTarget) -> String {
        let v = self
            .run_on(0, json!({"url": target.url(), "body": "warm-up"}))
            .await;
        assert_eq!(v["state"], "succeeded", "{v}");
        assert_eq!(
            v["attempts"][0]["node"],
            node_name(index_of(v["attempts"][0]["region"].as_str().unwrap())),
            "{v}"
        );
        v["attempts"][0]["region"].as_str().unwrap().to_string()
    }
}

fn attempts(v: &Value) -> &Vec<Value> {
    v["attempts"].as_array().unwrap()
}

fn ip(i: usize) -> IpAddr {
    IPS[i].parse().unwrap()
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

#[tokio::test]
async fn a_region_answering_500_is_left_after_one_reroute() {
    let target = RegionTarget::start().await;
    let c = Cluster::start().await;
    let owner = c.owner_region(&target).await;
    target.rule(IPS[0], 0, 500);
    let v = c
        .run_on(0, json!({"url": target.url(), "method": "POST", "body": "reroute-1", "idempotent_key": "reroute-key-1", "regions": ["r1", "r2"]}))
        .await;
    assert_eq!(v["state"], "succeeded", "{v}");
    let a = attempts(&v);
    assert_eq!(a.len(), 2, "one reroute: {v}");
    assert_eq!(
        (
            a[0]["region"].as_str(),
            a[0]["status_code"].as_u64(),
            a[0]["decision"].as_str()
        ),
        (Some("r1"), Some(500), Some("reroute")),
        "{v}"
    );
    assert_eq!(a[0]["node"], "n2", "{v}");
    assert!(
        a[0].get("reason").is_none(),
        "the first attempt did not move: {v}"
    );
    assert_eq!(
        (
            a[1]["region"].as_str(),
            a[1]["status_code"].as_u64(),
            a[1]["decision"].as_str()
        ),
        (Some("r2"), Some(200), Some("success")),
        "{v}"
    );
    assert_eq!(a[1]["node"], "n3", "{v}");
    assert_eq!(a[1]["reason"], "reroute: 500 from r1", "{v}");
    assert_eq!(a[0]["wait_ms"], 0, "a reroute goes at once: {v}");
    assert_eq!(v["response"]["body"], format!("from {}", IPS[1]));
    // At the target: one call from each region's address, with the job's key on both.
    let calls = target
        .wait_ended("reroute-1", 2, Duration::from_secs(10))
        .await;
    let mut froms: Vec<IpAddr> = calls.iter().map(|c| c.from).collect();
    froms.sort();
    assert_eq!(froms, vec![ip(0), ip(1)], "{calls:?}");
    assert!(calls
        .iter()
        .all(|c| c.key.as_deref() == Some("reroute-key-1")));

    // Figures, side by side in one run (submit -> final, through the lane owner): a job run in its
    // lane owner's region, one handed to another region's node, and one rerouted (a hand-off
    // answering 500, then a hand-off to a third region answering 200).
    target.rule(IPS[0], 0, 200);
    let other = (0..3).map(region).find(|r| *r != owner).unwrap();
    let n = 25;
    let (mut local, mut handed, mut rerouted) = (Vec::new(), Vec::new(), Vec::new());
    // The attempt's own latency as the owner measured it (whole ms): the call, or the hand-off.
    let (mut local_call, mut handed_call) = (Vec::new(), Vec::new());
    for i in 0..n {
        for (regions, out, call) in [
            (vec![owner.clone()], &mut local, &mut local_call),
            (vec![other.clone()], &mut handed, &mut handed_call),
        ] {
            let t = Instant::now();
            let v = c
                .run_on(index_of(&owner), json!({"url": target.url(), "body": format!("lat-{i}-{}", regions[0]), "regions": regions}))
                .await;
            out.push(t.elapsed().as_secs_f64() * 1000.0);
            assert_eq!(v["state"], "succeeded", "{v}");
            assert_eq!(attempts(&v).len(), 1, "{v}");
            assert_eq!(attempts(&v)[0]["region"], regions[0]);
            call.push(attempts(&v)[0]["latency_ms"].as_f64().unwrap());
        }
    }
    // Reroutes: a region failing 5 times in a row for a host is ejected for it (outlier
    // detection), so each of five fresh targets (hosts) takes five rerouted jobs.
    for k in 0..5 {
        let t = RegionTarget::start().await;
        let o = c.owner_region(&t).await;
        let others: Vec<String> = (0..3).map(region).filter(|r| *r != o).collect();
        let (bad, good) = (others[0].clone(), others[1].clone());
        t.rule(IPS[index_of(&bad)], 0, 500);
        for i in 0..5 {
            let tm = Instant::now();
            let v = c
                .run_on(
                    index_of(&o),
                    json!({"url": t.url(), "method": "POST", "body": format!("rr-{k}-{i}"), "regions": [bad, good]}),
                )
                .await;
            rerouted.push(tm.elapsed().as_secs_f64() * 1000.0);
            assert_eq!(v["state"], "succeeded", "{v}");
            let regions: Vec<&str> = attempts(&v)
                .iter()
                .map(|x| x["region"].as_str().unwrap())
                .collect();
            assert_eq!(regions, [bad.as_str(), good.as_str()], "{v}");
        }
        if k == 4 {
            // Five 500s in a row: `bad` is ejected for this host, so the next job starts in
            // `good`; yet a job that lists only `bad` still runs there (never the last one).
            let v = c
                .run_on(
                    0,
                    json!({"url": t.url(), "body": "after-ejection", "regions": [bad, good]}),
                )
                .await;
            assert_eq!(v["state"], "succeeded", "{v}");
            assert_eq!(attempts(&v).len(), 1, "{v}");
            assert_eq!(attempts(&v)[0]["region"], good.as_str(), "{v}");
            let v = c
                .run_on(0, json!({"url": t.url(), "body": "only-ejected", "regions": [bad], "region_policy": "strict", "retry_policy": {"max_reroutes": 0}}))
                .await;
            assert_eq!(v["state"], "failed", "{v}");
            assert_eq!(attempts(&v)[0]["region"], bad.as_str(), "{v}");
            assert_eq!(attempts(&v)[0]["status_code"], 500, "{v}");
        }
    }
    for s in [
        &mut local,
        &mut handed,
        &mut rerouted,
        &mut local_call,
        &mut handed_call,
    ] {
        s.sort_by(|a, b| a.partial_cmp(b).unwrap());
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    record(
        "regions_reroute_latency",
        json!({
            "jobs_each": n,
            "local_attempt_mean_ms": mean(&local_call), "local_attempt_p99_ms": pct(&local_call, 0.99),
            "handoff_attempt_mean_ms": mean(&handed_call), "handoff_attempt_p99_ms": pct(&handed_call, 0.99),
            "local_p50_ms": pct(&local, 0.5), "local_p99_ms": pct(&local, 0.99),
            "handoff_p50_ms": pct(&handed, 0.5), "handoff_p99_ms": pct(&handed, 0.99),
            "reroute_p50_ms": pct(&rerouted, 0.5), "reroute_p99_ms": pct(&rerouted, 0.99),
        }),
    );
}

#[tokio::test]
async fn strict_with_its_only_region_down_fails_region_unavailable() {
    let target = RegionTarget::start().await;
    let mut c = Cluster::start().await;
    c.nodes[2].kill9();
    c.await_alive(2).await;
    let v = c
        .run_on(0, json!({"url": target.url(), "body": "strict-1", "regions": ["r3"], "region_policy": "strict"}))
        .await;
    assert_eq!(v["state"], "failed", "{v}");
    assert_eq!(v["error"]["code"], "region_unavailable", "{v}");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("strict") && msg.contains("r3"),
        "a clear message: {msg}"
    );
    assert!(
        target.calls().iter().all(|c| c.body != "strict-1"),
        "nothing was sent"
    );
    // `fallback` with the same dead region runs elsewhere.
    let v = c
        .run_on(
            0,
            json!({"url": target.url(), "body": "fallback-1", "regions": ["r3"]}),
        )
        .await;
    assert_eq!(v["state"], "succeeded", "{v}");
    assert_ne!(attempts(&v)[0]["region"], "r3", "{v}");
}

#[tokio::test]
async fn max_reroutes_exhausted_fails_cleanly() {
    let target = RegionTarget::start().await;
    let c = Cluster::start().await;
    for ip in IPS {
        target.rule(ip, 0, 502);
    }
    let v = c
        .run_on(0, json!({"url": target.url(), "method": "POST", "body": "exhaust-1", "regions": ["r1", "r2", "r3"], "region_policy": "strict", "retry_policy": {"max_reroutes": 1}}))
        .await;
    assert_eq!(v["state"], "failed", "{v}");
    assert_eq!(v["error"]["code"], "retries_exhausted", "{v}");
    assert_eq!(v["error"]["message"], "target answered 502", "{v}");
    let a = attempts(&v);
    let regions: Vec<&str> = a.iter().map(|x| x["region"].as_str().unwrap()).collect();
    assert_eq!(regions, ["r1", "r2"], "one reroute, then no more: {v}");
    assert!(a.iter().all(|x| x["decision"] == "reroute"), "{v}");
    assert_eq!(a[1]["reason"], "reroute: 502 from r1");
    let calls = target
        .wait_ended("exhaust-1", 2, Duration::from_secs(10))
        .await;
    assert_eq!(calls.len(), 2, "{calls:?}");
}

/// A region's node is SIGKILLed while the rerouted attempt runs there: the owner records the
/// lost hand-off (outcome unknown), moves on to a third region, and the job succeeds.
#[tokio::test]
async fn a_region_killed_during_a_reroute_loses_nothing() {
    let target = RegionTarget::start().await;
    let mut c = Cluster::start().await;
    let owner = c.owner_region(&target).await;
    // First a region that answers 500, then one that is slow (its node is killed mid-call),
    // then the owner's own region (never killed here: the owner keeps the lease).
    let others: Vec<String> = (0..3).map(region).filter(|r| *r != owner).collect();
    let (bad, slow) = (others[0].clone(), others[1].clone());
    target.rule(IPS[index_of(&bad)], 0, 500);
    target.rule(IPS[index_of(&slow)], 10_000, 200);
    // The job is submitted to the owner (node 0 may be the node that dies).
    let entry = &c.nodes[index_of(&owner)];
    let id = entry
        .submit(json!({"url": target.url(), "method": "POST", "body": "kill-reroute", "regions": [bad, slow, owner], "retry_policy": {"max_reroutes": 3}}))
        .await;
    let from_slow = ip(index_of(&slow));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let notified = target.state.notify.notified();
        if target
            .calls()
            .iter()
            .any(|c| c.from == from_slow && c.body == "kill-reroute")
        {
            break;
        }
        assert!(
            tokio::time::timeout_at(deadline, notified).await.is_ok(),
            "the rerouted attempt never reached the slow region"
        );
    }
    let killed_at = Instant::now();
    c.nodes[index_of(&slow)].kill9();
    let entry = &c.nodes[index_of(&owner)];
    let v = entry.wait_final(&id, 30).await;
    let took = killed_at.elapsed();
    assert_eq!(v["state"], "succeeded", "{v}");
    let a = attempts(&v);
    let regions: Vec<&str> = a.iter().map(|x| x["region"].as_str().unwrap()).collect();
    assert_eq!(
        regions,
        [bad.as_str(), slow.as_str(), owner.as_str()],
        "{v}"
    );
    assert_eq!(a[1]["decision"], "reroute", "{v}");
    assert!(a[1]["status_code"].is_null(), "{v}");
    assert_eq!(a[1]["reason"], format!("reroute: 500 from {bad}"));
    assert_eq!(a[2]["reason"], format!("reroute: no answer from {slow}"));
    assert!(
        took < Duration::from_secs(10),
        "ended {took:?} after the kill"
    );
    // The target: one call per region, the dead one cut with its node.
    let calls = target
        .wait_ended("kill-reroute", 3, Duration::from_secs(10))
        .await;
    assert_eq!(calls.len(), 3, "{calls:?}");
    let dead = calls.iter().find(|c| c.from == from_slow).unwrap();
    assert!(!dead.answered, "{calls:?}");
    // Jobs acknowledged before and after the kill all end (nothing acked is lost).
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(
            entry
                .submit(
                    json!({"url": target.url(), "body": format!("after-{i}"), "regions": [owner]}),
                )
                .await,
        );
    }
    for id in ids {
        let v = entry.wait_final(&id, 30).await;
        assert_eq!(v["state"], "succeeded", "{v}");
    }
}

/// One node (SQLite): a job's `regions` keep their single-node meaning: `fallback` runs here,
/// `strict` outside this node's region is refused at submission with `region_unavailable`.
#[tokio::test]
async fn regions_on_a_single_node() {
    let target = RegionTarget::start().await;
    let s = TestServer::start();
    let id = s
        .submit(json!({"url": target.url(), "regions": ["elsewhere"]}))
        .await;
    let v = s.wait_final(&id, 10).await;
    assert_eq!(v["state"], "succeeded", "{v}");
    assert_eq!(attempts(&v)[0]["region"], "local");
    assert!(attempts(&v)[0].get("node").is_none(), "{v}");
    let (st, v) = s
        .post(
            "/api/v1/jobs",
            json!({"url": target.url(), "regions": ["elsewhere"], "region_policy": "strict"}),
        )
        .await;
    assert_eq!(st, 422, "{v}");
    assert_eq!(v["error"]["code"], "region_unavailable", "{v}");
    assert_eq!(v["error"]["field"], "regions", "{v}");
}

/// Fanout: the call runs in every listed region; the view (`response.regions`, each attempt's
/// `legs`) and the webhook (`regions`) carry each region's outcome. The job succeeds once every
/// region answered 2xx ("all"); a retry runs only the regions still missing.
#[tokio::test]
async fn fanout_runs_in_every_region_and_reports_each() {
    let target = RegionTarget::start().await;
    let c = Cluster::start().await;
    let rx = crate::support::PyReceiver::start(&[], 0);
    let v = c
        .run_on(0, json!({"url": target.url(), "method": "POST", "body": "fan-1", "regions": ["r1", "r2", "r3"], "execution_mode": "fanout", "webhooks": [{"url": rx.url("/fan")}]}))
        .await;
    assert_eq!(v["state"], "succeeded", "{v}");
    assert_eq!(v["spec"]["execution_mode"], "fanout", "{v}");
    let outcomes = v["response"]["regions"].as_array().unwrap();
    let regions: Vec<&str> = outcomes
        .iter()
        .map(|o| o["region"].as_str().unwrap())
        .collect();
    assert_eq!(regions, ["r1", "r2", "r3"], "{v}");
    for (i, o) in outcomes.iter().enumerate() {
        assert_eq!(o["status_code"], 200, "{v}");
        assert_eq!(o["decision"], "success", "{v}");
        assert_eq!(o["node"], node_name(i), "{v}");
    }
    assert_eq!(attempts(&v).len(), 1, "{v}");
    assert_eq!(attempts(&v)[0]["legs"].as_array().unwrap().len(), 3, "{v}");
    let calls = target.wait_ended("fan-1", 3, Duration::from_secs(10)).await;
    let mut froms: Vec<IpAddr> = calls.iter().map(|c| c.from).collect();
    froms.sort();
    assert_eq!(froms, vec![ip(0), ip(1), ip(2)], "one call per region");
    let got = rx.next(Duration::from_secs(20)).await;
    let body: Value = serde_json::from_str(got["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["status"], "success", "{body}");
    let hooked: Vec<(&str, u64)> = body["regions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            (
                o["region"].as_str().unwrap(),
                o["status_code"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(hooked, [("r1", 200), ("r2", 200), ("r3", 200)], "{body}");

    // One region keeps answering 503: the retry runs only there, then the job fails, and the
    // outcome still names every region.
    target.rule(IPS[2], 0, 503);
    let v = c
        .run_on(0, json!({"url": target.url(), "body": "fan-2", "regions": ["r1", "r2", "r3"], "execution_mode": "fanout", "retry_policy": {"max_retries": 1}}))
        .await;
    assert_eq!(v["state"], "failed", "{v}");
    assert_eq!(v["error"]["code"], "retries_exhausted", "{v}");
    let a = attempts(&v);
    assert_eq!(a.len(), 2, "{v}");
    assert_eq!(a[0]["legs"].as_array().unwrap().len(), 3, "{v}");
    let retried: Vec<&str> = a[1]["legs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["region"].as_str().unwrap())
        .collect();
    assert_eq!(retried, ["r3"], "only the missing region is retried: {v}");
    let finals: Vec<(&str, u64)> = v["response"]["regions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            (
                o["region"].as_str().unwrap(),
                o["status_code"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(finals, [("r1", 200), ("r2", 200), ("r3", 503)], "{v}");
    let calls = target.wait_ended("fan-2", 4, Duration::from_secs(10)).await;
    assert_eq!(calls.len(), 4, "r1 and r2 once, r3 twice: {calls:?}");
}
