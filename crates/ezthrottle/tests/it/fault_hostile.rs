//! Hostile targets, raw TCP: one trickles its body at 1 byte/s, one announces and streams a
//! 1 GiB body, one sends 10,000 headers. Each attempt ends with a clear, recorded outcome; the
//! server's memory stays bounded and it keeps serving.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::fault_common::{record, rss_kib};
use crate::support::{Target, TestServer};

const ATTEMPT_TIMEOUT_MS: u64 = 1500;
const MAX_RESPONSE_BYTES: usize = 64 * 1024;
const RSS_LIMIT_KIB: u64 = 200 * 1024;

fn config() -> String {
    format!(
        "[executor]\nconnect_timeout_ms = 1000\nattempt_timeout_ms = {ATTEMPT_TIMEOUT_MS}\nmax_response_bytes = {MAX_RESPONSE_BYTES}\n"
    )
}

#[derive(Default)]
struct Stats {
    connections: AtomicUsize,
    bytes_sent: AtomicU64,
}

/// Accepts connections on 127.0.0.1; for each, reads the request head and hands the stream to
/// `behave`, which answers however it likes and returns the bytes it wrote.
async fn raw_target<F, Fut>(behave: F) -> (SocketAddr, Arc<Stats>)
where
    F: Fn(TcpStream) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = u64> + Send + 'static,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stats = Arc::new(Stats::default());
    let st = stats.clone();
    let behave = Arc::new(behave);
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            st.connections.fetch_add(1, Ordering::SeqCst);
            let (st, behave) = (st.clone(), behave.clone());
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 65536 {
                    match sock.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let sent = behave(sock).await;
                st.bytes_sent.fetch_add(sent, Ordering::SeqCst);
            });
        }
    });
    (addr, stats)
}

async fn submit_and_wait(server: &TestServer, addr: SocketAddr, max_retries: u32) -> Value {
    let id = server
        .submit(json!({"url": format!("http://{addr}/hostile"),
                       "retry_policy": {"max_retries": max_retries}}))
        .await;
    server.wait_final(&id, 60).await
}

/// The server still serves and still calls a well-behaved target after the hostile one.
async fn assert_server_fine(server: &TestServer) -> u64 {
    assert_eq!(server.get("/healthz").await.0, 200);
    let good = Target::start().await;
    let id = server.submit(json!({"url": good.url("fine")})).await;
    let v = server.wait_final(&id, 30).await;
    assert_eq!(v["state"], "succeeded", "{v}");
    let (peak, _) = rss_kib(server.child.id());
    assert!(
        peak < RSS_LIMIT_KIB,
        "server peak RSS {peak} KiB over {RSS_LIMIT_KIB} KiB"
    );
    peak
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_hostile_trickling_target_times_out_and_retries() {
    let (addr, stats) = raw_target(|mut s| async move {
        // A prompt 200 head, then the body at one byte per second (the hostile part).
        let head = b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n";
        if s.write_all(head).await.is_err() {
            return 0;
        }
        let mut sent = head.len() as u64;
        for _ in 0..1000 {
            if s.write_all(b"a").await.is_err() || s.flush().await.is_err() {
                break;
            }
            sent += 1;
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        sent
    })
    .await;
    let server = TestServer::start_with(&config());
    let v = submit_and_wait(&server, addr, 1).await;
    assert_eq!(
        v["state"], "failed",
        "a 200 head with an unfinished body is not a success: {v}"
    );
    assert_eq!(v["error"]["code"], "retries_exhausted", "{v}");
    let attempts = v["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2, "one retry, per policy: {v}");
    for a in attempts {
        let err = a["error"].as_str().unwrap_or_default();
        assert!(err.starts_with("timeout"), "recorded as a timeout: {a}");
        let ms = a["latency_ms"].as_u64().unwrap();
        assert!(
            (ATTEMPT_TIMEOUT_MS - 50..ATTEMPT_TIMEOUT_MS + 1500).contains(&ms),
            "the attempt ends at the attempt timeout ({ATTEMPT_TIMEOUT_MS} ms), took {ms}: {a}"
        );
    }
    assert_eq!(attempts[0]["decision"], "retry");
    assert_eq!(stats.connections.load(Ordering::SeqCst), 2);
    let peak = assert_server_fine(&server).await;
    record(
        "hostile_trickle",
        json!({"attempts": attempts.len(), "state": v["state"], "peak_rss_kib": peak,
               "latency_ms": attempts.iter().map(|a| a["latency_ms"].clone()).collect::<Vec<_>>()}),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_hostile_1gib_body_is_capped_and_memory_stays_bounded() {
    const GIB: u64 = 1 << 30;
    let (addr, stats) = raw_target(|mut s| async move {
        let head =
            format!("HTTP/1.1 200 OK\r\nContent-Length: {GIB}\r\nContent-Type: text/plain\r\n\r\n");
        if s.write_all(head.as_bytes()).await.is_err() {
            return 0;
        }
        let chunk = vec![b'a'; 64 * 1024];
        let mut sent = 0u64;
        while sent < GIB {
            if s.write_all(&chunk).await.is_err() {
                break; // the client stopped reading and closed
            }
            sent += chunk.len() as u64;
        }
        sent
    })
    .await;
    let server = TestServer::start_with(&config());
    let v = submit_and_wait(&server, addr, 0).await;
    assert_eq!(v["state"], "succeeded", "{v}");
    let resp = &v["response"];
    assert_eq!(resp["status_code"], 200);
    assert_eq!(resp["body_truncated"], true, "{resp}");
    assert_eq!(
        resp["body"].as_str().unwrap().len(),
        MAX_RESPONSE_BYTES,
        "captured body capped at max_response_bytes"
    );
    let peak = assert_server_fine(&server).await;
    let sent = stats.bytes_sent.load(Ordering::SeqCst);
    record(
        "hostile_1gib_body",
        json!({"captured_bytes": MAX_RESPONSE_BYTES, "body_truncated": true,
               "target_bytes_sent": sent, "peak_rss_kib": peak}),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_hostile_10000_headers_end_the_attempt_with_an_error() {
    let (addr, _stats) = raw_target(|mut s| async move {
        let mut head = String::from("HTTP/1.1 200 OK\r\n");
        for i in 0..10_000 {
            head.push_str(&format!("X-Hostile-{i}: v\r\n"));
        }
        head.push_str("Content-Length: 2\r\n\r\nok");
        let _ = s.write_all(head.as_bytes()).await;
        let _ = s.flush().await;
        // Hold the connection until the client gives up on it.
        let mut sink = [0u8; 1024];
        while matches!(s.read(&mut sink).await, Ok(n) if n > 0) {}
        head.len() as u64
    })
    .await;
    let server = TestServer::start_with(&config());
    let v = submit_and_wait(&server, addr, 0).await;
    assert_eq!(v["state"], "failed", "{v}");
    let a = &v["attempts"][0];
    assert!(
        a["status_code"].is_null(),
        "no status for a refused head: {a}"
    );
    let err = a["error"].as_str().unwrap_or_default().to_lowercase();
    assert!(
        err.contains("header") || err.contains("too large"),
        "the error says what was wrong: {err}"
    );
    assert!(
        a["latency_ms"].as_u64().unwrap() < ATTEMPT_TIMEOUT_MS,
        "ended by the error, not the timeout: {a}"
    );
    let peak = assert_server_fine(&server).await;
    record(
        "hostile_10000_headers",
        json!({"state": v["state"], "error": err, "peak_rss_kib": peak}),
    );
}
