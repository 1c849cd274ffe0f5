//! Cluster harness (issue 13): nodes on 127.0.0.2–127.0.0.4 sharing one real PostgreSQL, a
//! target of ours that logs every call's start and end, and the checkers that read that log.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::any;
use axum::Router;

use super::{TestServer, BIN};

/// One call the target saw.
#[derive(Debug, Clone)]
pub struct Call {
    /// The body the job was submitted with (the test's own job number).
    pub body: String,
    pub start: Instant,
    /// The caller's address: which node sent it (each node sends from its own 127.0.0.x).
    pub from: std::net::IpAddr,
    /// None while running (or if the caller went away before the answer).
    pub end: Option<Instant>,
}

#[derive(Default)]
struct TargetState {
    calls: Mutex<Vec<Call>>,
    delay_ms: AtomicU32,
    /// Answer the next call with 429 and this Retry-After (seconds), once.
    retry_after_once: Mutex<Option<u64>>,
    notify: tokio::sync::Notify,
}

/// The shared target: every node calls it; it logs start and end of each call.
#[derive(Clone)]
pub struct LogTarget {
    pub addr: SocketAddr,
    state: Arc<TargetState>,
}

/// Records the end of a call even when the caller goes away (the handler is then dropped).
struct EndGuard {
    state: Arc<TargetState>,
    index: usize,
}

impl Drop for EndGuard {
    fn drop(&mut self) {
        let mut calls = self.state.calls.lock().unwrap();
        if calls[self.index].end.is_none() {
            calls[self.index].end = Some(Instant::now());
        }
    }
}

async fn handle(
    State(st): State<Arc<TargetState>>,
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<SocketAddr>,
    body: String,
) -> (StatusCode, HeaderMap, String) {
    let index = {
        let mut calls = st.calls.lock().unwrap();
        calls.push(Call {
            body,
            from: peer.ip(),
            start: Instant::now(),
            end: None,
        });
        calls.len() - 1
    };
    st.notify.notify_waiters();
    let _guard = EndGuard {
        state: st.clone(),
        index,
    };
    let retry = st.retry_after_once.lock().unwrap().take();
    let mut headers = HeaderMap::new();
    if let Some(secs) = retry {
        headers.insert("retry-after", secs.to_string().parse().unwrap());
        return (StatusCode::TOO_MANY_REQUESTS, headers, "slow down".into());
    }
    let delay = st.delay_ms.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(delay as u64)).await;
    (StatusCode::OK, headers, "ok".into())
}

impl LogTarget {
    /// A target on 127.0.0.1 answering 200 after `delay_ms`.
    pub async fn start(delay_ms: u32) -> Self {
        let state = Arc::new(TargetState::default());
        state.delay_ms.store(delay_ms, Ordering::Relaxed);
        let app = Router::new()
            .route("/{name}", any(handle))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            axum::serve(
                listener,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .await
            .unwrap()
        });
        Self { addr, state }
    }

    pub fn url(&self) -> String {
        format!("http://{}/work", self.addr)
    }

    /// Calls that start from now on take `ms` to answer (calls running keep theirs).
    pub fn set_delay(&self, ms: u32) {
        self.state.delay_ms.store(ms, Ordering::Relaxed);
    }

    /// The next call gets 429 with `Retry-After: secs`.
    pub fn retry_after_once(&self, secs: u64) {
        *self.state.retry_after_once.lock().unwrap() = Some(secs);
    }

    pub fn calls(&self) -> Vec<Call> {
        self.state.calls.lock().unwrap().clone()
    }

    /// Waits (on call events) until `n` calls arrived; returns them.
    pub async fn wait_calls(&self, n: usize, timeout: Duration) -> Vec<Call> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.state.notify.notified();
            let got = self.calls();
            if got.len() >= n {
                return got;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.calls();
            }
        }
    }

    /// Waits until a call from `from` starts after `after`; returns its start.
    pub async fn wait_call_from(
        &self,
        from: std::net::IpAddr,
        after: Instant,
        timeout: Duration,
    ) -> Option<Instant> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.state.notify.notified();
            let first = self
                .calls()
                .iter()
                .filter(|c| c.from == from && c.start > after)
                .map(|c| c.start)
                .min();
            if first.is_some() {
                return first;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return None;
            }
        }
    }

    /// Waits until a call starts after `after`; returns its start.
    pub async fn wait_call_after(&self, after: Instant, timeout: Duration) -> Option<Instant> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.state.notify.notified();
            if let Some(t) = self
                .calls()
                .iter()
                .map(|c| c.start)
                .filter(|s| *s > after)
                .min()
            {
                return Some(t);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return None;
            }
        }
    }
}

