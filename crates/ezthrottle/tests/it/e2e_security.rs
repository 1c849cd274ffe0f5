//! Auth, tenant isolation, SSRF, size limits, and the operations endpoints.

use serde_json::json;

use crate::support::{cli, Target, TestServer};

#[tokio::test]
async fn bad_or_missing_keys_are_401() {
    let server = TestServer::start();
    for key in [
        "",
        "nope",
        "ezt_live_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    ] {
        let (s, b) = server.get_as(key, "/api/v1/jobs").await;
        assert_eq!(
            (s, b["error"]["code"].as_str()),
            (401, Some("unauthorized")),
            "key {key:?}"
        );
    }
}

#[tokio::test]
async fn tenants_cannot_see_each_other() {
    let target = Target::start().await;
    let server = TestServer::start();
    cli(
        &server.dir,
        &["tenants", "create", "other", "--tier", "free"],
    );
    let other = cli(&server.dir, &["keys", "create", "--tenant", "other"])
        .trim()
        .to_string();
    let id = server
        .submit(json!({"url": target.url("mine"), "retry_at": crate::support::in_days(30)}))
        .await;
    let (s, b) = server.get_as(&other, &format!("/api/v1/jobs/{id}")).await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (404, Some("not_found")),
        "another tenant's job is 404, not 403"
    );
    for path in ["wait?timeout=1ms", "events"] {
        let (s, _) = server
            .get_as(&other, &format!("/api/v1/jobs/{id}/{path}"))
            .await;
        assert_eq!(s, 404, "{path}");
    }
    for path in ["cancel", "retry"] {
        let (s, _) = server
            .post_as(&other, &format!("/api/v1/jobs/{id}/{path}"), json!({}))
            .await;
        assert_eq!(s, 404, "{path}");
    }
    let (_, list) = server.get_as(&other, "/api/v1/jobs").await;
    assert_eq!(
        list["jobs"].as_array().unwrap().len(),
        0,
        "lists are per tenant"
    );
    let (_, mine) = server.get("/api/v1/jobs").await;
    assert_eq!(mine["jobs"].as_array().unwrap().len(), 1);
    let (s, _) = server.get(&format!("/api/v1/jobs/{id}")).await;
    assert_eq!(s, 200);
}

#[tokio::test]
async fn every_ssrf_form_is_denied_with_its_class() {
    let server = TestServer::start();
    let cases = [
        ("http://127.0.0.2/", "loopback"),
        ("http://2130706434/", "loopback"),
        ("http://0x7f.0.0.2/", "loopback"),
        ("http://10.0.0.1/", "private"),
        ("http://172.16.5.4/", "private"),
        ("http://192.168.1.1/", "private"),
        ("http://169.254.169.254/latest/meta-data", "link_local"),
        ("http://100.64.0.1/", "cgnat"),
        ("http://0.0.0.0/", "unspecified"),
        ("http://224.0.0.1/", "multicast"),
        ("http://[::1]/", "loopback"),
        ("http://[fd00:ec2::254]/", "unique_local"),
        ("http://[fe80::1]/", "link_local"),
        ("http://[::ffff:10.0.0.1]/", "ipv4_mapped"),
        ("http://[::ffff:169.254.169.254]/", "ipv4_mapped"),
        ("http://[::7f00:1]/", "ipv4_compatible"),
        ("http://[64:ff9b::7f00:1]/", "nat64"),
        ("http://[2002:7f00:1::]/", "6to4"),
        ("http://[ff02::1]/", "multicast"),
    ];
    for (url, class) in cases {
        let (s, b) = server.post("/api/v1/jobs", json!({ "url": url })).await;
        assert_eq!(s, 422, "{url}: {b}");
        assert_eq!(b["error"]["code"], "ssrf_denied", "{url}");
        assert_eq!(b["error"]["field"], "url", "{url}");
        let msg = b["error"]["message"].as_str().unwrap();
        assert!(
            msg.contains(class),
            "{url}: message {msg:?} should name {class}"
        );
    }
    for url in [
        "ftp://example.com/",
        "http://user:pw@example.com/",
        "http://",
        "not a url",
    ] {
        let (s, b) = server.post("/api/v1/jobs", json!({ "url": url })).await;
        assert_eq!(
            (s, b["error"]["field"].as_str()),
            (400, Some("url")),
            "{url}: {b}"
        );
    }
}

