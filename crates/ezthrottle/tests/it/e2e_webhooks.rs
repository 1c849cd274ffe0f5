//! Signed webhooks end to end: receivers we start verify signatures with independent
//! implementations (Python's hmac, the standardwebhooks package); rotation, quorum, retries, a
//! receiver coming back, SIGKILL mid-delivery, redelivery and SSRF.

use std::time::Duration;

use serde_json::{json, Value};

use crate::support::{PyReceiver, Reply, Target, TestServer};

const SECRET: &str = "first-secret-0123456789";
const NEW_SECRET: &str = "second-secret-9876543210";
const T: Duration = Duration::from_secs(20);

/// Polls the job view until `pred` holds for it: delivery state is written just after the
/// receiver answers, and there is no event for it besides the view.
async fn view_until(s: &TestServer, id: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let (st, v) = s.get(&format!("/api/v1/jobs/{id}")).await;
        assert_eq!(st, 200, "{v}");
        if pred(&v) {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what} not reached: {v:#}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn states(v: &Value) -> Vec<&str> {
    v["webhooks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["state"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn deliveries_verify_with_independent_implementations() {
    let target = Target::start().await;
    let s = TestServer::start();
    // Secrets API: validation, masking.
    let (st, b) = s
        .post(
            "/api/v1/webhook-secrets",
            json!({"primary_secret": "short"}),
        )
        .await;
    assert_eq!(
        (st, b["error"]["field"].as_str()),
        (400, Some("primary_secret")),
        "{b}"
    );
    let (st, b) = s
        .post("/api/v1/webhook-secrets", json!({"primary_secret": SECRET}))
        .await;
    assert_eq!(st, 201, "{b}");
    assert_eq!(b["primary_secret"], "****6789");
    let (st, b) = s.get("/api/v1/webhook-secrets").await;
    assert_eq!(
        (st, b["has_secondary"].as_bool()),
        (200, Some(false)),
        "{b}"
    );
    assert!(!b.to_string().contains(SECRET), "never shown in full: {b}");

    let rx = PyReceiver::start(&[SECRET], 0);
    let id = s
        .submit(json!({
            "url": target.url("work"), "method": "POST", "body": "{\"x\":1}",
            "metadata": {"order": "ord_42", "note": "café ✓"},
            "webhooks": [{"url": rx.url("/hook")}],
        }))
        .await;
    let got = rx.next(T).await;
    assert_eq!(
        (got["ezt_ok"].as_bool(), got["std_ok"].as_bool()),
        (Some(true), Some(true)),
        "{got}"
    );
    assert_eq!(got["status"], 200);
    assert_eq!(got["job_id"], id.as_str());
    assert_eq!(
        got["delivery_id"], got["webhook_id"],
        "one id for both schemes"
    );
    let body: Value = serde_json::from_str(got["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["job_id"], id.as_str());
    assert_eq!(body["status"], "success");
    assert_eq!(body["response"]["status_code"], 200);
    assert_eq!(body["metadata"]["note"], "café ✓");
    assert_eq!(body["attempts"], 1);
    assert_eq!(body["region"], "local");
    assert!(
        body["idempotent_key"].is_string() && body["completed_at"].is_u64(),
        "{body}"
    );

    let v = view_until(&s, &id, "delivered", |v| states(v) == ["delivered"]).await;
    assert_eq!(v["webhooks"][0]["delivery_id"], got["delivery_id"]);
    assert_eq!(
        v["webhook_quorum"],
        json!({"required": 1, "acknowledged": 1, "state": "met"})
    );
    assert_eq!(v["webhooks"][0]["attempts"][0]["status_code"], 200);

    // Redelivery on demand: same delivery id, verified again.
    let (st, b) = s
        .post(&format!("/api/v1/jobs/{id}/webhooks/redeliver"), json!({}))
        .await;
    assert_eq!(st, 202, "{b}");
    let again = rx.next(T).await;
    assert_eq!(again["delivery_id"], got["delivery_id"]);
    assert_eq!(again["ezt_ok"], true);
    let plain = s.submit(json!({"url": target.url("plain")})).await;
    s.wait_final(&plain, 20).await;
    let (st, b) = s
        .post(
            &format!("/api/v1/jobs/{plain}/webhooks/redeliver"),
            json!({}),
        )
        .await;
    assert_eq!(
        (st, b["error"]["code"].as_str()),
        (409, Some("conflict")),
        "{b}"
    );

    // Without secrets, deliveries go unsigned (and the receiver without secrets accepts them).
    let (st, _) = s.delete_req("/api/v1/webhook-secrets").await;
    assert_eq!(st, 200);
    let bare = PyReceiver::start(&[], 0);
    let unsigned = s
        .submit(json!({"url": target.url("work2"), "webhooks": [{"url": bare.url("/h")}]}))
        .await;
    let got = bare.next(T).await;
    assert_eq!(
        (got["status"].as_u64(), got["signature"].is_null()),
        (Some(200), true),
        "{got}"
    );

    // The receiver logs before the server has recorded its answer: wait for that first.
    view_until(&s, &unsigned, "delivered", |v| states(v) == ["delivered"]).await;
    let (_, metrics) = s.get_text("/metrics").await;
    assert!(
        metrics.contains("ezthrottle_webhook_deliveries_total{outcome=\"delivered\"} 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains("ezthrottle_webhook_delivery_seconds_count 2"),
        "first acks only: {metrics}"
    );
}

#[tokio::test]
async fn rotation_sends_both_signatures_and_either_secret_verifies() {
    let target = Target::start().await;
    let s = TestServer::start();
    let (st, _) = s
        .post(
            "/api/v1/webhook-secrets/rotate",
            json!({"new_secret": NEW_SECRET}),
        )
        .await;
    assert_eq!(st, 404, "nothing to rotate yet");
    s.post("/api/v1/webhook-secrets", json!({"primary_secret": SECRET}))
        .await;
    let (st, b) = s
        .post(
            "/api/v1/webhook-secrets/rotate",
            json!({"new_secret": NEW_SECRET}),
        )
        .await;
    assert_eq!(
        (
            st,
            b["primary_secret"].as_str(),
            b["has_secondary"].as_bool()
        ),
        (200, Some("****3210"), Some(true)),
        "{b}"
    );
    let old_only = PyReceiver::start(&[SECRET], 0);
    let new_only = PyReceiver::start(&[NEW_SECRET], 0);
    s.submit(json!({"url": target.url("w"), "webhooks": [{"url": old_only.url("/a")}, {"url": new_only.url("/b")}]}))
        .await;
    for rx in [&old_only, &new_only] {
        let got = rx.next(T).await;
        assert_eq!(
            (
                got["ezt_ok"].as_bool(),
                got["std_ok"].as_bool(),
                got["status"].as_u64()
            ),
            (Some(true), Some(true), Some(200)),
            "{got}"
        );
        assert_eq!(
            got["signature"].as_str().unwrap().matches("v1=").count(),
            2,
            "{got}"
        );
    }
}

#[tokio::test]
async fn quorum_is_met_by_two_of_three_and_fails_when_two_voters_stay_down() {
    let target = Target::start().await;
    let hooks = Target::start().await;
    hooks.default_reply("down", Reply::status(503));
    let s =
        TestServer::start_with("[webhooks]\nretry_schedule = [\"50ms\", \"50ms\"]\njitter = 0.0\n");
    let met = s
        .submit(json!({
            "url": target.url("a"), "webhook_quorum": 2,
            "webhooks": [{"url": hooks.url("up1")}, {"url": hooks.url("down")}, {"url": hooks.url("up2")},
                         {"url": hooks.url("observer"), "has_quorum_vote": false}],
        }))
        .await;
    let v = view_until(&s, &met, "quorum met", |v| {
        v["webhook_quorum"]["state"] == "met"
    })
    .await;
    assert_eq!(v["webhook_quorum"]["acknowledged"], 2);
    let v = view_until(&s, &met, "down failed", |v| {
        states(v) == ["delivered", "failed", "delivered", "delivered"]
    })
    .await;
    assert_eq!(
        v["webhooks"][1]["attempts"].as_array().unwrap().len(),
        3,
        "immediately + 2 retries: {v:#}"
    );
    assert_eq!(
        v["webhook_quorum"]["state"], "met",
        "a met quorum stays met"
    );
    hooks.wait_for("observer", 1, T).await; // the non-voting webhook is delivered too

    let failed = s
        .submit(json!({
            "url": target.url("b"), "webhook_quorum": 2,
            "webhooks": [{"url": hooks.url("up3")}, {"url": hooks.url("down")}, {"url": "http://127.0.0.1:9/closed"}],
        }))
        .await;
    let v = view_until(&s, &failed, "quorum failed", |v| {
        v["webhook_quorum"]["state"] == "failed"
    })
    .await;
    assert_eq!(v["webhook_quorum"]["acknowledged"], 1, "{v:#}");
    let v = view_until(&s, &failed, "all ended", |v| {
        states(v) == ["delivered", "failed", "failed"]
    })
    .await;
    assert!(
        v["webhooks"][2]["attempts"][0]["error"]
            .as_str()
            .unwrap()
            .contains("connect"),
        "{v:#}"
    );
}

#[tokio::test]
async fn a_receiver_that_comes_back_gets_everything_without_anyone_acting() {
    let target = Target::start().await;
    // A port that refuses connections until the receiver starts on it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    // After two quick failures deliveries wait 60 s: only the hastening can deliver them in time.
    let s = TestServer::start_with(
        "[webhooks]\nretry_schedule = [\"100ms\", \"60s\", \"60s\"]\njitter = 0.0\n",
    );
    s.post("/api/v1/webhook-secrets", json!({"primary_secret": SECRET}))
        .await;
    let url = format!("http://127.0.0.1:{port}/hook");
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(
            s.submit(json!({"url": target.url(&format!("j{i}")), "webhooks": [{"url": url}]}))
                .await,
        );
    }
    for id in &ids {
        view_until(&s, id, "two failed attempts", |v| {
            v["webhooks"][0]["attempts"]
                .as_array()
                .is_some_and(|a| a.len() >= 2)
        })
        .await;
    }
    let rx = PyReceiver::start(&[SECRET], port);
    // New traffic to the receiver (a sixth job's outcome) succeeds and the backlog follows.
    ids.push(
        s.submit(json!({"url": target.url("j5"), "webhooks": [{"url": url}]}))
            .await,
    );
    let mut seen = std::collections::HashSet::new();
    while seen.len() < ids.len() {
        let Ok(got) = tokio::time::timeout(Duration::from_secs(15), rx.next(T)).await else {
            let log = s.logs();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            panic!(
                "backlog not delivered long before its 60 s retry ({} of {} seen); server log tail:\n{}",
                seen.len(),
                ids.len(),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        };
        assert_eq!(got["ezt_ok"], true);
        seen.insert(got["job_id"].as_str().unwrap().to_string());
    }
    for id in &ids {
        view_until(&s, id, "delivered", |v| states(v) == ["delivered"]).await;
    }
}

#[tokio::test]
async fn sigkill_mid_delivery_delivers_after_restart_with_the_same_id() {
    let target = Target::start().await;
    let hooks = Target::start().await;
    // The first delivery hangs long enough for the kill; later ones answer at once.
    hooks.script(
        "slow",
        vec![Reply {
            status: 200,
            headers: vec![],
            delay_ms: 30_000,
        }],
    );
    let mut s = TestServer::start_with("[webhooks]\ntimeout_ms = 60000\n");
    let id = s
        .submit(json!({"url": target.url("w"), "webhooks": [{"url": hooks.url("slow")}]}))
        .await;
    let first = hooks.wait_for("slow", 1, T).await;
    s.kill9();
    let s = TestServer::spawn(&s.dir.clone(), "", Some(s.key.clone()));
    let both = hooks.wait_for("slow", 2, T).await;
    let ids: Vec<&str> = both
        .iter()
        .map(|a| a.headers["x-ezthrottle-delivery-id"].as_str())
        .collect();
    assert_eq!(ids[0], ids[1], "a duplicate carries the same delivery id");
    assert_eq!(both[1].body, first[0].body, "byte-identical payload");
    let v = view_until(&s, &id, "delivered after restart", |v| {
        states(v) == ["delivered"]
    })
    .await;
    assert_eq!(v["webhooks"][0]["delivery_id"], ids[0]);
}

#[tokio::test]
async fn webhook_urls_pass_the_ssrf_rules() {
    let s = TestServer::start();
    for (url, class) in [
        ("http://10.1.2.3/h", "private"),
        ("http://169.254.169.254/latest", "link"),
        ("http://[::1]:9/h", "loopback"), // only 127.0.0.1 is allowed in these tests
        ("http://[::ffff:10.0.0.1]/h", "mapped"),
    ] {
        let (st, b) = s
            .post("/api/v1/jobs", json!({"url": "http://127.0.0.1:9/x", "webhooks": [{"url": "http://127.0.0.1:9/ok"}, {"url": url}]}))
            .await;
        assert_eq!(st, 422, "{url}: {b}");
        assert_eq!(b["error"]["code"], "ssrf_denied");
        assert_eq!(b["error"]["field"], "webhooks[1].url");
        assert!(
            b["error"]["message"].as_str().unwrap().contains(class),
            "{url}: {b}"
        );
    }
}
