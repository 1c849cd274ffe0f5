//! Server configuration: defaults, then the TOML file, then `EZTHROTTLE_*` variables, then flags
//! (the binary applies flags last). `config.default.toml` at the repository root documents every
//! key with its default.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use ezt_core::job::Limits;
use ezt_core::tier::TierWeights;
use serde::{Deserialize, Serialize};

/// Everything the server needs to start.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address of the HTTP API.
    pub listen: SocketAddr,
    /// Directory of the SQLite file and the lock file.
    pub data_dir: PathBuf,
    /// PostgreSQL URL (`postgres://user@host:port/db`): when set, the store is that database
    /// (the cluster store) instead of the SQLite file in `data_dir`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database_url: Option<SecretKey>,
    /// This node's region name.
    pub region: String,
    /// How other nodes of a cluster reach this one (`http://host:port`); stored, used by
    /// cluster mode.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub advertise_url: Option<String>,
    /// Shared secret that authenticates node-to-node calls in a cluster; stored, used by
    /// cluster mode.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster_secret: Option<SecretKey>,
    /// This node's id in a cluster (letters, digits, `-`, `_`, `.`; at most 64). Unset: the id
    /// kept in the data dir's `node_id` file, made (random) on first start.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_id: Option<String>,
    /// CIDRs exempt from the SSRF deny list (e.g. `127.0.0.0/8` for local testing; a bare
    /// address means that host).
    #[serde(deserialize_with = "cidrs")]
    pub allow_cidrs: Vec<ipnet::IpNet>,
    /// Weights of the tenant tiers inside a lane.
    pub tiers: TierWeights,
    /// Lane limits.
    pub lanes: LanesConfig,
    /// Outbound calls.
    pub executor: ExecutorConfig,
    /// Size limits.
    pub limits: LimitsConfig,
    /// How long a final job keeps its idempotency key, ms.
    pub dedup_window_ms: u64,
    /// Webhook delivery.
    pub webhooks: WebhooksConfig,
    /// The `/metrics` endpoint.
    pub metrics: MetricsConfig,
    /// Operator endpoints (`/admin/v1/…`, `/api/v1/cluster/…`).
    pub admin: AdminConfig,
    /// Key that seals webhook secrets at rest (base64 of 32 bytes). Without it, a key file
    /// `secret.key` is created in the data dir (mode 0600) on first start.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret_key: Option<SecretKey>,
    /// How outbound calls leave the host, and which request headers are sealed at rest.
    pub outbound: OutboundConfig,
    /// How long finished jobs are kept.
    pub retention: RetentionConfig,
    /// Inbound connections and waiters.
    pub server: ServerConfig,
    /// Store and forward while the cluster database is unreachable.
    pub spool: SpoolConfig,
}

/// A key that must never reach a log: `Debug` prints a placeholder.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SecretKey(pub String);

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey([redacted])")
    }
}

/// How job outcomes are delivered to webhooks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhooksConfig {
    /// TCP+TLS connect timeout, ms.
    pub connect_timeout_ms: u64,
    /// Whole-attempt timeout, ms: a receiver slower than this has failed the attempt.
    pub timeout_ms: u64,
    /// Waits after each failed attempt (humantime); when they run out the delivery is failed.
    pub retry_schedule: Vec<String>,
    /// Relative jitter applied to each wait (0.2 = ±20 %).
    pub jitter: f64,
    /// Per-receiver-host limit (every host gets its own lane, shared fairly by tenants).
    pub default: LaneLimit,
    /// Pinned limits by receiver `host` or `host:port`.
    pub hosts: BTreeMap<String, LaneLimit>,
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        Self {
            connect_timeout_ms: 5_000,
            timeout_ms: 15_000,
            retry_schedule: ["5s", "5m", "30m", "2h", "5h", "10h", "10h", "14h", "20h"]
                .map(String::from)
                .to_vec(),
            jitter: 0.2,
            default: LaneLimit {
                rate: 50.0,
                burst: 10,
                max_in_flight: 8,
            },
            hosts: BTreeMap::new(),
        }
    }
}

impl WebhooksConfig {
    /// The retry schedule in the core's terms (`validate` has checked every entry).
    pub fn schedule(&self) -> ezt_core::webhook::RetrySchedule {
        ezt_core::webhook::RetrySchedule {
            delays_ms: self
                .retry_schedule
                .iter()
                .filter_map(|d| ezt_core::duration::parse_millis(d).ok())
                .collect(),
            jitter: self.jitter,
        }
    }

    /// The lanes of the webhook scheduler.
    pub fn lanes(&self) -> LanesConfig {
        LanesConfig {
            default: self.default,
            hosts: self.hosts.clone(),
            credential_headers: Vec::new(),
            max_lanes_per_tenant: 0,
            ..LanesConfig::default()
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".parse().expect("static address"),
            data_dir: PathBuf::from("./ezthrottle-data"),
            database_url: None,
            region: "local".into(),
            advertise_url: None,
            cluster_secret: None,
            node_id: None,
            allow_cidrs: Vec::new(),
            tiers: TierWeights::default(),
            lanes: LanesConfig::default(),
            executor: ExecutorConfig::default(),
            limits: LimitsConfig::default(),
            dedup_window_ms: 24 * 3600 * 1000,
            webhooks: WebhooksConfig::default(),
            metrics: MetricsConfig::default(),
            admin: AdminConfig::default(),
            secret_key: None,
            outbound: OutboundConfig::default(),
            retention: RetentionConfig::default(),
            server: ServerConfig::default(),
            spool: SpoolConfig::default(),
        }
    }
}

/// The `/metrics` endpoint: bounded in size, optionally behind a token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// Per-lane series are kept for this many of the busiest lanes (per scheduler); the rest
    /// only count in the totals, so the scrape stays small however many lanes exist.
    pub max_lane_series: usize,
    /// When set, `/metrics` answers 401 unless called with `Authorization: Bearer <token>`.
    pub bearer_token: Option<SecretKey>,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            max_lane_series: 50,
            bearer_token: None,
        }
    }
}

