//! Safe at rest and in logs: private files, upstream credentials sealed in the database, no
//! URL path or query in the log, no ambient proxy, and finished jobs purged after retention.

use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use crate::support::*;

const FAST_LANE: &str = "[lanes.default]\nrate = 100.0\nburst = 5\nmax_in_flight = 4\n";

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o777
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

/// A port nobody listens on: connection refused.
fn closed_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits (polling the log file, up to 30 s) until the server's log contains `what`.
async fn log_shows(server: &TestServer, what: &str) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let logs = server.logs();
        if logs.contains(what) {
            return logs;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no {what:?} in the log within 30 s:\n{logs}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A listener that only counts the connections it gets (and drops them).
fn recording_listener() -> (u16, Arc<AtomicUsize>, std::sync::mpsc::Receiver<()>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let seen = Arc::new(AtomicUsize::new(0));
    let (tx, rx) = std::sync::mpsc::channel();
    let count = seen.clone();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            count.fetch_add(1, Ordering::SeqCst);
            let _ = tx.send(());
            drop(conn);
        }
    });
    (port, seen, rx)
}

#[tokio::test]
async fn credentials_are_sealed_in_the_database_and_files_are_private() {
    let target = Target::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    // A directory others may read (as `mkdir` under umask 022 makes it) is tightened.
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let config = format!("{FAST_LANE}[outbound]\nsealed_headers = [\"X-Custom-Sig\"]\n");
    let server = TestServer::spawn(&dir, &config, None);
    let secrets = [
        "sk-SEALME-bearer-1",
        "xk-SEALME-apikey-2",
        "cs-SEALME-custom-3",
    ];
    let id = server
        .submit(json!({
            "url": target.url("creds"),
            "headers": {
                "Authorization": format!("Bearer {}", secrets[0]),
                "X-Api-Key": secrets[1],
                "X-Custom-Sig": secrets[2],
                "X-Plain": "visible",
            },
        }))
        .await;
    let job = server.wait_final(&id, 30).await;
    assert_eq!(job["state"], "succeeded", "{job}");
    // The target got the real values.
    let got = &target.arrivals("creds")[0].headers;
    assert_eq!(got["authorization"], format!("Bearer {}", secrets[0]));
    assert_eq!(got["x-api-key"], secrets[1]);
    assert_eq!(got["x-custom-sig"], secrets[2]);
    // Views show neither the value nor its sealed form.
    let (_, view) = server.get(&format!("/api/v1/jobs/{id}")).await;
    let headers = view["spec"]["headers"].to_string();
    for h in ["Authorization", "X-Api-Key", "X-Custom-Sig"] {
        assert!(
            headers.contains(&format!("[\"{h}\",\"[redacted]\"]"))
                || view["spec"]["headers"][h] == "[redacted]",
            "{h} redacted: {headers}"
        );
    }
    assert!(headers.contains("visible"), "{headers}");
    assert!(!headers.contains("ezt-sealed"), "{headers}");
    // Nothing on disk (database, WAL) or in the log holds a secret.
    let db = dir.join("ezthrottle.db");
    let mut files = vec![db.clone()];
    for suffix in ["-wal", "-shm"] {
        let mut p = db.as_os_str().to_owned();
        p.push(suffix);
        files.push(p.into());
    }
    for f in &files {
        let bytes = std::fs::read(f).unwrap_or_default();
        for s in secrets {
            assert!(!contains(&bytes, s), "{s} in clear in {}", f.display());
        }
    }
    let logs = server.logs();
    for s in secrets {
        assert!(!logs.contains(s), "{s} in the log");
    }
    // Owner-only from creation: the directory, the database files, the lock and the key.
    assert_eq!(mode(&dir), 0o700, "data dir");
    files.push(dir.join("ezthrottle.lock"));
    files.push(dir.join("secret.key"));
    for f in &files {
        assert_eq!(mode(f), 0o600, "{}", f.display());
    }
}

