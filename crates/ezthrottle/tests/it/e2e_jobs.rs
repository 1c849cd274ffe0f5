//! Job life: retries, failures, deadlines, dedup, cancel, replay, wait and SSE.

use std::time::Duration;

use futures::StreamExt;
use serde_json::json;

use crate::support::{Reply, Target, TestServer};

const FAST_LANE: &str = "[lanes.default]\nrate = 100.0\nburst = 1\nmax_in_flight = 4\n";

#[tokio::test]
async fn retries_429_and_503_then_succeeds() {
    let target = Target::start().await;
    let server = TestServer::start_with(FAST_LANE);
    target.script("flaky", vec![Reply::status(429), Reply::status(503)]);
    let id = server
        .submit(json!({"url": target.url("flaky"), "method": "POST", "body": "{\"x\":1}"}))
        .await;
    let job = server.wait_final(&id, 30).await;
    assert_eq!(job["state"], "succeeded", "{job}");
    let attempts = job["attempts"].as_array().unwrap();
    let codes: Vec<_> = attempts
        .iter()
        .map(|a| a["status_code"].as_u64().unwrap())
        .collect();
    assert_eq!(codes, vec![429, 503, 200]);
    let decisions: Vec<_> = attempts
        .iter()
        .map(|a| a["decision"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(decisions, vec!["retry", "retry", "success"]);
    assert_eq!(job["response"]["status_code"], 200);
    let seen = target.arrivals("flaky");
    assert_eq!(seen.len(), 3, "the target saw exactly three calls");
    let keys: Vec<_> = seen
        .iter()
        .map(|a| a.headers["idempotency-key"].clone())
        .collect();
    assert!(
        keys.iter().all(|k| k == &job["idempotent_key"]),
        "every attempt carries the job's Idempotency-Key"
    );
}

#[tokio::test]
async fn client_error_fails_without_retry() {
    let target = Target::start().await;
    let server = TestServer::start_with(FAST_LANE);
    target.default_reply("bad", Reply::status(400));
    let id = server.submit(json!({"url": target.url("bad")})).await;
    let job = server.wait_final(&id, 30).await;
    assert_eq!(job["state"], "failed", "{job}");
    assert_eq!(job["attempts"].as_array().unwrap().len(), 1);
    assert_eq!(job["error"]["code"], "http_status");
    assert_eq!(target.arrivals("bad").len(), 1, "no retry of a 400");
}

#[tokio::test]
async fn retries_run_out_then_fail() {
    let target = Target::start().await;
    let server = TestServer::start_with(FAST_LANE);
    target.default_reply("down", Reply::status(503));
    let id = server
        .submit(json!({"url": target.url("down"), "retry_policy": {"max_retries": 1}}))
        .await;
    let job = server.wait_final(&id, 30).await;
    assert_eq!(job["state"], "failed", "{job}");
    assert_eq!(job["error"]["code"], "retries_exhausted");
    assert_eq!(target.arrivals("down").len(), 2);
}

#[tokio::test]
async fn network_errors_are_retried() {
    let server = TestServer::start_with(FAST_LANE);
    // A port nobody listens on: connection refused.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let id = server.submit(json!({"url": format!("http://127.0.0.1:{port}/x"), "retry_policy": {"max_retries": 1}})).await;
    let job = server.wait_final(&id, 30).await;
    assert_eq!(job["state"], "failed", "{job}");
    let attempts = job["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2, "one retry after a network error: {job}");
    assert!(
        attempts[0]["status_code"].is_null()
            && attempts[0]["error"].as_str().unwrap().contains("connect"),
        "{job}"
    );
}

#[tokio::test]
async fn deadline_expires_the_job() {
    let target = Target::start().await;
    let server = TestServer::start_with(FAST_LANE);
    target.default_reply("never", Reply::status(503));
    let id = server.submit(json!({"url": target.url("never"), "timeout": "3s", "retry_policy": {"max_retries": 100}})).await;
    let job = server.wait_final(&id, 20).await;
    assert_eq!(job["state"], "expired", "{job}");
    assert_eq!(job["error"]["code"], "deadline");
    let finished = job["finished_at"].as_u64().unwrap();
    let created = job["created_at"].as_u64().unwrap();
    assert!(
        finished - created <= 3_500,
        "expired at its deadline, not long after: {}ms",
        finished - created
    );
}

#[tokio::test]
async fn duplicates_return_the_existing_job() {
    let target = Target::start().await;
    let server = TestServer::start_with(FAST_LANE);
    let spec = json!({"url": target.url("once"), "method": "POST", "body": "same"});
    let (s1, a) = server.post("/api/v1/jobs", spec.clone()).await;
    let (s2, b) = server.post("/api/v1/jobs", spec).await;
    assert_eq!((s1, s2), (202, 200));
    assert_eq!(b["status"], "duplicate");
    assert_eq!(a["job_id"], b["job_id"], "HASH key dedups identical calls");
    let custom = json!({"url": target.url("once"), "idempotent_key": "order-42"});
    let (_, c) = server.post("/api/v1/jobs", custom.clone()).await;
    let (s4, d) = server
        .post(
            "/api/v1/jobs",
            json!({"url": target.url("other"), "idempotentKey": "order-42"}),
        )
        .await;
    assert_eq!(
        (s4, &c["job_id"]),
        (200, &d["job_id"]),
        "custom key (camelCase alias too)"
    );
    assert_eq!(d["idempotent_key"], "order-42");
}

#[tokio::test]
async fn a_job_listing_regions_in_race_mode_is_answered_racing() {
    let target = Target::start().await;
    let server = TestServer::start_with(FAST_LANE);
    // Two regions this node is not in (fallback policy: it runs here), race by default.
    let spec = json!({"url": target.url("race"), "regions": ["us-east-1", "eu-west-1"]});
    let (s1, a) = server.post("/api/v1/jobs", spec.clone()).await;
    assert_eq!((s1, a["status"].as_str()), (202, Some("racing")), "{a}");
    let (s2, b) = server.post("/api/v1/jobs", spec).await;
    assert_eq!((s2, b["status"].as_str()), (200, Some("duplicate")), "{b}");
    assert_eq!(a["job_id"], b["job_id"]);
    let view = server.wait_final(a["job_id"].as_str().unwrap(), 30).await;
    assert_eq!(view["state"], "succeeded", "{view}");
    assert_eq!(view["spec"]["execution_mode"], "race");
    // One region, the mode spelled out (camelCase too): still racing. No regions: queued.
    let one = json!({"url": target.url("one"), "regions": ["local"], "executionMode": "race"});
    let (_, c) = server.post("/api/v1/jobs", one).await;
    assert_eq!(c["status"], "racing", "{c}");
    let (_, d) = server
        .post("/api/v1/jobs", json!({"url": target.url("none")}))
        .await;
    assert_eq!(d["status"], "queued", "{d}");
    // Batch entries say the same.
    let (s, e) = server
        .post(
            "/api/v1/jobs/batch",
            json!({"jobs": [{"url": target.url("b1"), "regions": ["eu-west-1"]}, {"url": target.url("b2")}]}),
        )
        .await;
    assert_eq!(s, 202, "{e}");
    assert_eq!(e["results"][0]["status"], "racing", "{e}");
    assert_eq!(e["results"][1]["status"], "queued", "{e}");
}

#[tokio::test]
async fn cancel_stops_a_waiting_job() {
    let target = Target::start().await;
    let server = TestServer::start_with(FAST_LANE);
    let later = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
        + 60_000;
    let id = server
        .submit(json!({"url": target.url("never-called"), "retry_at": later}))
        .await;
    let (_, job) = server.get(&format!("/api/v1/jobs/{id}")).await;
    assert_eq!(job["state"], "scheduled");
    let (s, job) = server
        .post(&format!("/api/v1/jobs/{id}/cancel"), json!({}))
        .await;
    assert_eq!((s, job["state"].as_str()), (200, Some("cancelled")));
    let (s, err) = server
        .post(&format!("/api/v1/jobs/{id}/cancel"), json!({}))
        .await;
    assert_eq!((s, err["error"]["code"].as_str()), (409, Some("conflict")));
    assert!(target.arrivals("never-called").is_empty());
}

#[tokio::test]
async fn replay_runs_a_failed_job_again() {
    let target = Target::start().await;
    let server = TestServer::start_with(FAST_LANE);
    target.script("later-ok", vec![Reply::status(400)]);
    let id = server.submit(json!({"url": target.url("later-ok")})).await;
    assert_eq!(server.wait_final(&id, 30).await["state"], "failed");
    let (s, v) = server
        .post(&format!("/api/v1/jobs/{id}/retry"), json!({}))
        .await;
    assert_eq!(s, 202, "{v}");
    let job = server.wait_final(&id, 30).await;
    assert_eq!(
        (job["state"].as_str(), job["series"].as_u64()),
        (Some("succeeded"), Some(2)),
        "{job}"
    );
    let (s, _) = server
        .post(&format!("/api/v1/jobs/{id}/retry"), json!({}))
        .await;
    assert_eq!(s, 409, "a succeeded job is not replayed");
}

#[tokio::test]
async fn submit_can_wait_for_the_result() {
    let target = Target::start().await;
    let server = TestServer::start_with(FAST_LANE);
    let (s, job) = server
        .post("/api/v1/jobs?wait=20s", json!({"url": target.url("sync")}))
        .await;
    assert_eq!(
        (s, job["state"].as_str()),
        (200, Some("succeeded")),
        "{job}"
    );
    assert_eq!(job["response"]["body"], "{\"path\":\"/sync\"}");
}

#[tokio::test]
async fn events_stream_the_life_of_a_job() {
    let target = Target::start().await;
    let server = TestServer::start_with(FAST_LANE);
    target.script("sse", vec![Reply::status(503)]);
    let id = server.submit(json!({"url": target.url("sse")})).await;
    let resp = server
        .http
        .get(server.url(&format!("/api/v1/jobs/{id}/events")))
        .bearer_auth(&server.key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut body = String::new();
    let mut stream = resp.bytes_stream();
    let read = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(chunk) = stream.next().await {
            body.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
            if body.contains("event: succeeded") {
                break;
            }
        }
    });
    read.await.expect("stream ends with the final state");
    let events: Vec<&str> = body
        .lines()
        .filter_map(|l| l.strip_prefix("event: "))
        .collect();
    assert_eq!(events.first(), Some(&"queued"), "{events:?}");
    assert_eq!(
        events.iter().filter(|e| **e == "attempt").count(),
        2,
        "{events:?}"
    );
    assert_eq!(
        events.iter().filter(|e| **e == "dispatching").count(),
        2,
        "{events:?}"
    );
    assert_eq!(events.last(), Some(&"succeeded"), "{events:?}");
    // A late subscriber gets the whole story at once.
    let late = server
        .http
        .get(server.url(&format!("/api/v1/jobs/{id}/events")))
        .bearer_auth(&server.key)
        .send()
        .await
        .unwrap();
    let text = tokio::time::timeout(Duration::from_secs(10), late.text())
        .await
        .unwrap()
        .unwrap();
    let replayed: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("event: "))
        .collect();
    assert_eq!(
        replayed,
        events
            .iter()
            .filter(|e| **e != "position")
            .copied()
            .collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn batch_admits_in_order_with_per_item_errors() {
    let target = Target::start().await;
    let server = TestServer::start_with(FAST_LANE);
    let (s, b) = server
        .post(
            "/api/v1/jobs/batch",
            json!({"jobs": [{"url": target.url("b1")}, {"url": "ftp://x"}, {"url": target.url("b2"), "retryPolicy": {"maxRetries": 1}}]}),
        )
        .await;
    assert_eq!(s, 202, "{b}");
    let r = b["results"].as_array().unwrap();
    assert_eq!(r.len(), 3);
    assert_eq!(r[0]["status"], "queued");
    assert_eq!(r[1]["error"]["field"], "url");
    assert_eq!(r[2]["status"], "queued");
    server
        .wait_final(r[2]["job_id"].as_str().unwrap(), 30)
        .await;
    let (s, e) = server.post("/api/v1/jobs/batch", json!({"jobs": []})).await;
    assert_eq!((s, e["error"]["field"].as_str()), (400, Some("jobs")));
}

#[tokio::test]
async fn lists_are_newest_first_with_cursor() {
    let target = Target::start().await;
    let server = TestServer::start_with(FAST_LANE);
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(
            server
                .submit(json!({"url": target.url("list"), "body": i.to_string()}))
                .await,
        );
    }
    let (_, p1) = server.get("/api/v1/jobs?limit=3").await;
    let got: Vec<_> = p1["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["job_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(got, vec![ids[4].clone(), ids[3].clone(), ids[2].clone()]);
    let cursor = p1["next_cursor"].as_str().unwrap();
    let (_, p2) = server
        .get(&format!("/api/v1/jobs?limit=3&cursor={cursor}"))
        .await;
    let got: Vec<_> = p2["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["job_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(got, vec![ids[1].clone(), ids[0].clone()]);
    assert!(p2["next_cursor"].is_null());
    let (s, e) = server.get("/api/v1/jobs?state=done").await;
    assert_eq!((s, e["error"]["field"].as_str()), (400, Some("state")));
}
