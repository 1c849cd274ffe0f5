//! The server and the CLI on PostgreSQL (`--database-url`, `EZTHROTTLE_DATABASE_URL`): migrate,
//! serve, manage keys from the CLI against the same database, run a job, restart, and find
//! everything still there. The database is a real PostgreSQL (`ezt_store_postgres::testing`:
//! EZT_TEST_DATABASE_URL, or one started by scripts/pg.sh for this test process).

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::{json, Value};

use crate::support::{in_days, Target, TestServer, BIN};

/// Runs the CLI against the database at `url`, with an empty `--data-dir` (so nothing can come
/// from a SQLite file by mistake).
fn db_cli(url: &str, empty_dir: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .args(["--database-url", url, "--data-dir"])
        .arg(empty_dir)
        .env_remove("EZTHROTTLE_DATABASE_URL")
        .output()
        .expect("run cli")
}

fn db_cli_ok(url: &str, empty_dir: &Path, args: &[&str]) -> String {
    let out = db_cli(url, empty_dir, args);
    assert!(
        out.status.success(),
        "ezthrottle {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf8")
}

#[tokio::test]
async fn serve_and_cli_share_a_postgres_database_and_state_survives_a_restart() {
    let url = ezt_store_postgres::testing::database_url().await;
    let target = Target::start().await;
    let cli_dir = tempfile::tempdir().unwrap();

    // `migrate` alone: the schema once, then nothing to do.
    let first = db_cli(&url, cli_dir.path(), &["migrate"]);
    assert!(first.status.success(), "{first:?}");
    let said = String::from_utf8_lossy(&first.stderr).to_string();
    let all = format!(
        "applied {} migration(s)",
        ezt_store_postgres::MIGRATIONS.len()
    );
    assert!(said.contains(&all), "{said}");
    let again = db_cli(&url, cli_dir.path(), &["migrate"]);
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("applied 0 migration(s)"),
        "{again:?}"
    );

    // The server, told by the environment.
    let tmp = tempfile::tempdir().unwrap();
    let env = [("EZTHROTTLE_DATABASE_URL", url.as_str())];
    let config = "[lanes.default]\nrate = 50.0\nburst = 1\nmax_in_flight = 2\n";
    let mut server = TestServer::spawn_env(tmp.path(), config, None, &env);
    assert!(
        server.logs().contains("127.0.0.1"),
        "the log names the database: {}",
        server.logs()
    );

    // A tenant and key made by the CLI on the same database, used at once by the server.
    db_cli_ok(&url, cli_dir.path(), &["tenants", "create", "acme"]);
    let created: Value = serde_json::from_str(&db_cli_ok(
        &url,
        cli_dir.path(),
        &["keys", "create", "--tenant", "acme", "--json"],
    ))
    .unwrap();
    let key = created["key"].as_str().unwrap().to_string();
    let (s, b) = server
        .post_as(&key, "/api/v1/jobs", json!({"url": target.url("pg")}))
        .await;
    assert_eq!(s, 202, "{b}");
    let id = b["job_id"].as_str().unwrap().to_string();
    let (s, job) = server
        .get_as(&key, &format!("/api/v1/jobs/{id}/wait?timeout=20s"))
        .await;
    assert_eq!(
        (s, job["state"].as_str()),
        (200, Some("succeeded")),
        "{job}"
    );
    assert_eq!(
        target.wait_for("pg", 1, Duration::from_secs(5)).await.len(),
        1
    );
    let later = server
        .post_as(
            &key,
            "/api/v1/jobs",
            json!({"url": target.url("later"), "retry_at": in_days(1)}),
        )
        .await
        .1["job_id"]
        .as_str()
        .unwrap()
        .to_string();

    // The CLI sees what the server wrote.
    let got: Value =
        serde_json::from_str(&db_cli_ok(&url, cli_dir.path(), &["jobs", "get", &id])).unwrap();
    assert_eq!(got["state"], "succeeded");
    let listed: Value = serde_json::from_str(&db_cli_ok(
        &url,
        cli_dir.path(),
        &["jobs", "list", "--tenant", "acme"],
    ))
    .unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 2, "{listed}");
    assert!(
        !tmp.path().join("ezthrottle.db").exists()
            && !cli_dir.path().join("ezthrottle.db").exists(),
        "no SQLite file was made"
    );

    // Restart (a crash, even): the jobs, the tenant and its key are all still there.
    server.kill9();
    let default_key = server.key.clone();
    let server = TestServer::spawn_env(tmp.path(), config, Some(default_key.clone()), &env);
    let (s, job) = server.get_as(&key, &format!("/api/v1/jobs/{id}")).await;
    assert_eq!(
        (s, job["state"].as_str()),
        (200, Some("succeeded")),
        "{job}"
    );
    let (s, waiting) = server.get_as(&key, &format!("/api/v1/jobs/{later}")).await;
    assert_eq!(
        (s, waiting["state"].as_str()),
        (200, Some("scheduled")),
        "{waiting}"
    );
    let (s, b) = server
        .post_as(&key, "/api/v1/jobs", json!({"url": target.url("pg")}))
        .await;
    assert_eq!(
        (s, b["status"].as_str(), b["job_id"].as_str()),
        (200, Some("duplicate"), Some(id.as_str())),
        "the idempotency key survived the restart: {b}"
    );
    let (s, b) = server
        .post_as(
            &key,
            "/api/v1/jobs",
            json!({"url": target.url("pg"), "body": "2"}),
        )
        .await;
    assert_eq!(s, 202, "{b}");
    let id2 = b["job_id"].as_str().unwrap().to_string();
    let (_, job) = server
        .get_as(&key, &format!("/api/v1/jobs/{id2}/wait?timeout=20s"))
        .await;
    assert_eq!(job["state"], "succeeded", "{job}");
    let (s, _) = server.get_as(&default_key, "/api/v1/jobs").await;
    assert_eq!(s, 200, "the first start's key still works");

    // A second server on the same database starts beside the first (cluster mode): each node
    // has an id of its own, kept in its data dir, and recovering its own leases at start leaves
    // the other node's alone. A job submitted to either runs.
    let other = tempfile::tempdir().unwrap();
    let second = TestServer::spawn_env(other.path(), config, Some(default_key.clone()), &env);
    let first_id = std::fs::read_to_string(tmp.path().join("node_id")).unwrap();
    let second_id = std::fs::read_to_string(other.path().join("node_id")).unwrap();
    assert!(!first_id.trim().is_empty());
    assert_ne!(first_id, second_id, "each node names itself");
    let (s, b) = second
        .post_as(
            &key,
            "/api/v1/jobs",
            json!({"url": target.url("pg"), "body": "3"}),
        )
        .await;
    assert_eq!(s, 202, "{b}");
    let id3 = b["job_id"].as_str().unwrap().to_string();
    let (_, job) = server
        .get_as(&key, &format!("/api/v1/jobs/{id3}/wait?timeout=20s"))
        .await;
    assert_eq!(job["state"], "succeeded", "either node shows it: {job}");
    let (s, _) = second.get_as(&key, &format!("/api/v1/jobs/{id2}")).await;
    assert_eq!(s, 200);
}