/// Operator endpoints.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    /// The operator token: `/admin/v1/…` and `/api/v1/cluster/…` answer only to
    /// `Authorization: Bearer <token>`; unset, they answer 401 to everyone.
    pub token: Option<SecretKey>,
}

/// One lane's limit.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LaneLimit {
    /// Sustained requests per second.
    pub rate: f64,
    /// Back-to-back requests allowed (GCRA burst, >= 1).
    pub burst: u32,
    /// Requests in flight at once.
    pub max_in_flight: u32,
}

/// Lane defaults and per-host overrides.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LanesConfig {
    /// Limit of a lane nobody configured.
    pub default: LaneLimit,
    /// Pinned limits by `host` or `host:port`. Pinned lanes still honour Retry-After pauses
    /// but ignore learned rate and concurrency.
    pub hosts: BTreeMap<String, LaneLimit>,
    /// Extra request headers (lowercase) that carry an upstream credential and so pick the lane.
    pub credential_headers: Vec<String>,
    /// A lane with nothing queued, running or paused leaves memory after this long idle, ms
    /// (what it learned stays in the store and comes back with its next job).
    pub idle_evict_after_ms: u64,
    /// Most distinct lanes one tenant may have work waiting in at once; a submission that
    /// would open one more is refused (422 `too_many_lanes`). 0: no cap.
    pub max_lanes_per_tenant: usize,
    /// Adaptive pacing (AIMD) for targets that announce no limit: opt-in per host.
    pub adaptive: AdaptiveConfig,
}

/// Adaptive pacing: which hosts probe for their limit, and how.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdaptiveConfig {
    /// Hosts (`host` or `host:port`) whose lanes pace adaptively while they announce nothing.
    pub hosts: Vec<String>,
    /// Lowest rate, requests/s.
    pub floor: f64,
    /// Highest rate, requests/s (also the default ceiling of a tenant's opt-in).
    pub ceiling: f64,
    /// Additive increase per second, as a fraction of the rate after the last decrease.
    pub increase: f64,
    /// Factor applied on a 429/503.
    pub decrease: f64,
    /// No second decrease within this many ms.
    pub cooldown_ms: u64,
}

impl Default for AdaptiveConfig {
    fn default() -> Self {
        let p = ezt_core::aimd::AimdParams::default();
        Self {
            hosts: Vec::new(),
            floor: p.floor,
            ceiling: p.ceiling,
            increase: p.increase,
            decrease: p.decrease,
            cooldown_ms: p.cooldown_ms,
        }
    }
}

impl AdaptiveConfig {
    /// The core's parameters, with `ceiling` instead of the configured one when given.
    pub fn params(&self, ceiling: Option<f64>) -> ezt_core::aimd::AimdParams {
        ezt_core::aimd::AimdParams {
            floor: self.floor,
            ceiling: ceiling.unwrap_or(self.ceiling).max(self.floor),
            increase: self.increase,
            decrease: self.decrease,
            cooldown_ms: self.cooldown_ms,
        }
    }

    /// Whether `authority` (`host:port`) or its host is listed.
    pub fn covers(&self, authority: &str) -> bool {
        let host = authority.rsplit_once(':').map_or(authority, |(h, _)| h);
        self.hosts
            .iter()
            .any(|h| h.eq_ignore_ascii_case(authority) || h.eq_ignore_ascii_case(host))
    }
}

impl Default for LanesConfig {
    fn default() -> Self {
        Self {
            default: LaneLimit {
                rate: 2.0,
                burst: 1,
                max_in_flight: 2,
            },
            hosts: BTreeMap::new(),
            credential_headers: Vec::new(),
            idle_evict_after_ms: 600_000,
            max_lanes_per_tenant: 1000,
            adaptive: AdaptiveConfig::default(),
        }
    }
}

/// Outbound HTTP settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExecutorConfig {
    /// TCP+TLS connect timeout, ms.
    pub connect_timeout_ms: u64,
    /// Whole-attempt timeout, ms (also capped by the job's deadline).
    pub attempt_timeout_ms: u64,
    /// Largest response body kept, bytes; the rest is dropped and the response flagged.
    pub max_response_bytes: usize,
    /// A queued job's race (`execution_mode: race`, several regions) sends POST and PATCH to
    /// every region at once too; off: they hedge (the next region's leg only after a delay).
    pub race_unsafe_methods: bool,
    /// Hedge delay, ms, while the lane's p95 latency in the region is not known yet.
    pub hedge_delay_ms: u64,
    /// A lane's race legs beyond the first may add this share of its first legs (percent,
    /// over 10 s, plus a floor of 10 a second); 200 lets every job of a busy lane race three
    /// regions.
    pub hedge_budget_percent: u32,
}

impl Default for ExecutorConfig {
    fn default() -> Self {
        Self {
            connect_timeout_ms: 10_000,
            attempt_timeout_ms: 30_000,
            max_response_bytes: 1024 * 1024,
            race_unsafe_methods: false,
            hedge_delay_ms: ezt_core::hedge::DEFAULT_HEDGE_DELAY_MS,
            hedge_budget_percent: (ezt_core::hedge::EXTRA_RATIO * 100.0) as u32,
        }
    }
}

/// Request size limits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Largest API request body, bytes.
    pub max_request_bytes: usize,
    /// Most jobs in one batch.
    pub max_batch_jobs: usize,
    /// Per-job limits.
    #[serde(flatten)]
    pub job: Limits,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_request_bytes: 1024 * 1024,
            max_batch_jobs: 1000,
            job: Limits::default(),
        }
    }
}

/// Outbound connections (jobs and webhook deliveries alike).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OutboundConfig {
    /// Proxy for every outbound call (an `http://` or `https://` URL). The
    /// environment's `HTTP_PROXY`/`HTTPS_PROXY`/`ALL_PROXY` are never used.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proxy: Option<String>,
    /// The operator's acknowledgement that with a proxy the connect-time SSRF check sees only
    /// the proxy's address, not the target's (the admission-time check still runs).
    pub proxy_bypasses_ssrf: bool,
    /// Request headers (any case) sealed at rest besides the credential headers that pick
    /// the lane (Authorization, X-Api-Key, Api-Key and `lanes.credential_headers`).
    pub sealed_headers: Vec<String>,
    /// Source address of this node's outbound calls (`--outbound-source-ip`); unset, the
    /// system picks it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_ip: Option<std::net::IpAddr>,
}

