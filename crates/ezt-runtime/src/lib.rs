//! EZThrottle's runtime: configuration, the lanes, dispatch and webhook delivery, the jobs
//! service, and [`start`], which wires them.
//!
//! Modules and the direction of calls (`docs/architecture.md` has the diagram; the `layers`
//! test checks it): `jobs`, `dispatch` and `notifier` report store transitions to
//! `followups`, which alone decides what they imply (enqueue deliveries, requeue or drop in the
//! lanes, publish the final event); `dispatch` and `deliver` are siblings that never import
//! each other; `lanes`, `events`, `clock` and `config` import nothing above them. The store is
//! named by trait only: the binary chooses the backend.
#![warn(missing_docs)]

pub mod admin;
mod call;
pub mod clock;
pub mod config;
mod credentials;
pub mod deliver;
pub mod dispatch;
pub mod events;
pub mod fence;
pub mod followups;
pub mod handoff;
pub mod internal_auth;
pub mod jobs;
pub mod lanes;
pub mod members;
pub mod membership;
pub mod metrics;
pub mod notifier;
pub(crate) mod race;
pub mod regional_delivery;
mod regions;
pub mod retention;
pub mod sealing;
pub mod spool;
mod store_retry;
#[cfg(test)]
mod tests;
pub mod torrent;
pub mod ttl_cache;
pub mod webhook_secrets;

use std::sync::Arc;
use std::time::Duration;

use ezt_core::ssrf::SsrfPolicy;
use ezt_store::Store;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::Config;

/// Start-up errors come from several layers (store, TLS client, key file); the binary adds
/// context.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What the edges (HTTP, CLI) use of a started runtime. Cheap to clone.
#[derive(Clone)]
pub struct Runtime {
    /// Merged configuration.
    pub cfg: Arc<Config>,
    /// Durable storage.
    pub store: Arc<dyn Store>,
    /// The jobs service: admission, reading, waiting, control.
    pub jobs: Arc<jobs::Jobs>,
    /// The job lanes.
    pub lanes: lanes::SchedulerHandle,
    /// The webhook lanes.
    pub deliveries: deliver::Deliveries,
    /// The webhook-secrets service (sealed at rest, cached in clear for signing).
    pub secrets: Arc<webhook_secrets::Secrets>,
    /// Per-job event fan-out.
    pub events: Arc<events::Events>,
    /// Counters.
    pub metrics: Arc<metrics::Metrics>,
    /// Wall clock.
    pub clock: Arc<dyn clock::Clock>,
    /// Every attempt and delivery in flight (graceful drain waits on it).
    pub tasks: TaskTracker,
    /// This node: its id, epoch and self-fence.
    pub node: Arc<fence::NodeFence>,
    /// Cluster mode: this node's membership (None on one node).
    pub membership: Option<Arc<membership::Membership>>,
    /// Calls made for other nodes, and hand-offs to them (the internal API).
    pub handoff: Arc<handoff::Handoff>,
    /// TORRENT: a call raced from several regions.
    pub torrent: Arc<torrent::Torrent>,
    /// Webhook POSTs made by this node, for its deliveries and other nodes' (the internal
    /// API's `POST /internal/v1/deliveries`).
    pub webhook_sender: Arc<regional_delivery::WebhookSender>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("cfg", &self.cfg)
            .finish_non_exhaustive()
    }
}

/// Builds the runtime, recovers waiting jobs and deliveries and starts both lane schedulers,
/// the retention task and the notifier; returns the runtime and the schedulers' join handle.
pub async fn start(
    cfg: Config,
    store: Arc<dyn Store>,
    shutdown: CancellationToken,
) -> Result<(Runtime, tokio::task::JoinHandle<()>), BoxError> {
    start_with_clock(cfg, store, shutdown, Arc::new(clock::SystemClock)).await
}

/// [`start`] with a given wall clock: every part of the runtime reads time from `clock` (a
/// test passes a `clock::TokioClock` under paused tokio time, or a `clock::FakeClock`).
pub async fn start_with_clock(
    cfg: Config,
    store: Arc<dyn Store>,
    shutdown: CancellationToken,
    clock: Arc<dyn clock::Clock>,
) -> Result<(Runtime, tokio::task::JoinHandle<()>), BoxError> {
    start_inner(cfg, store, None, shutdown, clock).await
}

