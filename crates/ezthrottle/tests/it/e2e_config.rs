//! Configuration from the environment: every key has a variable, bad or unknown variables
//! stop the start with their name, and `--help` lists the names.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{TestServer, BIN};

/// Runs `serve` with `env` and expects it to exit on its own, failing; returns its stderr.
fn serve_fails(env: &[(&str, &str)]) -> String {
    let tmp = tempfile::tempdir().unwrap();
    let err = tmp.path().join("stderr");
    let mut child = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(tmp.path())
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "serve with {env:?} kept running: {}",
                std::fs::read_to_string(&err).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stderr = std::fs::read_to_string(&err).unwrap();
    assert!(!status.success(), "serve with {env:?} succeeded: {stderr}");
    stderr
}

#[test]
fn a_bad_value_in_a_variable_stops_serve_naming_it() {
    let e = serve_fails(&[("EZTHROTTLE_LANES_DEFAULT_RATE", "abc")]);
    assert!(e.contains("EZTHROTTLE_LANES_DEFAULT_RATE"), "{e}");
}

#[test]
fn an_unknown_variable_stops_serve_naming_it() {
    let e = serve_fails(&[("EZTHROTTLE_LANES_DEFUALT_RATE", "5")]);
    assert!(e.contains("EZTHROTTLE_LANES_DEFUALT_RATE"), "{e}");
}

#[tokio::test]
async fn variables_set_nested_keys_and_sdk_variables_are_ignored() {
    let tmp = tempfile::tempdir().unwrap();
    let server = TestServer::spawn_env(
        tmp.path(),
        "",
        None,
        &[
            ("EZTHROTTLE_METRICS_BEARER_TOKEN", "from-env"),
            ("EZTHROTTLE_LANES_DEFAULT_MAX_IN_FLIGHT", "3"),
            ("EZTHROTTLE_API_KEY", "ezt_live_used_by_the_sdk"),
            ("EZTHROTTLE_URL", "http://127.0.0.1:1"),
        ],
    );
    let (s, _) = server.get_text("/metrics").await;
    assert_eq!(s, 401, "EZTHROTTLE_METRICS_BEARER_TOKEN applies");
    let r = server
        .http
        .get(server.url("/metrics"))
        .bearer_auth("from-env")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
}

#[test]
fn help_lists_the_variables() {
    for args in [&["serve", "--help"][..], &["--help"][..]] {
        let out = Command::new(BIN).args(args).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        for name in [
            "EZTHROTTLE_LISTEN",
            "EZTHROTTLE_LANES_DEFAULT_RATE",
            "EZTHROTTLE_EXECUTOR_ATTEMPT_TIMEOUT_MS",
            "EZTHROTTLE_WEBHOOKS_RETRY_SCHEDULE",
            "EZTHROTTLE_METRICS_BEARER_TOKEN",
            "EZTHROTTLE_SECRET_KEY",
            "EZTHROTTLE_DATABASE_URL",
            "EZTHROTTLE_ADVERTISE_URL",
            "EZTHROTTLE_CLUSTER_SECRET",
            "EZTHROTTLE_LOG",
        ] {
            assert!(text.contains(name), "{args:?} does not mention {name}");
        }
    }
}
