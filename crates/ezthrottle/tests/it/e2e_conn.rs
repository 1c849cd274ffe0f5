//! Bounded subscriptions and connections: waiters leave nothing behind and are capped per
//! tenant; slow, idle and oversized requests are cut off; idle sockets and a low file limit
//! cannot starve `/healthz` or make a due job fail; every request has an id.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{in_days, serve_args, Reply, Target, TestServer, BIN};

const FAST_LANE: &str = "[lanes.default]\nrate = 100.0\nburst = 5\nmax_in_flight = 8\n";

/// The value of an unlabelled series in `/metrics`.
async fn gauge(server: &TestServer, name: &str) -> u64 {
    let (s, text) = server.get_text("/metrics").await;
    assert_eq!(s, 200);
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .unwrap_or_else(|| panic!("no {name} in /metrics:\n{text}"))
        .trim()
        .parse()
        .unwrap()
}

/// Reads until the server closes the connection; the bytes read, or `None` if still open
/// after `within`.
async fn read_until_closed(s: &mut TcpStream, within: Duration) -> Option<Vec<u8>> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    tokio::time::timeout(within, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .ok()
    .map(|()| got)
}

#[tokio::test]
async fn waits_on_unknown_foreign_and_final_jobs_leave_no_subscription() {
    let target = Target::start().await;
    let server = TestServer::start_with(FAST_LANE);
    let done = server.submit(json!({"url": target.url("ok")})).await;
    server.wait_final(&done, 30).await;
    let pending = server
        .submit(json!({"url": target.url("later"), "retry_at": in_days(1)}))
        .await;
    let mut tasks = Vec::new();
    for i in 0..200u32 {
        let (http, key) = (server.http.clone(), server.key.clone());
        let path = match i % 4 {
            0 => "/api/v1/jobs/job_01ARZ3NDEKTSV4RRFFQ69G5FAV/wait?timeout=1ms".to_string(),
            1 => format!("/api/v1/jobs/{done}/wait?timeout=1ms"),
            2 => format!("/api/v1/jobs/{done}/events"),
            _ => format!("/api/v1/jobs/{pending}/wait?timeout=1ms"),
        };
        let url = server.url(&path);
        tasks.push(tokio::spawn(async move {
            let r = http.get(url).bearer_auth(key).send().await.unwrap();
            let status = r.status().as_u16();
            let _ = r.bytes().await;
            status
        }));
    }
    for t in tasks {
        assert!([200, 202, 404].contains(&t.await.unwrap()));
    }
    // A duplicate submission with ?wait= subscribes before admission and must let go.
    let (s, b) = server
        .post(
            "/api/v1/jobs?wait=1s",
            json!({"url": target.url("ok"), "idempotent_key": "same"}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let (s, b) = server
        .post(
            "/api/v1/jobs?wait=1s",
            json!({"url": target.url("ok"), "idempotent_key": "same"}),
        )
        .await;
    assert_eq!((s, b["status"].as_str()), (200, Some("duplicate")), "{b}");
    assert_eq!(gauge(&server, "ezthrottle_event_subscriptions").await, 0);
    assert_eq!(gauge(&server, "ezthrottle_waiters").await, 0);
}

#[tokio::test]
async fn waiters_over_the_tenant_cap_get_429_and_nothing_is_stored() {
    let target = Target::start().await;
    let server = TestServer::start_with(&format!(
        "{FAST_LANE}[server]\nmax_waiters_per_tenant = 2\n"
    ));
    let id = server
        .submit(json!({"url": target.url("later"), "retry_at": in_days(1)}))
        .await;
    let open = || async {
        server
            .http
            .get(server.url(&format!("/api/v1/jobs/{id}/events")))
            .bearer_auth(&server.key)
            .send()
            .await
            .unwrap()
    };
    // Response headers come after the subscription: both slots are taken once they arrive.
    let (a, b) = (open().await, open().await);
    assert_eq!((a.status().as_u16(), b.status().as_u16()), (200, 200));
    assert_eq!(gauge(&server, "ezthrottle_waiters").await, 2);
    let third = open().await;
    assert_eq!(third.status().as_u16(), 429);
    assert_eq!(third.headers()["retry-after"], "1");
    let body: serde_json::Value = third.json().await.unwrap();
    assert_eq!(body["error"]["code"], "too_many_waiters", "{body}");
    let (s, b) = server
        .get(&format!("/api/v1/jobs/{id}/wait?timeout=5s"))
        .await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (429, Some("too_many_waiters"))
    );
    let (s, _) = server
        .post(
            "/api/v1/jobs?wait=5s",
            json!({"url": target.url("refused")}),
        )
        .await;
    assert_eq!(s, 429);
    let (_, list) = server.get("/api/v1/jobs").await;
    assert_eq!(
        list["jobs"].as_array().unwrap().len(),
        1,
        "a refused ?wait= submission stores nothing: {list}"
    );
    // Waits on a final or unknown job take no slot.
    let (s, _) = server
        .get("/api/v1/jobs/job_01ARZ3NDEKTSV4RRFFQ69G5FAV/wait?timeout=1ms")
        .await;
    assert_eq!(s, 404);
    // Closing a stream gives its slot back (the server notices within its 2 s position tick).
    drop(a);
    let deadline = Instant::now() + Duration::from_secs(30);
    while gauge(&server, "ezthrottle_waiters").await > 1 {
        assert!(Instant::now() < deadline, "the closed stream kept its slot");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (s, _) = server
        .get(&format!("/api/v1/jobs/{id}/wait?timeout=1ms"))
        .await;
    assert_eq!(s, 202);
    drop(b);
}

#[tokio::test]
async fn half_sent_headers_and_idle_connections_are_closed() {
    let server = TestServer::start_with(
        "[server]\nheader_read_timeout_ms = 300\nkeep_alive_timeout_ms = 600\n",
    );
    let within = Duration::from_secs(10);
    // Slowloris: headers never finished, bytes trickling in.
    let mut slow = TcpStream::connect(server.addr).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let t0 = Instant::now();
    let trickle = async {
        for _ in 0..20 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if slow.write_all(b"X-A: b\r\n").await.is_err() {
                break;
            }
        }
    };
    trickle.await;
    assert!(
        read_until_closed(&mut slow, within).await.is_some(),
        "half-sent headers kept the connection open"
    );
    assert!(t0.elapsed() < within);
    // Never a byte: closed after the idle timeout.
    let mut silent = TcpStream::connect(server.addr).await.unwrap();
    assert!(read_until_closed(&mut silent, within).await.is_some());
    // Kept alive after an answer, then idle: closed.
    let mut kept = TcpStream::connect(server.addr).await.unwrap();
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let got = read_until_closed(&mut kept, within)
        .await
        .expect("idle keep-alive connection closed");
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
}

#[tokio::test]
async fn half_sent_body_gets_408_and_huge_content_length_413_at_once() {
    let server = TestServer::start_with("[server]\nrequest_body_timeout_ms = 500\n");
    let head = |len: &str| {
        format!(
            "POST /api/v1/jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: {len}\r\n\r\n",
            server.key
        )
    };
    let mut half = TcpStream::connect(server.addr).await.unwrap();
    half.write_all(head("100").as_bytes()).await.unwrap();
    half.write_all(b"{\"url\":").await.unwrap();
    let got = read_until_closed(&mut half, Duration::from_secs(10))
        .await
        .expect("a half-sent body was given up on");
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("request_timeout"), "{text}");

    let mut huge = TcpStream::connect(server.addr).await.unwrap();
    huge.write_all(head("10000000000").as_bytes())
        .await
        .unwrap();
    let t0 = Instant::now();
    let got = read_until_closed(&mut huge, Duration::from_secs(10))
        .await
        .expect("answered and closed");
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    assert!(text.contains("payload_too_large"), "{text}");
    assert!(
        t0.elapsed() < Duration::from_secs(2),
        "413 must not wait for the body ({:?})",
        t0.elapsed()
    );
}

