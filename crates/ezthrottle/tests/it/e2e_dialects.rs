//! Issue 17 end to end: limits announced in two provider dialects (OpenAI's per-minute
//! `x-ratelimit-*-requests`, Anthropic's `anthropic-ratelimit-requests-*`) are used whole,
//! `GET /api/v1/lanes` and `ezthrottle lanes list` say where the rate came from, and a tenant
//! pins its own lane with `PUT /api/v1/lanes/{host}/limits`.
//!
//! The arithmetic of every dialect is pinned by `testdata/ratelimit-headers.json` and the
//! property tests of `ezt_core::ratelimit_headers`; exact pacing and adaptive pacing are unit
//! tests of `ezt_runtime::lanes` in paused time.

use std::time::Duration;

use serde_json::{json, Value};

use crate::support::{cli, Arrival, Reply, Target, TestServer};

/// Jitter between the limiter's decision and the mock target's arrival stamp (see e2e_limits).
const JITTER: Duration = Duration::from_millis(40);

/// 600 requests a minute, said the OpenAI way; the token headers say "no tokens left", which
/// must not slow requests down.
fn openai() -> Reply {
    Reply::status(200)
        .header("x-ratelimit-limit-requests", "600")
        .header("x-ratelimit-remaining-requests", "599")
        .header("x-ratelimit-reset-requests", "100ms")
        .header("x-ratelimit-limit-tokens", "1000")
        .header("x-ratelimit-remaining-tokens", "0")
        .header("x-ratelimit-reset-tokens", "1m0s")
}

/// 600 requests a minute, said the Anthropic way.
fn anthropic() -> Reply {
    Reply::status(200)
        .header("anthropic-ratelimit-requests-limit", "600")
        .header("anthropic-ratelimit-requests-remaining", "599")
        .header("anthropic-ratelimit-requests-reset", "2099-01-01T00:00:00Z")
        .header("anthropic-ratelimit-tokens-remaining", "0")
}

/// Calls after the first (the first response teaches the rate) keep 10/s: never more than
/// rate + burst = 11 in a 1 s window, and the whole run far below the 2/s default's time.
fn assert_paced_at_ten_per_second(name: &str, seen: &[Arrival]) {
    let after_first = &seen[1..];
    let window = Duration::from_secs(1) - JITTER;
    for (i, a) in after_first.iter().enumerate() {
        let n = after_first[i..]
            .iter()
            .take_while(|b| b.at.duration_since(a.at) <= window)
            .count();
        assert!(n <= 11, "{name}: {n} calls within {window:?} from call {i}");
    }
    let span = after_first[after_first.len() - 1]
        .at
        .duration_since(after_first[0].at);
    let intervals = (after_first.len() - 1) as u32;
    assert!(
        span + JITTER >= Duration::from_millis(100) * intervals,
        "{name}: {} calls in {span:?}, faster than 10/s",
        after_first.len()
    );
    assert!(
        span <= Duration::from_millis(200) * intervals,
        "{name}: {} calls took {span:?}; at 10/s they take {:?} (at the 2/s default, {:?})",
        after_first.len(),
        Duration::from_millis(100) * intervals,
        Duration::from_millis(500) * intervals
    );
}

fn lane_for<'a>(lanes: &'a [Value], fingerprint_of: &str, all: &'a Value) -> &'a Value {
    lanes
        .iter()
        .find(|l| l["sources"]["rate"]["header"] == fingerprint_of)
        .unwrap_or_else(|| panic!("no lane learned from {fingerprint_of}: {all}"))
}