/// [`start`] on a cluster store with the node's local spool (see [`spool`]): admissions go to
/// `spool` while `store` is unreachable and are forwarded when it is back.
pub async fn start_with_spool(
    cfg: Config,
    store: Arc<dyn Store>,
    spool: Arc<dyn Store>,
    shutdown: CancellationToken,
) -> Result<(Runtime, tokio::task::JoinHandle<()>), BoxError> {
    start_inner(
        cfg,
        store,
        Some(spool),
        shutdown,
        Arc::new(clock::SystemClock),
    )
    .await
}

async fn start_inner(
    cfg: Config,
    store: Arc<dyn Store>,
    spool: Option<Arc<dyn Store>>,
    shutdown: CancellationToken,
    clock: Arc<dyn clock::Clock>,
) -> Result<(Runtime, tokio::task::JoinHandle<()>), BoxError> {
    let metrics = Arc::new(metrics::Metrics::default());
    let spool = match spool {
        Some(s) => Some(spool::Spool::open(&cfg, s, metrics.clone()).await?),
        None => None,
    };
    let cfg = Arc::new(cfg);
    let tasks = TaskTracker::new();
    let ssrf = SsrfPolicy::new(cfg.allow_cidrs.clone());
    let events = Arc::new(events::Events::default());
    let node_id = membership::node_id(&cfg)
        .map_err(|e| format!("node id in {}: {e}", cfg.data_dir.display()))?;
    let node = Arc::new(if cfg.clustered() {
        fence::NodeFence::clustered(node_id.clone())
    } else {
        fence::NodeFence::single(node_id.clone())
    });
    let fingerprint_key = Arc::new(
        store
            .meta_get_or_init("lane_fingerprint_key", rand::random::<[u8; 32]>().to_vec())
            .await?,
    );
    let sealer = Arc::new(sealing::Sealer::load(
        cfg.secret_key.as_ref().map(|k| k.0.as_str()),
        &cfg.data_dir,
    )?);
    if cfg.clustered() {
        same_secret_key_as_the_cluster(store.as_ref(), &sealer).await?;
    }
    let signing_keys = Arc::new(deliver::SigningKeys::new(store.clone(), sealer.clone()));
    let handoff = Arc::new(handoff::Handoff::new(
        &cfg,
        node_id.as_str(),
        clock.clone(),
    )?);
    // One read of the live members every 500 ms at most, for the job path, TORRENT and
    // webhooks from regions.
    let members = Arc::new(members::LiveMembers::new(store.clone()));
    let webhook_sender = Arc::new(regional_delivery::WebhookSender::new(
        &cfg.webhooks,
        &cfg.outbound,
        ssrf.clone(),
        &cfg.region,
        node_id.as_str(),
    )?);
    let deliverer = deliver::Deliverer::new(
        store.clone(),
        &cfg.webhooks,
        webhook_sender.clone(),
        signing_keys.clone(),
        metrics.clone(),
        clock.clone(),
    )
    .on_node(node.clone());
    // Cluster mode: a webhook with `regions` is sent from those regions' nodes (issue 15).
    let deliverer = Arc::new(if cfg.clustered() {
        deliverer.with_regions(members.clone(), handoff.clone())
    } else {
        deliverer
    });
    let (webhook_sched, deliveries) = lanes::Scheduler::new(
        config::LanesConfig {
            idle_evict_after_ms: cfg.lanes.idle_evict_after_ms,
            ..cfg.webhooks.lanes()
        },
        deliverer,
        metrics.webhook_lanes.clone(),
        Some(lanes::LaneMemory {
            store: store.clone(),
            prefix: "webhook:",
        }),
        tasks.clone(),
        clock.clone(),
    );
    // The job lanes' handle exists before dispatch, which reports to `followups`, which
    // hands work back to the lanes.
    let (inbox, job_lanes) = lanes::channel(&cfg.lanes);
    let followups = Arc::new(
        followups::Followups::new(
            store.clone(),
            events.clone(),
            job_lanes.clone(),
            deliveries.clone(),
            cfg.lanes.credential_headers.clone(),
        )
        .with_tiers(cfg.tiers),
    );
    let executor = dispatch::Executor::new(
        store.clone(),
        &cfg,
        ssrf,
        events.clone(),
        metrics.clone(),
        followups.clone(),
        sealer.clone(),
        clock.clone(),
    )?
    .on_node(node.clone());
    // Cluster mode: each attempt is placed in a region of the job's (issue 15).
    let executor = Arc::new(if cfg.clustered() {
        executor
            .with_regions(
                Arc::new(regions::Regions::new(
                    members.clone(),
                    &cfg,
                    node_id.as_str(),
                )),
                handoff.clone(),
            )
            .with_races(Arc::new(race::Races::new(job_lanes.clone(), &cfg)))
    } else {
        executor
    });
    let sched = lanes::Scheduler::with_inbox(
        inbox,
        cfg.lanes.clone(),
        executor,
        metrics.job_lanes.clone(),
        Some(lanes::LaneMemory {
            store: store.clone(),
            prefix: "job:",
        }),
        tasks.clone(),
        clock.clone(),
    )
    .in_cluster(node.clone());

    // Rebuild the indexes: every job not final goes back to its lane, every pending delivery
    // to its receiver's lane.
    let t0 = clock::monotonic();
    // Only this node's own leases: a previous run of it (same id, kept in the data dir whose
    // lock this process holds) is dead; other nodes' running attempts are theirs.
    let recovered = store.recover(&node_id, clock.now_ms(), &cfg.region).await?;
    let weights = notifier::tenant_weights(&cfg, store.as_ref()).await?;
    let n = recovered.jobs.len();
    let n_deliveries = recovered.deliveries.len();
    deliver::enqueue(&deliveries, recovered.deliveries);
    // In a cluster, waiting jobs belong to their lanes' owners: membership indexes this node's
    // (and the ones it adopts) once it has joined.
    let recovered_jobs = if cfg.clustered() {
        Vec::new()
    } else {
        recovered.jobs
    };
    job_lanes.enqueue(
        recovered_jobs
            .into_iter()
            .map(|job| lanes::Enqueue {
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

    let membership = if cfg.clustered() {
        let (m, events) = membership::Membership::start(
            &cfg,
            store.clone(),
            node.clone(),
            clock.clone(),
            shutdown.clone(),
        );
        tokio::spawn(forward_membership(
            events,
            cfg.clone(),
            store.clone(),
            job_lanes.clone(),
            deliveries.clone(),
        ));
        Some(m)
    } else {
        None
    };

    let (t1, t2) = (shutdown.clone(), shutdown.clone());
    let sched_task = tokio::spawn(async move {
        tokio::join!(sched.run(t1), webhook_sched.run(t2));
    });
    let jobs = Arc::new(jobs::Jobs::new(jobs::JobsParts {
        cfg: cfg.clone(),
        store: store.clone(),
        lanes: job_lanes.clone(),
        events: events.clone(),
        metrics: metrics.clone(),
        sealer,
        fingerprint_key: fingerprint_key.clone(),
        followups: followups.clone(),
        clock: clock.clone(),
        spool: spool.clone(),
    }));
    if let Some(spool) = spool {
        tokio::spawn(spool.forward(
            cfg.clone(),
            store.clone(),
            followups.clone(),
            metrics.clone(),
            clock.clone(),
            shutdown.clone(),
        ));
    }
    tokio::spawn(retention::run(
        store.clone(),
        cfg.retention.clone(),
        clock.clone(),
        shutdown.clone(),
    ));
    tokio::spawn(notifier::run(
        notifier::PollNotifier::new(store.clone(), Duration::from_secs(1)),
        cfg.clone(),
        store.clone(),
        followups,
        shutdown.clone(),
    ));
    // At shutdown, long polls and event streams answer at once instead of holding the drain.
    let hub = events.clone();
    tokio::spawn(async move {
        shutdown.cancelled().await;
        hub.close_all();
    });
    let secrets = Arc::new(webhook_secrets::Secrets::new(
        store.clone(),
        signing_keys,
        clock.clone(),
    ));
    let torrent = Arc::new(torrent::Torrent::new(
        handoff.clone(),
        members,
        cfg.clone(),
        clock.clone(),
        node_id.to_string(),
        job_lanes.clone(),
        fingerprint_key.clone(),
    ));
    let rt = Runtime {
        cfg,
        store,
        jobs,
        lanes: job_lanes,
        deliveries,
        secrets,
        events,
        metrics,
        clock,
        tasks,
        node,
        membership,
        handoff,
        torrent,
        webhook_sender,
    };
    Ok((rt, sched_task))
}

impl Runtime {
    /// After the schedulers stopped (`sched` ended): waits up to `limit` for attempts and
    /// deliveries in flight to record their outcome (they hold leases); returns how many were
    /// still running.
    pub async fn drain(&self, sched: tokio::task::JoinHandle<()>, limit: Duration) -> u64 {
        let _ = sched.await;
        self.tasks.close();
        let _ = tokio::time::timeout(limit, self.tasks.wait()).await;
        if let Some(m) = &self.membership {
            m.finish().await;
        }
        self.metrics.job_lanes.in_flight() + self.metrics.webhook_lanes.in_flight()
    }
}

/// Hands what membership reports to the lanes: waiting jobs (with their tenants' weights),
/// deliveries freed from dead nodes, and "claim your lanes again".
async fn forward_membership(
    mut events: tokio::sync::mpsc::UnboundedReceiver<membership::Event>,
    cfg: Arc<Config>,
    store: Arc<dyn Store>,
    job_lanes: lanes::SchedulerHandle,
    deliveries: deliver::Deliveries,
) {
    // Tenants' weights, re-read at most once a second (a new tenant's jobs weigh 1 until then).
    let mut weights = std::collections::HashMap::new();
    let mut read_at: Option<tokio::time::Instant> = None;
    while let Some(ev) = events.recv().await {
        match ev {
            membership::Event::Jobs(jobs) => {
                if read_at.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                    if let Ok(w) = notifier::tenant_weights(&cfg, store.as_ref()).await {
                        weights = w;
                        read_at = Some(tokio::time::Instant::now());
                    }
                }
                let mut keys: Vec<ezt_core::lane::LaneKey> =
                    jobs.iter().map(|j| j.lane.clone()).collect();
                keys.sort_by(|a, b| a.0.cmp(&b.0));
                keys.dedup();
                job_lanes.recheck(keys);
                job_lanes.enqueue(
                    jobs.into_iter()
                        .map(|job| lanes::Enqueue {
                            weight: weights.get(&job.tenant_id).copied().unwrap_or(1),
                            job,
                        })
                        .collect(),
                );
            }
            membership::Event::Deliveries(d) => deliver::enqueue(&deliveries, d),
            membership::Event::Fenced => job_lanes.fenced(),
            membership::Event::HandOver { epoch, lanes } => job_lanes.hand_over(epoch, lanes),
            membership::Event::Pin { lane, pin } => job_lanes.repin(lane, pin),
        }
    }
}

/// A cluster's nodes must share one `secret_key`: a job's credentials sealed by the node that
/// admitted it are opened by its lane's owner. The first node seals a known text into the
/// database; a node whose key does not open it refuses to start, rather than failing every
/// job other nodes admitted with "a sealed secret does not open".
async fn same_secret_key_as_the_cluster(
    store: &dyn Store,
    sealer: &sealing::Sealer,
) -> Result<(), BoxError> {
    const CHECK: &str = "ezthrottle secret_key check";
    let stored = store
        .meta_get_or_init(
            "secret_key_check",
            sealer.seal(ezt_core::TenantId(0), CHECK),
        )
        .await?;
    match sealer.open(ezt_core::TenantId(0), &stored) {
        Ok(text) if text == CHECK => Ok(()),
        _ => Err(
            "this node's secret_key is not the one the cluster's other nodes use \
                  (the database holds a check sealed with theirs): give every node the same \
                  secret_key (env EZTHROTTLE_SECRET_KEY)"
                .into(),
        ),
    }
}
