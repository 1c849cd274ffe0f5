//! EZThrottle's runtime: configuration, the HTTP API, the scheduler and the executor.
//!
//! `run` wires them: it opens the store (the one place that names a concrete backend), rebuilds
//! the scheduler's index from it, and serves until shutdown.
#![warn(missing_docs)]

pub mod admin;
pub mod config;
pub mod credentials;
pub mod events;
pub mod executor;
pub mod http;
pub mod metrics;
pub mod retention;
pub mod scheduler;
pub mod sealing;
pub mod ttl_cache;
pub mod webhooks;

use std::collections::HashMap;
use std::sync::Arc;

use ezt_core::ssrf::SsrfPolicy;
use ezt_core::TenantId;
use ezt_store::Store;
use tokio::net::TcpListener;

pub use config::Config;
/// Graceful-shutdown signal shared by the server's tasks.
pub type CancellationToken = tokio_util::sync::CancellationToken;

/// Shared state of the handlers.
#[derive(Clone)]
pub struct AppState {
    /// Merged configuration.
    pub cfg: Arc<Config>,
    /// Durable storage.
    pub store: Arc<dyn Store>,
    /// The job scheduler.
    pub scheduler: scheduler::SchedulerHandle,
    /// The webhook delivery scheduler.
    pub deliveries: webhooks::Deliveries,
    /// Webhook secrets: sealed at rest, cached in clear for signing.
    pub signing_keys: Arc<webhooks::SigningKeys>,
    /// The executor (for final events).
    pub executor: Arc<executor::Executor>,
    /// SSRF allow-list.
    pub ssrf: SsrfPolicy,
    /// Admission-time resolver with the SSRF filter.
    pub resolver: executor::SsrfResolver,
    /// Key for lane credential fingerprints.
    pub fingerprint_key: Arc<Vec<u8>>,
    /// Per-job event fan-out.
    pub events: Arc<events::Events>,
    /// Metrics.
    pub metrics: Arc<metrics::Metrics>,
    /// Recently verified API keys.
    pub auth: Arc<http::auth::AuthCache>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("cfg", &self.cfg)
            .finish_non_exhaustive()
    }
}

/// Owner-only data directory (0700) and files (0600), for the lock file beside the store's.
pub use ezt_store_sqlite::private as private_files;

/// Opens the store named by the configuration.
pub fn open_store(cfg: &Config) -> Result<Arc<dyn Store>, BoxError> {
    let store = ezt_store_sqlite::SqliteStore::open(cfg.db_path())?;
    Ok(Arc::new(store))
}

/// Start-up errors come from several layers (store, TLS client, socket); the binary adds context.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Builds the state, recovers waiting jobs and deliveries and starts both schedulers; returns
/// the state and the schedulers' join handle.
pub async fn start(
    cfg: Config,
    store: Arc<dyn Store>,
    shutdown: CancellationToken,
) -> Result<(AppState, tokio::task::JoinHandle<()>), BoxError> {
    let cfg = Arc::new(cfg);
    let ssrf = SsrfPolicy::new(cfg.allow_cidrs.clone());
    let events = Arc::new(events::Events::default());
    let metrics = Arc::new(metrics::Metrics::default());
    let fingerprint_key = store
        .meta_get_or_init("lane_fingerprint_key", rand::random::<[u8; 32]>().to_vec())
        .await?;
    let sealer = Arc::new(sealing::Sealer::load(
        cfg.secret_key.as_ref().map(|k| k.0.as_str()),
        &cfg.data_dir,
    )?);
    let signing_keys = Arc::new(webhooks::SigningKeys::new(store.clone(), sealer.clone()));
    let deliverer = Arc::new(webhooks::Deliverer::new(
        store.clone(),
        &cfg.webhooks,
        &cfg.outbound,
        executor::SsrfResolver::new(ssrf.clone()),
        signing_keys.clone(),
        metrics.clone(),
    )?);
    let (webhook_sched, deliveries) = scheduler::Scheduler::new(
        config::LanesConfig {
            idle_evict_after_ms: cfg.lanes.idle_evict_after_ms,
            ..cfg.webhooks.lanes()
        },
        deliverer,
        metrics.clone(),
        metrics::of_webhooks,
        Some(scheduler::LaneMemory {
            store: store.clone(),
            prefix: "webhook:",
        }),
    );
    let executor = Arc::new(executor::Executor::new(
        store.clone(),
        &cfg,
        ssrf.clone(),
        events.clone(),
        metrics.clone(),
        deliveries.clone(),
        sealer,
    )?);
    let (sched, handle) = scheduler::Scheduler::new(
        cfg.lanes.clone(),
        executor.clone(),
        metrics.clone(),
        metrics::of_jobs,
        Some(scheduler::LaneMemory {
            store: store.clone(),
            prefix: "job:",
        }),
    );

    // Rebuild the indexes: every job not final goes back to its lane, every pending delivery
    // to its receiver's lane.
    let t0 = std::time::Instant::now();
    let node = ezt_store::NodeId::local(); // one node holds every lease; a cluster names itself
    let recovered = store
        .recover(&node, scheduler::now_ms(), &cfg.region)
        .await?;
    let weights = tenant_weights(&cfg, store.as_ref()).await?;
    let n = recovered.jobs.len();
    let n_deliveries = recovered.deliveries.len();
    webhooks::enqueue(&deliveries, recovered.deliveries);
    handle.enqueue(
        recovered
            .jobs
            .into_iter()
            .map(|job| scheduler::Enqueue {
                weight: weights.get(&job.tenant_id).copied().unwrap_or(1),
                job,
            })
            .collect(),
    );
    tracing::info!(
        jobs = n,
        deliveries = n_deliveries,
        ms = t0.elapsed().as_millis() as u64,
        "recovered waiting jobs"
    );

    let (t1, t2) = (shutdown.clone(), shutdown.clone());
    let sched_task = tokio::spawn(async move {
        tokio::join!(sched.run(t1), webhook_sched.run(t2));
    });
    let state = AppState {
        resolver: executor::SsrfResolver::new(ssrf.clone()),
        cfg,
        store,
        scheduler: handle,
        deliveries,
        signing_keys,
        executor,
        ssrf,
        fingerprint_key: Arc::new(fingerprint_key),
        events,
        metrics,
        auth: Arc::new(ttl_cache::TtlCache::new(http::auth::TTL)),
    };
    tokio::spawn(retention::run(
        state.store.clone(),
        state.cfg.retention.clone(),
        shutdown.clone(),
    ));
    tokio::spawn(poll_wakeups(state.clone(), shutdown));
    Ok((state, sched_task))
}

