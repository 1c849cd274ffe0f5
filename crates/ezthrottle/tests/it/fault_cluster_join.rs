//! Cluster mode on PostgreSQL (issue 13): lanes move to a node that joins, with real
//! processes (nodes on 127.0.0.2–4, one real PostgreSQL, our logging targets, one per lane).
//! Only the lanes whose rendezvous winner is the new node move, through the graceful hand-over
//! (the old owner stops, its calls in flight end, it releases; the new node claims), and each
//! lane's window and concurrency bounds hold across the move. A node that joins and dies
//! before it settled moves nothing.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use ezt_store::prelude::*;
use serde_json::json;

use crate::fault_common::record;
use crate::support::cluster::*;

const IPS: [&str; 4] = ["127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"];

/// Each lane at 4/s, burst 1, at most 2 in flight; short attempt timeouts.
const CONFIG: &str = "[lanes.default]\nrate = 4.0\nburst = 1\nmax_in_flight = 2\n[executor]\nattempt_timeout_ms = 3000\n[admin]\ntoken = \"operator-token-0123456789\"\n";
const RATE: usize = 4;
const BURST: usize = 1;
const MAX_IN_FLIGHT: usize = 2;
/// Lanes (one target each), at least.
const LANES: usize = 12;

struct Cluster {
    nodes: Vec<Node>,
    url: String,
    root: tempfile::TempDir,
}

impl Cluster {
    async fn start(n: usize) -> Self {
        let url = ezt_store_postgres::testing::database_url().await;
        let mut c = Self {
            nodes: Vec::new(),
            url,
            root: tempfile::tempdir().unwrap(),
        };
        for _ in 0..n {
            c.add_node();
        }
        c
    }

    fn add_node(&mut self) -> usize {
        let i = self.nodes.len();
        let key = self.nodes.first().map(|n| n.server.key.clone());
        let node = start_node(
            self.root.path(),
            &format!("n{}", i + 2),
            IPS[i],
            &self.url,
            CONFIG,
            key,
            &[],
        );
        self.nodes.push(node);
        i
    }

    async fn submit(&self, i: usize, url: &str, body: &str) {
        let (st, b) = self.nodes[i]
            .server
            .post("/api/v1/jobs", json!({"url": url, "body": body}))
            .await;
        assert_eq!(st, 202, "node {i}: {b}");
    }

    fn store(&self) -> ezt_store_postgres::PgStore {
        ezt_store_postgres::PgStore::connect_without_migrating(&self.url).unwrap()
    }
}

/// The cluster lines of every node's log (for a failure's message).
fn cluster_log(c: &Cluster) -> String {
    let mut out = String::new();
    for n in &c.nodes {
        for l in n.server.logs().lines() {
            if l.contains("handing")
                || l.contains("handed")
                || l.contains("belong")
                || l.contains("joined")
                || l.contains("claimed")
            {
                out.push_str(&format!("{}: {l}\n", n.name));
            }
        }
    }
    out
}

/// The tenant's pin of this test: 2/s, one at a time.
const PIN_RATE: f64 = 2.0;

async fn put(
    server: &crate::support::TestServer,
    path: &str,
    body: serde_json::Value,
) -> (u16, serde_json::Value) {
    let r = server
        .http
        .put(server.url(path))
        .bearer_auth(&server.key)
        .json(&body)
        .send()
        .await
        .expect("put");
    (
        r.status().as_u16(),
        r.json().await.unwrap_or(serde_json::Value::Null),
    )
}

