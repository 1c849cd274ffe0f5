//! Test support: the real `ezthrottle` binary as a child process, and a local mock target.
#![allow(dead_code)]

pub mod cluster;
pub mod faultproxy;

use std::collections::{HashMap, VecDeque};
use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path as AxPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::any;
use axum::Router;
use serde_json::Value;
use tokio::sync::Notify;

pub const BIN: &str = env!("CARGO_BIN_EXE_ezthrottle");

/// The arguments of `ezthrottle serve` every test server uses: any free port, calls to
/// 127.0.0.1 allowed, `config` written to `dir/config.toml`, data in `dir`.
/// The `secret_key` every test node on PostgreSQL shares (base64 of 32 bytes), as a cluster's
/// nodes must.
pub const CLUSTER_SECRET_KEY: &str = "Y2x1c3Rlci10ZXN0LWtleS0wMTIzNDU2Nzg5YWJjZGU=";

/// Gives `cmd` the cluster's shared key when it runs a node on PostgreSQL and sets none.
pub fn share_the_cluster_key(cmd: &mut Command) {
    let mut clustered = cmd.get_args().any(|a| a == "--database-url");
    let mut keyed = false;
    for (k, v) in cmd.get_envs() {
        clustered |= k == "EZTHROTTLE_DATABASE_URL" && v.is_some();
        keyed |= k == "EZTHROTTLE_SECRET_KEY";
    }
    if clustered && !keyed {
        cmd.env("EZTHROTTLE_SECRET_KEY", CLUSTER_SECRET_KEY);
    }
}

pub fn serve_args(dir: &Path, config: &str) -> Vec<std::ffi::OsString> {
    let cfg = dir.join("config.toml");
    std::fs::write(&cfg, config).expect("write config");
    let fixed = [
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--allow-cidr",
        "127.0.0.1/32",
    ];
    let mut args: Vec<std::ffi::OsString> = fixed.iter().map(Into::into).collect();
    args.extend(["--config".into(), cfg.into_os_string()]);
    args.extend(["--data-dir".into(), dir.as_os_str().to_owned()]);
    args
}

/// Milliseconds since the epoch, `days` from now (for delayed jobs that must not run).
pub fn in_days(days: u64) -> u64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    now + days * 86_400_000
}

/// Runs the CLI against a data dir; returns stdout (panics on failure).
pub fn cli(data_dir: &Path, args: &[&str]) -> String {
    let out = Command::new(BIN)
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .output()
        .expect("run cli");
    assert!(
        out.status.success(),
        "ezthrottle {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf8")
}

/// Copies a server's stderr to `log` on a thread and returns the address from its
/// "listening on http://ADDR" line as soon as it is written (an event, not a poll).
pub fn await_listening(stderr: std::process::ChildStderr, log: PathBuf) -> SocketAddr {
    watch_stderr(stderr, log).0
}

/// Like `await_listening`, and also says when stderr closes: the process has exited (its
/// stderr is not shared with any child), so an exit can be awaited instead of polled.
pub fn watch_stderr(
    stderr: std::process::ChildStderr,
    log: PathBuf,
) -> (SocketAddr, tokio::sync::watch::Receiver<bool>) {
    use std::io::{BufRead, Write};
    let (tx, rx) = std::sync::mpsc::channel();
    let (closed_tx, closed) = tokio::sync::watch::channel(false);
    std::thread::spawn(move || {
        let mut file = std::fs::File::create(&log).expect("log file");
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = writeln!(file, "{line}");
            if let Some(i) = line.find("listening on http://") {
                let rest = &line[i + "listening on http://".len()..];
                let end = rest
                    .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == ':'))
                    .unwrap_or(rest.len());
                let _ = tx.send(rest[..end].parse::<SocketAddr>().expect("address"));
            }
        }
        let _ = closed_tx.send(true);
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("server did not print its address within 30 s");
    (addr, closed)
}

/// A running server process.
pub struct TestServer {
    pub child: Child,
    /// Becomes true when the process has exited (its stderr closed).
    pub exited: tokio::sync::watch::Receiver<bool>,
    pub addr: SocketAddr,
    pub key: String,
    pub dir: PathBuf,
    pub log: PathBuf,
    pub _tmp: Option<tempfile::TempDir>,
    pub http: reqwest::Client,
}

impl TestServer {
    /// A fresh server on a new data dir, allowing calls to 127.0.0.1 only.
    pub fn start() -> Self {
        Self::start_with("")
    }

    /// Same, with extra TOML config.
    pub fn start_with(config: &str) -> Self {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().to_path_buf();
        let mut s = Self::spawn(&dir, config, None);
        s._tmp = Some(tmp);
        s
    }

    /// Starts (or restarts) a server on `dir`; `key` is reused when the store already has one.
    pub fn spawn(dir: &Path, config: &str, key: Option<String>) -> Self {
        Self::spawn_env(dir, config, key, &[])
    }

