//! Webhooks from regions (issue 15 item 6), with real processes: three nodes of regions
//! r1/r2/r3 on 127.0.0.2–4 sharing one real PostgreSQL, each sending from its own source
//! address, and the Python receiver (independent signature checks) logging the address each
//! delivery came from. Cases: a webhook listing `regions: ["r3"]` arrives from r3's address,
//! verified, with its usual `webhook-id`, while a webhook without regions arrives from the
//! node that holds the delivery; two listed regions, one slow, are raced and counted once
//! (any second leg carries the same `webhook-id`); a listed region's node SIGKILLed: the
//! delivery still arrives, from another node, and its attempt says why.

use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::fault_regions::{await_alive, start_region_node, IPS, SECRET};
use crate::support::{PyReceiver, Target, TestServer};

const HOOK_SECRET: &str = "regional-hook-secret-0123456789";
/// One sealing key for every node: any node may sign a delivery with the tenant's secret.
const SEAL_KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
const CONFIG: &str = "[admin]\ntoken = \"operator-token-0123456789\"\n\n[lanes.hosts.\"127.0.0.1\"]\nrate = 1000.0\nburst = 100\nmax_in_flight = 100\n";
const T: Duration = Duration::from_secs(20);

fn start_node(root: &Path, i: usize, url: &str, key: Option<String>) -> TestServer {
    let env = [
        ("EZTHROTTLE_CLUSTER_SECRET", SECRET),
        ("EZTHROTTLE_SECRET_KEY", SEAL_KEY),
        ("EZTHROTTLE_LOG", "info,ezt_runtime=debug"),
    ];
    start_region_node(root, i, url, key, true, CONFIG, &env).0
}

/// A target whose lane is placed on n2 (r1) while the three nodes live: the jobs end there,
/// so their deliveries are held by r1's node and any other region's leg is a hand-off.
async fn target_on_r1() -> Target {
    let ids: Vec<ezt_store::NodeId> = ["n2", "n3", "n4"]
        .into_iter()
        .map(ezt_store::NodeId::new)
        .collect();
    for _ in 0..64 {
        let t = Target::start().await;
        let lane = format!("job:{}", t.addr);
        if ezt_runtime::fence::rendezvous(&lane, ids.iter()).map(|b| b.as_str()) == Some("n2") {
            return t;
        }
    }
    panic!("no target port placed on n2 in 64 tries");
}

