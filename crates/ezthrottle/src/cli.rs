//! Command-line interface (a contract: scripts use these names; see API.md "Operations").

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::{Args as ClapArgs, Parser, Subcommand};
use ezt_core::tier::Tier;
use ezt_core::{ApiKeyId, JobId, JobState};
use ezt_runtime::clock::{Clock, SystemClock};
use ezt_runtime::events::JobView;
use ezt_runtime::jobs::{cancel_stored, retry_stored, JobsError};
use ezt_runtime::Config;
use ezt_store::{JobFilter, Store};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Parser)]
#[command(
    name = "ezthrottle",
    version,
    about = "EZThrottle: durable, rate-limited, retried HTTP calls",
    after_help = ezt_runtime::config::env_help()
)]
pub(crate) struct Args {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, ClapArgs)]
struct Global {
    /// TOML configuration file (every key: config.default.toml).
    #[arg(long, global = true, env = "EZTHROTTLE_CONFIG", hide_env_values = true)]
    config: Option<PathBuf>,
    /// Data directory (SQLite file and lock) [env: EZTHROTTLE_DATA_DIR].
    #[arg(long, global = true)]
    data_dir: Option<String>,
    /// PostgreSQL URL (postgres://user@host:port/db): use that database instead of the SQLite
    /// file, for the server and every subcommand [env: EZTHROTTLE_DATABASE_URL].
    #[arg(long, global = true)]
    database_url: Option<String>,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run the server.
    #[command(after_help = ezt_runtime::config::env_help())]
    Serve {
        /// Address to listen on (default 127.0.0.1:8080) [env: EZTHROTTLE_LISTEN].
        #[arg(long)]
        listen: Option<String>,
        /// This node's region (default "local") [env: EZTHROTTLE_REGION].
        #[arg(long)]
        region: Option<String>,
        /// How other cluster nodes reach this one (http://host:port) [env:
        /// EZTHROTTLE_ADVERTISE_URL].
        #[arg(long)]
        advertise_url: Option<String>,
        /// Shared secret of node-to-node calls, the same on every node [env:
        /// EZTHROTTLE_CLUSTER_SECRET].
        #[arg(long)]
        cluster_secret: Option<String>,
        /// This node's id in a cluster (default: kept in the data dir's `node_id` file) [env:
        /// EZTHROTTLE_NODE_ID].
        #[arg(long)]
        node_id: Option<String>,
        /// Source address of this node's outbound calls [env: EZTHROTTLE_OUTBOUND_SOURCE_IP].
        #[arg(long)]
        outbound_source_ip: Option<String>,
        /// CIDR exempt from the SSRF deny list (repeatable) [env: EZTHROTTLE_ALLOW_CIDRS,
        /// comma-separated].
        #[arg(long = "allow-cidr")]
        allow_cidr: Vec<String>,
        /// Log as JSON lines instead of text.
        #[arg(long)]
        log_json: bool,
        /// A queued job racing several regions sends POST and PATCH from every region at once
        /// too, instead of hedging (only for targets that honour Idempotency-Key) [env:
        /// EZTHROTTLE_EXECUTOR_RACE_UNSAFE_METHODS].
        #[arg(long)]
        race_unsafe_methods: bool,
    },
    /// Bring the database's schema up to date, then exit (`serve` also does this at start).
    Migrate,
    /// Tenants.
    #[command(subcommand)]
    Tenants(TenantsCmd),
    /// API keys.
    #[command(subcommand)]
    Keys(KeysCmd),
    /// Jobs.
    #[command(subcommand)]
    Jobs(JobsCmd),
    /// Lanes (what each learned about its target, as saved).
    #[command(subcommand)]
    Lanes(LanesCmd),
    /// Cluster members (on PostgreSQL; on SQLite there are none to list).
    #[command(subcommand)]
    Nodes(NodesCmd),
}

#[derive(Debug, Subcommand)]
enum LanesCmd {
    /// Every lane the store knows, as JSON: limits in force, where each came from, the pause,
    /// the remaining budget and any tenant pin. A running server saves a lane when what it
    /// learned changes (a drifting rate when it moves 10 %) and when the lane goes idle, so
    /// this can lag the live view (`GET /api/v1/lanes`) by that much.
    List {
        /// Only lanes whose target host (or host:port) is this.
        #[arg(long)]
        host: Option<String>,
    },
}