/// The database goes away under a running server: submissions are spooled on the node (202,
/// fsynced; `fault_spool` has the fault cases), what needs the database (listing) answers 503,
/// the server stays up, and once the database is back the spooled job and new ones run, without
/// a restart.
#[tokio::test]
async fn a_database_restart_spools_admissions_then_the_server_carries_on() {
    let pg = ezt_store_postgres::testing::OwnServer::start();
    let url = pg.url().to_string();
    let target = Target::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let server = TestServer::spawn_env(tmp.path(), "", None, &[("EZTHROTTLE_DATABASE_URL", &url)]);
    let first = server.submit(json!({"url": target.url("up")})).await;
    server.wait_final(&first, 20).await;

    pg.stop();
    let (s, b) = server
        .post("/api/v1/jobs", json!({"url": target.url("down")}))
        .await;
    assert_eq!(s, 202, "admitted into the node's spool: {b}");
    let down = b["job_id"].as_str().unwrap().to_string();
    let (s, b) = server.get("/api/v1/jobs?limit=5").await;
    assert_eq!(s, 503, "{b}");
    assert_eq!(b["error"]["code"], "unavailable", "{b}");

    pg.restart();
    let back = server.submit(json!({"url": target.url("back")})).await;
    for id in [&down, &back] {
        // The pool replaces its broken connections as they are used: a read may still find
        // the database unreachable for a moment (503); poll with a deadline.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let (s, job) = server
                .get(&format!("/api/v1/jobs/{id}/wait?timeout=5s"))
                .await;
            if s == 200 && job["state"] == "succeeded" {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "{id}: {s} {job}");
        }
    }
    assert_eq!(target.arrivals("down").len(), 1, "the spooled job ran once");
    assert_eq!(target.arrivals("back").len(), 1);
}