/// Waits (polling the node's view, no event exists for it) until `server` dispatches the lane
/// to `host` under the tenant's pin (owner, pinned rate and cap in force); when it was seen.
async fn wait_pinned(server: &crate::support::TestServer, host: &str, within: Duration) -> Instant {
    let deadline = Instant::now() + within;
    loop {
        let (st, v) = server.get("/api/v1/lanes").await;
        assert_eq!(st, 200, "{v}");
        let lane = v["lanes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["key"]["host"] == host)
            .cloned();
        if let Some(l) = &lane {
            if l["pin"]["rate"] == PIN_RATE
                && l["rate"] == PIN_RATE
                && l["max_in_flight"] == 1
                && l["epoch"].is_u64()
            {
                return Instant::now();
            }
        }
        assert!(
            Instant::now() < deadline,
            "the pin is not in force on this node: {lane:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The stored name of a target's lane.
fn lane_name(t: &LogTarget) -> String {
    format!("job:{}", t.addr)
}

/// Each lane's owner (None: free or its owner dead) and lane epoch, from the database.
async fn owners(
    store: &ezt_store_postgres::PgStore,
    lanes: &[String],
) -> Vec<(Option<String>, u64)> {
    let by: BTreeMap<String, (Option<String>, u64)> = store
        .lane_owners(lanes)
        .await
        .unwrap()
        .into_iter()
        .map(|o| {
            (
                o.lane,
                (o.owner_node.filter(|_| o.owner_alive), o.lane_epoch),
            )
        })
        .collect();
    lanes.iter().map(|l| by[l].clone()).collect()
}

/// Where rendezvous placement puts each lane over `members`.
fn placed(lanes: &[String], members: &[&str]) -> Vec<String> {
    let ids: Vec<ezt_store::NodeId> = members.iter().map(|m| ezt_store::NodeId::new(*m)).collect();
    lanes
        .iter()
        .map(|l| {
            ezt_runtime::fence::rendezvous(l, ids.iter())
                .unwrap()
                .to_string()
        })
        .collect()
}

/// Submits one job to every lane, round-robin over the nodes `on`; `k` numbers the round.
async fn round(
    c: &Cluster,
    targets: &[LogTarget],
    on: &[usize],
    k: usize,
    bodies: &mut [Vec<String>],
) {
    for (lane, t) in targets.iter().enumerate() {
        let body = format!("l{lane}-{k}");
        c.submit(on[(k + lane) % on.len()], &t.url(), &body).await;
        bodies[lane].push(body);
    }
}

/// Two nodes own twelve lanes under load; a third joins: within a few seconds it owns the
/// lanes rendezvous placement gives it (about a third), no other lane moved, epochs grew only
/// where the owner changed, every lane's window and concurrency bounds held at its target,
/// nothing acknowledged was lost and nothing ran twice. Then a fourth node joins and dies
/// before it settled: no lane moves.
#[tokio::test]
async fn lanes_move_to_a_node_that_joins_and_only_those() {
    // Twelve lanes, a few more if placement over three nodes would give the third fewer than
    // three of them (ports are random).
    let mut targets = Vec::new();
    loop {
        targets.push(LogTarget::start(300).await);
        let lanes: Vec<String> = targets.iter().map(lane_name).collect();
        let new = placed(&lanes, &["n2", "n3", "n4"])
            .iter()
            .filter(|o| *o == "n4")
            .count();
        if targets.len() >= LANES && (new >= 3 || targets.len() >= 2 * LANES) {
            break;
        }
    }
    let lanes: Vec<String> = targets.iter().map(lane_name).collect();
    let n_lanes = lanes.len();
    let mut c = Cluster::start(2).await;
    let store = c.store();
    let mut bodies: Vec<Vec<String>> = vec![Vec::new(); n_lanes];
    // 3 jobs a second per lane (below its 4/s, so the backlog stays small), from both nodes.
    let mut tick = tokio::time::interval(Duration::from_millis(333));
    let mut k = 0;
    let two = placed(&lanes, &["n2", "n3"]);
    let deadline = Instant::now() + Duration::from_secs(20);
    let before = loop {
        tick.tick().await;
        round(&c, &targets, &[0, 1], k, &mut bodies).await;
        k += 1;
        let o = owners(&store, &lanes).await;
        if o.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>()
            == two.iter().cloned().map(Some).collect::<Vec<_>>()
        {
            break o;
        }
        assert!(
            Instant::now() < deadline,
            "two nodes never owned the lanes as placed: {o:?} vs {two:?}\n{}",
            cluster_log(&c)
        );
    };

    let three = placed(&lanes, &["n2", "n3", "n4"]);
    let expected_moves: Vec<usize> = (0..n_lanes).filter(|&i| three[i] != two[i]).collect();
    assert!(
        !expected_moves.is_empty(),
        "placement gives the new node nothing: {three:?}"
    );

    // A tenant pins one of the lanes that will move, on the node that does NOT own it: the
    // pin goes to the lane's row and to its owner, which applies it at once.
    let pinned = expected_moves[0];
    let owner = if two[pinned] == "n2" { 0 } else { 1 };
    let host = targets[pinned].addr.to_string();
    let (st, v) = put(
        &c.nodes[1 - owner].server,
        &format!("/api/v1/lanes/{host}/limits"),
        json!({"rate": PIN_RATE, "max_in_flight": 1}),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    let pinned_at = wait_pinned(&c.nodes[owner].server, &host, Duration::from_secs(5)).await;

    // A third node joins under load.
    let joined = Instant::now();
    let n = c.add_node();
    let mut moved_at: BTreeMap<usize, Duration> = BTreeMap::new();
    let mut ever: BTreeMap<usize, std::collections::BTreeSet<Option<String>>> = BTreeMap::new();
    let deadline = joined + Duration::from_secs(20);
    let after = loop {
        tick.tick().await;
        round(&c, &targets, &[0, 1, n], k, &mut bodies).await;
        k += 1;
        let o = owners(&store, &lanes).await;
        for (i, (owner, _)) in o.iter().enumerate() {
            ever.entry(i).or_default().insert(owner.clone());
            if owner.as_deref() == Some("n4") {
                moved_at.entry(i).or_insert_with(|| joined.elapsed());
            }
        }
        if o.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>()
            == three.iter().cloned().map(Some).collect::<Vec<_>>()
        {
            break o;
        }
        assert!(
            Instant::now() < deadline,
            "the new node never got its share: {o:?} vs {three:?}"
        );
    };
    let share_s = joined.elapsed().as_secs_f64();
    // Keep the load on a little longer, then let it drain.
    for _ in 0..6 {
        tick.tick().await;
        round(&c, &targets, &[0, 1, n], k, &mut bodies).await;
        k += 1;
    }
    let moved: Vec<usize> = (0..n_lanes)
        .filter(|&i| after[i].0 != before[i].0)
        .collect();
    assert_eq!(
        moved, expected_moves,
        "only the lanes whose winner changed moved"
    );
    for i in 0..n_lanes {
        if moved.contains(&i) {
            assert!(
                after[i].1 > before[i].1,
                "lane {i}: the epoch grew on the move"
            );
        } else {
            assert_eq!(
                after[i].1, before[i].1,
                "lane {i} did not move, its epoch stayed"
            );
            let seen = &ever[&i];
            assert_eq!(
                seen.len(),
                1,
                "lane {i} stayed with its owner throughout: {seen:?}"
            );
        }
    }
    // The adopter honours the pin: its view says so, and the target sees the pinned bounds.
    let adopted_pin = wait_pinned(&c.nodes[n].server, &host, Duration::from_secs(5)).await;
    assert!(adopted_pin > pinned_at);

    // Bounds per lane, nothing lost, nothing twice (a hand-over is graceful).
    let (mut worst_w, mut worst_c) = (0, 0);
    for (i, t) in targets.iter().enumerate() {
        let calls = all_arrive(t, &bodies[i], Duration::from_secs(60)).await;
        let w = max_in_window(&calls, Duration::from_secs(1));
        let conc = max_concurrent(&calls);
        worst_w = worst_w.max(w);
        worst_c = worst_c.max(conc);
        assert!(w <= RATE + BURST, "lane {i}: a 1 s window saw {w} calls");
        assert!(conc <= MAX_IN_FLIGHT, "lane {i}: {conc} calls ran at once");
        assert_eq!(duplicated(&calls), vec![], "lane {i}: nothing sent twice");
        if i == pinned {
            // From a second after the owner applied the pin (calls it had in flight then end).
            let after: Vec<Call> = calls
                .iter()
                .filter(|c| c.start > pinned_at + Duration::from_secs(1))
                .cloned()
                .collect();
            let (pw, pc) = (
                max_in_window(&after, Duration::from_secs(1)),
                max_concurrent(&after),
            );
            eprintln!(
                "pinned lane: {} calls after the pin, window {pw}, concurrency {pc}",
                after.len()
            );
            assert!(after.len() >= 10, "the pinned lane ran: {}", after.len());
            assert!(
                pw <= PIN_RATE as usize + BURST,
                "pinned lane: a 1 s window saw {pw}"
            );
            assert_eq!(pc, 1, "pinned lane: at most 1 in flight");
        }
        if moved.contains(&i) {
            let ip: std::net::IpAddr = c.nodes[n].ip.parse().unwrap();
            assert!(
                calls.iter().any(|c| c.from == ip),
                "lane {i}: the new owner sends"
            );
        }
    }
    let first_move_s = moved_at.values().min().map_or(0.0, Duration::as_secs_f64);
    eprintln!("join: {} of {n_lanes} lanes moved (expected {}), first after {first_move_s:.2} s, share after {share_s:.2} s; worst window {worst_w}, concurrency {worst_c}", moved.len(), expected_moves.len());
    record(
        "cluster_join_rebalance",
        json!({"lanes": n_lanes, "moved": moved.len(), "expected_moved": expected_moves.len(),
               "first_move_s": first_move_s, "share_owned_s": share_s,
               "max_1s_window": worst_w, "max_concurrent": worst_c}),
    );
    assert!(
        share_s <= 10.0,
        "the new node owned its share after {share_s:.1} s"
    );

    // Every node answers the same lanes view, from the lane rows: owner, epoch, limits, pin,
    // pause and queue as the database holds them (the load has drained: queues are empty).
    let view = |i: usize| {
        let s = &c.nodes[i].server;
        async move {
            let (st, v) = s.get("/api/v1/lanes").await;
            assert_eq!(st, 200, "{v}");
            v
        }
    };
    // The last calls may still run: wait (polling, no event for it) until none does.
    let idle = Instant::now() + Duration::from_secs(10);
    let a = loop {
        let a = view(0).await;
        let busy = a["lanes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["in_flight"] != 0 || l["queue_depth"] != 0);
        if !busy {
            break a;
        }
        assert!(Instant::now() < idle, "the lanes never went idle: {a}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let b = view(n).await;
    assert_eq!(a, b, "two nodes answer the same lanes view");
    let listed = a["lanes"].as_array().unwrap();
    assert_eq!(listed.len(), n_lanes, "every lane of the tenant: {a}");
    let now_owned = owners(&store, &lanes).await;
    for (i, t) in targets.iter().enumerate() {
        let l = listed
            .iter()
            .find(|l| l["key"]["host"] == t.addr.to_string())
            .unwrap_or_else(|| panic!("lane {i} missing: {a}"));
        assert_eq!(
            l["owner_node"].as_str(),
            now_owned[i].0.as_deref(),
            "lane {i}: {l}"
        );
        assert_eq!(l["epoch"].as_u64(), Some(now_owned[i].1), "lane {i}: {l}");
        assert_eq!(
            (l["queue_depth"].as_u64(), l["in_flight"].as_u64()),
            (Some(0), Some(0)),
            "{l}"
        );
        let want_rate = if i == pinned { PIN_RATE } else { RATE as f64 };
        assert_eq!(l["rate"].as_f64(), Some(want_rate), "lane {i}: {l}");
    }
    // The operator's CLI shows owner and epoch too.
    let out = std::process::Command::new(crate::support::BIN)
        .args(["lanes", "list", "--data-dir"])
        .arg(c.root.path())
        .env("EZTHROTTLE_DATABASE_URL", &c.url)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let cli: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let host = targets[expected_moves[0]].addr.to_string();
    let row = cli
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["host"] == host.as_str())
        .unwrap_or_else(|| panic!("{host} not listed: {cli}"));
    assert_eq!(row["owner_node"], "n4", "{row}");
    assert_eq!(
        row["epoch"].as_u64(),
        Some(now_owned[expected_moves[0]].1),
        "{row}"
    );
    assert_eq!(row["queue_depth"], 0, "{row}");

    // A node that joins and dies before it settled moves nothing.
    let settled = owners(&store, &lanes).await;
    let m = c.add_node();
    let listed = Instant::now() + Duration::from_secs(20);
    while !store
        .nodes()
        .await
        .unwrap()
        .iter()
        .any(|r| r.id == "n5" && r.alive)
    {
        assert!(Instant::now() < listed, "n5 never joined");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    c.nodes[m].server.kill9();
    let killed = Instant::now();
    // Until well after its lease expired (5 s), no lane changes owner.
    while killed.elapsed() < Duration::from_secs(8) {
        tick.tick().await;
        round(&c, &targets, &[0, 1, n], k, &mut bodies).await;
        k += 1;
        let o = owners(&store, &lanes).await;
        assert_eq!(
            o, settled,
            "a lane moved for a node that joined and died at once"
        );
    }
}

/// A pin set on a node that does not own the lane while the owner's notification session is
/// down (so that notification is lost) still reaches the owner: when the session reconnects,
/// the owner re-reads the pins of its lanes.
#[tokio::test]
async fn a_pin_whose_notification_was_lost_reaches_the_owner_on_reconnect() {
    let target = LogTarget::start(10).await;
    let app = format!("ezt-pinsync-{}", std::process::id());
    let url = format!(
        "{}&application_name={app}",
        ezt_store_postgres::testing::database_url().await
    );
    let mut c = Cluster {
        nodes: Vec::new(),
        url,
        root: tempfile::tempdir().unwrap(),
    };
    c.add_node();
    c.add_node();
    // Both nodes know the lane (and the tenant in it).
    for i in 0..2 {
        let (st, b) = c.nodes[i]
            .server
            .post(
                "/api/v1/jobs",
                json!({"url": target.url(), "body": format!("x{i}")}),
            )
            .await;
        assert_eq!(st, 202, "{b}");
        // Waits on the target, not on the job: a node's long poll sees only the jobs it
        // runs finish.
        let got = target.wait_calls(i + 1, Duration::from_secs(20)).await;
        assert_eq!(got.len(), i + 1, "job {i} never ran");
    }
    // The lane ends up with its placed owner (an idle lane released by a hand-over is
    // claimed again with its next job).
    let store = c.store();
    let winner = placed(&[lane_name(&target)], &["n2", "n3"]).remove(0);
    let owner = if winner == "n2" { 0 } else { 1 };
    let deadline = Instant::now() + Duration::from_secs(20);
    for k in 0.. {
        let (o, _) = owners(&store, &[lane_name(&target)]).await.remove(0);
        if o.as_deref() == Some(winner.as_str()) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{winner} never owned the lane: {o:?}"
        );
        let before = target.calls().len();
        let (st, b) = c.nodes[1 - owner]
            .server
            .post(
                "/api/v1/jobs",
                json!({"url": target.url(), "body": format!("y{k}")}),
            )
            .await;
        assert_eq!(st, 202, "{b}");
        target.wait_calls(before + 1, Duration::from_secs(20)).await;
    }
    // Cut the listening sessions of this test's nodes: they reconnect after a second.
    let (raw, conn) = tokio_postgres::connect(
        &ezt_store_postgres::testing::server_url(),
        tokio_postgres::NoTls,
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let cut: i64 = raw
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
             WHERE application_name = $1 AND query = 'LISTEN ezt_lane'",
            &[&app],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(cut, 2, "one listening session per node");
    let host = target.addr.to_string();
    let (st, v) = put(
        &c.nodes[1 - owner].server,
        &format!("/api/v1/lanes/{host}/limits"),
        json!({"rate": PIN_RATE, "max_in_flight": 1}),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    let since = Instant::now();
    loop {
        if c.nodes[owner]
            .server
            .logs()
            .contains("lane limits pinned by its tenant")
        {
            break;
        }
        assert!(
            since.elapsed() < Duration::from_secs(10),
            "the owner never applied the pin: {}",
            c.nodes[owner].server.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let took = since.elapsed();
    eprintln!("pin applied by the owner {took:?} after a lost notification");
    record(
        "cluster_pin_after_lost_notification",
        json!({"applied_after_ms": took.as_millis() as u64}),
    );
}