#[tokio::test]
async fn two_dialects_are_used_whole_and_the_lanes_say_why() {
    const N: usize = 21;
    let target = Target::start().await;
    target.default_reply("openai", openai());
    target.default_reply("anthropic", anthropic());
    let server = TestServer::start();
    let mut jobs = Vec::new();
    for i in 0..N {
        jobs.push(json!({"url": target.url("openai"), "headers": {"Authorization": "Bearer sk-openai-1"}, "body": i.to_string()}));
        jobs.push(json!({"url": target.url("anthropic"), "headers": {"x-api-key": "sk-ant-1"}, "body": i.to_string()}));
    }
    let (s, body) = server
        .post("/api/v1/jobs/batch", json!({ "jobs": jobs }))
        .await;
    assert_eq!(s, 202, "{body}");
    let o = target.wait_for("openai", N, Duration::from_secs(60)).await;
    let a = target
        .wait_for("anthropic", N, Duration::from_secs(60))
        .await;
    assert_paced_at_ten_per_second("openai", &o);
    assert_paced_at_ten_per_second("anthropic", &a);

    let (s, view) = server.get("/api/v1/lanes").await;
    assert_eq!(s, 200, "{view}");
    let lanes = view["lanes"].as_array().expect("lanes");
    assert_eq!(lanes.len(), 2, "{view}");
    for (header, other_kind) in [
        ("x-ratelimit-limit-requests", "anthropic"),
        ("anthropic-ratelimit-requests-limit", "openai"),
    ] {
        let l = lane_for(lanes, header, &view);
        assert!((l["rate"].as_f64().unwrap() - 10.0).abs() < 1e-9, "{l}");
        assert_eq!(l["burst"], 1, "{l}");
        assert_eq!(l["max_in_flight"], 10, "one second of calls in flight: {l}");
        assert_eq!(l["sources"]["rate"]["kind"], "header");
        assert_eq!(l["sources"]["rate"]["window_s"], 60);
        assert!(l["sources"]["rate"]["learned_at"].as_u64().unwrap() > 1_700_000_000_000);
        assert_eq!(l["sources"]["max_in_flight"]["kind"], "derived");
        assert_eq!(l["key"]["host"], target.addr.to_string());
        let fp = l["key"]["credential_fingerprint"].as_str().expect("keyed");
        assert!(!fp.contains("sk-"), "a fingerprint, not the key");
        assert!(l["owner_node"].is_null() && l["epoch"].is_null(), "{l}");
        assert_eq!(l["queue_depth"], 0);
        assert_eq!(l["remaining"], 599);
        assert!(!l["lane"].as_str().unwrap().contains(other_kind));
    }
    // Another tenant of the same server sees none of them.
    cli(&server.dir, &["tenants", "create", "other"]);
    let key = cli(&server.dir, &["keys", "create", "--tenant", "other"]);
    let (s, none) = server.get_as(key.trim(), "/api/v1/lanes").await;
    assert_eq!(
        (s, none["lanes"].as_array().map(Vec::len)),
        (200, Some(0)),
        "{none}"
    );

    // The store knows it too, while the server runs.
    let listed: Value = serde_json::from_str(&cli(&server.dir, &["lanes", "list"])).unwrap();
    let listed = listed.as_array().expect("array");
    for header in [
        "x-ratelimit-limit-requests",
        "anthropic-ratelimit-requests-limit",
    ] {
        let l = listed
            .iter()
            .find(|l| l["sources"]["rate"]["header"] == header)
            .unwrap_or_else(|| panic!("{header} not in {listed:?}"));
        assert_eq!(l["kind"], "job");
        assert!((l["rate"].as_f64().unwrap() - 10.0).abs() < 1e-9, "{l}");
        assert_eq!(l["sources"]["rate"]["window_s"], 60);
    }
    let filtered = cli(&server.dir, &["lanes", "list", "--host", "no.such.host"]);
    assert_eq!(filtered.trim(), "[]");
}

async fn put(server: &TestServer, path: &str, body: Value) -> (u16, Value) {
    let r = server
        .http
        .put(server.url(path))
        .bearer_auth(&server.key)
        .json(&body)
        .send()
        .await
        .expect("put");
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_tenant_pins_its_own_lane_and_bad_pins_are_refused() {
    let target = Target::start().await;
    target.default_reply("openai", openai());
    let server = TestServer::start();
    let host = target.addr.to_string();
    let path = format!("/api/v1/lanes/{host}/limits");

    let (s, e) = put(&server, &path, json!({"rate": 4})).await;
    assert_eq!((s, &e["error"]["field"]), (404, &json!("host")), "{e}");

    let job =
        json!({"url": target.url("openai"), "headers": {"Authorization": "Bearer sk-openai-2"}});
    let id = server.submit(job.clone()).await;
    server.wait_final(&id, 30).await;

    for (bad, code, field) in [
        (json!({"rate": 0}), "invalid_field", "rate"),
        (
            json!({"max_in_flight": 0}),
            "invalid_field",
            "max_in_flight",
        ),
        (json!({"rps": 3}), "unknown_field", "rps"),
    ] {
        let (s, e) = put(&server, &path, bad.clone()).await;
        assert_eq!(s, 400, "{bad}: {e}");
        assert_eq!(e["error"]["code"], code, "{bad}: {e}");
        assert_eq!(e["error"]["field"], field, "{bad}: {e}");
    }
    let (s, e) = put(&server, "/api/v1/lanes/a%20b/limits", json!({})).await;
    assert_eq!((s, &e["error"]["field"]), (400, &json!("host")), "{e}");

    let (s, pinned) = put(&server, &path, json!({"rate": 4, "maxInFlight": 3})).await;
    assert_eq!(s, 200, "{pinned}");
    let l = &pinned["lanes"][0];
    assert_eq!(
        (l["rate"].as_f64(), &l["max_in_flight"]),
        (Some(4.0), &json!(3))
    );
    assert_eq!(l["sources"]["rate"]["kind"], "tenant");
    assert_eq!(l["pin"]["rate"], 4.0);

    // The target still announces 10/s; the pin holds the lane at 4/s.
    let jobs: Vec<Value> = (0..9)
        .map(|i| {
            let mut j = job.clone();
            j["body"] = json!(i.to_string()); // distinct: identical jobs are one job
            j
        })
        .collect();
    let (s, _) = server
        .post("/api/v1/jobs/batch", json!({ "jobs": jobs }))
        .await;
    assert_eq!(s, 202);
    let seen = target.wait_for("openai", 10, Duration::from_secs(30)).await;
    let span = seen[9].at.duration_since(seen[1].at);
    assert!(
        span + JITTER >= Duration::from_millis(250) * 8,
        "9 pinned calls in {span:?}: faster than 4/s"
    );
    let (_, view) = server.get("/api/v1/lanes").await;
    assert_eq!(view["lanes"][0]["rate"].as_f64(), Some(4.0), "{view}");

    // `{}` unpins: back to the configured limit until the target teaches again.
    let (s, back) = put(&server, &path, json!({})).await;
    assert_eq!(s, 200, "{back}");
    assert!(back["lanes"][0]["pin"].is_null(), "{back}");
    assert_eq!(back["lanes"][0]["sources"]["rate"]["kind"], "default");
}