/// A lane as `lanes list` prints it.
#[derive(Debug, serde::Serialize)]
struct LaneListed {
    /// `job` or `webhook`.
    kind: String,
    lane: String,
    host: String,
    credential_fingerprint: Option<String>,
    rate: f64,
    burst: u32,
    max_in_flight: u32,
    paused_until: Option<u64>,
    saved_at: u64,
    remaining: Option<u64>,
    /// Where rate, burst, in-flight cap and the last pause came from (absent: configured).
    sources: serde_json::Value,
    pin: Option<ezt_store::LanePin>,
    /// Cluster mode (job lanes): the live node that dispatches it (`null`: none now).
    #[serde(skip_serializing_if = "Option::is_none")]
    owner_node: Option<Option<String>>,
    /// Cluster mode (job lanes): its ownership epoch (0: never claimed).
    #[serde(skip_serializing_if = "Option::is_none")]
    epoch: Option<u64>,
    /// Cluster mode (job lanes): jobs waiting in it now.
    #[serde(skip_serializing_if = "Option::is_none")]
    queue_depth: Option<u64>,
    /// Cluster mode (job lanes): attempts running in it now.
    #[serde(skip_serializing_if = "Option::is_none")]
    in_flight: Option<u64>,
}

fn lane_listed(name: String, st: ezt_store::LaneState) -> LaneListed {
    let (kind, lane) = name
        .split_once(':')
        .map_or(("job".to_string(), name.clone()), |(k, l)| {
            (k.to_string(), l.to_string())
        });
    let (host, fp) = match lane.split_once('#') {
        Some((h, f)) => (h.to_string(), Some(f.to_string())),
        None => (lane.clone(), None),
    };
    LaneListed {
        kind,
        lane,
        host,
        credential_fingerprint: fp,
        rate: st.rate,
        burst: st.burst,
        max_in_flight: st.max_in_flight,
        paused_until: st.paused_until_ms,
        saved_at: st.updated_at_ms,
        remaining: st.detail.remaining,
        sources: serde_json::json!({
            "rate": st.detail.rate,
            "burst": st.detail.burst,
            "max_in_flight": st.detail.max_in_flight,
            "pause": st.detail.pause,
        }),
        pin: st.detail.pin,
        owner_node: None,
        epoch: None,
        queue_depth: None,
        in_flight: None,
    }
}

fn host_matches(host_port: &str, want: &str) -> bool {
    let h = host_port.rsplit_once(':').map_or(host_port, |(h, _)| h);
    host_port.eq_ignore_ascii_case(want) || h.eq_ignore_ascii_case(want)
}

#[derive(Debug, Subcommand)]
enum NodesCmd {
    /// List every node the database knows: id, epoch, region, lease, alive, draining, lanes.
    List,
}

#[derive(Debug, Subcommand)]
enum TenantsCmd {
    /// Create a tenant.
    Create {
        /// Unique name.
        name: String,
        /// reserved, paid or free.
        #[arg(long, default_value = "paid")]
        tier: String,
    },
    /// List tenants.
    List,
}