/// When finished jobs are deleted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionConfig {
    /// How long a finished job (with its attempts, response, webhook deliveries and
    /// idempotency key) is kept after it finished: a duration (`"7d"`, `"12h"`) or `"never"`.
    pub finished_jobs: String,
    /// Per-tenant overrides of `finished_jobs`, by tenant name.
    pub tenants: BTreeMap<String, String>,
    /// How often the purge runs.
    pub interval: String,
    /// Jobs deleted per transaction (the purge yields to admissions between batches).
    pub batch: usize,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self {
            finished_jobs: "7d".into(),
            tenants: BTreeMap::new(),
            interval: "1m".into(),
            batch: 500,
        }
    }
}

/// Limits on inbound connections, so slow or idle clients cannot exhaust memory or descriptors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// A request's headers must arrive in full within this, ms, counted from its first byte.
    pub header_read_timeout_ms: u64,
    /// A connection with no request in progress and nothing received for this long is closed, ms.
    pub keep_alive_timeout_ms: u64,
    /// A request body must arrive in full within this, ms (408 otherwise).
    pub request_body_timeout_ms: u64,
    /// Most open client connections. The effective cap is also kept below the process's file
    /// limit minus `fd_reserve`. At the cap, the longest-idle connection is closed to make room.
    pub max_connections: usize,
    /// File descriptors kept free for outbound calls, webhooks and the store.
    pub fd_reserve: u64,
    /// Most open event streams and long polls (`/wait`, `/events`, `?wait=`) per tenant (429 above).
    pub max_waiters_per_tenant: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            header_read_timeout_ms: 10_000,
            keep_alive_timeout_ms: 60_000,
            request_body_timeout_ms: 30_000,
            max_connections: 4096,
            fd_reserve: 256,
            max_waiters_per_tenant: 1000,
        }
    }
}

/// Store and forward (cluster store only): while the database is unreachable, admissions are
/// fsynced into a SQLite spool in the data dir and forwarded, in order, when it is back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SpoolConfig {
    /// Most jobs waiting in the spool; above it admissions answer 503 with Retry-After.
    pub max_jobs: u64,
    /// A store call on the admission and read paths not answered within this counts as the
    /// database being unreachable, ms.
    pub store_deadline_ms: u64,
    /// Most spooled jobs forwarded in one database transaction.
    pub forward_batch: usize,
}

impl Default for SpoolConfig {
    fn default() -> Self {
        Self {
            max_jobs: 100_000,
            store_deadline_ms: 2_000,
            forward_batch: 500,
        }
    }
}

/// A retention period: `None` for `"never"`.
pub fn parse_retention(s: &str) -> Result<Option<u64>, String> {
    if s.trim().eq_ignore_ascii_case("never") {
        return Ok(None);
    }
    match ezt_core::duration::parse_millis(s)? {
        0 => Err("must be more than 0 (or \"never\")".into()),
        ms => Ok(Some(ms)),
    }
}

impl RetentionConfig {
    /// The default retention, ms (`validate` has checked it).
    pub fn default_ms(&self) -> Option<u64> {
        parse_retention(&self.finished_jobs).ok().flatten()
    }

    /// The interval between purges (`validate` has checked it).
    pub fn interval_ms(&self) -> u64 {
        ezt_core::duration::parse_millis(&self.interval).unwrap_or(60_000)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let bad = |k: &str, m: String| ConfigError::Invalid(format!("retention.{k}: {m}"));
        parse_retention(&self.finished_jobs).map_err(|m| bad("finished_jobs", m))?;
        for (t, v) in &self.tenants {
            parse_retention(v).map_err(|m| bad(&format!("tenants.{t}"), m))?;
        }
        match ezt_core::duration::parse_millis(&self.interval) {
            Ok(0) => return Err(bad("interval", "must be more than 0".into())),
            Err(m) => return Err(bad("interval", m)),
            Ok(_) => {}
        }
        if self.batch == 0 {
            return Err(bad("batch", "must be at least 1".into()));
        }
        Ok(())
    }
}