/// Starts the server under `ulimit -n {nofile}` (soft and hard) through a shell.
fn spawn_with_fd_limit(dir: &Path, config: &str, nofile: u32) -> TestServer {
    let mut cmd = Command::new("bash");
    cmd.arg("-c")
        .arg(format!("ulimit -n {nofile} && exec \"$0\" \"$@\""))
        .arg(BIN)
        .args(serve_args(dir, config));
    TestServer::spawn_command(dir, cmd, None)
}

#[tokio::test]
async fn idle_connections_beyond_the_fd_limit_starve_neither_healthz_nor_jobs() {
    let target = Target::start().await;
    target.default_reply("ok", Reply::status(200));
    let tmp = tempfile::tempdir().unwrap();
    // 256 descriptors, of which the default reserve keeps 256: the cap falls to 64.
    let server = spawn_with_fd_limit(tmp.path(), FAST_LANE, 256);
    let mut idle = Vec::new();
    for _ in 0..300 {
        if let Ok(s) = TcpStream::connect(server.addr).await {
            idle.push(s);
        }
    }
    for _ in 0..5 {
        let t0 = Instant::now();
        let (s, body) = tokio::time::timeout(Duration::from_secs(5), server.get_text("/healthz"))
            .await
            .expect("healthz answered within 5 s");
        assert_eq!(s, 200, "{body}");
        assert!(
            t0.elapsed() < Duration::from_secs(2),
            "healthz took {:?}",
            t0.elapsed()
        );
    }
    let jobs = async {
        let mut ids = Vec::new();
        for i in 0..20 {
            ids.push(
                server
                    .submit(json!({"url": target.url("ok"), "idempotent_key": format!("fd-{i}")}))
                    .await,
            );
        }
        for id in &ids {
            let job = server.wait_final(id, 30).await;
            assert_eq!(job["state"], "succeeded", "{job}");
        }
    };
    tokio::time::timeout(Duration::from_secs(60), jobs)
        .await
        .expect("every due job ran");
    let log = server.logs();
    assert!(log.contains("max_connections=64"), "{log}");
    drop(idle);
}

#[tokio::test]
async fn every_request_has_an_id_echoed_and_logged() {
    let target = Target::start().await;
    let server = TestServer::start_with(FAST_LANE);
    let id = server
        .submit(json!({"url": target.url("later"), "retry_at": in_days(1)}))
        .await;
    let r = server
        .http
        .post(server.url(&format!("/api/v1/jobs/{id}/cancel")))
        .bearer_auth(&server.key)
        .header("X-Request-Id", "trace-me-42")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.headers()["x-request-id"], "trace-me-42");
    let mut seen = std::collections::HashSet::new();
    for bad in [None, Some("has space"), Some("")] {
        let mut req = server.http.get(server.url("/healthz"));
        if let Some(v) = bad {
            req = req.header("X-Request-Id", v);
        }
        let r = req.send().await.unwrap();
        let got = r.headers()["x-request-id"].to_str().unwrap().to_string();
        assert!(got.starts_with("req_") && got.len() > 8, "{got}");
        assert!(seen.insert(got), "ids are unique");
    }
    let (s, _) = server.get("/api/v1/no-such-route").await;
    assert_eq!(s, 404);
    // The cancel's log line carries the request id (the log is written by a thread: await it).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let log = server.logs();
        if log
            .lines()
            .any(|l| l.contains("job cancelled") && l.contains("trace-me-42"))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no request id in the log:\n{log}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