/// Polls the job view until its deliveries all leave `pending` (a delivery's state is
/// written just after the receiver answers; there is no event for it besides the view).
async fn delivered(s: &TestServer, id: &str) -> Value {
    let deadline = Instant::now() + T;
    loop {
        let (st, v) = s.get(&format!("/api/v1/jobs/{id}")).await;
        assert_eq!(st, 200, "{v}");
        let hooks = v["webhooks"].as_array().cloned().unwrap_or_default();
        if !hooks.is_empty() && hooks.iter().all(|d| d["state"] != "pending") {
            return v;
        }
        assert!(Instant::now() < deadline, "never delivered: {v:#}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn ip_of(node: &str) -> &'static str {
    let i: usize = node.trim_start_matches('n').parse().unwrap();
    IPS[i - 2]
}

/// The receiver's requests for `path`, waiting for at least one.
async fn lines_for(rx: &PyReceiver, seen: &mut Vec<Value>, path: &str) -> Vec<Value> {
    let deadline = Instant::now() + T;
    while !seen.iter().any(|l| l["path"] == path) {
        let left = deadline.saturating_duration_since(Instant::now());
        seen.push(rx.next(left).await);
    }
    seen.iter().filter(|l| l["path"] == path).cloned().collect()
}

#[tokio::test]
async fn webhooks_are_delivered_from_their_regions() {
    let url = ezt_store_postgres::testing::database_url().await;
    let root = tempfile::tempdir().unwrap();
    let first = start_node(root.path(), 0, &url, None);
    let key = first.key.clone();
    let mut nodes = vec![first];
    for i in 1..3 {
        nodes.push(start_node(root.path(), i, &url, Some(key.clone())));
    }
    await_alive(&nodes[0], 3).await;
    let (st, b) = nodes[0]
        .post(
            "/api/v1/webhook-secrets",
            json!({"primary_secret": HOOK_SECRET}),
        )
        .await;
    assert_eq!(st, 201, "{b}");
    let target = target_on_r1().await;
    // r2's legs are answered 5 s late.
    let rx = PyReceiver::start_with_delays(&[HOOK_SECRET], 0, &[(IPS[1], 5_000)]);
    let mut seen: Vec<Value> = Vec::new();

    // 1. `regions: ["r3"]`: from r3's address; without regions: from the holder's.
    let id = nodes[0]
        .submit(json!({
            "url": target.url("one"), "method": "POST",
            "webhooks": [
                {"url": rx.url("/r3"), "regions": ["r3"]},
                {"url": rx.url("/any")},
            ],
        }))
        .await;
    let v = delivered(&nodes[0], &id).await;
    let r3 = lines_for(&rx, &mut seen, "/r3").await;
    assert_eq!(r3.len(), 1, "{r3:?}");
    let got = &r3[0];
    assert_eq!(got["from"], IPS[2], "sent from r3's node: {got}");
    assert_eq!(
        (got["ezt_ok"].as_bool(), got["std_ok"].as_bool()),
        (Some(true), Some(true)),
        "both signatures verify: {got}"
    );
    assert_eq!(got["job_id"], id.as_str());
    assert_eq!(got["webhook_id"], got["delivery_id"]);
    assert_eq!(got["webhook_id"], v["webhooks"][0]["delivery_id"]);
    let a = &v["webhooks"][0]["attempts"][0];
    assert_eq!(
        (
            a["region"].as_str(),
            a["node"].as_str(),
            a["outcome"].as_str()
        ),
        (Some("r3"), Some("n4"), Some("delivered")),
        "{v:#}"
    );
    assert!(a.get("note").is_none(), "sent as asked: {a}");
    let any = lines_for(&rx, &mut seen, "/any").await;
    let a = &v["webhooks"][1]["attempts"][0];
    let holder = a["node"].as_str().unwrap();
    assert_eq!(
        any[0]["from"],
        ip_of(holder),
        "no regions: sent by the node holding the delivery: {a}"
    );
    assert_eq!(any[0]["std_ok"], true);

    // 2. Two regions, r2 slow: raced, r3 wins well before r2 answers, counted once.
    let id = nodes[0]
        .submit(json!({
            "url": target.url("two"), "method": "POST",
            "webhooks": [{"url": rx.url("/raced"), "regions": ["r2", "r3"]}],
        }))
        .await;
    let v = delivered(&nodes[0], &id).await;
    let d = &v["webhooks"][0];
    assert_eq!(d["state"], "delivered", "{v:#}");
    assert_eq!(
        d["attempts"].as_array().unwrap().len(),
        1,
        "one attempt: {d}"
    );
    assert_eq!(d["attempts"][0]["region"], "r3", "the fast region won: {d}");
    let took = d["acknowledged_at"].as_u64().unwrap() - d["created_at"].as_u64().unwrap();
    assert!(took < 4_000, "the slow leg was not awaited: {took} ms");
    assert_eq!(
        v["webhook_quorum"],
        json!({"required": 1, "acknowledged": 1, "state": "met"}),
        "one endpoint, one vote, whatever the legs"
    );
    lines_for(&rx, &mut seen, "/raced").await;
    // The slow leg may have reached the receiver too (it is logged on arrival); give it a
    // moment, then every leg seen must carry the one webhook-id.
    if let Ok(more) = tokio::time::timeout(Duration::from_secs(1), rx.next(T)).await {
        seen.push(more);
    }
    let raced: Vec<&Value> = seen.iter().filter(|l| l["path"] == "/raced").collect();
    assert!((1..=2).contains(&raced.len()), "{raced:?}");
    let ids: HashSet<&str> = raced
        .iter()
        .map(|l| l["webhook_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 1, "every leg has the same webhook-id: {raced:?}");
    assert_eq!(
        ids.into_iter().next().unwrap(),
        d["delivery_id"].as_str().unwrap()
    );
    let froms: HashSet<&str> = raced.iter().map(|l| l["from"].as_str().unwrap()).collect();
    assert!(froms.contains(IPS[2]), "r3's leg arrived: {raced:?}");
    assert!(
        froms.iter().all(|f| *f == IPS[1] || *f == IPS[2]),
        "only the listed regions sent it: {raced:?}"
    );

    // The internal route: signed calls only; the executing node re-checks the SSRF rules.
    let path = "/internal/v1/deliveries";
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let auth = ezt_runtime::internal_auth::NodeAuth::new(SECRET);
    let http = reqwest::Client::new();
    let call = |url: &str| {
        serde_json::to_vec(
            &json!({"url": url, "headers": [["content-type", "application/json"]],
            "body": "{}", "timeout_ms": 5000}),
        )
        .unwrap()
    };
    let post = |sig: Option<String>, body: Vec<u8>| {
        let mut r = http
            .post(nodes[2].url(path))
            .header("content-type", "application/json")
            .body(body);
        if let Some(s) = sig {
            r = r.header("x-ezt-node-auth", s);
        }
        async move {
            let resp = r.send().await.unwrap();
            (resp.status().as_u16(), resp.json::<Value>().await.unwrap())
        }
    };
    let body = call(&rx.url("/internal"));
    let (st, v) = post(None, body.clone()).await;
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (401, Some("unauthorized")),
        "{v}"
    );
    let (st, v) = post(Some(auth.sign("POST", path, &body, now)), body).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(
        (v["region"].as_str(), v["node"].as_str()),
        (Some("r3"), Some("n4"))
    );
    // Unsigned for the receiver: it answers 401, and the leg carries that status.
    assert_eq!(v["status"], 401, "{v}");
    let internal = lines_for(&rx, &mut seen, "/internal").await;
    assert_eq!(internal[0]["from"], IPS[2]);
    let body = call("http://169.254.169.254/latest/meta-data");
    let (st, v) = post(Some(auth.sign("POST", path, &body, now)), body).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(
        v["error"]["code"], "ssrf_denied",
        "the executing node applies its own rules: {v}"
    );
    assert!(v["status"].is_null(), "{v}");

    // 3. r3's node SIGKILLed: still delivered, by another node, and the attempt says why.
    nodes[2].kill9();
    let id = nodes[0]
        .submit(json!({
            "url": target.url("three"), "method": "POST",
            "webhooks": [{"url": rx.url("/killed"), "regions": ["r3"]}],
        }))
        .await;
    let v = delivered(&nodes[0], &id).await;
    let d = &v["webhooks"][0];
    assert_eq!(d["state"], "delivered", "{v:#}");
    let a = &d["attempts"][0];
    assert_ne!(a["region"], "r3", "{a}");
    let note = a["note"].as_str().unwrap_or_default();
    assert!(
        note.contains("instead"),
        "the attempt says the listed region could not send it: {a}"
    );
    let killed = lines_for(&rx, &mut seen, "/killed").await;
    assert_eq!(killed[0]["from"], ip_of(a["node"].as_str().unwrap()));
    assert_eq!(
        (killed[0]["ezt_ok"].as_bool(), killed[0]["std_ok"].as_bool()),
        (Some(true), Some(true))
    );
}
