//! The cluster store: every store capability on PostgreSQL, so several nodes can share one
//! database (issue 13). SQLite stays the embedded default; this backend passes the same
//! conformance suite.
//!
//! # Driver: tokio-postgres with a deadpool pool
//!
//! Chosen over sqlx because:
//! - the store's SQL is fixed and small, written by hand per capability: sqlx's main draw, the
//!   compile-time-checked macros, would need a live database at build time (not allowed here),
//!   and without them sqlx is a larger dependency tree doing what tokio-postgres does;
//! - tokio-postgres pipelines: queries issued concurrently on one connection are written
//!   without waiting for each answer, and `prepare_cached` (deadpool's per-connection statement
//!   cache) keeps the hot path on the extended protocol with no re-parse;
//! - arrays bind natively (`unnest($1::bytea[], …)`), which is what group commit needs: one
//!   multi-row `INSERT … SELECT FROM unnest` per batch instead of one statement per job;
//! - a raw `tokio_postgres::Client` is at hand for what comes next (LISTEN/NOTIFY through the
//!   connection's message stream for the notifier, the node heartbeat on its own connection).
//!
//! # Time
//!
//! The traits pass the caller's clock in nearly everywhere (`now_ms`, `run_at`, `Lease::now_ms`
//! and `expires_at`, `LaneState::paused_until_ms`), and the conformance suite asserts those
//! values come back as given, so they are stored as given. Where the backend chooses, the
//! database clock (`ezt_now_ms()`, the server's `clock_timestamp()`) decides:
//! - an attempt lease's `leased_at` (the ledger a lane's adopter rebuilds its limiter from) and
//!   `lease_expires_at` = database now + the caller's lease length (`expires_at − now_ms`), so
//!   a node with a skewed clock cannot stretch or shorten a lease;
//! - `lanes.updated_at` and the membership rows (`nodes.started_at`, later `expires_at`);
//! - [`PgStore::db_now_ms`] hands the database clock to the runtime for the cluster stage.
//!
//! # Admission
//!
//! `insert_jobs` is group-committed (`admission`): concurrent calls queue for one batcher task,
//! which folds whatever is waiting into one transaction, like the SQLite writer thread does.
//! Idempotency keys are claimed through a unique partial index (`jobs_key_claim`), so two nodes
//! admitting one key at the same moment cannot both insert.
//!
//! # Migrations
//!
//! Versioned SQL files (`migrations/NNNN_name.sql`, embedded), recorded in `schema_migrations`,
//! applied at start in one transaction under an advisory lock (`schema`), so nodes starting
//! together do not race and a half-applied migration never stays.
#![warn(missing_docs)]

mod admission;
mod cluster;
mod codec;
mod deliveries;
mod jobs;
mod lanes;
mod maintenance;
mod notify;
mod outcomes;
mod recovery;
mod schema;
mod secrets;
mod tenants;
#[cfg(feature = "testing")]
pub mod testing;
mod workflows;

use std::str::FromStr;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use ezt_store::{Error, Result};

use codec::{pg_err, pool_err};

pub use cluster::LANE_CHANNEL;
pub use schema::MIGRATIONS;

/// Set on every pooled session (see `connect_without_migrating`).
const SESSION_SETTINGS: &str =
    "SET idle_in_transaction_session_timeout = '4s'; SET lock_timeout = '3s'";

/// Connections kept by a node's pool.
const DEFAULT_POOL: usize = 16;

/// The PostgreSQL store. Cheap to clone (a pool and a channel).
#[derive(Clone)]
pub struct PgStore {
    pool: Pool,
    admit: admission::Admitter,
    /// For connections of their own (LISTEN for lane notifications).
    pg: tokio_postgres::Config,
    /// Lane notifications, once something listens (`ClusterStore::lane_event`).
    lane_events:
        std::sync::Arc<tokio::sync::Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<String>>>>,
    /// Lane notifications, coalesced per lane.
    notifier: notify::LaneNotifier,
    /// The membership heartbeat's own session (not the pool's): see `cluster::heartbeat`.
    beat: std::sync::Arc<tokio::sync::Mutex<Option<tokio_postgres::Client>>>,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("pool", &self.pool.status())
            .finish()
    }
}