    /// Same, with extra environment variables for the server process.
    pub fn spawn_env(dir: &Path, config: &str, key: Option<String>, env: &[(&str, &str)]) -> Self {
        let mut cmd = Command::new(BIN);
        cmd.args(serve_args(dir, config))
            .env(
                "EZTHROTTLE_LOG",
                "info,ezt_runtime=debug,ezt_http=debug,ezt_outbound=debug",
            )
            .envs(env.iter().copied());
        Self::spawn_command(dir, cmd, key)
    }

    /// Runs `cmd` (an `ezthrottle serve`, possibly wrapped, e.g. in a shell that sets a ulimit)
    /// with its output captured in `dir`, and waits until it listens.
    /// A node on PostgreSQL gets [`CLUSTER_SECRET_KEY`] unless its command sets a key: every
    /// node of a cluster must share one (a node with another refuses to start).
    pub fn spawn_command(dir: &Path, mut cmd: Command, key: Option<String>) -> Self {
        share_the_cluster_key(&mut cmd);
        let n = std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0);
        let log = dir.join(format!("server-{n}.log"));
        let out = dir.join(format!("server-{n}.out"));
        let mut child = cmd
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).expect("out file"))
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn server");
        let (addr, exited) = watch_stderr(child.stderr.take().expect("stderr"), log.clone());
        let printed = std::fs::read_to_string(&out)
            .unwrap_or_default()
            .trim()
            .to_string();
        let key = if printed.is_empty() {
            key.expect("no key printed and none given")
        } else {
            printed
        };
        Self {
            child,
            exited,
            addr,
            key,
            dir: dir.to_path_buf(),
            log,
            _tmp: None,
            http: reqwest::Client::new(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.post_as(&self.key.clone(), path, body).await
    }

    pub async fn post_as(&self, key: &str, path: &str, body: Value) -> (u16, Value) {
        let r = self
            .http
            .post(self.url(path))
            .bearer_auth(key)
            .json(&body)
            .send()
            .await
            .expect("post");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.get_as(&self.key.clone(), path).await
    }

    pub async fn get_as(&self, key: &str, path: &str) -> (u16, Value) {
        let r = self
            .http
            .get(self.url(path))
            .bearer_auth(key)
            .send()
            .await
            .expect("get");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn delete_req(&self, path: &str) -> (u16, Value) {
        let r = self
            .http
            .delete(self.url(path))
            .bearer_auth(&self.key)
            .send()
            .await
            .expect("delete");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn get_text(&self, path: &str) -> (u16, String) {
        let r = self.http.get(self.url(path)).send().await.expect("get");
        let status = r.status().as_u16();
        (status, r.text().await.unwrap_or_default())
    }

    /// Submits a job and returns its id (asserting 202).
    pub async fn submit(&self, job: Value) -> String {
        let (s, b) = self.post("/api/v1/jobs", job).await;
        assert_eq!(s, 202, "submit: {b}");
        b["job_id"].as_str().expect("job_id").to_string()
    }

    /// Long-polls until the job is final; returns the view.
    pub async fn wait_final(&self, id: &str, secs: u64) -> Value {
        let (s, b) = self
            .get(&format!("/api/v1/jobs/{id}/wait?timeout={secs}s"))
            .await;
        assert_eq!(s, 200, "job {id} not final within {secs}s: {b}");
        b
    }

    pub fn kill9(&mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reap");
    }

    pub fn logs(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One request the target saw.
#[derive(Debug, Clone)]
pub struct Arrival {
    pub at: Instant,
    pub path: String,
    pub headers: HashMap<String, String>,
    pub body: String,
}

/// A scripted answer.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub delay_ms: u64,
}

impl Reply {
    pub fn status(status: u16) -> Self {
        Self {
            status,
            headers: vec![],
            delay_ms: 0,
        }
    }
    pub fn header(mut self, n: &str, v: &str) -> Self {
        self.headers.push((n.into(), v.into()));
        self
    }
}

#[derive(Default)]
struct TargetState {
    arrivals: Mutex<Vec<Arrival>>,
    /// Paths whose caller hung up before a delayed reply was sent.
    aborted: Mutex<Vec<String>>,
    scripts: Mutex<HashMap<String, VecDeque<Reply>>>,
    defaults: Mutex<HashMap<String, Reply>>,
    notify: Notify,
}

/// A local mock of a third-party API: `/<name>` answers from its script, then its default
/// (200 unless set), and records every arrival.
#[derive(Clone)]
pub struct Target {
    pub addr: SocketAddr,
    state: Arc<TargetState>,
}

impl Target {
    pub async fn start() -> Self {
        let state = Arc::new(TargetState::default());
        let app = Router::new()
            .route("/{name}", any(handle))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind target");
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { addr, state }
    }

    pub fn url(&self, name: &str) -> String {
        format!("http://{}/{}", self.addr, name)
    }

    /// Queues scripted replies for `/name`.
    pub fn script(&self, name: &str, replies: Vec<Reply>) {
        self.state
            .scripts
            .lock()
            .unwrap()
            .entry(name.into())
            .or_default()
            .extend(replies);
    }

    /// What `/name` answers once its script is used up.
    pub fn default_reply(&self, name: &str, r: Reply) {
        self.state.defaults.lock().unwrap().insert(name.into(), r);
    }

    pub fn arrivals(&self, name: &str) -> Vec<Arrival> {
        self.state
            .arrivals
            .lock()
            .unwrap()
            .iter()
            .filter(|a| a.path == format!("/{name}"))
            .cloned()
            .collect()
    }

    pub fn all_arrivals(&self) -> Vec<Arrival> {
        self.state.arrivals.lock().unwrap().clone()
    }

    /// Waits (on arrival events, not a sleep loop) until `/name` saw `n` calls.
    /// Waits until a caller of `/<name>` hung up before its delayed reply was sent.
    pub async fn wait_aborted(&self, name: &str, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        let path = format!("/{name}");
        loop {
            let notified = self.state.notify.notified();
            if self.state.aborted.lock().unwrap().contains(&path) {
                return;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                panic!("/{name}: the caller did not hang up within {timeout:?}");
            }
        }
    }

    pub async fn wait_for(&self, name: &str, n: usize, timeout: Duration) -> Vec<Arrival> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.state.notify.notified();
            let got = self.arrivals(name);
            if got.len() >= n {
                return got;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                panic!(
                    "/{name}: expected {n} arrivals, saw {} within {timeout:?}",
                    self.arrivals(name).len()
                );
            }
        }
    }
}

async fn handle(
    State(st): State<Arc<TargetState>>,
    AxPath(name): AxPath<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> impl IntoResponse {
    let hdrs = headers
        .iter()
        .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
        .collect();
    st.arrivals.lock().unwrap().push(Arrival {
        at: Instant::now(),
        path: format!("/{name}"),
        headers: hdrs,
        body: String::from_utf8_lossy(&body).into_owned(),
    });
    st.notify.notify_waiters();
    let reply = {
        let scripted = st
            .scripts
            .lock()
            .unwrap()
            .get_mut(&name)
            .and_then(|q| q.pop_front());
        scripted
            .or_else(|| st.defaults.lock().unwrap().get(&name).cloned())
            .unwrap_or(Reply::status(200))
    };
    if reply.delay_ms > 0 {
        // A caller that hangs up while we wait drops this future: the guard records it.
        struct Aborted(Option<(Arc<TargetState>, String)>);
        impl Drop for Aborted {
            fn drop(&mut self) {
                if let Some((st, name)) = self.0.take() {
                    st.aborted.lock().unwrap().push(format!("/{name}"));
                    st.notify.notify_waiters();
                }
            }
        }
        let mut guard = Aborted(Some((st.clone(), name.clone())));
        tokio::time::sleep(Duration::from_millis(reply.delay_ms)).await;
        guard.0 = None;
    }
    let mut h = HeaderMap::new();
    for (n, v) in &reply.headers {
        h.insert(
            axum::http::HeaderName::from_bytes(n.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    (
        StatusCode::from_u16(reply.status).unwrap(),
        h,
        format!("{{\"path\":\"/{name}\"}}"),
    )
}

/// The Python webhook receiver (`webhook_receiver.py`), verifying with Python's hmac and the
/// `standardwebhooks` package. Its request log arrives line by line on a channel.
pub struct PyReceiver {
    child: Child,
    pub port: u16,
    lines: tokio::sync::Mutex<tokio::sync::mpsc::UnboundedReceiver<Value>>,
}

impl PyReceiver {
    /// Starts a receiver that accepts deliveries signed with any of `secrets` (unsigned ones
    /// when empty); `port` 0 picks a free port.
    pub fn start(secrets: &[&str], port: u16) -> Self {
        Self::start_with_delays(secrets, port, &[])
    }

    /// As [`PyReceiver::start`]; requests from each `(address, ms)` of `delays` are answered
    /// that much later (they are logged on arrival).
    pub fn start_with_delays(secrets: &[&str], port: u16, delays: &[(&str, u64)]) -> Self {
        use std::io::BufRead;
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it/webhook_receiver.py");
        let mut cmd = Command::new("python3");
        cmd.arg(script).arg("--port").arg(port.to_string());
        for s in secrets {
            cmd.arg("--secret").arg(s);
        }
        for (ip, ms) in delays {
            cmd.arg("--delay-from").arg(format!("{ip}={ms}"));
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stdin(Stdio::null())
            .spawn()
            .expect("python3 (with the standardwebhooks package: pip install standardwebhooks)");
        let mut out = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let first = out
            .next()
            .expect("receiver exited: is the standardwebhooks package installed?")
            .unwrap();
        let port = first
            .strip_prefix("PORT ")
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| panic!("unexpected receiver output {first:?}"));
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in out.map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    if tx.send(v).is_err() {
                        break;
                    }
                }
            }
        });
        Self {
            child,
            port,
            lines: tokio::sync::Mutex::new(rx),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.port, path)
    }

    /// The next request it received (waits for it).
    pub async fn next(&self, timeout: Duration) -> Value {
        tokio::time::timeout(timeout, self.lines.lock().await.recv())
            .await
            .unwrap_or_else(|_| panic!("no webhook arrived within {timeout:?}"))
            .expect("receiver stopped")
    }
}

impl Drop for PyReceiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
