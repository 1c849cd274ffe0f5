//! Strict input and one error shape (issue 11, items 8 and 9): dedup never merges two upstream
//! credentials, `Idempotency-Key` is honoured, malformed bodies, headers, query strings, routes
//! and methods all answer `{"error": {"code", "field", "message"}}`, secrets are masked and
//! redacted, and an attempt cut off by kill -9 stays in the job's history.

use std::time::Duration;

use reqwest::header::CONTENT_TYPE;
use serde_json::{json, Value};

use crate::support::{Reply, Target, TestServer};

const T: Duration = Duration::from_secs(30);

/// Posts raw bytes with extra headers; answers status, JSON body and the response headers.
async fn raw(
    s: &TestServer,
    method: reqwest::Method,
    path: &str,
    body: &str,
    headers: &[(&str, &str)],
) -> (u16, Value, reqwest::header::HeaderMap) {
    let mut r = s
        .http
        .request(method, s.url(path))
        .bearer_auth(&s.key)
        .header(CONTENT_TYPE, "application/json")
        .body(body.to_string());
    for (n, v) in headers {
        r = r.header(*n, *v);
    }
    let r = r.send().await.expect("request");
    let status = r.status().as_u16();
    let h = r.headers().clone();
    let text = r.text().await.unwrap_or_default();
    let v = serde_json::from_str(&text)
        .unwrap_or_else(|_| panic!("{status} answered non-JSON {text:?} for {path}"));
    (status, v, h)
}

async fn post_raw(s: &TestServer, path: &str, body: &str) -> (u16, Value) {
    let (st, v, _) = raw(s, reqwest::Method::POST, path, body, &[]).await;
    (st, v)
}

fn code_field(v: &Value) -> (Option<&str>, Option<&str>) {
    (v["error"]["code"].as_str(), v["error"]["field"].as_str())
}

async fn job_count(s: &TestServer) -> usize {
    let (st, b) = s.get("/api/v1/jobs?limit=100").await;
    assert_eq!(st, 200, "{b}");
    b["jobs"].as_array().unwrap().len()
}

#[tokio::test]
async fn two_credentials_never_share_a_job() {
    let target = Target::start().await;
    let s = TestServer::start();
    let job = |auth: &str| {
        json!({"url": target.url("c"), "method": "POST", "body": "{\"q\":1}",
               "headers": {"Authorization": auth}, "retry_at": crate::support::in_days(30)})
    };
    let (st_a, a) = s.post("/api/v1/jobs", job("Bearer user-A")).await;
    let (st_b, b) = s.post("/api/v1/jobs", job("Bearer user-B")).await;
    assert_eq!((st_a, st_b), (202, 202), "{a} {b}");
    assert_ne!(a["job_id"], b["job_id"], "user B must not get user A's job");
    assert_ne!(a["idempotent_key"], b["idempotent_key"]);
    // The same credential (header name in any case) is still the same call.
    let (st, again) = s
        .post(
            "/api/v1/jobs",
            json!({"url": target.url("c"), "method": "POST", "body": "{\"q\":1}",
                   "headers": {"authorization": "Bearer user-A"}, "retry_at": crate::support::in_days(30)}),
        )
        .await;
    assert_eq!(
        (st, &again["status"], &again["job_id"]),
        (200, &json!("duplicate"), &a["job_id"])
    );
    // Without credentials the default key still dedups.
    let plain = json!({"url": target.url("p"), "retry_at": crate::support::in_days(30)});
    let (_, p1) = s.post("/api/v1/jobs", plain.clone()).await;
    let (st, p2) = s.post("/api/v1/jobs", plain).await;
    assert_eq!((st, &p2["job_id"]), (200, &p1["job_id"]));
}

