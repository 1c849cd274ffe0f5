//! Store and forward (issue 13, item 6): while the cluster database is unreachable, a node keeps
//! admitting jobs into a local spool, a SQLite store of its own in the data dir (the binary
//! opens it; the runtime names it by trait only), and forwards them when the database is back.
//!
//! - Admission (`jobs`) tries the database within `spool.store_deadline_ms`; when that fails as
//!   unavailable or runs out, the jobs are committed to the spool (fsynced: the SQLite store
//!   runs `synchronous=FULL`) before the 202. While anything waits in the spool, new admissions
//!   go to the spool directly, so the forwarder keeps admission order and clients do not each
//!   wait out the deadline.
//! - The forwarder takes the spool's waiting jobs oldest first, in batches, inserts them into
//!   the database (group commit, the same dedup by idempotency key), hands the inserted ones to
//!   the lanes, then marks them forwarded in the spool (`cancelled` there: a spooled job is
//!   never run from the spool). A crash between the two writes forwards the job again, which
//!   the database answers as the same job (its id is stored already).
//! - A job whose key the database already holds under another id is a duplicate: the spooled id
//!   becomes an alias of the surviving job, recorded in the database's meta table (before the
//!   spool marks the job forwarded), so a `GET` of either id on any node shows one job.
//! - A full spool (`spool.max_jobs` waiting) refuses admission (503 with Retry-After); nothing
//!   acknowledged is ever dropped. Forwarded jobs stay in the spool for the dedup window (so
//!   the spool's own key dedup and the aliases hold that long), then are purged.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ezt_core::{JobId, JobState, TenantId};
use ezt_store::{Admission, Error, JobRecord, NewJob, NodeId, Store};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::config::Config;
use crate::followups::{Followups, Transition};
use crate::lanes::Enqueue;
use crate::metrics::Metrics;

/// How long the forwarder waits before trying an unreachable database again.
const RETRY_EVERY: Duration = Duration::from_millis(500);
/// Meta key prefix of an alias: a spooled id whose job the database holds under another id.
/// The value is the tenant's id then the surviving job's id (16 bytes each, big-endian).
const ALIAS: &str = "job_alias:";

/// The node's spool. Cheap to share behind an `Arc`.
pub struct Spool {
    store: Arc<dyn Store>,
    max_jobs: u64,
    deadline: Duration,
    batch: usize,
    waiting: AtomicU64,
    wake: Notify,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Spool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spool")
            .field("waiting", &self.waiting())
            .finish_non_exhaustive()
    }
}

/// Why a spool refused.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// `spool.max_jobs` jobs are waiting.
    #[error("the database is unreachable and this node's spool is full ({max} jobs waiting); retry later")]
    Full {
        /// The bound.
        max: u64,
    },
    /// The spool's own store failed (its disk).
    #[error("the database is unreachable and the spool cannot store: {0}")]
    Store(ezt_store::Error),
}

impl Spool {
    /// The spool over `store` (the node's local spool database), with the jobs already waiting
    /// in it counted.
    pub async fn open(
        cfg: &Config,
        store: Arc<dyn Store>,
        metrics: Arc<Metrics>,
    ) -> ezt_store::Result<Arc<Self>> {
        let waiting = pending_ids(store.as_ref(), &cfg.region).await?.len() as u64;
        if waiting > 0 {
            tracing::warn!(
                jobs = waiting,
                "spool: jobs admitted while the database was unreachable wait to be forwarded"
            );
        }
        Ok(Arc::new(Self {
            store,
            max_jobs: cfg.spool.max_jobs,
            deadline: Duration::from_millis(cfg.spool.store_deadline_ms),
            batch: cfg.spool.forward_batch,
            waiting: AtomicU64::new(waiting),
            wake: Notify::new(),
            metrics,
        }))
    }

    /// Jobs waiting to be forwarded.
    pub fn waiting(&self) -> u64 {
        self.waiting.load(Ordering::Relaxed)
    }

    /// Whether `n` more jobs would pass `spool.max_jobs`.
    pub(crate) fn would_overflow(&self, n: usize) -> bool {
        self.waiting().saturating_add(n as u64) > self.max_jobs
    }

    /// The client-side deadline of a database call on the admission and read paths.
    pub(crate) fn deadline(&self) -> Duration {
        self.deadline
    }