#[tokio::test]
async fn oversize_requests_are_413() {
    let target = Target::start().await;
    let server = TestServer::start();
    // A request announcing more than the limit is refused from its headers alone, before any
    // of the body is read. The body is not sent: a client still writing a megabyte when the
    // server answers and closes may see its write fail (EPIPE) before it reads the answer,
    // which made this test flaky under load with a real HTTP client.
    let (status, answer) = headers_only_post(&server, 1024 * 1024 + 10).await;
    assert!(status.starts_with("HTTP/1.1 413"), "{status}\n{answer}");
    let b: serde_json::Value = serde_json::from_str(&answer).unwrap_or_default();
    assert_eq!(b["error"]["code"], "payload_too_large", "{answer}");
    let big_job = "y".repeat(300 * 1024);
    let (s, b) = server
        .post(
            "/api/v1/jobs",
            json!({"url": target.url("big"), "body": big_job}),
        )
        .await;
    assert_eq!(
        (s, b["error"]["field"].as_str()),
        (413, Some("body")),
        "{b}"
    );
    assert!(target.arrivals("big").is_empty());
}

/// Sends `POST /api/v1/jobs` headers announcing `len` bytes of JSON and no body; the status line
/// and the body of the answer.
async fn headers_only_post(server: &TestServer, len: usize) -> (String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let head = format!(
        "POST /api/v1/jobs HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: {len}\r\n\r\n",
        server.addr, server.key
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    let read = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        let mut buf = [0u8; 4096];
        loop {
            match conn.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => raw.extend_from_slice(&buf[..n]),
            }
            if let Some(at) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
                let headers = String::from_utf8_lossy(&raw[..at]).to_ascii_lowercase();
                let want = headers
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse::<usize>().ok());
                if want.is_some_and(|w| raw.len() >= at + 4 + w) {
                    break;
                }
            }
        }
    })
    .await;
    assert!(read.is_ok(), "no answer within 10 s");
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (
        head.lines().next().unwrap_or("").to_string(),
        body.to_string(),
    )
}

#[tokio::test]
async fn bad_fields_are_named() {
    let server = TestServer::start();
    let url = "http://127.0.0.1:9/x";
    let cases = [
        (
            json!({"url": url, "retry_policy": {"max_retries": 101}}),
            400,
            "invalid_field",
            "retry_policy.max_retries",
        ),
        (
            json!({"url": url, "webhook_url": "x"}),
            400,
            "unknown_field",
            "webhook_url",
        ),
        (json!({"method": "GET"}), 400, "missing_field", "url"),
        (
            json!({"url": url, "headers": {"X": 5}}),
            400,
            "invalid_field",
            "headers.X",
        ),
        (
            json!({"url": url, "timeout": "soon"}),
            400,
            "invalid_field",
            "timeout",
        ),
        (
            json!({"url": url, "webhooks": [{"url": "http://10.0.0.1/h"}]}),
            422,
            "ssrf_denied",
            "webhooks[0].url",
        ),
        (
            json!({"url": url, "on_success": {"url": "http://10.0.0.1/h"}}),
            422,
            "ssrf_denied",
            "on_success.url",
        ),
        (
            json!({"url": url, "execution_mode": "fanout"}),
            422,
            "not_supported",
            "execution_mode",
        ),
    ];
    for (body, status, code, field) in cases {
        let (s, b) = server.post("/api/v1/jobs", body.clone()).await;
        assert_eq!(
            (s, b["error"]["code"].as_str(), b["error"]["field"].as_str()),
            (status, Some(code), Some(field)),
            "{body}: {b}"
        );
    }
    let r = server
        .http
        .post(server.url("/api/v1/jobs"))
        .bearer_auth(&server.key)
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["error"]["code"],
        "invalid_json"
    );
}

#[tokio::test]
async fn operations_endpoints_answer() {
    let target = Target::start().await;
    let server = TestServer::start();
    let id = server.submit(json!({"url": target.url("m")})).await;
    server.wait_final(&id, 20).await;
    let h = reqwest::get(server.url("/healthz")).await.unwrap();
    assert_eq!(h.status(), 200);
    let r = reqwest::get(server.url("/readyz")).await.unwrap();
    assert_eq!(r.status(), 200);
    let m = reqwest::get(server.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for needle in [
        "ezthrottle_jobs{state=\"succeeded\"} 1",
        "ezthrottle_attempts_total{outcome=\"success\"} 1",
        "ezthrottle_admission_seconds_count 1",
        "ezthrottle_lane_queue_depth{lane=\"127.0.0.1:",
        "ezthrottle_lane_rate{lane=\"127.0.0.1:",
    ] {
        assert!(m.contains(needle), "metrics lack {needle:?}:\n{m}");
    }
    let doc: serde_json::Value = reqwest::get(server.url("/openapi.json"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        doc["paths"]["/api/v1/jobs"]["post"].is_object(),
        "openapi has the submit path"
    );
    let log = server.logs();
    assert!(
        log.lines().any(|l| l.contains(&id) && l.contains("lane")),
        "job log lines carry job id and lane"
    );
}