async fn tenant_weights(
    cfg: &Config,
    store: &dyn Store,
) -> Result<HashMap<TenantId, u32>, BoxError> {
    Ok(store
        .list_tenants()
        .await?
        .into_iter()
        .map(|t| (t.id, cfg.tiers.weight(t.tier)))
        .collect())
}

/// Picks up jobs re-queued by another process (the CLI's `jobs retry`) and deliveries it
/// created (the CLI's `jobs cancel`).
async fn poll_wakeups(st: AppState, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let Ok(ids) = st.store.take_wakeups().await else {
            continue;
        };
        if ids.is_empty() {
            continue;
        }
        let Ok(weights) = tenant_weights(&st.cfg, st.store.as_ref()).await else {
            continue;
        };
        let mut jobs = Vec::new();
        for id in ids {
            if let Ok(Some(j)) = st.store.get_job(None, id).await {
                let pending = j.deliveries.iter().filter_map(|d| d.pending());
                webhooks::enqueue(&st.deliveries, pending.collect());
                if !j.state.is_final() {
                    let job = ezt_store::PendingJob {
                        id,
                        tenant_id: j.tenant_id,
                        lane: j.lane,
                        run_at: j.run_at,
                        deadline_at: j.deadline_at,
                    };
                    jobs.push(scheduler::Enqueue {
                        weight: weights.get(&j.tenant_id).copied().unwrap_or(1),
                        job,
                    });
                }
            }
        }
        st.scheduler.enqueue(jobs);
    }
}

/// Serves the API on `listener` until `shutdown`; then stops taking requests, stops
/// dispatching, and gives in-flight attempts up to `drain` to finish.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    sched: tokio::task::JoinHandle<()>,
    shutdown: CancellationToken,
) -> Result<(), BoxError> {
    let app = http::app(state.clone());
    let fd_limit = http::listener::raise_fd_limit();
    let limits = http::listener::ConnLimits::new(&state.cfg.server, fd_limit);
    tracing::info!(
        max_connections = limits.max_connections,
        fd_limit,
        fd_reserve = state.cfg.server.fd_reserve,
        "connection limits"
    );
    // At shutdown, long polls and event streams answer at once instead of holding the drain.
    let events = state.events.clone();
    let token = shutdown.clone();
    tokio::spawn(async move {
        token.cancelled().await;
        events.close_all();
    });
    http::listener::serve(listener, app, limits, shutdown).await;
    let _ = sched.await;
    // In-flight attempts and deliveries hold leases; wait for them to record their outcome.
    let busy = || state.metrics.in_flight.get() + state.metrics.webhook_in_flight.get();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    while tokio::time::Instant::now() < deadline && busy() > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    tracing::info!(left_in_flight = busy(), "stopped");
    Ok(())
}