/// `migrate` without a database URL brings the SQLite file up to date (creating it).
#[test]
fn migrate_on_sqlite_makes_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .arg("migrate")
        .arg("--data-dir")
        .arg(dir.path())
        .env_remove("EZTHROTTLE_DATABASE_URL")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("schema up to date"));
    assert!(dir.path().join("ezthrottle.db").is_file());
}

#[test]
fn a_bad_database_url_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = db_cli("mysql://x", dir.path(), &["tenants", "list"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("database_url") && err.contains("--database-url"),
        "{err}"
    );
    // Nothing listens there: the error says which database could not be reached.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("postgres://ezt:pw@127.0.0.1:{port}/x");
    let out = db_cli(&url, dir.path(), &["migrate"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
    assert!(!err.contains("pw@"), "the password is not printed: {err}");
}

/// Six nodes started at the same moment on one empty database (three times) all come up: one creates the
/// `default` tenant and shows its key, the others find it made (no name conflict at start).
#[tokio::test]
async fn nodes_started_together_on_an_empty_database_all_come_up() {
    use std::io::BufRead;
    for round in 0..3 {
        let url = ezt_store_postgres::testing::database_url().await;
        let dirs: Vec<tempfile::TempDir> = (0..6).map(|_| tempfile::tempdir().unwrap()).collect();
        let mut children: Vec<std::process::Child> = dirs
            .iter()
            .map(|d| {
                Command::new(BIN)
                    .args(crate::support::serve_args(d.path(), ""))
                    .env("EZTHROTTLE_DATABASE_URL", &url)
                    .env("EZTHROTTLE_SECRET_KEY", crate::support::CLUSTER_SECRET_KEY)
                    .stderr(std::process::Stdio::piped())
                    .stdout(std::process::Stdio::null())
                    .spawn()
                    .unwrap()
            })
            .collect();
        let mut keys_shown = 0;
        for (i, c) in children.iter_mut().enumerate() {
            let err = std::io::BufReader::new(c.stderr.take().unwrap());
            let mut log = String::new();
            let mut up = false;
            for line in err.lines().map_while(Result::ok) {
                log.push_str(&line);
                log.push('\n');
                if line.contains("listening on http://") {
                    up = true;
                    break;
                }
            }
            assert!(up, "round {round}: node {i} did not come up:\n{log}");
            keys_shown += usize::from(log.contains("first start: created tenant"));
        }
        for mut c in children {
            let _ = c.kill();
            let _ = c.wait();
        }
        assert!(
            keys_shown <= 1,
            "round {round}: {keys_shown} nodes showed a first key"
        );
    }
}

/// Every node of a cluster must share one `secret_key` (a job's sealed credentials are opened
/// by its lane's owner): a node started on the cluster's database with another key refuses to
/// start and says why, instead of failing every job another node admitted.
#[tokio::test]
async fn a_node_with_another_secret_key_refuses_to_join() {
    let url = ezt_store_postgres::testing::database_url().await;
    let first = tempfile::tempdir().unwrap();
    let env = [("EZTHROTTLE_DATABASE_URL", url.as_str())];
    let _running = TestServer::spawn_env(first.path(), "", None, &env);
    let other = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(crate::support::serve_args(other.path(), ""))
        .env("EZTHROTTLE_DATABASE_URL", &url)
        .env(
            "EZTHROTTLE_SECRET_KEY",
            "b3RoZXIta2V5LW5vdC10aGUtY2x1c3RlcnMtMDEyMzQ=",
        )
        .output()
        .unwrap();
    assert!(!out.status.success(), "it started: {out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("secret_key") && err.contains("same"),
        "the refusal says why: {err}"
    );
}
