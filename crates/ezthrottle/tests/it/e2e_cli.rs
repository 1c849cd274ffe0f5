//! The CLI on the server's own data, while it runs; and the README quick start.

use std::time::Duration;

use serde_json::{json, Value};

use crate::support::{cli, Reply, Target, TestServer, BIN};

#[tokio::test]
async fn cli_manages_tenants_keys_and_jobs_beside_the_server() {
    let target = Target::start().await;
    let server =
        TestServer::start_with("[lanes.default]\nrate = 50.0\nburst = 1\nmax_in_flight = 2\n");
    let t: Value = serde_json::from_str(&cli(
        &server.dir,
        &["tenants", "create", "acme", "--tier", "reserved"],
    ))
    .unwrap();
    assert_eq!(t["tier"], "reserved");
    let tenants: Value = serde_json::from_str(&cli(&server.dir, &["tenants", "list"])).unwrap();
    assert_eq!(tenants.as_array().unwrap().len(), 2, "default + acme");
    let created: Value = serde_json::from_str(&cli(
        &server.dir,
        &["keys", "create", "--tenant", "acme", "--json"],
    ))
    .unwrap();
    let key = created["key"].as_str().unwrap().to_string();
    assert!(key.starts_with("ezt_live_"));
    let keys = cli(&server.dir, &["keys", "list", "--tenant", "acme"]);
    assert!(!keys.contains(&key), "keys are never listed in clear");

    target.script("cli", vec![Reply::status(400)]);
    let (s, b) = server
        .post_as(&key, "/api/v1/jobs", json!({"url": target.url("cli")}))
        .await;
    assert_eq!(s, 202, "{b}");
    let id = b["job_id"].as_str().unwrap().to_string();
    let (_, job) = server
        .get_as(&key, &format!("/api/v1/jobs/{id}/wait?timeout=20s"))
        .await;
    assert_eq!(job["state"], "failed");
    let got: Value = serde_json::from_str(&cli(&server.dir, &["jobs", "get", &id])).unwrap();
    assert_eq!(got["state"], "failed");
    let listed: Value = serde_json::from_str(&cli(
        &server.dir,
        &["jobs", "list", "--tenant", "acme", "--state", "failed"],
    ))
    .unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 1);
    cli(&server.dir, &["jobs", "retry", &id]);
    let (_, job) = server
        .get_as(&key, &format!("/api/v1/jobs/{id}/wait?timeout=20s"))
        .await;
    assert_eq!(
        (job["state"].as_str(), job["series"].as_u64()),
        (Some("succeeded"), Some(2)),
        "the server ran the CLI's replay: {job}"
    );

    let later =
        json!({"url": target.url("cli"), "body": "later", "retry_at": crate::support::in_days(30)});
    let (_, b) = server.post_as(&key, "/api/v1/jobs", later).await;
    let waiting = b["job_id"].as_str().unwrap().to_string();
    cli(&server.dir, &["jobs", "cancel", &waiting]);
    let (_, job) = server
        .get_as(&key, &format!("/api/v1/jobs/{waiting}"))
        .await;
    assert_eq!(job["state"], "cancelled");

    let key_id = created["id"].as_str().unwrap();
    cli(&server.dir, &["keys", "revoke", key_id]);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let (s, _) = server.get_as(&key, "/api/v1/jobs").await;
        if s == 401 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "revoked key still accepted after 5 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The README's quick start: `ezthrottle serve` with no flags, on the default address and data dir.
#[tokio::test]
async fn quick_start_defaults() {
    let target = Target::start().await;
    let cwd = tempfile::tempdir().unwrap();
    if std::net::TcpListener::bind("127.0.0.1:8080").is_err() {
        eprintln!("skipping: 127.0.0.1:8080 is taken on this machine");
        return;
    }
    let mut child = std::process::Command::new(BIN)
        .arg("serve")
        .current_dir(cwd.path())
        .env("EZTHROTTLE_ALLOW_CIDRS", "127.0.0.1/32")
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let addr = crate::support::await_listening(
        child.stderr.take().unwrap(),
        cwd.path().join("server.log"),
    );
    assert_eq!(addr.to_string(), "127.0.0.1:8080", "default listen address");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let key = line.trim().to_string();
    assert!(
        key.starts_with("ezt_live_"),
        "first start prints a key: {line:?}"
    );
    assert!(
        cwd.path().join("ezthrottle-data/ezthrottle.db").exists(),
        "default data dir"
    );
    let http = reqwest::Client::new();
    let r: Value = http
        .post("http://127.0.0.1:8080/api/v1/jobs?wait=10s")
        .bearer_auth(&key)
        .json(&json!({"url": target.url("hello"), "method": "POST", "body": "{\"hi\":1}"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["state"], "succeeded", "{r}");
    let _ = child.kill();
    let _ = child.wait();
}