#[tokio::test]
async fn logs_and_attempt_errors_never_show_url_paths_or_queries() {
    let server = TestServer::start_with(FAST_LANE);
    let (job_port, hook_port) = (closed_port(), closed_port());
    let id = server
        .submit(json!({
            "url": format!("http://127.0.0.1:{job_port}/v1/PATHSECRET?key=SECRET123"),
            "retry_policy": {"max_retries": 0},
            "webhooks": [{"url": format!("http://127.0.0.1:{hook_port}/hooks/T0/B0/XHOOKSECRET")}],
        }))
        .await;
    let job = server.wait_final(&id, 30).await;
    assert_eq!(job["state"], "failed", "{job}");
    let logs = log_shows(&server, "delivery attempt").await;
    let logs = log_shows(&server, "attempt finished").await.max(logs);
    for secret in ["SECRET123", "PATHSECRET", "XHOOKSECRET", "key="] {
        assert!(!logs.contains(secret), "{secret} in the log:\n{logs}");
    }
    assert!(
        logs.contains(&format!("http://127.0.0.1:{job_port}")),
        "the log names scheme, host and port:\n{logs}"
    );
    let error = job["attempts"][0]["error"].as_str().unwrap().to_string();
    assert!(error.contains("connect"), "{error}");
    assert!(
        !error.contains("SECRET123") && !error.contains("PATHSECRET"),
        "{error}"
    );
    let (_, view) = server.get(&format!("/api/v1/jobs/{id}")).await;
    let hook_errors = view["webhooks"].to_string();
    assert!(!hook_errors.contains("XHOOKSECRET/"), "{hook_errors}");
}

#[tokio::test]
async fn ambient_proxy_variables_are_ignored() {
    let target = Target::start().await;
    let (proxy_port, seen, _rx) = recording_listener();
    let proxy = format!("http://127.0.0.1:{proxy_port}");
    let tmp = tempfile::tempdir().unwrap();
    let env: Vec<(&str, &str)> = [
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
    ]
    .into_iter()
    .map(|k| (k, proxy.as_str()))
    .chain([("NO_PROXY", ""), ("no_proxy", "")])
    .collect();
    let server = TestServer::spawn_env(tmp.path(), FAST_LANE, None, &env);
    let id = server
        .submit(json!({"url": target.url("direct"), "webhooks": [{"url": target.url("hook")}]}))
        .await;
    let job = server.wait_final(&id, 30).await;
    assert_eq!(job["state"], "succeeded", "{job}");
    target.wait_for("hook", 1, Duration::from_secs(30)).await;
    assert_eq!(target.arrivals("direct").len(), 1);
    assert_eq!(seen.load(Ordering::SeqCst), 0, "the proxy saw a connection");
}

#[tokio::test]
async fn a_configured_proxy_needs_the_ssrf_acknowledgement() {
    let tmp = tempfile::tempdir().unwrap();
    let (proxy_port, seen, rx) = recording_listener();
    let cfg = tmp.path().join("proxy.toml");
    std::fs::write(
        &cfg,
        format!("[outbound]\nproxy = \"http://127.0.0.1:{proxy_port}\"\n"),
    )
    .unwrap();
    let out = std::process::Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&cfg)
        .arg("--data-dir")
        .arg(tmp.path().join("data"))
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "started without the acknowledgement");
    assert!(
        stderr.contains("outbound.proxy_bypasses_ssrf"),
        "names the setting: {stderr}"
    );
    // Acknowledged: calls go through the configured proxy.
    let config = format!(
        "{FAST_LANE}[outbound]\nproxy = \"http://127.0.0.1:{proxy_port}\"\nproxy_bypasses_ssrf = true\n"
    );
    let ok = tmp.path().join("ok");
    std::fs::create_dir(&ok).unwrap();
    let server = TestServer::spawn(&ok, &config, None);
    server
        .submit(json!({"url": "http://127.0.0.1:9/via", "retry_policy": {"max_retries": 0}}))
        .await;
    rx.recv_timeout(Duration::from_secs(30))
        .expect("the configured proxy got the call");
    assert!(seen.load(Ordering::SeqCst) >= 1);
}

#[tokio::test]
async fn finished_jobs_are_purged_after_the_retention() {
    let target = Target::start().await;
    let config = format!("{FAST_LANE}[retention]\nfinished_jobs = \"1ms\"\ninterval = \"100ms\"\n");
    let server = TestServer::start_with(&config);
    let done = server.submit(json!({"url": target.url("r")})).await;
    server.wait_final(&done, 30).await;
    let waiting = server
        .submit(json!({"url": target.url("later"), "retry_at": in_days(1)}))
        .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (status, _) = server.get(&format!("/api/v1/jobs/{done}")).await;
        if status == 404 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "finished job still there after 30 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, view) = server.get(&format!("/api/v1/jobs/{waiting}")).await;
    assert_eq!((status, view["state"].as_str()), (200, Some("scheduled")));
    // Its idempotency key went with it: the same request is a new job.
    let again = server.submit(json!({"url": target.url("r")})).await;
    assert_ne!(again, done);
}
