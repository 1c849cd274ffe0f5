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
    /// This node's region name.
    pub region: String,
    /// CIDRs exempt from the SSRF deny list (e.g. `127.0.0.0/8` for local testing).
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
    /// Key that seals webhook secrets at rest (base64 of 32 bytes). Without it, a key file
    /// `secret.key` is created in the data dir (mode 0600) on first start.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret_key: Option<SecretKey>,
    /// Inbound connections and waiters.
    pub server: ServerConfig,
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
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".parse().expect("static address"),
            data_dir: PathBuf::from("./ezthrottle-data"),
            region: "local".into(),
            allow_cidrs: Vec::new(),
            tiers: TierWeights::default(),
            lanes: LanesConfig::default(),
            executor: ExecutorConfig::default(),
            limits: LimitsConfig::default(),
            dedup_window_ms: 24 * 3600 * 1000,
            webhooks: WebhooksConfig::default(),
            secret_key: None,
            server: ServerConfig::default(),
        }
    }
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
}

impl Default for ExecutorConfig {
    fn default() -> Self {
        Self {
            connect_timeout_ms: 10_000,
            attempt_timeout_ms: 30_000,
            max_response_bytes: 1024 * 1024,
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
    /// A variable has a bad value.
    #[error("invalid {name}: {message}")]
    Env {
        /// Variable.
        name: String,
        /// What is wrong.
        message: String,
    },
    /// The merged values break a rule.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl Config {
    /// Defaults overlaid with the TOML file, if given.
    pub fn from_file(path: Option<&std::path::Path>) -> Result<Self, ConfigError> {
        let Some(path) = path else {
            return Ok(Self::default());
        };
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.into(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.into(),
            message: e.to_string(),
        })
    }

    /// Applies `EZTHROTTLE_*` variables from `vars` (pass `std::env::vars()`).
    pub fn apply_env(
        &mut self,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<(), ConfigError> {
        let bad = |name: &str, m: String| ConfigError::Env {
            name: name.into(),
            message: m,
        };
        for (k, v) in vars {
            match k.as_str() {
                "EZTHROTTLE_LISTEN" => {
                    self.listen = v.parse().map_err(|e| bad(&k, format!("{e}")))?
                }
                "EZTHROTTLE_DATA_DIR" => self.data_dir = v.into(),
                "EZTHROTTLE_REGION" => self.region = v,
                "EZTHROTTLE_SECRET_KEY" if !v.is_empty() => self.secret_key = Some(SecretKey(v)),
                "EZTHROTTLE_ALLOW_CIDRS" => {
                    self.allow_cidrs = parse_cidrs(v.split(',').filter(|s| !s.trim().is_empty()))
                        .map_err(|m| bad(&k, m))?
                }
                "EZTHROTTLE_DATABASE_URL" if !v.is_empty() => {
                    return Err(bad(
                        &k,
                        "the PostgreSQL cluster store is not available in this build yet".into(),
                    ))
                }
                _ => {}
            }
        }
        Ok(())
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
        Ok(())
    }

    /// The SQLite file.
    pub fn db_path(&self) -> PathBuf {
        self.data_dir.join("ezthrottle.db")
    }
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
    fn env_overrides_file_values() {
        let dir = std::env::temp_dir().join(format!("ezt-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("c.toml");
        std::fs::write(&f, "region = \"iad\"\nlisten = \"127.0.0.1:9000\"\n[lanes.default]\nrate = 5.0\nburst = 2\nmax_in_flight = 3\n").unwrap();
        let mut c = Config::from_file(Some(&f)).unwrap();
        assert_eq!(
            (c.region.as_str(), c.listen.port(), c.lanes.default.rate),
            ("iad", 9000, 5.0)
        );
        c.apply_env([
            ("EZTHROTTLE_REGION".to_string(), "fra".to_string()),
            ("EZTHROTTLE_ALLOW_CIDRS".into(), "127.0.0.0/8,::1".into()),
        ])
        .unwrap();
        assert_eq!(c.region, "fra", "env beats file");
        assert_eq!(c.allow_cidrs.len(), 2);
        assert!(c
            .apply_env([("EZTHROTTLE_LISTEN".to_string(), "nope".to_string())])
            .is_err());
        std::fs::write(&f, "regoin = \"typo\"\n").unwrap();
        assert!(
            Config::from_file(Some(&f)).is_err(),
            "unknown keys are refused"
        );
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