impl OutboundConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if let Some(p) = &self.proxy {
            let bad = |why: String| ConfigError::Invalid(format!("outbound.proxy: {p:?} {why}"));
            let url = reqwest::Url::parse(p).map_err(|e| bad(format!("is not a URL ({e})")))?;
            if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
                return Err(bad("must be an http:// or https:// URL with a host".into()));
            }
            reqwest::Proxy::all(p.as_str())
                .map_err(|e| bad(format!("is not a proxy URL ({e})")))?;
            if !self.proxy_bypasses_ssrf {
                return Err(ConfigError::Invalid(
                    "outbound.proxy is set while the SSRF rules are on: through a proxy, the \
                     connect-time address check sees only the proxy, not the target. Set \
                     outbound.proxy_bypasses_ssrf = true to accept that"
                        .into(),
                ));
            }
        }
        for h in &self.sealed_headers {
            if reqwest::header::HeaderName::from_bytes(h.as_bytes()).is_err() {
                return Err(ConfigError::Invalid(format!(
                    "outbound.sealed_headers: {h:?} is not a header name"
                )));
            }
        }
        Ok(())
    }
}

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema.
    #[error("invalid config {path}: {message}")]
    Parse {
        /// File.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A variable has a bad value, or is not one this program knows.
    #[error("invalid {name}: {message}")]
    Env {
        /// Variable.
        name: String,
        /// What is wrong.
        message: String,
    },
    /// Values that do not fit the schema, each with the file and key, variable or flag it
    /// came from.
    #[error("invalid configuration: {0}")]
    Value(String),
    /// The merged values break a rule.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl Config {
    /// Defaults overlaid with the TOML file, if given (no environment, no flags).
    pub fn from_file(path: Option<&std::path::Path>) -> Result<Self, ConfigError> {
        Self::load(path, std::iter::empty(), Vec::new())
    }

    /// Layers, each over the last: built-in defaults, the TOML file (if given), the
    /// `EZTHROTTLE_*` variables in `env` (pass `std::env::vars()`), then command-line `flags`.
    /// Every key has a variable: `EZTHROTTLE_` + its path upper-cased and joined by `_`
    /// (`lanes.default.rate` is `EZTHROTTLE_LANES_DEFAULT_RATE`; lists are comma-separated).
    /// An `EZTHROTTLE_*` variable that is neither a key nor one of `NON_CONFIG_ENV` is an
    /// error, as is a bad value; errors name the file and key, variable or flag it came from.
    pub fn load(
        file: Option<&std::path::Path>,
        env: impl IntoIterator<Item = (String, String)>,
        flags: Vec<Flag>,
    ) -> Result<Self, ConfigError> {
        use figment::providers::{Format, Serialized, Toml};
        let mut fig = figment::Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = file {
            // Read first: figment reports a missing file as a parse error without the cause.
            std::fs::metadata(path).map_err(|source| ConfigError::Read {
                path: path.into(),
                source,
            })?;
            fig = fig.merge(Toml::file_exact(path));
        }
        fig = fig.merge(env_layer(env)?);
        let mut flag_layer = Layer::new(FLAG_LAYER);
        for f in flags {
            flag_layer.set(f.path, f.name.to_string(), f.value);
        }
        fig = fig.merge(flag_layer);
        let cfg: Self = fig.extract().map_err(|e| ConfigError::Value(describe(e)))?;
        // Rules across values name where the values they judge came from, too.
        match cfg.validate() {
            Err(ConfigError::Invalid(m)) => Err(ConfigError::Invalid(with_sources(&fig, m))),
            other => other.map(|()| cfg),
        }
    }

    /// Checks the merged values.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let lim = |name: &str, l: &LaneLimit| {
            if !(l.rate.is_finite() && l.rate > 0.0) || l.burst == 0 || l.max_in_flight == 0 {
                Err(ConfigError::Invalid(format!(
                    "{name}: rate must be > 0, burst and max_in_flight >= 1"
                )))
            } else {
                Ok(())
            }
        };
        lim("lanes.default", &self.lanes.default)?;
        self.lanes
            .adaptive
            .params(None)
            .validate()
            .map_err(|e| ConfigError::Invalid(format!("lanes.adaptive: {e}")))?;
        for (h, l) in &self.lanes.hosts {
            lim(&format!("lanes.hosts.{h}"), l)?;
        }
        let w = &self.webhooks;
        lim("webhooks.default", &w.default)?;
        for (h, l) in &w.hosts {
            lim(&format!("webhooks.hosts.{h}"), l)?;
        }
        for d in &w.retry_schedule {
            ezt_core::duration::parse_millis(d).map_err(|m| {
                ConfigError::Invalid(format!("webhooks.retry_schedule: {d:?}: {m}"))
            })?;
        }
        if !(0.0..=1.0).contains(&w.jitter) {
            return Err(ConfigError::Invalid(
                "webhooks.jitter must be between 0 and 1".into(),
            ));
        }
        if w.timeout_ms == 0 || w.connect_timeout_ms == 0 {
            return Err(ConfigError::Invalid("webhooks timeouts must be > 0".into()));
        }
        let srv = &self.server;
        if srv.header_read_timeout_ms == 0
            || srv.keep_alive_timeout_ms == 0
            || srv.request_body_timeout_ms == 0
            || srv.max_connections == 0
        {
            return Err(ConfigError::Invalid(
                "server timeouts and max_connections must be > 0".into(),
            ));
        }
        if self.region.is_empty() {
            return Err(ConfigError::Invalid("region may not be empty".into()));
        }
        if let Some(u) = &self.database_url {
            if !(u.0.starts_with("postgres://") || u.0.starts_with("postgresql://")) {
                return Err(ConfigError::Invalid(
                    "database_url: must be a PostgreSQL URL, postgres://user@host:port/dbname"
                        .into(),
                ));
            }
        }
        if let Some(u) = &self.advertise_url {
            let rest = u
                .strip_prefix("http://")
                .or_else(|| u.strip_prefix("https://"));
            if rest.is_none_or(|r| r.is_empty() || r.chars().any(char::is_whitespace)) {
                return Err(ConfigError::Invalid(
                    "advertise_url: must be an http:// or https:// URL other nodes can reach"
                        .into(),
                ));
            }
        }
        if let Some(t) = &self.cluster_secret {
            if t.0.len() < 16 || t.0.chars().any(char::is_whitespace) {
                return Err(ConfigError::Invalid(
                    "cluster_secret: must be at least 16 characters, without spaces".into(),
                ));
            }
        }
        if let Some(id) = &self.node_id {
            if !valid_node_id(id) {
                return Err(ConfigError::Invalid(
                    "node_id: 1 to 64 letters, digits, '-', '_' or '.'".into(),
                ));
            }
        }
        if let Some(t) = &self.admin.token {
            if t.0.len() < 16 || t.0.chars().any(char::is_whitespace) {
                return Err(ConfigError::Invalid(
                    "admin.token: must be at least 16 characters, without spaces (unset it to turn the operator endpoints off)".into(),
                ));
            }
        }
        if let Some(t) = &self.metrics.bearer_token {
            if t.0.trim().is_empty() || t.0.chars().any(|c| c.is_whitespace()) {
                return Err(ConfigError::Invalid(
                    "metrics.bearer_token: must be a non-empty token without spaces (unset it for an open /metrics)".into(),
                ));
            }
        }
        if self.spool.max_jobs == 0
            || self.spool.store_deadline_ms == 0
            || self.spool.forward_batch == 0
        {
            return Err(ConfigError::Invalid(
                "spool.max_jobs, spool.store_deadline_ms and spool.forward_batch must be > 0"
                    .into(),
            ));
        }
        self.outbound.validate()?;
        self.retention.validate()?;
        Ok(())
    }

    /// The SQLite file.
    pub fn db_path(&self) -> PathBuf {
        self.data_dir.join("ezthrottle.db")
    }

    /// Whether this node is (or may be) one of several on one database: the store is
    /// PostgreSQL.
    pub fn clustered(&self) -> bool {
        self.database_url.is_some()
    }
}

