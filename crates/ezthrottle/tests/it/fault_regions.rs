//! Regions (issue 15), with real processes: three nodes of regions r1/r2/r3 on 127.0.0.2–4,
//! one real PostgreSQL, each node sending from its own source address, and a target of ours
//! that delays or fails by source address (so it tells the regions apart) and logs each call's
//! start, end (the moment its connection closed, when the caller went away) and
//! `Idempotency-Key`. Cases: TORRENT returns the first answer and cuts the slow legs; every
//! region failing returns the last answer, never retried; denied addresses, unknown regions
//! and unknown fields are refused; the executing node re-checks SSRF with its own rules;
//! forged, stale and replayed node-to-node calls are refused.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::any;
use axum::Router;
use serde_json::{json, Value};

use crate::fault_common::record;
use crate::support::{TestServer, BIN};

pub const SECRET: &str = "regions-test-secret-0123456789";
pub const OPERATOR: &str = "operator-token-0123456789";
pub const CONFIG: &str = "[admin]\ntoken = \"operator-token-0123456789\"\n";
/// The races of the first cases are not about limits: the target's lanes get room for them
/// (every TORRENT leg takes a permit of its lane).
const ROOMY: &str = "[admin]\ntoken = \"operator-token-0123456789\"\n\n[lanes.hosts.\"127.0.0.1\"]\nrate = 1000.0\nburst = 100\nmax_in_flight = 100\n";
/// The lane of the permit cases: 2/s, burst 1, one call at a time.
const TIGHT: &str = "[admin]\ntoken = \"operator-token-0123456789\"\n\n[lanes.hosts.\"127.0.0.1\"]\nrate = 2.0\nburst = 1\nmax_in_flight = 1\n";

/// One call the target saw.
#[derive(Debug, Clone)]
pub struct Call {
    pub from: IpAddr,
    pub key: Option<String>,
    pub body: String,
    pub start: Instant,
    /// When the answer was returned, or the handler dropped (the caller closed the connection).
    pub end: Option<Instant>,
    /// Whether the handler ran to its answer (false: cut by the caller).
    pub answered: bool,
}

#[derive(Default)]
pub struct TargetState {
    calls: Mutex<Vec<Call>>,
    /// Per source address: (delay ms, status).
    rules: Mutex<HashMap<IpAddr, (u64, u16)>>,
    /// When set, every answer carries this `Retry-After` (seconds).
    retry_after: Mutex<Option<u64>>,
    pub notify: tokio::sync::Notify,
}

/// A target that answers by source address.
#[derive(Clone)]
pub struct RegionTarget {
    pub addr: SocketAddr,
    pub state: Arc<TargetState>,
}

struct EndGuard {
    state: Arc<TargetState>,
    index: usize,
}

impl Drop for EndGuard {
    fn drop(&mut self) {
        {
            let mut calls = self.state.calls.lock().unwrap();
            if calls[self.index].end.is_none() {
                calls[self.index].end = Some(Instant::now());
            }
        }
        self.state.notify.notify_waiters();
    }
}

async fn handle(
    State(st): State<Arc<TargetState>>,
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: String,
) -> (StatusCode, HeaderMap, String) {
    let index = {
        let mut calls = st.calls.lock().unwrap();
        calls.push(Call {
            from: peer.ip(),
            key: headers
                .get("idempotency-key")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string),
            body,
            start: Instant::now(),
            end: None,
            answered: false,
        });
        calls.len() - 1
    };
    st.notify.notify_waiters();
    let guard = EndGuard {
        state: st.clone(),
        index,
    };
    let (delay, status) = st
        .rules
        .lock()
        .unwrap()
        .get(&peer.ip())
        .copied()
        .unwrap_or((0, 200));
    tokio::time::sleep(Duration::from_millis(delay)).await;
    st.calls.lock().unwrap()[index].answered = true;
    drop(guard);
    let mut out = HeaderMap::new();
    if let Some(s) = *st.retry_after.lock().unwrap() {
        out.insert("retry-after", s.to_string().parse().unwrap());
    }
    (
        StatusCode::from_u16(status).unwrap(),
        out,
        format!("from {}", peer.ip()),
    )
}

impl RegionTarget {
    pub async fn start() -> Self {
        let state = Arc::new(TargetState::default());
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

    /// Calls from `ip` answer `status` after `delay_ms`.
    pub fn rule(&self, ip: &str, delay_ms: u64, status: u16) {
        self.state
            .rules
            .lock()
            .unwrap()
            .insert(ip.parse().unwrap(), (delay_ms, status));
    }

    pub fn calls(&self) -> Vec<Call> {
        self.state.calls.lock().unwrap().clone()
    }

    /// Waits (on call events) until every call of `body` has ended and there are `n` of them.
    pub async fn wait_ended(&self, body: &str, n: usize, timeout: Duration) -> Vec<Call> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.state.notify.notified();
            let got: Vec<Call> = self
                .calls()
                .into_iter()
                .filter(|c| c.body == body)
                .collect();
            if got.len() >= n && got.iter().all(|c| c.end.is_some()) {
                return got;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return got;
            }
        }
    }
}

struct Node {
    server: TestServer,
    ip: &'static str,
    dir: std::path::PathBuf,
}