#[tokio::test]
async fn idempotency_key_header_is_the_key() {
    let target = Target::start().await;
    let s = TestServer::start();
    let later = crate::support::in_days(30);
    let body = |n: u32| {
        json!({"url": target.url("k"), "body": format!("{n}"), "retry_at": later}).to_string()
    };
    let hdr = [("Idempotency-Key", "order-42")];
    let (st, a, _) = raw(&s, reqwest::Method::POST, "/api/v1/jobs", &body(1), &hdr).await;
    assert_eq!(
        (st, a["idempotent_key"].as_str()),
        (202, Some("order-42")),
        "{a}"
    );
    // Another body under the same header key is the same job.
    let (st, b, _) = raw(&s, reqwest::Method::POST, "/api/v1/jobs", &body(2), &hdr).await;
    assert_eq!(
        (st, &b["status"], &b["job_id"]),
        (200, &json!("duplicate"), &a["job_id"])
    );
    // Both set: the same value is fine, two values are refused.
    let with_key = |k: &str| {
        json!({"url": target.url("k"), "idempotent_key": k, "retry_at": later}).to_string()
    };
    let (st, c, _) = raw(
        &s,
        reqwest::Method::POST,
        "/api/v1/jobs",
        &with_key("order-42"),
        &hdr,
    )
    .await;
    assert_eq!((st, &c["job_id"]), (200, &a["job_id"]), "{c}");
    let (st, d, _) = raw(
        &s,
        reqwest::Method::POST,
        "/api/v1/jobs",
        &with_key("order-43"),
        &hdr,
    )
    .await;
    assert_eq!(
        (st, code_field(&d)),
        (400, (Some("invalid_field"), Some("idempotent_key"))),
        "{d}"
    );
    // The header is checked like the field: too long is refused.
    let long = "x".repeat(300);
    let (st, e, _) = raw(
        &s,
        reqwest::Method::POST,
        "/api/v1/jobs",
        &body(3),
        &[("Idempotency-Key", &long)],
    )
    .await;
    assert_eq!((st, code_field(&e).1), (400, Some("idempotent_key")), "{e}");
    // A batch cannot take one key for many jobs.
    let batch = json!({"jobs": [{"url": target.url("k"), "retry_at": later}]}).to_string();
    let (st, f, _) = raw(
        &s,
        reqwest::Method::POST,
        "/api/v1/jobs/batch",
        &batch,
        &hdr,
    )
    .await;
    assert_eq!(
        (st, code_field(&f)),
        (400, (Some("invalid_field"), Some("Idempotency-Key"))),
        "{f}"
    );
    assert_eq!(job_count(&s).await, 1, "nothing else was stored");
}