/// A node id as stored and shown: 1–64 of `[A-Za-z0-9._-]`.
pub fn valid_node_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// `EZTHROTTLE_*` variables that are not settings: the log filter, what the SDKs read (a shell
/// that runs both must not break the server), the test suite's binary path, and `--config`.
pub const NON_CONFIG_ENV: &[&str] = &[
    "EZTHROTTLE_LOG",
    "EZTHROTTLE_API_KEY",
    "EZTHROTTLE_URL",
    "EZTHROTTLE_BIN",
    "EZTHROTTLE_CONFIG",
];

/// Settings that exist but are absent from the serialized defaults (an `Option` skipped when
/// unset), so the key walk cannot find them.
const UNSET_BY_DEFAULT: &[&str] = &[
    "secret_key",
    "database_url",
    "advertise_url",
    "cluster_secret",
    "node_id",
    "admin.token",
    "outbound.source_ip",
];

/// A command-line flag's value for `Config::load`.
#[derive(Debug, Clone)]
pub struct Flag {
    /// Key path it sets, e.g. `listen`.
    pub path: &'static str,
    /// The flag as typed, for errors, e.g. `--listen`.
    pub name: &'static str,
    /// Its value.
    pub value: figment::value::Value,
}

impl Flag {
    /// A flag setting `path` to a string.
    pub fn string(path: &'static str, name: &'static str, value: impl Into<String>) -> Self {
        Self {
            path,
            name,
            value: figment::value::Value::from(value.into()),
        }
    }
    /// A flag setting `path` to a boolean.
    pub fn boolean(path: &'static str, name: &'static str, value: bool) -> Self {
        Self {
            path,
            name,
            value: figment::value::Value::from(value),
        }
    }
    /// A flag setting `path` to a list of strings.
    pub fn list(path: &'static str, name: &'static str, values: Vec<String>) -> Self {
        Self {
            path,
            name,
            value: figment::value::Value::from(values),
        }
    }
}

const ENV_LAYER: &str = "environment";
const FLAG_LAYER: &str = "command line";