#[derive(Debug, Subcommand)]
enum KeysCmd {
    /// Create a key; prints the key alone on stdout (shown once).
    Create {
        /// Tenant name.
        #[arg(long)]
        tenant: String,
        /// Print a JSON object instead.
        #[arg(long)]
        json: bool,
    },
    /// List keys (never the keys themselves).
    List {
        /// Only this tenant's.
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Revoke a key by id.
    Revoke {
        /// Key id (key_…).
        id: String,
    },
}

#[derive(Debug, Subcommand)]
enum JobsCmd {
    /// List jobs, newest first.
    List {
        /// Only this tenant's.
        #[arg(long)]
        tenant: Option<String>,
        /// Only this state.
        #[arg(long)]
        state: Option<String>,
        /// How many.
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// Show one job as JSON.
    Get {
        /// Job id.
        id: String,
    },
    /// Cancel a job.
    Cancel {
        /// Job id.
        id: String,
    },
    /// Re-queue a failed or expired job (a running server picks it up within a second).
    Retry {
        /// Job id.
        id: String,
    },
}

/// Defaults, then the file, then `EZTHROTTLE_*`, then flags (see `Config::load`).
fn load_config(g: &Global, cmd: &Cmd) -> Result<Config> {
    use ezt_runtime::config::Flag;
    let mut flags = Vec::new();
    if let Some(d) = &g.data_dir {
        flags.push(Flag::string("data_dir", "--data-dir", d));
    }
    if let Some(u) = &g.database_url {
        flags.push(Flag::string("database_url", "--database-url", u));
    }
    if let Cmd::Serve {
        listen,
        region,
        advertise_url,
        cluster_secret,
        node_id,
        outbound_source_ip,
        allow_cidr,
        race_unsafe_methods,
        ..
    } = cmd
    {
        if *race_unsafe_methods {
            flags.push(Flag::boolean(
                "executor.race_unsafe_methods",
                "--race-unsafe-methods",
                true,
            ));
        }
        if let Some(ip) = outbound_source_ip {
            flags.push(Flag::string(
                "outbound.source_ip",
                "--outbound-source-ip",
                ip,
            ));
        }
        if let Some(n) = node_id {
            flags.push(Flag::string("node_id", "--node-id", n));
        }
        if let Some(u) = advertise_url {
            flags.push(Flag::string("advertise_url", "--advertise-url", u));
        }
        if let Some(s) = cluster_secret {
            flags.push(Flag::string("cluster_secret", "--cluster-secret", s));
        }
        if let Some(l) = listen {
            flags.push(Flag::string("listen", "--listen", l));
        }
        if let Some(r) = region {
            flags.push(Flag::string("region", "--region", r));
        }
        if !allow_cidr.is_empty() {
            flags.push(Flag::list(
                "allow_cidrs",
                "--allow-cidr",
                allow_cidr.clone(),
            ));
        }
    }
    Ok(Config::load(g.config.as_deref(), std::env::vars(), flags)?)
}

/// Opens the store named by the configuration: the one place that names a concrete backend.
/// PostgreSQL when `database_url` is set (migrated on open), else the SQLite file.
async fn open(cfg: &Config) -> Result<Arc<dyn Store>> {
    if let Some(url) = &cfg.database_url {
        return Ok(Arc::new(connect_postgres(&url.0).await?));
    }
    let store = ezt_store_sqlite::SqliteStore::open(cfg.db_path())
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(|| format!("opening {}", cfg.db_path().display()))?;
    Ok(Arc::new(store))
}

/// Connects to PostgreSQL and migrates it.
async fn connect_postgres(url: &str) -> Result<ezt_store_postgres::PgStore> {
    ezt_store_postgres::PgStore::connect(url)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(|| format!("opening the PostgreSQL store at {}", redact_url(url)))
}

/// Where the store is, for logs and errors: the SQLite file, or the database URL without its
/// password.
fn store_location(cfg: &Config) -> String {
    match &cfg.database_url {
        Some(url) => redact_url(&url.0),
        None => cfg.db_path().display().to_string(),
    }
}

/// A URL with the password of its `user:password@` part replaced by `***`.
fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (authority, tail) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
            let masked = if userinfo.contains(':') { ":***" } else { "" };
            format!("{scheme}://{user}{masked}@{host}{tail}")
        }
        None => url.to_string(),
    }
}

/// `ezthrottle migrate`: the schema up to date, nothing else. PostgreSQL reports what it
/// applied; SQLite migrates when opened.
async fn migrate(cfg: &Config) -> Result<()> {
    if let Some(url) = &cfg.database_url {
        let store = ezt_store_postgres::PgStore::connect_without_migrating(&url.0)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let ran = store
            .migrate()
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))
            .with_context(|| format!("migrating {}", redact_url(&url.0)))?;
        let versions = store
            .applied_migrations()
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        note(&format!(
            "{}: applied {ran} migration(s); schema version {}",
            redact_url(&url.0),
            versions.last().copied().unwrap_or(0)
        ));
        return Ok(());
    }
    open(cfg).await?;
    note(&format!("{}: schema up to date", cfg.db_path().display()));
    Ok(())
}

async fn tenant_id(store: &dyn Store, name: &str) -> Result<ezt_core::TenantId> {
    Ok(store
        .tenant_by_name(name)
        .await?
        .with_context(|| format!("no tenant named {name:?}"))?
        .id)
}

fn print_json(v: &impl serde::Serialize) -> Result<()> {
    out(&serde_json::to_string_pretty(v)?);
    Ok(())
}

/// A line on stdout; a closed stdout (`| head`) is not an error worth a panic.
fn out(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stdout(), "{line}");
}

/// A line on stderr, ignoring a closed stderr.
fn note(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{line}");
}