    /// Commits `jobs` to the spool (deduplicated by key within the spool), answers as the
    /// database would.
    pub(crate) async fn admit(
        &self,
        jobs: Vec<NewJob>,
        window_ms: u64,
    ) -> Result<Vec<Admission>, SpoolError> {
        if self.would_overflow(jobs.len()) {
            return Err(SpoolError::Full { max: self.max_jobs });
        }
        let out = self
            .store
            .insert_jobs(jobs, window_ms)
            .await
            .map_err(SpoolError::Store)?;
        let inserted = out
            .iter()
            .filter(|a| matches!(a, Admission::Inserted))
            .count() as u64;
        self.waiting.fetch_add(inserted, Ordering::Relaxed);
        self.metrics.spool_admitted.add(inserted);
        self.metrics.spool_waiting.set(self.waiting());
        self.wake.notify_one();
        Ok(out)
    }

    /// The tenant's job `id` if it waits in the spool (not yet forwarded).
    pub(crate) async fn waiting_job(
        &self,
        tenant: TenantId,
        id: JobId,
    ) -> ezt_store::Result<Option<JobRecord>> {
        Ok(self
            .store
            .get_job(Some(tenant), id)
            .await?
            .filter(|r| r.state != JobState::Cancelled))
    }

    /// Forwards the spool until `shutdown`: woken by every spooled admission, and every
    /// `RETRY_EVERY` while jobs wait.
    pub(crate) async fn forward(
        self: Arc<Self>,
        cfg: Arc<Config>,
        db: Arc<dyn Store>,
        followups: Arc<Followups>,
        metrics: Arc<Metrics>,
        clock: Arc<dyn Clock>,
        shutdown: CancellationToken,
    ) {
        loop {
            if self.waiting() == 0 {
                self.purge(&cfg, clock.as_ref()).await;
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = self.wake.notified() => {}
                }
            }
            match self
                .forward_round(&cfg, db.as_ref(), &followups, &metrics, clock.as_ref())
                .await
            {
                Ok(0) => {}
                Ok(n) => {
                    tracing::info!(
                        jobs = n,
                        left = self.waiting(),
                        "spool: forwarded jobs to the database"
                    );
                    continue;
                }
                Err(e @ Error::Unavailable { .. }) => {
                    tracing::debug!(error = %e, waiting = self.waiting(), "spool: the database is still unreachable");
                }
                Err(e) => {
                    // Not an outage: say so loudly; the batch is tried again (never dropped).
                    tracing::warn!(error = %e, waiting = self.waiting(), "spool: cannot forward; retrying");
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(RETRY_EVERY) => {}
            }
        }
    }

    /// Deletes forwarded jobs older than the dedup window (their key no longer dedups, and a
    /// spooled id aliased to another job stops resolving then).
    async fn purge(&self, cfg: &Config, clock: &dyn Clock) {
        let cutoffs = ezt_store::PurgeCutoffs {
            default: Some(clock.now_ms().saturating_sub(cfg.dedup_window_ms)),
            tenants: Vec::new(),
        };
        loop {
            match self.store.purge_finished(&cutoffs, 1000).await {
                Ok(1000) => continue,
                Ok(_) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "spool: cannot purge forwarded jobs");
                    return;
                }
            }
        }
    }

    /// One batch, oldest first; answers how many were forwarded.
    async fn forward_round(
        &self,
        cfg: &Config,
        db: &dyn Store,
        followups: &Followups,
        metrics: &Metrics,
        clock: &dyn Clock,
    ) -> ezt_store::Result<usize> {
        let mut ids = pending_ids(self.store.as_ref(), &cfg.region).await?;
        // Keep the count honest (jobs forwarded by a previous run, a restart).
        self.waiting.store(ids.len() as u64, Ordering::Relaxed);
        self.metrics.spool_waiting.set(self.waiting());
        if ids.is_empty() {
            return Ok(0);
        }
        ids.truncate(self.batch);
        // Concurrent reads (the spool's reader pool); concurrent writes below share commits.
        let read = ids.iter().map(|id| self.store.get_job(None, *id));
        let jobs: Vec<NewJob> = futures::future::try_join_all(read)
            .await?
            .into_iter()
            .flatten()
            .map(new_job)
            .collect();
        let window = cfg.dedup_window_ms;
        let outcomes =
            tokio::time::timeout(self.deadline * 5, db.insert_jobs(jobs.clone(), window))
                .await
                .map_err(|_| Error::Unavailable {
                    message: "the database did not answer the forward in time".into(),
                })??;
        let weights = crate::notifier::tenant_weights(cfg, db).await?;
        let mut fresh = Vec::new();
        for (job, outcome) in jobs.iter().zip(&outcomes) {
            let survivor = match outcome {
                Admission::Inserted => job.id,
                Admission::Duplicate { existing } => *existing,
            };
            if survivor == job.id {
                // Inserted now, or by an earlier forward whose spool mark was lost: either way
                // no lane was handed it (a second hand-over only costs a lease that finds the
                // job no longer waiting).
                fresh.push(Enqueue {
                    job: pending(job),
                    weight: weights.get(&job.tenant_id).copied().unwrap_or(1),
                });
            } else {
                metrics.duplicates.inc();
                let mut v = job.tenant_id.0.to_be_bytes().to_vec();
                v.extend_from_slice(&survivor.0.to_be_bytes());
                db.meta_get_or_init(&format!("{ALIAS}{}", job.id), v)
                    .await?;
                tracing::info!(spooled = %job.id, job_id = %survivor, "spool: a spooled job's key was admitted elsewhere; its id now resolves to that job");
            }
        }
        let n = fresh.len();
        metrics.admitted.add(n as u64);
        followups.after(Transition::Admitted(fresh)).await;
        let now = clock.now_ms();
        // Marked forwarded (a spooled job is never run from the spool), group-committed.
        let marks = jobs
            .iter()
            .map(|job| self.store.cancel(None, job.id, now, &cfg.region));
        futures::future::try_join_all(marks).await?;
        self.waiting
            .fetch_sub((jobs.len() as u64).min(self.waiting()), Ordering::Relaxed);
        metrics.spool_forwarded.add(jobs.len() as u64);
        metrics.spool_waiting.set(self.waiting());
        Ok(jobs.len())
    }
}