impl PgStore {
    /// Connects to `url` (`postgres://user@host:port/db`; libpq key/value strings work too),
    /// applies pending migrations and starts the admission batcher. Must be called inside a
    /// tokio runtime.
    pub async fn connect(url: &str) -> Result<Self> {
        let store = Self::connect_without_migrating(url)?;
        store.migrate().await?;
        Ok(store)
    }

    /// Like [`connect`](Self::connect) but leaves the schema as it is (for `migrate` itself
    /// and tests). Connections are made lazily, so this cannot fail for an unreachable server.
    pub fn connect_without_migrating(url: &str) -> Result<Self> {
        let mut pg = tokio_postgres::Config::from_str(url).map_err(|e| {
            Error::Other(format!(
                "database URL: {e} (expected postgres://user@host:port/dbname)"
            ))
        })?;
        if pg.get_application_name().is_none() {
            pg.application_name("ezthrottle");
        }
        pg.connect_timeout(Duration::from_secs(5));
        // A database that vanishes without a FIN (a partition, a dead host) must fail queries in
        // seconds, not after the kernel's two-hour keepalive: probe idle connections and bound
        // unacknowledged sends, unless the URL chose its own values.
        if pg.get_keepalives_idle() == Duration::from_secs(2 * 3600) {
            pg.keepalives_idle(Duration::from_secs(10))
                .keepalives_interval(Duration::from_secs(2))
                .keepalives_retries(3);
        }
        if pg.get_tcp_user_timeout().is_none() {
            pg.tcp_user_timeout(Duration::from_secs(15));
        }
        let mgr = Manager::from_config(
            pg.clone(),
            tokio_postgres::NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(mgr)
            .post_create(deadpool_postgres::Hook::async_fn(|client, _| {
                Box::pin(async move {
                    // A node paused mid-transaction (SIGSTOP, a partition) must not hold row
                    // locks for long: the server ends such a session, and nobody waits on a
                    // lock for more than a few seconds.
                    client
                        .batch_execute(SESSION_SETTINGS)
                        .await
                        .map_err(deadpool_postgres::HookError::Backend)
                })
            }))
            .max_size(DEFAULT_POOL)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(Duration::from_secs(10)))
            .create_timeout(Some(Duration::from_secs(5)))
            .recycle_timeout(Some(Duration::from_secs(5)))
            .build()
            .map_err(|e| Error::Other(format!("connection pool: {e}")))?;
        let admit = admission::Admitter::start(pool.clone());
        let notifier = notify::LaneNotifier::start(pool.clone());
        Ok(Self {
            pool,
            admit,
            pg,
            lane_events: Default::default(),
            notifier,
            beat: Default::default(),
        })
    }

    /// Applies every migration not yet applied; returns how many ran now.
    pub async fn migrate(&self) -> Result<usize> {
        let mut client = self.client().await?;
        schema::migrate(&mut client).await
    }

    /// The versions recorded in `schema_migrations`, oldest first.
    pub async fn applied_migrations(&self) -> Result<Vec<i32>> {
        let client = self.client().await?;
        schema::applied(&client).await
    }

    /// The database server's clock, ms since the epoch: the clock cluster leases, schedules and
    /// pauses are to be decided on.
    pub async fn db_now_ms(&self) -> Result<u64> {
        let client = self.client().await?;
        let row = client
            .query_one("SELECT ezt_now_ms()", &[])
            .await
            .map_err(pg_err)?;
        Ok(row.get::<_, i64>(0) as u64)
    }

    /// Admission transactions committed by this store so far: with group commit, fewer than
    /// the `insert_jobs` calls when calls overlap (for metrics and tests).
    pub fn admission_batches(&self) -> u64 {
        self.admit.batches()
    }

    async fn client(&self) -> Result<deadpool_postgres::Object> {
        self.pool.get().await.map_err(pool_err)
    }

    /// Holds `n` of the pool's connections until the returned value is dropped (tests: a
    /// saturated pool).
    #[cfg(feature = "testing")]
    pub async fn hold_connections(&self, n: usize) -> Result<Vec<deadpool_postgres::Object>> {
        let mut held = Vec::with_capacity(n);
        for _ in 0..n {
            held.push(self.client().await?);
        }
        Ok(held)
    }
}