pub(crate) async fn run(args: Args) -> Result<()> {
    let cfg = load_config(&args.global, &args.cmd)?;
    match args.cmd {
        Cmd::Serve { log_json, .. } => serve(cfg, log_json).await,
        Cmd::Migrate => migrate(&cfg).await,
        Cmd::Tenants(c) => {
            let store = open(&cfg).await?;
            match c {
                TenantsCmd::Create { name, tier } => {
                    let tier = Tier::parse(&tier)
                        .with_context(|| format!("tier {tier:?}: use reserved, paid or free"))?;
                    let t = ezt_runtime::admin::create_tenant(
                        store.as_ref(),
                        &SystemClock,
                        &name,
                        tier,
                    )
                    .await?;
                    print_json(&t)
                }
                TenantsCmd::List => print_json(&store.list_tenants().await?),
            }
        }
        Cmd::Keys(c) => {
            let store = open(&cfg).await?;
            match c {
                KeysCmd::Create { tenant, json } => {
                    let t = tenant_id(store.as_ref(), &tenant).await?;
                    let (key, rec) =
                        ezt_runtime::admin::create_key(store.as_ref(), &SystemClock, t).await?;
                    if json {
                        print_json(
                            &serde_json::json!({"key": key, "id": rec.id, "tenant": tenant, "prefix": rec.prefix}),
                        )?;
                    } else {
                        note(&format!(
                            "created key {} for tenant {tenant}; it is shown once, store it now",
                            rec.id
                        ));
                        out(&key);
                    }
                    Ok(())
                }
                KeysCmd::List { tenant } => {
                    let t = match tenant {
                        Some(n) => Some(tenant_id(store.as_ref(), &n).await?),
                        None => None,
                    };
                    print_json(&store.list_api_keys(t).await?)
                }
                KeysCmd::Revoke { id } => {
                    let id: ApiKeyId = id.parse()?;
                    store
                        .revoke_api_key(id, SystemClock.now_ms())
                        .await
                        .with_context(|| format!("revoking {id}"))?;
                    eprintln!("revoked {id}");
                    Ok(())
                }
            }
        }
        Cmd::Lanes(LanesCmd::List { host }) => {
            let store = open(&cfg).await?;
            // Cluster mode: who owns each job lane, its epoch and queue, from the database.
            let rows: std::collections::HashMap<String, ezt_store::LaneRow> = store
                .lane_rows("job:", None, 0)
                .await?
                .unwrap_or_default()
                .into_iter()
                .map(|r| (r.lane.clone(), r))
                .collect();
            let mut states = store.lane_states().await?;
            // Lanes a node owns that learned nothing yet: their configured limits.
            for r in rows.values() {
                if r.state.is_none() && !states.iter().any(|(n, _)| *n == r.lane) {
                    let v = ezt_runtime::lanes::row_view(&cfg.lanes, "job:", r);
                    states.push((
                        r.lane.clone(),
                        ezt_store::LaneState {
                            rate: v.rate,
                            burst: v.burst,
                            max_in_flight: v.max_in_flight,
                            paused_until_ms: None,
                            updated_at_ms: 0,
                            detail: ezt_store::LaneDetail::default(),
                        },
                    ));
                }
            }
            states.sort_by(|a, b| a.0.cmp(&b.0));
            let lanes: Vec<LaneListed> = states
                .into_iter()
                .map(|(name, st)| {
                    let row = rows.get(&name);
                    let mut l = lane_listed(name, st);
                    if let Some(r) = row {
                        l.owner_node = Some(r.owner_node.clone());
                        l.epoch = Some(r.lane_epoch);
                        l.queue_depth = Some(r.queued);
                        l.in_flight = Some(r.running);
                    }
                    l
                })
                .filter(|l| host.as_deref().is_none_or(|h| host_matches(&l.host, h)))
                .collect();
            print_json(&lanes)
        }
        Cmd::Nodes(NodesCmd::List) => {
            let store = open(&cfg).await?;
            print_json(&store.nodes().await?)
        }
        Cmd::Jobs(c) => {
            let store = open(&cfg).await?;
            match c {
                JobsCmd::List {
                    tenant,
                    state,
                    limit,
                } => {
                    let t = match tenant {
                        Some(n) => Some(tenant_id(store.as_ref(), &n).await?),
                        None => None,
                    };
                    let state = state
                        .map(|s| {
                            JobState::parse(&s).with_context(|| format!("unknown state {s:?}"))
                        })
                        .transpose()?;
                    let jobs = store
                        .list_jobs(
                            t,
                            &JobFilter {
                                state,
                                limit,
                                ..Default::default()
                            },
                        )
                        .await?;
                    let views: Vec<_> = jobs
                        .iter()
                        .map(|j| JobView::from_record(j, &cfg.lanes.credential_headers))
                        .collect();
                    print_json(&views)
                }
                JobsCmd::Get { id } => {
                    let id: JobId = id.parse()?;
                    let job = store
                        .get_job(None, id)
                        .await?
                        .with_context(|| format!("no job {id}"))?;
                    print_json(&JobView::from_record(&job, &cfg.lanes.credential_headers))
                }
                JobsCmd::Cancel { id } => {
                    let id: JobId = id.parse()?;
                    match cancel_stored(store.as_ref(), None, id, SystemClock.now_ms(), &cfg.region)
                        .await
                    {
                        Ok(_) => {
                            eprintln!("cancelled {id}");
                            Ok(())
                        }
                        Err(JobsError::NotFound) => bail!("no job {id}"),
                        Err(JobsError::AlreadyFinal(s)) => {
                            bail!("job {id} is already {}", s.as_str())
                        }
                        Err(e) => Err(e.into()),
                    }
                }
                JobsCmd::Retry { id } => {
                    let id: JobId = id.parse()?;
                    match retry_stored(store.as_ref(), None, id, SystemClock.now_ms()).await {
                        Ok(_) => {
                            eprintln!("re-queued {id}");
                            Ok(())
                        }
                        Err(JobsError::NotFound) => bail!("no job {id}"),
                        Err(JobsError::NotReplayable(s)) => bail!(
                            "job {id} is {}; only failed or expired jobs can be retried",
                            s.as_str()
                        ),
                        Err(e) => Err(e.into()),
                    }
                }
            }
        }
    }
}