/// Every settable key: its dotted path and the default's value (which says how to read a
/// variable: a list is comma-separated, a number or boolean is parsed, anything else is a
/// string). Derived from the serialized defaults, so a field added to any section is covered
/// without edits here; maps keyed by user strings (`lanes.hosts`, …) are empty by default and
/// so are left to the file.
pub fn keys() -> Vec<(String, figment::value::Value)> {
    use figment::value::Value;
    fn walk(prefix: &str, v: &Value, out: &mut Vec<(String, Value)>) {
        match v {
            Value::Dict(_, d) if !d.is_empty() => {
                for (k, v) in d {
                    let p = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    walk(&p, v, out);
                }
            }
            Value::Dict(..) => {}
            _ => out.push((prefix.to_string(), v.clone())),
        }
    }
    let mut out = Vec::new();
    if let Ok(v) = Value::serialize(Config::default()) {
        walk("", &v, &mut out);
    }
    for k in UNSET_BY_DEFAULT {
        if !out.iter().any(|(p, _)| p == k) {
            out.push((k.to_string(), Value::from(String::new())));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// The variable that sets `path`.
pub fn env_name(path: &str) -> String {
    format!("EZTHROTTLE_{}", path.replace('.', "_").to_uppercase())
}

/// One line per setting, `EZTHROTTLE_… (key)`, for `--help`.
pub fn env_help() -> String {
    let mut s = String::from(
        "Every setting can come from the config file, from an environment variable, or (some) a flag;\n\
         precedence: flag > environment > file > default. Lists are comma-separated. Variables:\n",
    );
    for (path, _) in keys() {
        s.push_str(&format!("  {:<46} {path}\n", env_name(&path)));
    }
    s.push_str(
        "  EZTHROTTLE_LOG                                 log filter (e.g. info,ezt_runtime=debug)\n\
         See config.default.toml for every key with its default and meaning.",
    );
    s
}

/// A layer of values with a name per key for errors (the variable or the flag).
struct Layer {
    name: &'static str,
    dict: figment::value::Dict,
    sources: BTreeMap<String, String>,
}

impl Layer {
    fn new(name: &'static str) -> Self {
        Self {
            name,
            dict: Default::default(),
            sources: BTreeMap::new(),
        }
    }

    fn set(&mut self, path: &str, source: String, value: figment::value::Value) {
        let mut dict = &mut self.dict;
        let mut parts = path.split('.').peekable();
        while let Some(k) = parts.next() {
            if parts.peek().is_none() {
                dict.insert(k.to_string(), value);
                break;
            }
            let next = dict
                .entry(k.to_string())
                .or_insert_with(|| figment::value::Value::from(figment::value::Dict::new()));
            if !matches!(next, figment::value::Value::Dict(..)) {
                *next = figment::value::Value::from(figment::value::Dict::new());
            }
            let figment::value::Value::Dict(_, d) = next else {
                unreachable!("just made a dict")
            };
            dict = d;
        }
        self.sources.insert(path.to_string(), source);
    }
}

impl figment::Provider for Layer {
    fn metadata(&self) -> figment::Metadata {
        let sources = self.sources.clone();
        figment::Metadata::named(self.name).interpolater(move |_, keys| {
            // The longest path with a source (an error inside a list names the list's source).
            (1..=keys.len())
                .rev()
                .find_map(|n| sources.get(&keys[..n].join(".")).cloned())
                .unwrap_or_else(|| keys.join("."))
        })
    }

    fn data(
        &self,
    ) -> Result<figment::value::Map<figment::Profile, figment::value::Dict>, figment::Error> {
        Ok(figment::Profile::Default.collect(self.dict.clone()))
    }
}

/// The `EZTHROTTLE_*` variables as a layer; unknown ones are refused by name.
fn env_layer(env: impl IntoIterator<Item = (String, String)>) -> Result<Layer, ConfigError> {
    use figment::value::Value;
    let keys: BTreeMap<String, (String, Value)> = keys()
        .into_iter()
        .map(|(path, default)| (env_name(&path), (path, default)))
        .collect();
    let mut layer = Layer::new(ENV_LAYER);
    let mut vars: Vec<(String, String)> = env
        .into_iter()
        .filter(|(k, _)| k.starts_with("EZTHROTTLE_"))
        .collect();
    vars.sort();
    for (name, v) in vars {
        if NON_CONFIG_ENV.contains(&name.as_str()) {
            continue;
        }
        let Some((path, default)) = keys.get(&name) else {
            return Err(ConfigError::Env {
                message: "unknown variable: no setting has this name (see `ezthrottle serve --help` for the list; a typo?)".into(),
                name,
            });
        };
        let value = match default {
            Value::Array(..) => Value::from(
                v.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect::<Vec<_>>(),
            ),
            Value::Num(..) | Value::Bool(..) => scalar(v),
            // An optional setting set to nothing stays unset.
            Value::Empty(..) if v.is_empty() => continue,
            _ if v.is_empty() && UNSET_BY_DEFAULT.contains(&path.as_str()) => continue,
            _ => Value::from(v),
        };
        layer.set(path, name, value);
    }
    Ok(layer)
}

/// Appends to a rule's message where the keys it names were set (unless left at default): the
/// message starts with a key or section path, e.g. `lanes.default: rate must be > 0`.
fn with_sources(fig: &figment::Figment, message: String) -> String {
    let prefix: String = message
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '.')
        .collect();
    let prefix = prefix.trim_end_matches('.');
    if prefix.is_empty() {
        return message;
    }
    let sources: Vec<String> = keys()
        .into_iter()
        .filter(|(p, _)| p == prefix || p.starts_with(&format!("{prefix}.")))
        .filter_map(|(p, _)| {
            let md = fig.find_metadata(&p)?;
            let keys: Vec<&str> = p.split('.').collect();
            match &md.source {
                Some(figment::Source::File(f)) => Some(format!("{} key `{p}`", f.display())),
                _ if md.name == ENV_LAYER => Some(format!(
                    "environment variable {}",
                    md.interpolate(&figment::Profile::Default, &keys)
                )),
                _ if md.name == FLAG_LAYER => Some(format!(
                    "flag {}",
                    md.interpolate(&figment::Profile::Default, &keys)
                )),
                _ => None, // a built-in default
            }
        })
        .collect();
    if sources.is_empty() {
        message
    } else {
        format!("{message} (set by {})", sources.join(", "))
    }
}

/// A number or boolean from text; anything else stays a string (and fails to extract with a
/// type error naming the variable).
fn scalar(v: String) -> figment::value::Value {
    use figment::value::Value;
    let t = v.trim();
    if let Ok(b) = t.parse::<bool>() {
        Value::from(b)
    } else if let Ok(n) = t.parse::<u64>() {
        Value::from(n)
    } else if let Ok(n) = t.parse::<i64>() {
        Value::from(n)
    } else if let Some(f) = t.parse::<f64>().ok().filter(|f| f.is_finite()) {
        Value::from(f)
    } else {
        Value::from(v)
    }
}

/// Each error with where its value came from: `file key`, the variable or the flag.
fn describe(e: figment::Error) -> String {
    e.into_iter()
        .map(|e| {
            let path = e.path.join(".");
            let md = e.metadata.as_ref();
            let from = match md {
                Some(md) if md.name == ENV_LAYER || md.name == FLAG_LAYER => {
                    let source = md.interpolate(&figment::Profile::Default, &e.path);
                    if md.name == ENV_LAYER {
                        format!("environment variable {source}")
                    } else {
                        format!("flag {source}")
                    }
                }
                Some(md) => match &md.source {
                    Some(figment::Source::File(f)) if path.is_empty() => f.display().to_string(),
                    Some(figment::Source::File(f)) => format!("{} key `{path}`", f.display()),
                    _ if path.is_empty() => md.name.to_string(),
                    _ => format!("`{path}`"),
                },
                None if path.is_empty() => "configuration".to_string(),
                None => format!("`{path}`"),
            };
            format!("{from}: {}", e.kind)
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// `allow_cidrs` from any source: CIDRs or bare addresses.
fn cidrs<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<ipnet::IpNet>, D::Error> {
    let items = Vec::<String>::deserialize(d)?;
    parse_cidrs(items.iter().map(String::as_str)).map_err(serde::de::Error::custom)
}

/// Parses CIDRs (a bare address means a single host).
pub fn parse_cidrs<'a>(
    items: impl IntoIterator<Item = &'a str>,
) -> Result<Vec<ipnet::IpNet>, String> {
    items
        .into_iter()
        .map(|s| {
            let s = s.trim();
            s.parse::<ipnet::IpNet>()
                .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| format!("{s:?} is not a CIDR"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spool_bounds_must_be_positive() {
        let c = Config::load(
            None,
            vec![("EZTHROTTLE_SPOOL_MAX_JOBS".into(), "7".into())],
            Vec::new(),
        )
        .unwrap();
        assert_eq!(c.spool.max_jobs, 7);
        for var in [
            "EZTHROTTLE_SPOOL_MAX_JOBS",
            "EZTHROTTLE_SPOOL_STORE_DEADLINE_MS",
            "EZTHROTTLE_SPOOL_FORWARD_BATCH",
        ] {
            let e = Config::load(None, vec![(var.into(), "0".into())], Vec::new())
                .unwrap_err()
                .to_string();
            assert!(e.contains("spool.max_jobs"), "{var}: {e}");
        }
    }

    fn env(vars: &[(&str, &str)]) -> Vec<(String, String)> {
        vars.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn file(text: &str) -> tempfile::NamedTempFile {
        let f = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
        std::fs::write(f.path(), text).unwrap();
        f
    }

    #[test]
    fn flags_beat_env_beat_file_beat_defaults() {
        let f = file("region = \"iad\"\nlisten = \"127.0.0.1:9000\"\n[lanes.default]\nrate = 5.0\nburst = 2\nmax_in_flight = 3\n[executor]\nattempt_timeout_ms = 1000\n");
        let c = Config::load(
            Some(f.path()),
            env(&[
                ("EZTHROTTLE_REGION", "fra"),
                ("EZTHROTTLE_LISTEN", "127.0.0.1:9100"),
                ("EZTHROTTLE_EXECUTOR_ATTEMPT_TIMEOUT_MS", "2500"),
                ("EZTHROTTLE_ALLOW_CIDRS", "127.0.0.0/8, ::1"),
                ("PATH", "/bin"),
            ]),
            vec![Flag::string("listen", "--listen", "127.0.0.1:9200")],
        )
        .unwrap();
        assert_eq!(c.lanes.default.rate, 5.0, "file beats default");
        assert_eq!(c.lanes.default.burst, 2);
        assert_eq!(c.region, "fra", "env beats file");
        assert_eq!(c.executor.attempt_timeout_ms, 2500, "env beats file");
        assert_eq!(c.listen.port(), 9200, "flag beats env");
        assert_eq!(c.allow_cidrs.len(), 2, "lists are comma-separated");
        assert_eq!(
            c.webhooks.timeout_ms, 15_000,
            "untouched keys keep defaults"
        );
    }

    #[test]
    fn racing_settings_come_from_file_env_and_flag() {
        let d = Config::load(None, env(&[]), vec![]).unwrap();
        assert!(
            !d.executor.race_unsafe_methods,
            "off by default: POSTs hedge"
        );
        assert_eq!(d.executor.hedge_delay_ms, 250);
        let f = file("[executor]\nhedge_delay_ms = 100\n");
        let c = Config::load(
            Some(f.path()),
            env(&[("EZTHROTTLE_EXECUTOR_HEDGE_DELAY_MS", "80")]),
            vec![Flag::boolean(
                "executor.race_unsafe_methods",
                "--race-unsafe-methods",
                true,
            )],
        )
        .unwrap();
        assert!(c.executor.race_unsafe_methods);
        assert_eq!(c.executor.hedge_delay_ms, 80, "env beats file");
        let c = Config::load(
            None,
            env(&[("EZTHROTTLE_EXECUTOR_RACE_UNSAFE_METHODS", "true")]),
            vec![],
        )
        .unwrap();
        assert!(c.executor.race_unsafe_methods);
    }

    #[test]
    fn env_reaches_nested_keys_with_underscores_and_lists() {
        let c = Config::load(
            None,
            env(&[
                ("EZTHROTTLE_LANES_DEFAULT_MAX_IN_FLIGHT", "9"),
                ("EZTHROTTLE_LANES_DEFAULT_RATE", "0.5"),
                ("EZTHROTTLE_WEBHOOKS_RETRY_SCHEDULE", "1s,2m"),
                ("EZTHROTTLE_LIMITS_MAX_BODY_BYTES", "1000"),
                ("EZTHROTTLE_TIERS_FREE", "2"),
                ("EZTHROTTLE_METRICS_BEARER_TOKEN", "s3cret"),
                ("EZTHROTTLE_SECRET_KEY", ""),
                ("EZTHROTTLE_REGION", "123"),
            ]),
            Vec::new(),
        )
        .unwrap();
        assert_eq!(c.lanes.default.max_in_flight, 9);
        assert_eq!(c.lanes.default.rate, 0.5);
        assert_eq!(c.webhooks.retry_schedule, ["1s", "2m"]);
        assert_eq!(c.limits.job.max_body_bytes, 1000);
        assert_eq!(c.tiers.free, 2);
        assert_eq!(c.metrics.bearer_token, Some(SecretKey("s3cret".into())));
        assert_eq!(c.secret_key, None, "an empty optional setting stays unset");
        assert_eq!(c.region, "123", "a string key keeps digits as text");
    }

    #[test]
    fn unknown_variables_are_refused_by_name_but_sdk_ones_pass() {
        let e = Config::load(
            None,
            env(&[("EZTHROTTLE_LANES_DEFAULT_RTAE", "5")]),
            Vec::new(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("EZTHROTTLE_LANES_DEFAULT_RTAE"), "{e}");
        assert!(e.contains("unknown variable"), "{e}");
        Config::load(
            None,
            env(&[
                ("EZTHROTTLE_API_KEY", "ezt_live_x"),
                ("EZTHROTTLE_URL", "http://127.0.0.1:8080"),
                ("EZTHROTTLE_LOG", "debug"),
                ("EZTHROTTLE_BIN", "/x"),
            ]),
            Vec::new(),
        )
        .expect("variables of the SDKs, logs and tests are not settings");
    }

    #[test]
    fn bad_values_name_their_source() {
        let e = Config::load(
            None,
            env(&[("EZTHROTTLE_LANES_DEFAULT_RATE", "abc")]),
            Vec::new(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("environment variable EZTHROTTLE_LANES_DEFAULT_RATE"),
            "{e}"
        );
        let e = Config::load(None, env(&[("EZTHROTTLE_LISTEN", "nope")]), Vec::new())
            .unwrap_err()
            .to_string();
        assert!(e.contains("EZTHROTTLE_LISTEN"), "{e}");
        let f = file("[executor]\nattempt_timeout_ms = \"soon\"\n");
        let e = Config::load(Some(f.path()), env(&[]), Vec::new())
            .unwrap_err()
            .to_string();
        let at = format!("{} key `executor.attempt_timeout_ms`", f.path().display());
        assert!(e.contains(&at), "{e}");
        let e = Config::load(
            None,
            env(&[]),
            vec![Flag::list(
                "allow_cidrs",
                "--allow-cidr",
                vec!["x/99".into()],
            )],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("flag --allow-cidr"), "{e}");
        let e = Config::load(
            None,
            env(&[("EZTHROTTLE_LANES_DEFAULT_RATE", "0")]),
            Vec::new(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("rate must be > 0") && e.contains("EZTHROTTLE_LANES_DEFAULT_RATE"),
            "a rule names the variable that broke it: {e}"
        );
        let f = file("[metrics]\nbearer_token = \" \"\n");
        let e = Config::from_file(Some(f.path())).unwrap_err().to_string();
        assert!(e.contains("metrics.bearer_token"), "{e}");
        assert!(
            e.contains("key `metrics.bearer_token`"),
            "names the file key: {e}"
        );
        let f = file("regoin = \"typo\"\n");
        let e = Config::from_file(Some(f.path())).unwrap_err().to_string();
        assert!(
            e.contains("regoin") && e.contains(&f.path().display().to_string()),
            "{e}"
        );
        let missing = std::path::Path::new("/nonexistent/ezthrottle.toml");
        assert!(matches!(
            Config::from_file(Some(missing)),
            Err(ConfigError::Read { .. })
        ));
    }

    #[test]
    fn every_key_has_its_own_variable() {
        let keys = keys();
        assert!(keys.len() >= 35, "{} keys", keys.len());
        let names: std::collections::BTreeSet<_> = keys.iter().map(|(p, _)| env_name(p)).collect();
        assert_eq!(names.len(), keys.len(), "two keys map to one variable");
        for n in [
            "EZTHROTTLE_LANES_DEFAULT_RATE",
            "EZTHROTTLE_SECRET_KEY",
            "EZTHROTTLE_DATA_DIR",
            "EZTHROTTLE_DATABASE_URL",
            "EZTHROTTLE_ADVERTISE_URL",
            "EZTHROTTLE_CLUSTER_SECRET",
        ] {
            assert!(names.contains(n), "{n}");
            assert!(env_help().contains(n), "--help lists {n}");
        }
        for n in NON_CONFIG_ENV {
            assert!(!names.contains(*n), "{n} must not be a setting too");
        }
    }

    #[test]
    fn cluster_settings_come_from_env_and_flags_and_are_checked() {
        let c = Config::load(
            None,
            env(&[
                (
                    "EZTHROTTLE_DATABASE_URL",
                    "postgres://ezt@127.0.0.1:5432/ezt",
                ),
                ("EZTHROTTLE_ADVERTISE_URL", "http://127.0.0.2:8080"),
                ("EZTHROTTLE_CLUSTER_SECRET", "0123456789abcdef"),
                ("EZTHROTTLE_NODE_ID", "east-1"),
                ("EZTHROTTLE_ADMIN_TOKEN", "operator-0123456789"),
                ("EZTHROTTLE_OUTBOUND_SOURCE_IP", "127.0.0.9"),
            ]),
            vec![Flag::string(
                "database_url",
                "--database-url",
                "postgresql://ezt@127.0.0.1:5433/other",
            )],
        )
        .unwrap();
        assert_eq!(c.node_id.as_deref(), Some("east-1"));
        assert_eq!(
            c.admin.token.as_ref().map(|t| t.0.as_str()),
            Some("operator-0123456789")
        );
        assert_eq!(c.outbound.source_ip, Some("127.0.0.9".parse().unwrap()));
        assert!(c.clustered());
        let bad = Config {
            node_id: Some("has space".into()),
            ..c.clone()
        };
        assert!(bad.validate().unwrap_err().to_string().contains("node_id"));
        let short = Config {
            admin: AdminConfig {
                token: Some(SecretKey("short".into())),
            },
            ..c.clone()
        };
        assert!(short
            .validate()
            .unwrap_err()
            .to_string()
            .contains("admin.token"));
        assert_eq!(
            c.database_url.as_ref().map(|u| u.0.as_str()),
            Some("postgresql://ezt@127.0.0.1:5433/other"),
            "the flag beats the variable"
        );
        assert_eq!(c.advertise_url.as_deref(), Some("http://127.0.0.2:8080"));
        assert!(c.cluster_secret.is_some());
        assert!(
            !format!("{c:?}").contains("0123456789abcdef"),
            "the secret never reaches a log"
        );
        let unset =
            Config::load(None, env(&[("EZTHROTTLE_DATABASE_URL", "")]), Vec::new()).unwrap();
        assert_eq!(unset.database_url, None, "empty means SQLite");
        let invalid = |c: &Config| c.validate().expect_err("invalid").to_string();
        let c = Config {
            database_url: Some(SecretKey("mysql://x".into())),
            ..Config::default()
        };
        assert!(invalid(&c).contains("database_url"));
        let c = Config {
            advertise_url: Some("127.0.0.2:8080".into()),
            ..Config::default()
        };
        assert!(invalid(&c).contains("advertise_url"));
        let c = Config {
            cluster_secret: Some(SecretKey("short".into())),
            ..Config::default()
        };
        assert!(invalid(&c).contains("cluster_secret"));
    }

    #[test]
    fn outbound_and_retention_are_validated() {
        let invalid = |c: &Config| c.validate().expect_err("invalid").to_string();
        let mut c = Config::default();
        c.outbound.proxy = Some("http://127.0.0.1:3128".into());
        assert!(invalid(&c).contains("outbound.proxy_bypasses_ssrf"));
        c.outbound.proxy_bypasses_ssrf = true;
        c.validate().expect("acknowledged");
        c.outbound.proxy = Some("socks5://127.0.0.1:1080".into());
        assert!(invalid(&c).contains("outbound.proxy"));
        let mut c = Config::default();
        c.outbound.sealed_headers = vec!["bad header".into()];
        assert!(invalid(&c).contains("outbound.sealed_headers"));
        let mut c = Config::default();
        c.retention.tenants.insert("acme".into(), "0s".into());
        assert!(invalid(&c).contains("retention.tenants.acme"));
        c.retention.tenants.insert("acme".into(), "never".into());
        c.retention.finished_jobs = "30d".into();
        c.validate().expect("valid");
        assert_eq!(c.retention.default_ms(), Some(30 * 86_400_000));
        c.retention.batch = 0;
        assert!(invalid(&c).contains("retention.batch"));
    }

    #[test]
    fn default_toml_documents_the_defaults() {
        let text = include_str!("../../../config.default.toml");
        let parsed: Config = toml::from_str(text).expect("config.default.toml parses");
        assert_eq!(
            parsed,
            Config::default(),
            "config.default.toml must match the built-in defaults"
        );
    }
}