/// The job a spooled id was forwarded into when its key was taken (see the module doc), if
/// `id` is such an alias of the tenant's.
pub(crate) async fn alias_of(
    db: &dyn Store,
    tenant: TenantId,
    id: JobId,
) -> ezt_store::Result<Option<JobId>> {
    let Some(v) = db.meta_get(&format!("{ALIAS}{id}")).await? else {
        return Ok(None);
    };
    let (t, j) = v
        .split_at_checked(16)
        .and_then(|(t, j)| Some((<[u8; 16]>::try_from(t).ok()?, <[u8; 16]>::try_from(j).ok()?)))
        .ok_or_else(|| Error::Other(format!("the alias of {id} is not a tenant and job id")))?;
    Ok((TenantId(u128::from_be_bytes(t)) == tenant).then_some(JobId(u128::from_be_bytes(j))))
}

/// The spool's waiting jobs, oldest first (ids are time-ordered).
async fn pending_ids(store: &dyn Store, region: &str) -> ezt_store::Result<Vec<JobId>> {
    // Nothing in the spool is ever leased: `recover` only lists what waits.
    let mut ids: Vec<JobId> = store
        .recover(&NodeId::local(), 0, region)
        .await?
        .jobs
        .into_iter()
        .map(|j| j.id)
        .collect();
    ids.sort_unstable();
    Ok(ids)
}

fn new_job(r: JobRecord) -> NewJob {
    NewJob {
        id: r.id,
        tenant_id: r.tenant_id,
        lane: r.lane,
        spec: r.spec,
        idempotent_key: r.idempotent_key,
        created_at: r.created_at,
        run_at: r.run_at,
        deadline_at: r.deadline_at,
    }
}

fn pending(j: &NewJob) -> ezt_store::PendingJob {
    ezt_store::PendingJob {
        id: j.id,
        tenant_id: j.tenant_id,
        lane: j.lane.clone(),
        run_at: j.run_at,
        deadline_at: j.deadline_at,
    }
}

#[cfg(test)]
mod tests {
    use ezt_store::{MemoryStore, SecretStore};

    use super::*;

    #[tokio::test]
    async fn an_alias_resolves_for_its_tenant_only() {
        let db = MemoryStore::new();
        let (t1, t2) = (TenantId::new(1, 1), TenantId::new(2, 2));
        let (spooled, survivor) = (JobId::new(10, 1), JobId::new(11, 2));
        let mut v = t1.0.to_be_bytes().to_vec();
        v.extend_from_slice(&survivor.0.to_be_bytes());
        db.meta_get_or_init(&format!("{ALIAS}{spooled}"), v)
            .await
            .unwrap();
        assert_eq!(alias_of(&db, t1, spooled).await.unwrap(), Some(survivor));
        assert_eq!(
            alias_of(&db, t2, spooled).await.unwrap(),
            None,
            "another tenant's alias is not found"
        );
        assert_eq!(alias_of(&db, t1, survivor).await.unwrap(), None);
        db.meta_get_or_init(&format!("{ALIAS}{survivor}"), vec![1, 2, 3])
            .await
            .unwrap();
        assert!(
            alias_of(&db, t1, survivor).await.is_err(),
            "a malformed alias is an error, not a job"
        );
    }
}
