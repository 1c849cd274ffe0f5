//! The API description and the one vocabulary: the served `/openapi.json` is the generated one,
//! the webhook body carries Standard Webhooks' `type` and `timestamp` next to the hosted fields,
//! and what the fuzzer found in the server stays fixed.

use std::time::Duration;

use serde_json::{json, Value};

use crate::support::{Reply, Target, TestServer};

const T: Duration = Duration::from_secs(20);

/// The `n`th webhook body the target's `hook` received, parsed.
async fn hook_body(target: &Target, n: usize) -> Value {
    let got = target.wait_for("hook", n, T).await;
    serde_json::from_str(&got[n - 1].body).expect("webhook body is JSON")
}

#[tokio::test]
async fn webhook_body_says_type_and_timestamp_in_the_views_vocabulary() {
    let s = TestServer::start();
    let target = Target::start().await;
    target.default_reply("refuse", Reply::status(400));
    let hook = json!([{"url": target.url("hook")}]);

    // succeeded: status success, type job.succeeded.
    let ok = s
        .submit(json!({"url": target.url("ok"), "webhooks": hook}))
        .await;
    let view = s.wait_final(&ok, 20).await;
    assert_eq!(view["state"], "succeeded");
    let body = hook_body(&target, 1).await;
    assert_eq!(body["job_id"], ok.as_str());
    assert_eq!(
        (body["status"].as_str(), body["type"].as_str()),
        (Some("success"), Some("job.succeeded")),
        "{body}"
    );
    let completed = body["completed_at"].as_u64().expect("hosted field kept");
    assert_eq!(
        body["timestamp"].as_str(),
        Some(ezt_core::webhook::rfc3339_ms(completed).as_str()),
        "timestamp is completed_at in RFC 3339"
    );
    assert_eq!(Some(completed), view["finished_at"].as_u64());

    // failed (a non-retryable 400): status failed, type job.failed.
    let bad = s
        .submit(json!({"url": target.url("refuse"), "webhooks": hook}))
        .await;
    assert_eq!(s.wait_final(&bad, 20).await["state"], "failed");
    let body = hook_body(&target, 2).await;
    assert_eq!(
        (body["status"].as_str(), body["type"].as_str()),
        (Some("failed"), Some("job.failed")),
        "{body}"
    );
    assert_eq!(body["error"]["code"], "http_status");

    // cancelled: status failed, type job.cancelled.
    let later = s
        .submit(json!({"url": target.url("later"), "webhooks": hook, "retry_at": an_hour_from_now_ms()}))
        .await;
    let (st, v) = s
        .post(&format!("/api/v1/jobs/{later}/cancel"), json!({}))
        .await;
    assert_eq!((st, v["state"].as_str()), (200, Some("cancelled")), "{v}");
    let body = hook_body(&target, 3).await;
    assert_eq!(
        (body["status"].as_str(), body["type"].as_str()),
        (Some("failed"), Some("job.cancelled")),
        "{body}"
    );
}

/// An hour from now, ms since the epoch.
fn an_hour_from_now_ms() -> u64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    now.as_millis() as u64 + 3_600_000
}

#[tokio::test]
async fn served_document_is_the_generated_one() {
    let s = TestServer::start();
    let (st, doc) = s.get("/openapi.json").await;
    assert_eq!(st, 200);
    let committed: Value = serde_json::from_str(include_str!("../../../../openapi.json")).unwrap();
    assert_eq!(
        doc, committed,
        "the binary serves openapi.json as committed"
    );
}

#[tokio::test]
async fn list_refuses_created_after_outside_what_it_documents() {
    // Found by the fuzzer: `created_after` is documented as int64 (0 to 2^63-1), and 2^63 was
    // accepted.
    let s = TestServer::start();
    for bad in ["9223372036854775808", "-1", "x"] {
        let (st, b) = s.get(&format!("/api/v1/jobs?created_after={bad}")).await;
        assert_eq!(
            (st, b["error"]["field"].as_str()),
            (400, Some("created_after")),
            "{bad}: {b}"
        );
    }
    for good in ["0", "9223372036854775807"] {
        let (st, b) = s.get(&format!("/api/v1/jobs?created_after={good}")).await;
        assert_eq!(st, 200, "{good}: {b}");
    }
}