#[tokio::test]
async fn malformed_bodies_are_refused_and_nothing_runs() {
    let target = Target::start().await;
    let s = TestServer::start();
    let url = target.url("never");
    for (path, body, code, field) in [
        // A positional array used to be accepted as a job and run.
        (
            "/api/v1/jobs",
            format!(r#"["{url}","GET"]"#),
            "invalid_json",
            None,
        ),
        (
            "/api/v1/jobs",
            format!(r#"{{"url":"{url}"}} trailing"#),
            "invalid_json",
            None,
        ),
        (
            "/api/v1/jobs",
            format!(r#"{{"url":"{url}"}}{{"url":"{url}"}}"#),
            "invalid_json",
            None,
        ),
        (
            "/api/v1/jobs",
            format!(r#"{{"url":"{url}","retry_policy":[1,2]}}"#),
            "invalid_field",
            Some("retry_policy"),
        ),
        (
            "/api/v1/jobs",
            format!(r#"{{"url":"{url}","webhooks":[{{"url":"{url}","votes":1}}]}}"#),
            "unknown_field",
            Some("webhooks[0].votes"),
        ),
        (
            "/api/v1/jobs",
            format!(r#"{{"url":"{url}","headers":{{"X-A":"1","x-a":"2"}}}}"#),
            "invalid_field",
            Some("headers.x-a"),
        ),
        (
            "/api/v1/jobs",
            format!(r#"{{"url":"{url}","headers":{{"X-A":"1","X-A":"2"}}}}"#),
            "invalid_field",
            Some("headers.X-A"),
        ),
        (
            "/api/v1/jobs",
            format!(r#"{{"url":"{url}","headers":{{"X-V":"a\u0001b"}}}}"#),
            "invalid_field",
            Some("headers.X-V"),
        ),
        (
            "/api/v1/jobs",
            format!(r#"{{"url":"{url}","headers":{{"X V":"a"}}}}"#),
            "invalid_field",
            Some("headers.X V"),
        ),
        (
            "/api/v1/jobs/batch",
            format!(r#"{{"jobs":[{{"url":"{url}"}}],"atomic":true}}"#),
            "unknown_field",
            Some("atomic"),
        ),
        (
            "/api/v1/jobs/batch",
            format!(r#"[[{{"url":"{url}"}}]]"#),
            "invalid_json",
            None,
        ),
        (
            "/api/v1/jobs/batch",
            format!(r#"{{"jobs":[{{"url":"{url}"}}]}} x"#),
            "invalid_json",
            None,
        ),
        (
            "/api/v1/webhook-secrets",
            r#"{"primary_secret":"0123456789abcdef","tertiary":"x"}"#.into(),
            "unknown_field",
            Some("tertiary"),
        ),
        (
            "/api/v1/webhook-secrets",
            r#"["0123456789abcdef"]"#.into(),
            "invalid_json",
            None,
        ),
        (
            "/api/v1/webhook-secrets",
            r#"{"primary_secret":"0123456789abcdef"} {}"#.into(),
            "invalid_json",
            None,
        ),
    ] {
        let (st, b) = post_raw(&s, path, &body).await;
        assert_eq!(
            (st, code_field(&b)),
            (400, (Some(code), field)),
            "{path} {body}: {b}"
        );
    }
    // A batch element that is not an object is that element's error.
    let (st, b) = post_raw(
        &s,
        "/api/v1/jobs/batch",
        &format!(r#"{{"jobs":[["{url}"]]}}"#),
    )
    .await;
    assert_eq!(
        (st, b["results"][0]["error"]["code"].as_str()),
        (202, Some("invalid_json")),
        "{b}"
    );
    assert_eq!(job_count(&s).await, 0, "nothing was stored");
    let (st, _) = s.get("/api/v1/webhook-secrets").await;
    assert_eq!(st, 404, "no secret was stored");
    assert!(target.arrivals("never").is_empty(), "nothing was called");
}

#[tokio::test]
async fn query_route_and_method_errors_are_json() {
    let s = TestServer::start();
    for (path, field) in [
        ("/api/v1/jobs?limit=abc", "limit"),
        ("/api/v1/jobs?created_after=x", "created_after"),
        ("/api/v1/jobs?limit=-1", "limit"),
        // Both spellings of the wait are checked, also when `timeout` wins (found by the fuzz).
        (
            "/api/v1/jobs/job_01M8NHNMKRPPD7Y403JGW1YCKN/wait?timeout=1ms&wait=nope",
            "wait",
        ),
    ] {
        let (st, b, h) = raw(&s, reqwest::Method::GET, path, "", &[]).await;
        assert_eq!(
            (st, code_field(&b)),
            (400, (Some("invalid_field"), Some(field))),
            "{path}: {b}"
        );
        assert!(h[CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("application/json"));
    }
    let (st, b, _) = raw(&s, reqwest::Method::GET, "/api/v1/nope", "", &[]).await;
    assert_eq!((st, code_field(&b).0), (404, Some("not_found")), "{b}");
    let (st, b, _) = raw(&s, reqwest::Method::GET, "/api/v1/jobs/%FF%FE", "", &[]).await;
    assert_eq!(
        (st, code_field(&b)),
        (400, (Some("invalid_field"), Some("path"))),
        "{b}"
    );
    let (st, b, _) = raw(&s, reqwest::Method::GET, "/nope/at/all", "", &[]).await;
    assert_eq!((st, code_field(&b).0), (404, Some("not_found")), "{b}");
    for (method, path) in [
        (reqwest::Method::PUT, "/api/v1/jobs"),
        (reqwest::Method::DELETE, "/api/v1/jobs/batch"),
        (reqwest::Method::PATCH, "/api/v1/webhook-secrets"),
    ] {
        let (st, b, h) = raw(&s, method.clone(), path, "{}", &[]).await;
        assert_eq!(
            (st, code_field(&b).0),
            (405, Some("method_not_allowed")),
            "{method} {path}: {b}"
        );
        assert!(
            h.contains_key("allow"),
            "{method} {path}: Allow header: {h:?}"
        );
    }
    let (_, _, h) = raw(&s, reqwest::Method::PUT, "/api/v1/jobs", "{}", &[]).await;
    let allow = h["allow"].to_str().unwrap();
    assert!(allow.contains("POST") && allow.contains("GET"), "{allow}");
}

#[tokio::test]
async fn bearer_scheme_is_case_insensitive() {
    let s = TestServer::start();
    for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
        let r = s
            .http
            .get(s.url("/api/v1/jobs"))
            .header("Authorization", format!("{scheme} {}", s.key))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200, "{scheme}");
    }
    let r = s
        .http
        .get(s.url("/api/v1/jobs"))
        .header("Authorization", format!("Basic {}", s.key))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
}

#[tokio::test]
async fn quorum_zero_from_a_view_is_accepted() {
    let target = Target::start().await;
    let s = TestServer::start();
    let later = crate::support::in_days(30);
    let id = s
        .submit(json!({"url": target.url("q"), "retry_at": later, "webhooks": [{"url": target.url("h"), "has_quorum_vote": false}]}))
        .await;
    let (_, view) = s.get(&format!("/api/v1/jobs/{id}")).await;
    assert_eq!(view["spec"]["webhook_quorum"], 0, "{view}");
    let (st, b) = s
        .post(
            "/api/v1/jobs",
            json!({"url": target.url("q2"), "retry_at": later, "webhooks": view["spec"]["webhooks"], "webhook_quorum": view["spec"]["webhook_quorum"]}),
        )
        .await;
    assert_eq!(st, 202, "{b}");
    let (st, b) = s
        .post(
            "/api/v1/jobs",
            json!({"url": target.url("q3"), "retry_at": later, "webhook_quorum": 0}),
        )
        .await;
    assert_eq!(st, 202, "no webhooks, quorum 0: {b}");
    // With a voting webhook, 0 would void its vote.
    let (st, b) = s
        .post("/api/v1/jobs", json!({"url": target.url("q4"), "webhooks": [{"url": target.url("h")}], "webhook_quorum": 0}))
        .await;
    assert_eq!((st, code_field(&b).1), (400, Some("webhook_quorum")), "{b}");
}

#[tokio::test]
async fn secrets_are_masked_to_a_quarter_and_never_blank() {
    let s = TestServer::start();
    let (st, b) = s
        .post(
            "/api/v1/webhook-secrets",
            json!({"primary_secret": " ".repeat(16)}),
        )
        .await;
    assert_eq!(
        (st, code_field(&b)),
        (400, (Some("invalid_field"), Some("primary_secret"))),
        "{b}"
    );
    let (st, b) = s
        .post(
            "/api/v1/webhook-secrets",
            json!({"primary_secret": "0123456789abcdef"}),
        )
        .await;
    assert_eq!(
        (st, b["primary_secret"].as_str()),
        (201, Some("****cdef")),
        "{b}"
    );
    let (st, b) = s
        .post(
            "/api/v1/webhook-secrets/rotate",
            json!({"new_secret": "\t".repeat(16)}),
        )
        .await;
    assert_eq!((st, code_field(&b).1), (400, Some("new_secret")), "{b}");
}

#[tokio::test]
async fn views_redact_secret_looking_headers() {
    let target = Target::start().await;
    let s = TestServer::start();
    let id = s
        .submit(json!({"url": target.url("r"), "retry_at": crate::support::in_days(30), "headers": {
            "Proxy-Authorization": "Basic cHJveHk=", "X-Auth-Token": "tok-1", "X-Session": "sess-1",
            "X-Client-Secret": "cs-1", "X-Signing-Key": "sk-1", "Cookie": "c=1", "Accept": "text/plain"}}))
        .await;
    let (_, view) = s.get(&format!("/api/v1/jobs/{id}")).await;
    let text = view.to_string();
    for secret in ["cHJveHk=", "tok-1", "sess-1", "cs-1", "sk-1", "c=1"] {
        assert!(!text.contains(secret), "{secret} shown: {view}");
    }
    assert!(
        text.contains("text/plain"),
        "ordinary headers stay visible: {view}"
    );
}

#[tokio::test]
async fn kill_9_mid_call_leaves_an_interrupted_attempt() {
    let target = Target::start().await;
    // The first call hangs far longer than the test; after the restart the target answers.
    target.script(
        "slow",
        vec![Reply {
            status: 200,
            headers: vec![],
            delay_ms: 600_000,
        }],
    );
    let mut s = TestServer::start();
    let dir = s.dir.clone();
    let key = s.key.clone();
    let id = s.submit(json!({"url": target.url("slow")})).await;
    target.wait_for("slow", 1, T).await;
    s.kill9();
    let s2 = TestServer::spawn(&dir, "", Some(key));
    let view = s2.wait_final(&id, 30).await;
    assert_eq!(view["state"], "succeeded", "{view:#}");
    let attempts = view["attempts"].as_array().unwrap();
    let got: Vec<(u64, &str)> = attempts
        .iter()
        .map(|a| (a["n"].as_u64().unwrap(), a["decision"].as_str().unwrap()))
        .collect();
    assert_eq!(got, vec![(1, "interrupted"), (2, "success")], "{view:#}");
    assert!(attempts[0]["status_code"].is_null());
    assert!(attempts[0]["error"]
        .as_str()
        .unwrap()
        .contains("interrupted"));
    assert_eq!(target.arrivals("slow").len(), 2);
    drop(s2);
    drop(s);
}
