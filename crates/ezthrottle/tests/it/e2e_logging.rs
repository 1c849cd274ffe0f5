//! Logging never wedges the server: a closed stdout/stderr changes nothing about job processing
//! or shutdown; `--log-json` lines are JSON with real types.

use std::io::BufRead;
use std::process::{Child, ChildStderr, ChildStdout, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

use crate::support::{in_days, serve_args, watch_stderr, Reply, Target, TestServer, BIN};

const FAST_LANE: &str = "[lanes.default]\nrate = 100.0\nburst = 5\nmax_in_flight = 8\n";

fn serve_cmd(dir: &std::path::Path, extra: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.args(serve_args(dir, FAST_LANE))
        .args(extra)
        .env("NO_COLOR", "1")
        .env("EZTHROTTLE_LOG", "debug")
        .stdin(Stdio::null());
    c
}

/// Kills the server if the test fails before stopping it.
struct KillOnDrop(Option<Child>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(c) = self.0.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Sends SIGTERM and waits up to `within` for the exit; the exit code.
fn sigterm_and_reap(mut child: Child, within: Duration) -> Option<i32> {
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait().map(|s| s.code()));
        drop(child);
    });
    match rx.recv_timeout(within) {
        Ok(r) => r.expect("wait"),
        Err(_) => {
            let _ = Command::new("kill").args(["-KILL", &pid]).status();
            panic!("the server did not exit within {within:?} of SIGTERM");
        }
    }
}

/// Starts a server whose stdout and stderr are pipes, reads its key and address, then calls
/// `then` with the pipes' read ends (to drop or to hold unread); jobs that log on every
/// attempt must all finish, and SIGTERM must still stop the process.
async fn jobs_finish_whatever_happens_to_the_pipes(
    log_filter: &str,
    then: impl FnOnce(
        std::io::BufReader<ChildStdout>,
        std::io::BufReader<ChildStderr>,
    ) -> Box<dyn std::any::Any>,
) {
    let target = Target::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let mut child = serve_cmd(tmp.path(), &[])
        .env("EZTHROTTLE_LOG", log_filter)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut key = String::new();
    stdout.read_line(&mut key).unwrap();
    let key = key.trim().to_string();
    let mut addr = None;
    let mut line = String::new();
    while addr.is_none() && stderr.read_line(&mut line).unwrap() > 0 {
        if let Some(i) = line.find("listening on http://") {
            let rest = &line[i + "listening on http://".len()..];
            let end = rest
                .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == ':'))
                .unwrap_or(rest.len());
            addr = Some(rest[..end].to_string());
        }
        line.clear();
    }
    let addr = addr.expect("address");
    let _held = then(stdout, stderr);
    let mut child = KillOnDrop(Some(child));
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(90))
        .build()
        .unwrap();
    // Plenty of log lines (each request logs at debug/trace): more than a pipe buffer holds.
    for _ in 0..2000 {
        let r = http.get(format!("http://{addr}/healthz")).send().await;
        assert_eq!(r.expect("healthz answers").status().as_u16(), 200);
    }
    let mut ids = Vec::new();
    for i in 0..6 {
        let name = format!("flaky-{i}");
        target.script(&name, vec![Reply::status(503), Reply::status(503)]);
        let r: Value = http
            .post(format!("http://{addr}/api/v1/jobs"))
            .bearer_auth(&key)
            .json(&json!({"url": target.url(&name)}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        ids.push(r["job_id"].as_str().expect("job_id").to_string());
    }
    for id in &ids {
        let r = http
            .get(format!("http://{addr}/api/v1/jobs/{id}/wait?timeout=60s"))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200, "job {id} never finished");
        let job: Value = r.json().await.unwrap();
        assert_eq!(job["state"], "succeeded", "{job}");
        assert_eq!(job["attempts"].as_array().unwrap().len(), 3, "{job}");
    }
    let child = child.0.take().unwrap();
    let code =
        tokio::task::spawn_blocking(move || sigterm_and_reap(child, Duration::from_secs(15)))
            .await
            .unwrap();
    assert_eq!(code, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_stdout_and_stderr_change_nothing_about_jobs_or_shutdown() {
    // `serve 2>&1 | head`: every log line from now on meets a closed pipe.
    jobs_finish_whatever_happens_to_the_pipes("debug", |out, err| {
        drop((out, err));
        Box::new(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stderr_nobody_reads_changes_nothing_about_jobs_or_shutdown() {
    // A stalled log reader: the pipe fills up (trace level writes plenty) and stays full.
    jobs_finish_whatever_happens_to_the_pipes("trace", |out, err| Box::new((out, err))).await;
}

#[tokio::test]
async fn json_log_lines_are_json_with_typed_values() {
    let target = Target::start().await;
    target.script("flaky", vec![Reply::status(503)]);
    let tmp = tempfile::tempdir().unwrap();
    let log = tmp.path().join("server.log");
    let out = tmp.path().join("server.out");
    let mut child = serve_cmd(tmp.path(), &["--log-json"])
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (addr, mut exited) = watch_stderr(child.stderr.take().unwrap(), log.clone());
    let key = std::fs::read_to_string(&out).unwrap().trim().to_string();
    let server = TestServer {
        child,
        exited: exited.clone(),
        addr,
        key,
        dir: tmp.path().to_path_buf(),
        log: log.clone(),
        _tmp: None,
        http: reqwest::Client::new(),
    };
    let id = server.submit(json!({"url": target.url("flaky")})).await;
    let job = server.wait_final(&id, 30).await;
    assert_eq!(job["state"], "succeeded", "{job}");
    // A line logged while handling a request carries its id as a top-level member.
    let later = server
        .submit(json!({"url": target.url("later"), "retry_at": in_days(1)}))
        .await;
    let r = server
        .http
        .post(server.url(&format!("/api/v1/jobs/{later}/cancel")))
        .bearer_auth(&server.key)
        .header("X-Request-Id", "json-\"trace\"-7")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let pid = server.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    tokio::time::timeout(Duration::from_secs(20), exited.wait_for(|e| *e))
        .await
        .expect("exit after SIGTERM")
        .unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let find = |msg: &str| {
        lines
            .iter()
            .find(|l| {
                l["fields"]["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with(msg))
            })
            .unwrap_or_else(|| panic!("no {msg:?} line in:\n{text}"))
    };
    let banner = &find("listening on")["fields"];
    assert_eq!(
        banner["port"].as_u64(),
        Some(u64::from(addr.port())),
        "{banner}"
    );
    assert!(find("recovered waiting jobs")["fields"]["jobs"].is_u64());
    assert!(find("first start")["fields"].is_object());
    let retried = lines
        .iter()
        .find(|l| l["fields"]["message"] == "attempt finished" && l["fields"]["status"] == 503)
        .unwrap_or_else(|| panic!("no typed 503 attempt line in:\n{text}"));
    assert!(retried["fields"]["error"].is_null(), "{retried}");
    assert!(retried["fields"]["wait_ms"].is_u64(), "{retried}");
    let cancelled = find("job cancelled");
    assert_eq!(cancelled["request_id"], "json-\"trace\"-7", "{cancelled}");
    assert!(
        find("listening on").get("request_id").is_none(),
        "no id outside requests"
    );
    assert!(
        find("stopped")["fields"]["left_in_flight"].is_u64(),
        "the last line was written before the exit"
    );
}