/// Every acknowledged body reached the target (waits on call events); returns the calls.
pub async fn all_arrive(t: &LogTarget, bodies: &[String], within: Duration) -> Vec<Call> {
    let deadline = Instant::now() + within;
    loop {
        let calls = t.calls();
        let seen: std::collections::HashSet<&str> = calls.iter().map(|c| c.body.as_str()).collect();
        let lost: Vec<&String> = bodies
            .iter()
            .filter(|b| !seen.contains(b.as_str()))
            .collect();
        if lost.is_empty() {
            return calls;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "{} acknowledged jobs never arrived: {:?}",
            lost.len(),
            &lost[..lost.len().min(10)]
        );
        t.wait_calls(calls.len() + 1, left.min(Duration::from_secs(2)))
            .await;
    }
}

/// Most calls that started in any window of `w`.
pub fn max_in_window(calls: &[Call], w: Duration) -> usize {
    let mut starts: Vec<Instant> = calls.iter().map(|c| c.start).collect();
    starts.sort();
    let mut best = 0;
    let mut lo = 0;
    for hi in 0..starts.len() {
        while starts[hi].duration_since(starts[lo]) >= w {
            lo += 1;
        }
        best = best.max(hi - lo + 1);
    }
    best
}

/// Most calls running at once (a call still open counts until `now`).
pub fn max_concurrent(calls: &[Call]) -> usize {
    let now = Instant::now();
    let mut ev: Vec<(Instant, i32)> = Vec::new();
    for c in calls {
        ev.push((c.start, 1));
        ev.push((c.end.unwrap_or(now), -1));
    }
    // Ends before starts at the same instant.
    ev.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.cmp(&b.1)));
    let (mut cur, mut best) = (0i32, 0i32);
    for (_, d) in ev {
        cur += d;
        best = best.max(cur);
    }
    best as usize
}

/// Job bodies the target saw more than once, with their counts.
pub fn duplicated(calls: &[Call]) -> Vec<(String, usize)> {
    let mut by: std::collections::BTreeMap<&str, usize> = Default::default();
    for c in calls {
        *by.entry(c.body.as_str()).or_default() += 1;
    }
    by.into_iter()
        .filter(|(_, n)| *n > 1)
        .map(|(b, n)| (b.to_string(), n))
        .collect()
}

/// A node of a test cluster.
pub struct Node {
    pub server: TestServer,
    pub name: String,
    pub ip: String,
}

/// Starts a node named `name` on `ip` against `url`, its data dir under `root`, with extra
/// `KEY=VALUE` environment variables (e.g. libfaketime's).
pub fn start_node(
    root: &Path,
    name: &str,
    ip: &str,
    url: &str,
    config: &str,
    key: Option<String>,
    env: &[&str],
) -> Node {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("config.toml");
    std::fs::write(&cfg, config).unwrap();
    let mut cmd = Command::new(BIN);
    for kv in env {
        if let Some((k, v)) = kv.split_once('=') {
            cmd.env(k, v);
        }
    }
    cmd.args([
        "serve",
        "--listen",
        &format!("{ip}:0"),
        "--allow-cidr",
        "127.0.0.1/32",
    ])
    .arg("--config")
    .arg(&cfg)
    .arg("--data-dir")
    .arg(&dir)
    .args([
        "--node-id",
        name,
        "--region",
        "r1",
        "--outbound-source-ip",
        ip,
    ])
    .args(["--advertise-url", &format!("http://{ip}:1")])
    .env("EZTHROTTLE_DATABASE_URL", url)
    .env("EZTHROTTLE_LOG", "info,ezt_runtime=debug");
    let server = TestServer::spawn_command(&dir, cmd, key);
    Node {
        server,
        name: name.to_string(),
        ip: ip.to_string(),
    }
}