async fn serve(cfg: Config, log_json: bool) -> Result<()> {
    // Held to the end: lines still queued are written (bounded) before the process exits.
    let _logs = crate::logging::init(log_json);
    cfg.validate()?;
    ezt_store_sqlite::private::create_private_dir(&cfg.data_dir)
        .with_context(|| format!("creating {}", cfg.data_dir.display()))?;
    let lock_path = cfg.data_dir.join("ezthrottle.lock");
    let lock = ezt_store_sqlite::private::open_private_file(&lock_path)
        .with_context(|| format!("opening {}", lock_path.display()))?;
    if lock.try_lock().is_err() {
        bail!(
            "{} is in use by another ezthrottle server",
            cfg.data_dir.display()
        );
    }
    let store = open(&cfg).await?;
    if let Some(key) = ezt_runtime::admin::bootstrap(store.as_ref(), &SystemClock).await? {
        // A log line, so `--log-json` output stays all JSON; the key alone goes to stdout.
        tracing::info!("first start: created tenant \"default\" and an API key, printed on stdout. It is shown once; store it now");
        out(&key);
    }
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .with_context(|| format!("binding {}", cfg.listen))?;
    let addr = listener.local_addr()?;
    let shutdown = CancellationToken::new();
    let started = if cfg.database_url.is_some() {
        // Store and forward: the node's own spool beside its lock, for when PostgreSQL is
        // unreachable (see ezt_runtime::spool).
        let path = cfg.data_dir.join("spool.db");
        let spool = ezt_store_sqlite::SqliteStore::open(&path)
            .map_err(|e| anyhow::anyhow!("{e}"))
            .with_context(|| format!("opening the spool {}", path.display()))?;
        ezt_runtime::start_with_spool(cfg.clone(), store, Arc::new(spool), shutdown.clone()).await
    } else {
        ezt_runtime::start(cfg.clone(), store, shutdown.clone()).await
    };
    let (rt, sched) = started.map_err(|e| anyhow::anyhow!("{e}"))?;
    tracing::info!(%addr, port = addr.port(), data = %store_location(&cfg), region = %cfg.region, "listening on http://{addr}");
    let token = shutdown.clone();
    tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        tracing::info!("shutting down: finishing in-flight calls");
        token.cancel();
    });
    ezt_http::serve(listener, rt, sched, shutdown).await;
    drop(lock);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn urls_are_shown_without_their_password() {
        assert_eq!(
            redact_url("postgres://ezt:s3cret@db:5432/ezt?sslmode=disable"),
            "postgres://ezt:***@db:5432/ezt?sslmode=disable"
        );
        assert_eq!(
            redact_url("postgres://ezt@127.0.0.1:5432/postgres"),
            "postgres://ezt@127.0.0.1:5432/postgres"
        );
        assert_eq!(redact_url("not a url"), "not a url");
    }
}