struct Regions {
    nodes: Vec<Node>,
    _root: tempfile::TempDir,
}

pub const IPS: [&str; 3] = ["127.0.0.2", "127.0.0.3", "127.0.0.4"];

/// A free port on `ip` (bound and released; the node binds it right after).
pub fn free_port(ip: &str) -> u16 {
    std::net::TcpListener::bind((ip, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start_node(
    root: &Path,
    i: usize,
    url: &str,
    key: Option<String>,
    allow_target: bool,
    secret: Option<&str>,
) -> Node {
    start_node_with(root, i, url, key, allow_target, secret, CONFIG)
}

fn start_node_with(
    root: &Path,
    i: usize,
    url: &str,
    key: Option<String>,
    allow_target: bool,
    secret: Option<&str>,
    config: &str,
) -> Node {
    let mut env = vec![("EZTHROTTLE_LOG", "info")];
    if let Some(s) = secret {
        env.push(("EZTHROTTLE_CLUSTER_SECRET", s));
    }
    let (server, dir) = start_region_node(root, i, url, key, allow_target, config, &env);
    Node {
        server,
        ip: IPS[i],
        dir,
    }
}

/// Starts node `i` of a regions cluster on database `url`: `n{i+2}`, region `r{i+1}`, on
/// `IPS[i]` sending from that address, advertising its own URL, its data dir under `root`;
/// `allow_target`: it may call our targets (127.0.0.1); `env` last (it overrides). Answers the
/// server and its data dir.
pub fn start_region_node(
    root: &Path,
    i: usize,
    url: &str,
    key: Option<String>,
    allow_target: bool,
    config: &str,
    env: &[(&str, &str)],
) -> (TestServer, std::path::PathBuf) {
    let ip = IPS[i];
    let name = format!("n{}", i + 2);
    let dir = root.join(&name);
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("config.toml");
    std::fs::write(&cfg, config).unwrap();
    let port = free_port(ip);
    let mut cmd = Command::new(BIN);
    cmd.args(["serve", "--listen", &format!("{ip}:{port}")]);
    if allow_target {
        cmd.args(["--allow-cidr", "127.0.0.1/32"]);
    }
    cmd.arg("--config")
        .arg(&cfg)
        .arg("--data-dir")
        .arg(&dir)
        .args(["--node-id", &name, "--region", &format!("r{}", i + 1)])
        .args(["--outbound-source-ip", ip])
        .args(["--advertise-url", &format!("http://{ip}:{port}")])
        .env("EZTHROTTLE_DATABASE_URL", url)
        .envs(env.iter().copied());
    (TestServer::spawn_command(&dir, cmd, key), dir)
}

/// What the job-path cases' nodes (reroute, race) share: the cluster secret, a short attempt
/// timeout (a hand-off lost mid-call holds its slot until the attempt lease expires: timeout +
/// 2 s) and roomy lanes.
pub const JOB_PATH_ENV: [(&str, &str); 5] = [
    ("EZTHROTTLE_CLUSTER_SECRET", SECRET),
    ("EZTHROTTLE_EXECUTOR_ATTEMPT_TIMEOUT_MS", "5000"),
    ("EZTHROTTLE_LANES_DEFAULT_RATE", "500"),
    ("EZTHROTTLE_LANES_DEFAULT_BURST", "20"),
    ("EZTHROTTLE_LANES_DEFAULT_MAX_IN_FLIGHT", "20"),
];

/// Polls the members on `s` until exactly `n` are alive (membership has no event to await).
pub async fn await_alive(s: &TestServer, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (st, v) = s.get_as(OPERATOR, "/api/v1/cluster/nodes").await;
        let alive = v["nodes"]
            .as_array()
            .map(|a| a.iter().filter(|n| n["alive"] == true).count())
            .unwrap_or(0);
        if st == 200 && alive == n {
            return;
        }
        assert!(Instant::now() < deadline, "never {n} members alive: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

impl Regions {
    /// Three nodes, r1..r3; `allow[i]`: node i may call the target (127.0.0.1).
    async fn start(allow: [bool; 3]) -> Self {
        Self::start_with(allow, ROOMY).await
    }

    /// Three nodes with this configuration.
    async fn start_with(allow: [bool; 3], config: &str) -> Self {
        let url = ezt_store_postgres::testing::database_url().await;
        let root = tempfile::tempdir().unwrap();
        let mut nodes: Vec<Node> = Vec::new();
        for (i, allowed) in allow.into_iter().enumerate() {
            let key = nodes.first().map(|n| n.server.key.clone());
            nodes.push(start_node_with(
                root.path(),
                i,
                &url,
                key,
                allowed,
                Some(SECRET),
                config,
            ));
        }
        let r = Self { nodes, _root: root };
        r.await_members(3).await;
        r
    }

    async fn await_members(&self, n: usize) {
        await_alive(&self.nodes[0].server, n).await;
    }

    async fn torrent(&self, i: usize, body: Value) -> (u16, Value) {
        self.nodes[i].server.post("/api/v1/torrent", body).await
    }
}

fn root_of(c: &Regions) -> &Path {
    c._root.path()
}

/// The index (into `IPS`) of the node a lane to `target` is placed on while all three nodes
/// (`n2`..`n4`) are live: its owner, which grants the permits of TORRENT legs to it.
fn placed_on(target: &RegionTarget) -> usize {
    let ids: Vec<ezt_store::NodeId> = ["n2", "n3", "n4"]
        .into_iter()
        .map(ezt_store::NodeId::new)
        .collect();
    let lane = format!("job:{}", target.addr);
    let best = ezt_runtime::fence::rendezvous(&lane, ids.iter()).unwrap();
    ids.iter().position(|i| i == best).unwrap()
}

fn leg<'a>(v: &'a Value, region: &str) -> &'a Value {
    v["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["region"] == region)
        .unwrap_or_else(|| panic!("no leg of {region}: {v}"))
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

#[tokio::test]
async fn torrent_returns_the_first_answer_and_cuts_the_slow_legs() {
    let target = RegionTarget::start().await;
    let c = Regions::start([true, true, true]).await;
    // Race A, five times: r2 answers at once; r1 (the node taking the call, its local leg)
    // and r3 (a hand-off) would answer only after 3 s. Race B, five times: r1's local leg
    // wins and both hand-off legs are cut (the cancellation crosses the executing nodes).
    let mut cut_a = Vec::new();
    let mut cut_b = Vec::new();
    let mut answered_ms = Vec::new();
    for round in 0..10 {
        let (fast, fast_region) = if round < 5 { (1, "r2") } else { (0, "r1") };
        for (i, ip) in IPS.iter().enumerate() {
            target.rule(ip, if i == fast { 20 } else { 3_000 }, 200);
        }
        let body = format!("race-{round}");
        let key = format!("race-key-{round}");
        let t0 = Instant::now();
        let (st, v) = c
            .torrent(
                0,
                json!({"url": target.url(), "method": "POST", "body": body, "regions": ["r1", "r2", "r3"], "idempotent_key": key}),
            )
            .await;
        let took = t0.elapsed();
        answered_ms.push(took.as_secs_f64() * 1000.0);
        assert_eq!(st, 200, "{v}");
        assert_eq!(v["region"], fast_region, "the fast region won: {v}");
        assert_eq!(v["status_code"], 200);
        assert_eq!(v["body"], format!("from {}", IPS[fast]));
        assert_eq!(v["idempotent_key"], key.as_str());
        for r in ["r1", "r2", "r3"] {
            let want = if r == fast_region { "won" } else { "cancelled" };
            assert_eq!(leg(&v, r)["outcome"], want, "{v}");
        }
        assert!(took < Duration::from_secs(2), "answered in {took:?}");

        // At the target: three calls, one per source address, each with the same key and
        // body, all sent before the win; the two slow ones cut (connections closed) after it.
        let calls = target.wait_ended(&body, 3, Duration::from_secs(10)).await;
        assert_eq!(calls.len(), 3, "{calls:?}");
        let mut froms: Vec<IpAddr> = calls.iter().map(|c| c.from).collect();
        froms.sort();
        let want: Vec<IpAddr> = IPS.iter().map(|i| i.parse().unwrap()).collect();
        assert_eq!(froms, want, "one leg from each region's address");
        assert!(
            calls.iter().all(|c| c.key.as_deref() == Some(key.as_str())),
            "the same Idempotency-Key on every leg: {calls:?}"
        );
        let win = calls
            .iter()
            .find(|c| c.from.to_string() == IPS[fast])
            .unwrap();
        assert!(win.answered);
        let win_end = win.end.unwrap();
        assert!(
            calls.iter().all(|c| c.start < win_end),
            "every leg was sent at once, before the win"
        );
        for c in calls.iter().filter(|c| c.from.to_string() != IPS[fast]) {
            assert!(!c.answered, "the slow leg from {} was not cut", c.from);
            let ms = c
                .end
                .unwrap()
                .saturating_duration_since(win_end)
                .as_secs_f64()
                * 1000.0;
            assert!(
                ms < 500.0,
                "the leg from {} was closed {ms:.2} ms after the win",
                c.from
            );
            if round < 5 {
                cut_a.push(ms)
            } else {
                cut_b.push(ms)
            }
        }
    }
    for s in [&mut cut_a, &mut cut_b, &mut answered_ms] {
        s.sort_by(|a, b| a.partial_cmp(b).unwrap());
    }
    // The bound of issue 15 where the racer sees the win at once (its local leg won): the
    // hand-off legs' connections at the target close within 5 ms (median of 10 legs; the
    // worst is recorded: two shared cores make single samples noisy). When a hand-off wins,
    // the win reaches the racer only after the executing node's answer crosses back, so
    // that figure includes one node-to-node return trip.
    assert!(
        pct(&cut_b, 0.5) <= 5.0,
        "hand-off legs closed a median {:.2} ms after the local win: {cut_b:?}",
        pct(&cut_b, 0.5)
    );

    // Added latency: TORRENT (one region, the local leg) and a hand-off (one region, another
    // node) against a direct call to the same target, side by side.
    target.rule(IPS[0], 0, 200);
    target.rule(IPS[1], 0, 200);
    let direct = reqwest::Client::builder()
        .local_address(Some(IPS[0].parse().unwrap()))
        .build()
        .unwrap();
    let api = reqwest::Client::new();
    let torrent_url = c.nodes[0].server.url("/api/v1/torrent");
    let key = c.nodes[0].server.key.clone();
    let n = 200;
    let (mut d, mut local, mut remote) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..n {
        let t = Instant::now();
        let r = direct.get(target.url()).send().await.unwrap();
        assert_eq!(r.status(), 200);
        r.bytes().await.unwrap();
        d.push(t.elapsed().as_secs_f64() * 1000.0);
        for (regions, out) in [(["r1"], &mut local), (["r2"], &mut remote)] {
            let t = Instant::now();
            let r = api
                .post(&torrent_url)
                .bearer_auth(&key)
                .json(&json!({"url": target.url(), "regions": regions, "idempotent_key": format!("lat-{i}-{}", regions[0])}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            let v: Value = r.json().await.unwrap();
            assert_eq!(v["status_code"], 200, "{v}");
            out.push(t.elapsed().as_secs_f64() * 1000.0);
        }
    }
    for s in [&mut d, &mut local, &mut remote] {
        s.sort_by(|a, b| a.partial_cmp(b).unwrap());
    }
    record(
        "regions_torrent",
        json!({
            "race_answered_p50_ms": pct(&answered_ms, 0.5),
            "handoff_won_losers_closed_after_win_ms": {"p50": pct(&cut_a, 0.5), "max": cut_a.last()},
            "local_won_losers_closed_after_win_ms": {"p50": pct(&cut_b, 0.5), "max": cut_b.last()},
            "samples": n,
            "direct_p50_ms": pct(&d, 0.5), "direct_p99_ms": pct(&d, 0.99),
            "torrent_local_p50_ms": pct(&local, 0.5), "torrent_local_p99_ms": pct(&local, 0.99),
            "torrent_handoff_p50_ms": pct(&remote, 0.5), "torrent_handoff_p99_ms": pct(&remote, 0.99),
        }),
    );
}

#[tokio::test]
async fn torrent_with_every_region_failing_returns_the_last_answer_never_retried() {
    let target = RegionTarget::start().await;
    let c = Regions::start([true, true, true]).await;
    target.rule(IPS[0], 0, 500);
    target.rule(IPS[1], 100, 502);
    target.rule(IPS[2], 400, 503);
    let (st, v) = c
        .torrent(
            1,
            json!({"url": target.url(), "method": "PUT", "body": "fail-1", "regions": ["r1", "r2", "r3"]}),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["region"], "r3", "the last answer: {v}");
    assert_eq!(v["status_code"], 503);
    for (r, code) in [("r1", 500), ("r2", 502), ("r3", 503)] {
        assert_eq!(leg(&v, r)["outcome"], "lost", "{v}");
        assert_eq!(leg(&v, r)["status_code"], code, "{v}");
    }
    let key = v["idempotent_key"].as_str().unwrap().to_string();
    assert!(key.starts_with("torrent_"), "a key was made: {key}");
    let calls = target
        .wait_ended("fail-1", 3, Duration::from_secs(10))
        .await;
    assert_eq!(calls.len(), 3, "one call per region, no retries: {calls:?}");
    assert!(calls.iter().all(|c| c.key.as_deref() == Some(key.as_str())));
    // Another race on another node later sees only its own calls: nothing of the first was
    // queued or retried meanwhile.
    let (st, v2) = c
        .torrent(
            2,
            json!({"url": target.url(), "body": "fail-2", "regions": ["r3"]}),
        )
        .await;
    assert_eq!(st, 200, "{v2}");
    assert_eq!(v2["status_code"], 503);
    assert_eq!(
        target.calls().iter().filter(|c| c.body == "fail-1").count(),
        3,
        "the failed race was never retried"
    );
}

#[tokio::test]
async fn torrent_refusals_and_node_to_node_authentication() {
    let target = RegionTarget::start().await;
    // r3's node does not allow the target's address: it refuses the call at connect time
    // with its own rules, though r1 accepted it.
    let c = Regions::start([true, true, false]).await;
    let n0 = &c.nodes[0].server;

    // Submission checks: SSRF, unknown region, unknown field, bad timeout, missing url.
    let (st, v) = c
        .torrent(0, json!({"url": "http://169.254.169.254/latest"}))
        .await;
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (422, Some("ssrf_denied")),
        "{v}"
    );
    assert_eq!(v["error"]["field"], "url");
    let (st, v) = c
        .torrent(0, json!({"url": target.url(), "regions": ["r2", "mars"]}))
        .await;
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (422, Some("region_unavailable")),
        "{v}"
    );
    assert_eq!(v["error"]["field"], "regions[1]");
    let (st, v) = c
        .torrent(0, json!({"url": target.url(), "retry_policy": {}}))
        .await;
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (400, Some("unknown_field")),
        "{v}"
    );
    assert_eq!(v["error"]["field"], "retry_policy");
    let (st, v) = c
        .torrent(0, json!({"url": target.url(), "timeout": "10m"}))
        .await;
    assert_eq!(
        (st, v["error"]["field"].as_str()),
        (400, Some("timeout")),
        "{v}"
    );
    let (st, v) = c.torrent(0, json!({"regions": ["r1"]})).await;
    assert_eq!(
        (st, v["error"]["field"].as_str()),
        (400, Some("url")),
        "{v}"
    );
    let r = reqwest::Client::new()
        .post(n0.url("/api/v1/torrent"))
        .json(&json!({"url": target.url()}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "no API key");
    assert!(
        target.calls().is_empty(),
        "nothing refused was sent: {:?}",
        target.calls()
    );

    // Connect-time SSRF on the executing node: r3 refuses, r2 answers.
    target.rule(IPS[1], 0, 200);
    let (st, v) = c
        .torrent(
            0,
            json!({"url": target.url(), "body": "ssrf-1", "regions": ["r3", "r2"]}),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["region"], "r2", "{v}");
    let r3 = leg(&v, "r3");
    assert!(
        r3["outcome"] == "error" || r3["outcome"] == "cancelled",
        "{v}"
    );
    let (st, v) = c
        .torrent(
            0,
            json!({"url": target.url(), "body": "ssrf-2", "regions": ["r3"]}),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(
        v["error"]["code"], "ssrf_denied",
        "r3's own rules refused: {v}"
    );
    assert!(v.get("status_code").is_none(), "{v}");
    assert!(
        target.calls().iter().all(|c| c.from.to_string() != IPS[2]),
        "r3 never connected"
    );

    // Node-to-node calls: signed with the cluster secret, fresh, once.
    let n1 = &c.nodes[1].server;
    let path = "/internal/v1/attempts";
    let spec = serde_json::to_vec(&json!({"url": target.url(), "method": "POST", "headers": [], "body": "internal-1", "idempotency_key": "k-internal", "timeout_ms": 5000})).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let good = ezt_runtime::internal_auth::NodeAuth::new(SECRET);
    let forged = ezt_runtime::internal_auth::NodeAuth::new("not-the-cluster-secret-000");
    let http = reqwest::Client::new();
    let send = |h: Option<String>, body: Vec<u8>| {
        let mut r = http
            .post(n1.url(path))
            .header("content-type", "application/json")
            .body(body);
        if let Some(h) = h {
            r = r.header("x-ezt-node-auth", h);
        }
        async move {
            let r = r.send().await.unwrap();
            let st = r.status().as_u16();
            (st, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let (st, v) = send(None, spec.clone()).await;
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (401, Some("unauthorized")),
        "{v}"
    );
    let (st, v) = send(Some(forged.sign("POST", path, &spec, now)), spec.clone()).await;
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (401, Some("unauthorized")),
        "forged: {v}"
    );
    let (st, _) = send(Some(good.sign("POST", path, &spec, now - 90)), spec.clone()).await;
    assert_eq!(st, 401, "stale");
    let signed = good.sign("POST", path, &spec, now);
    let mut tampered = spec.clone();
    let at = tampered.len() - 3;
    tampered[at] = b'9';
    let (st, _) = send(Some(signed.clone()), tampered).await;
    assert_eq!(st, 401, "a changed body");
    assert!(
        target.calls().iter().all(|c| c.body != "internal-1"),
        "nothing refused reached the target"
    );
    let (st, v) = send(Some(signed.clone()), spec.clone()).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["region"], "r2");
    assert_eq!(v["response"]["status_code"], 200, "{v}");
    let (st, v) = send(Some(signed), spec.clone()).await;
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (401, Some("unauthorized")),
        "replayed: {v}"
    );
    let calls: Vec<Call> = target
        .calls()
        .into_iter()
        .filter(|c| c.body == "internal-1")
        .collect();
    assert_eq!(calls.len(), 1, "the replay was not sent");
    assert_eq!(calls[0].key.as_deref(), Some("k-internal"));

    // The secret is never written to a log.
    for n in &c.nodes {
        let logs = n.server.logs();
        assert!(!logs.contains(SECRET), "{} logged the secret", n.ip);
        let _ = &n.dir;
    }
    assert!(c.nodes[1]
        .server
        .logs()
        .contains("refused a node-to-node call"));
}

/// A cluster node without a cluster secret serves no internal call and cannot race other
/// regions (it says why); its own region still works.
#[tokio::test]
async fn without_a_secret_the_internal_api_is_off() {
    let target = RegionTarget::start().await;
    let url = ezt_store_postgres::testing::database_url().await;
    let root = tempfile::tempdir().unwrap();
    let a = start_node(root.path(), 0, &url, None, true, None);
    let mut c = Regions {
        nodes: vec![a],
        _root: root,
    };
    c.await_members(1).await;
    // Alone, it owns the target's lane (it grants the leg's permit itself): its own region
    // works. (With the lane on the other node it could not forward the race to it: 503.)
    let (st, v) = c
        .torrent(0, json!({"url": target.url(), "regions": ["r1"]}))
        .await;
    assert_eq!((st, v["status_code"].as_u64()), (200, Some(200)), "{v}");
    let b = start_node(
        root_of(&c),
        1,
        &url,
        Some(c.nodes[0].server.key.clone()),
        true,
        Some(SECRET),
    );
    c.nodes.push(b);
    c.await_members(2).await;
    let (st, v) = c
        .torrent(0, json!({"url": target.url(), "regions": ["r2"]}))
        .await;
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (422, Some("region_unavailable")),
        "{v}"
    );
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("cluster_secret"),
        "{v}"
    );
    // Even a request signed with a secret is refused by the node that has none.
    let spec = b"{}".to_vec();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let h = ezt_runtime::internal_auth::NodeAuth::new(SECRET).sign(
        "POST",
        "/internal/v1/attempts",
        &spec,
        now,
    );
    let r = reqwest::Client::new()
        .post(c.nodes[0].server.url("/internal/v1/attempts"))
        .header("x-ezt-node-auth", h)
        .body(spec)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

/// A region's node is SIGKILLed while its leg runs: that leg ends with a hand-off error at once
/// and the race goes on with the others (the fast-enough region still wins).
#[tokio::test]
async fn a_region_killed_during_a_race_is_one_failed_leg() {
    let target = RegionTarget::start().await;
    let mut c = Regions::start([true, true, true]).await;
    settle_lane(&c, &target).await;
    // The killed region's node must not be the lane's owner (the owner runs the race): the
    // roles of r2 and r3 swap when the lane is placed on r3's node.
    let (win, die) = if placed_on(&target) == 2 {
        (2, 1)
    } else {
        (1, 2)
    };
    let (win_r, die_r) = (format!("r{}", win + 1), format!("r{}", die + 1));
    target.rule(IPS[0], 0, 500);
    target.rule(IPS[win], 1_500, 200);
    target.rule(IPS[die], 10_000, 200);
    let node0 = c.nodes[0].server.url("/api/v1/torrent");
    let key = c.nodes[0].server.key.clone();
    let url = target.url();
    let race = tokio::spawn(async move {
        let t0 = Instant::now();
        let r = reqwest::Client::new()
            .post(node0)
            .bearer_auth(key)
            .json(&json!({"url": url, "body": "kill-1", "regions": ["r1", "r2", "r3"]}))
            .send()
            .await
            .unwrap();
        let st = r.status().as_u16();
        (st, r.json::<Value>().await.unwrap(), t0.elapsed())
    });
    let from_r3: IpAddr = IPS[die].parse().unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let notified = target.state.notify.notified();
        if target.calls().iter().any(|c| c.from == from_r3) {
            break;
        }
        assert!(
            tokio::time::timeout_at(deadline, notified).await.is_ok(),
            "r3's leg never arrived"
        );
    }
    let killed_at = Instant::now();
    c.nodes[die].server.kill9();
    let (st, v, took) = race.await.unwrap();
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["region"], win_r.as_str(), "{v}");
    assert_eq!(v["status_code"], 200);
    assert_eq!(leg(&v, "r1")["outcome"], "lost");
    assert_eq!(leg(&v, "r1")["status_code"], 500);
    let r3 = leg(&v, &die_r);
    assert_eq!(r3["outcome"], "error", "{v}");
    assert_eq!(r3["error"]["code"], "handoff", "{v}");
    assert!(
        r3["latency_ms"].as_f64().unwrap() < v["latency_ms"].as_f64().unwrap(),
        "r3's leg failed before the win: {v}"
    );
    assert!(took < Duration::from_secs(5), "{took:?}");
    // The dead node's connection to the target closed with it.
    let calls = target
        .wait_ended("kill-1", 3, Duration::from_secs(10))
        .await;
    let dead = calls.iter().find(|c| c.from == from_r3).unwrap();
    assert!(
        !dead.answered && dead.end.unwrap() >= killed_at,
        "{calls:?}"
    );
}

/// One node on SQLite: TORRENT runs in its own region; any other region is unavailable.
#[tokio::test]
async fn torrent_on_a_single_node() {
    let target = RegionTarget::start().await;
    let s = TestServer::start();
    let (st, v) = s
        .post(
            "/api/v1/torrent",
            json!({"url": target.url(), "method": "DELETE", "timeout": 2000}),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(
        (v["region"].as_str(), v["status_code"].as_u64()),
        (Some("local"), Some(200))
    );
    assert_eq!(v["attempts"].as_array().unwrap().len(), 1);
    assert_eq!(v["attempts"][0]["outcome"], "won");
    let (st, v) = s
        .post(
            "/api/v1/torrent",
            json!({"url": target.url(), "regions": ["local", "eu"]}),
        )
        .await;
    assert_eq!(
        (
            st,
            v["error"]["code"].as_str(),
            v["error"]["field"].as_str()
        ),
        (422, Some("region_unavailable"), Some("regions[1]")),
        "{v}"
    );
    assert_eq!(target.calls().len(), 1, "the refused race sent nothing");
}

/// Opens the lane to `target` with a job, then waits until its owner is not another node than
/// the one it is placed on. A lane that moves (a node that claimed it before its view had
/// every member hands it over a few seconds later) starts counting afresh, and TORRENT legs
/// are not in the lease ledger the next owner reads (docs/cluster.md); the owner, as the
/// lanes view shows it, is polled (no event says it).
async fn settle_lane(c: &Regions, target: &RegionTarget) {
    let (st, job) = c.nodes[0]
        .server
        .post(
            "/api/v1/jobs",
            json!({"url": target.url(), "method": "POST", "body": "warm"}),
        )
        .await;
    assert!(st == 201 || st == 202 || st == 200, "{st} {job}");
    target.wait_ended("warm", 1, Duration::from_secs(20)).await;
    let placed = format!("n{}", placed_on(target) + 2);
    let settle = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, v) = c.nodes[0].server.get("/api/v1/lanes").await;
        let owner = v["lanes"].as_array().and_then(|ls| {
            ls.iter()
                .find(|l| l["key"]["host"] == target.addr.to_string())
                .and_then(|l| l["owner_node"].as_str().map(str::to_string))
        });
        // Owned by the placed node, or by none (an idle lane handed over is released; the
        // placed node claims it with the next call).
        if owner.as_deref().is_none_or(|o| o == placed) {
            break;
        }
        assert!(
            Instant::now() < settle,
            "the lane never settled on {placed}: {v}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The lane ownership lines of every node's log (for a failure's message).
fn lane_log(c: &Regions) -> String {
    let mut out = String::new();
    for (i, n) in c.nodes.iter().enumerate() {
        for l in n.server.logs().lines() {
            if l.contains("lane") && !l.contains("listening") {
                out.push_str(&format!("\n[{i}] {l}"));
            }
        }
    }
    out
}

/// The most calls the target had open at once.
fn most_at_once(calls: &[Call]) -> usize {
    let mut ev: Vec<(Instant, i32)> = Vec::new();
    for c in calls {
        ev.push((c.start, 1));
        ev.push((c.end.expect("ended"), -1));
    }
    // At one instant an end comes before a start.
    ev.sort_by_key(|(t, d)| (*t, *d));
    let (mut now, mut most) = (0i32, 0i32);
    for (_, d) in ev {
        now += d;
        most = most.max(now);
    }
    most as usize
}

/// The most call starts in any 1 s window.
fn most_in_a_second(calls: &[Call]) -> usize {
    let mut starts: Vec<Instant> = calls.iter().map(|c| c.start).collect();
    starts.sort();
    (0..starts.len())
        .map(|i| {
            starts[i..]
                .iter()
                .take_while(|s| **s - starts[i] < Duration::from_secs(1))
                .count()
        })
        .max()
        .unwrap_or(0)
}

/// POSTs a TORRENT to `server`, answering status, `Retry-After` and body.
async fn torrent_raw(server: &TestServer, body: Value) -> (u16, Option<u64>, Value) {
    let r = server
        .http
        .post(server.url("/api/v1/torrent"))
        .bearer_auth(&server.key)
        .json(&body)
        .send()
        .await
        .unwrap();
    let st = r.status().as_u16();
    let ra = r
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    (st, ra, r.json().await.unwrap())
}

/// Every TORRENT leg takes a permit of its lane from the lane's owner, wherever the call was
/// taken: 6 TORRENTs sent at once to two nodes, on a lane of 2/s (burst 1) with one call in
/// flight, never have two calls at the target at once nor more than 2 + 1 in any second. A
/// race of three regions counts three in the lane's window (a job submitted right after
/// waits for them), and a Retry-After a leg brought back pauses the lane on every node: a
/// TORRENT is then refused (429 `lane_paused`, with Retry-After) and nothing is sent.
#[tokio::test]
async fn torrent_legs_take_their_lanes_permits_across_nodes() {
    let target = RegionTarget::start().await;
    let c = Regions::start_with([true, true, true], TIGHT).await;
    for ip in IPS {
        target.rule(ip, 100, 200);
    }
    settle_lane(&c, &target).await;
    // The warm-up's call leaves the lane's limiter free after 0.5 s; the six below are
    // measured on their own.
    // Six single-region races at once, three on each of two nodes (one of which, at most,
    // owns the lane: the others forward their race to it).
    let mut races = Vec::new();
    for i in 0..6usize {
        let node = i % 2;
        let server = &c.nodes[node].server;
        let (url, key) = (server.url("/api/v1/torrent"), server.key.clone());
        let body = json!({"url": target.url(), "method": "POST", "body": "six", "timeout": "20s"});
        races.push(tokio::spawn(async move {
            let r = reqwest::Client::new()
                .post(url)
                .bearer_auth(key)
                .json(&body)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }));
    }
    for r in races {
        let (st, v) = r.await.unwrap();
        assert_eq!((st, v["status_code"].as_u64()), (200, Some(200)), "{v}");
    }
    let calls = target.wait_ended("six", 6, Duration::from_secs(20)).await;
    assert_eq!(calls.len(), 6, "{calls:?}");
    assert_eq!(most_at_once(&calls), 1, "one call in flight: {calls:?}");
    assert!(
        most_in_a_second(&calls) <= 3,
        "at most 2/s + burst 1 in any second: {calls:?}"
    );

    // A race of three regions takes three permits: with one in flight at a time, its legs
    // leave one after another (the first winner cuts the ones not yet sent), and a job
    // submitted right after waits behind them at the lane's pace.
    for ip in IPS {
        target.rule(ip, 0, 503);
    }
    let (st, v) = c
        .torrent(
            1,
            json!({"url": target.url(), "method": "POST", "body": "three", "regions": ["r1", "r2", "r3"], "timeout": "20s"}),
        )
        .await;
    assert_eq!((st, v["status_code"].as_u64()), (200, Some(503)), "{v}");
    let (st, job) = c.nodes[0]
        .server
        .post(
            "/api/v1/jobs",
            json!({"url": target.url(), "method": "POST", "body": "after", "retry_policy": {"max_retries": 0}}),
        )
        .await;
    assert!(st == 201 || st == 202 || st == 200, "{st} {job}");
    let legs = target.wait_ended("three", 3, Duration::from_secs(20)).await;
    assert_eq!(
        legs.len(),
        3,
        "every region's leg was sent: {legs:?} {v} (lane placed on node {}) {}",
        placed_on(&target),
        lane_log(&c)
    );
    let after = target.wait_ended("after", 1, Duration::from_secs(20)).await;
    let all: Vec<Call> = calls
        .iter()
        .chain(legs.iter())
        .chain(after.iter())
        .cloned()
        .collect();
    assert_eq!(most_at_once(&all), 1, "{all:?}");
    assert!(most_in_a_second(&all) <= 3, "{all:?}");
    let mut starts: Vec<Instant> = legs.iter().map(|c| c.start).collect();
    starts.sort();
    let gap = after[0].start - starts[2];
    assert!(
        gap >= Duration::from_millis(300),
        "the job waited for the race's three permits at 2/s: {gap:?} after the last leg {}",
        lane_log(&c)
    );

    // A leg's answer with Retry-After pauses the lane for every node.
    target.rule(IPS[1], 0, 429);
    *target.state.retry_after.lock().unwrap() = Some(30);
    let (st, v) = c
        .torrent(
            1,
            json!({"url": target.url(), "method": "POST", "body": "pause", "regions": ["r2"]}),
        )
        .await;
    assert_eq!((st, v["status_code"].as_u64()), (200, Some(429)), "{v}");
    let seen = target.calls().len();
    for node in [0, 1] {
        let (st, ra, v) = torrent_raw(
            &c.nodes[node].server,
            json!({"url": target.url(), "method": "POST", "body": "refused", "regions": ["r1", "r2"]}),
        )
        .await;
        assert_eq!(
            (st, v["error"]["code"].as_str()),
            (429, Some("lane_paused")),
            "{v}"
        );
        let ra = ra.expect("a Retry-After header");
        assert!((20..=30).contains(&ra), "Retry-After {ra}");
    }
    assert_eq!(target.calls().len(), seen, "nothing was sent while paused");
}

/// One node (SQLite): TORRENT legs obey the lane's limits as well: a rate of 2/s with one in
/// flight holds for concurrent TORRENTs, a TORRENT whose timeout ends before a permit is
/// free is refused unsent (429 `lane_busy`), and a lane paused by Retry-After refuses them.
#[tokio::test]
async fn torrent_on_a_single_node_obeys_the_lanes_limits() {
    let target = RegionTarget::start().await;
    target.rule("127.0.0.1", 300, 200);
    let s = Arc::new(TestServer::start_with(TIGHT));
    let mut races = Vec::new();
    for _ in 0..4 {
        let (url, key) = (s.url("/api/v1/torrent"), s.key.clone());
        let body = json!({"url": target.url(), "method": "POST", "body": "four"});
        races.push(tokio::spawn(async move {
            let r = reqwest::Client::new()
                .post(url)
                .bearer_auth(key)
                .json(&body)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }));
    }
    // While the first runs (it holds the lane's one in-flight slot for 300 ms): one whose
    // budget is shorter than the wait for a permit.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let notified = target.state.notify.notified();
        if target.calls().iter().any(|c| c.body == "four") {
            break;
        }
        assert!(
            tokio::time::timeout_at(deadline, notified).await.is_ok(),
            "no TORRENT reached the target"
        );
    }
    let (st, ra, v) = torrent_raw(
        &s,
        json!({"url": target.url(), "method": "POST", "body": "short", "timeout": "50ms"}),
    )
    .await;
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (429, Some("lane_busy")),
        "{v}"
    );
    assert_eq!(ra, Some(1));
    for r in races {
        let (st, v) = r.await.unwrap();
        assert_eq!((st, v["status_code"].as_u64()), (200, Some(200)), "{v}");
    }
    let calls = target.wait_ended("four", 4, Duration::from_secs(10)).await;
    assert_eq!(calls.len(), 4);
    assert_eq!(most_at_once(&calls), 1, "{calls:?}");
    assert!(most_in_a_second(&calls) <= 3, "{calls:?}");
    assert!(
        target.calls().iter().all(|c| c.body != "short"),
        "the refused TORRENT sent nothing"
    );

    target.rule("127.0.0.1", 0, 429);
    *target.state.retry_after.lock().unwrap() = Some(30);
    let (st, v) = s
        .post(
            "/api/v1/torrent",
            json!({"url": target.url(), "method": "POST", "body": "pause"}),
        )
        .await;
    assert_eq!((st, v["status_code"].as_u64()), (200, Some(429)), "{v}");
    let seen = target.calls().len();
    let (st, ra, v) = torrent_raw(
        &s,
        json!({"url": target.url(), "method": "POST", "body": "refused"}),
    )
    .await;
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (429, Some("lane_paused")),
        "{v}"
    );
    assert!((20..=30).contains(&ra.expect("Retry-After")), "{ra:?}");
    assert_eq!(target.calls().len(), seen, "nothing was sent while paused");
}