/// The nodes whose log says they claimed a lane and did not hand it over since (a node that
/// joins takes the lanes placement now gives it: their earlier owner logs "lane handed over").
pub fn owners(nodes: &[Node]) -> Vec<usize> {
    nodes
        .iter()
        .enumerate()
        .filter(|(_, n)| {
            let logs = n.server.logs();
            match (logs.rfind("lane claimed"), logs.rfind("lane handed over")) {
                (Some(c), Some(h)) => c > h,
                (c, _) => c.is_some(),
            }
        })
        .map(|(i, _)| i)
        .collect()
}

/// The thread-safe libfaketime (`EZT_LIBFAKETIME` or Debian's path), if installed.
pub fn libfaketime() -> Option<std::path::PathBuf> {
    if let Ok(p) = std::env::var("EZT_LIBFAKETIME") {
        return Some(p.into());
    }
    let mut dirs = vec![std::path::PathBuf::from("/usr/lib/faketime")];
    if let Ok(rd) = std::fs::read_dir("/usr/lib") {
        dirs.extend(rd.flatten().map(|e| e.path().join("faketime")));
    }
    dirs.into_iter()
        .map(|d| d.join("libfaketimeMT.so.1"))
        .find(|p| p.exists())
}

/// Environment that runs a node with its wall clock `offset` (e.g. "+30s") from real time; its
/// monotonic clock is left alone.
pub fn skewed(lib: &Path, offset: &str) -> Vec<String> {
    vec![
        format!("LD_PRELOAD={}", lib.display()),
        format!("FAKETIME={offset}"),
        "FAKETIME_DONT_FAKE_MONOTONIC=1".into(),
        "DONT_FAKE_MONOTONIC=1".into(),
    ]
}

/// Every lane has one owner: the database names a live node under its current
/// epoch, and no other node believes it holds the lane (each node's lanes view names itself
/// only for lanes it schedules).
pub async fn no_lane_has_two_owners(url: &str, nodes: &[&TestServer], operator: &str) {
    use ezt_store::prelude::*;
    let store = ezt_store_postgres::PgStore::connect_without_migrating(url).unwrap();
    let members = store.nodes().await.unwrap();
    let mut lanes: Vec<String> = Vec::new();
    for m in &members {
        lanes.extend(
            store
                .owned_lanes(&ezt_store::NodeId::new(m.id.as_str()), m.epoch)
                .await
                .unwrap()
                .into_iter()
                .map(|(lane, _)| lane),
        );
    }
    assert!(
        !lanes.is_empty(),
        "the jobs ran in a lane some node owns: {members:?}"
    );
    let owners = store.lane_owners(&lanes).await.unwrap();
    let mut holders: std::collections::HashMap<String, Vec<String>> =
        std::collections::HashMap::new();
    for n in nodes {
        let (st, me) = n.get_as(operator, "/api/v1/cluster/nodes").await;
        assert_eq!(st, 200, "{me}");
        let me = me["node"].as_str().unwrap().to_string();
        let (st, view) = n.get("/api/v1/lanes").await;
        assert_eq!(st, 200, "{view}");
        for l in view["lanes"].as_array().unwrap() {
            if l["owner_node"].as_str() == Some(me.as_str()) {
                holders
                    .entry(l["lane"].as_str().unwrap().to_string())
                    .or_default()
                    .push(me.clone());
            }
        }
    }
    for o in &owners {
        let Some(owner) = &o.owner_node else { continue };
        let member = members.iter().find(|m| &m.id == owner);
        assert!(
            o.owner_alive && member.is_some_and(|m| m.alive && Some(m.epoch) == o.owner_node_epoch),
            "lane {} is held by {owner} under epoch {:?}, not a live member's current one: {members:?}",
            o.lane,
            o.owner_node_epoch
        );
    }
    for (lane, h) in &holders {
        assert_eq!(h.len(), 1, "lane {lane} has two owners: {h:?}");
        let db = owners
            .iter()
            .find(|o| o.lane.ends_with(lane.as_str()) || lane.ends_with(&o.lane))
            .unwrap_or_else(|| panic!("lane {lane} is not in the database: {owners:?}"));
        assert_eq!(
            db.owner_node.as_ref(),
            Some(&h[0]),
            "lane {lane}: the node and the database disagree"
        );
    }
    assert_eq!(
        holders.len(),
        owners.iter().filter(|o| o.owner_node.is_some()).count(),
        "every owned lane has a node that schedules it: {holders:?} {owners:?}"
    );
}
