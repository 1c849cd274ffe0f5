//! The embedded default store: one SQLite file in WAL mode with `synchronous=FULL`.
//!
//! Every write goes through one writer thread that practises group commit: it takes whatever
//! writes are waiting (up to `MAX_BATCH`), runs each inside its own SAVEPOINT in one transaction,
//! and commits once, so a single fsync acknowledges many concurrent submissions. A write's
//! caller is answered only after that commit returns, which is what lets a 202 mean "on disk".
//! Reads use a small pool of separate connections (WAL lets them run beside the writer).
#![warn(missing_docs)]

mod codec;
pub mod private;
mod retention;
mod schema;
mod webhooks;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use ezt_core::{ApiKeyId, DeliveryId, JobId, JobState, TenantId};
use ezt_store::*;
use rusqlite::{params, Connection, OptionalExtension};

use codec::*;
use writer::Writer;

const READERS: usize = 4;

/// The SQLite store. Cheap to clone.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    writer: Writer,
    readers: Arc<Mutex<Vec<Connection>>>,
    path: PathBuf,
}

impl SqliteStore {
    /// Opens (creating if needed) the database file and migrates it.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let conn = schema::open(&path, true)?;
        let writer = Writer::start(conn);
        let mut readers = Vec::with_capacity(READERS);
        for _ in 0..READERS {
            readers.push(schema::open(&path, false)?);
        }
        Ok(Self {
            writer,
            readers: Arc::new(Mutex::new(readers)),
            path,
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    async fn read<R: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<R> + Send + 'static,
    ) -> Result<R> {
        let readers = self.readers.clone();
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            let conn = readers.lock().unwrap_or_else(|p| p.into_inner()).pop();
            let conn = match conn {
                Some(c) => c,
                None => schema::open(&path, false)?,
            };
            let res = f(&conn);
            let mut pool = readers.lock().unwrap_or_else(|p| p.into_inner());
            if pool.len() < READERS {
                pool.push(conn);
            }
            res
        })
        .await
        .map_err(|e| Error::Other(format!("reader task: {e}")))?
    }

    async fn write<R: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<R> + Send + 'static,
    ) -> Result<R> {
        self.writer.write(f).await
    }
}

fn load_attempts(conn: &Connection, id: JobId) -> Result<Vec<Attempt>> {
    let mut st = conn
        .prepare_cached("SELECT data FROM attempts WHERE job_id = ?1 ORDER BY n")
        .map_err(map_err)?;
    let rows = st
        .query_map(params![id_blob(id.0)], |r| r.get::<_, String>(0))
        .map_err(map_err)?;
    rows.map(|r| json_decode(&r.map_err(map_err)?)).collect()
}

/// The tenant filter as SQL bound to `?2`. Unscoped callers (the CLI, the executor) bind a
/// placeholder that always passes, so every query keeps one shape and one parameter numbering.
pub(crate) fn tenant_clause(tenant: Option<TenantId>) -> (&'static str, Vec<u8>) {
    match tenant {
        Some(t) => (" AND tenant_id = ?2", id_blob(t.0).to_vec()),
        None => (" AND ?2 IS NOT NULL", vec![0]),
    }
}

/// Records an `interrupted` attempt for every job a dead run left `running` (same transaction as
/// the release, so a crash during recovery leaves neither or both). `INSERT OR IGNORE`: an
/// attempt already recorded under that number wins.
fn record_interrupted(c: &Connection, region: &str) -> Result<()> {
    let cut: Vec<(Vec<u8>, u32, u32, u64)> = {
        let mut st = c
            .prepare(
                "SELECT id, attempt_count, series, updated_at FROM jobs WHERE state = 'running'",
            )
            .map_err(map_err)?;
        let rows = st
            .query_map([], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get::<_, i64>(3)? as u64))
            })
            .map_err(map_err)?;
        rows.collect::<rusqlite::Result<_>>().map_err(map_err)?
    };
    for (id, n, series, at) in cut {
        let data = json_encode(&Attempt::interrupted(n, series, at, region))?;
        c.prepare_cached("INSERT OR IGNORE INTO attempts (job_id, n, data) VALUES (?1, ?2, ?3)")
            .and_then(|mut st| st.execute(params![id, n, data]))
            .map_err(map_err)?;
    }
    Ok(())
}

#[async_trait]
impl Store for SqliteStore {
    async fn create_tenant(&self, tenant: Tenant) -> Result<Tenant> {
        self.write(move |c| {
            c.prepare_cached(
                "INSERT INTO tenants (id, name, tier, created_at) VALUES (?1, ?2, ?3, ?4)",
            )
            .and_then(|mut st| {
                st.execute(params![
                    id_blob(tenant.id.0),
                    tenant.name,
                    tenant.tier.as_str(),
                    tenant.created_at as i64
                ])
            })
            .map_err(|e| match map_err(e) {
                Error::Other(m) if m.contains("UNIQUE") => {
                    Error::Conflict(format!("tenant {:?} exists", tenant.name))
                }
                other => other,
            })?;
            Ok(tenant)
        })
        .await
    }

    async fn list_tenants(&self) -> Result<Vec<Tenant>> {
        self.read(|c| {
            let mut st = c
                .prepare_cached(
                    "SELECT id, name, tier, created_at FROM tenants ORDER BY created_at, name",
                )
                .map_err(map_err)?;
            let rows = st.query_map([], tenant_row).map_err(map_err)?;
            rows.map(|r| r.map_err(map_err)).collect()
        })
        .await
    }

    async fn tenant_by_name(&self, name: &str) -> Result<Option<Tenant>> {
        let name = name.to_string();
        self.read(move |c| {
            c.query_row(
                "SELECT id, name, tier, created_at FROM tenants WHERE name = ?1",
                params![name],
                tenant_row,
            )
            .optional()
            .map_err(map_err)
        })
        .await
    }

    async fn create_api_key(&self, key: ApiKeyRecord) -> Result<()> {
        self.write(move |c| {
            c.prepare_cached("INSERT INTO api_keys (id, tenant_id, digest, prefix, created_at) VALUES (?1, ?2, ?3, ?4, ?5)")
                .and_then(|mut st| {
                    st.execute(params![id_blob(key.id.0), id_blob(key.tenant_id.0), key.digest.to_vec(), key.prefix, key.created_at as i64])
                })
                .map_err(map_err)?;
            Ok(())
        })
        .await
    }

    async fn list_api_keys(&self, tenant: Option<TenantId>) -> Result<Vec<ApiKeyRecord>> {
        self.read(move |c| {
            let (clause, t) = tenant_clause(tenant);
            let sql = format!(
                "SELECT id, tenant_id, digest, prefix, created_at, revoked_at FROM api_keys WHERE ?1 = 1{clause} ORDER BY created_at, id"
            );
            let mut st = c.prepare_cached(&sql).map_err(map_err)?;
            let rows = st.query_map(params![1, t], key_row).map_err(map_err)?;
            rows.map(|r| r.map_err(map_err)).collect()
        })
        .await
    }

    async fn revoke_api_key(&self, id: ApiKeyId, now_ms: u64) -> Result<()> {
        self.write(move |c| {
            let n = c
                .execute(
                    "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, ?2) WHERE id = ?1",
                    params![id_blob(id.0), now_ms as i64],
                )
                .map_err(map_err)?;
            if n == 0 {
                Err(Error::NotFound)
            } else {
                Ok(())
            }
        })
        .await
    }

    async fn authenticate(&self, digest: [u8; 32]) -> Result<Option<(Tenant, ApiKeyId)>> {
        self.read(move |c| {
            let row = c
                .prepare_cached(
                    "SELECT k.digest, k.id, t.id, t.name, t.tier, t.created_at FROM api_keys k JOIN tenants t ON t.id = k.tenant_id
                     WHERE k.digest = ?1 AND k.revoked_at IS NULL",
                )
                .and_then(|mut st| {
                    st.query_row(params![digest.to_vec()], |r| {
                        let stored: Vec<u8> = r.get(0)?;
                        let key_id = ApiKeyId(blob_id(&r.get::<_, Vec<u8>>(1)?));
                        let tenant = Tenant {
                            id: TenantId(blob_id(&r.get::<_, Vec<u8>>(2)?)),
                            name: r.get(3)?,
                            tier: parse_tier(&r.get::<_, String>(4)?),
                            created_at: r.get::<_, i64>(5)? as u64,
                        };
                        Ok((stored, tenant, key_id))
                    })
                    .optional()
                })
                .map_err(map_err)?;
            Ok(row.and_then(|(stored, tenant, key_id)| {
                let stored: [u8; 32] = stored.try_into().ok()?;
                ezt_core::api_key::digests_match(&stored, &digest).then_some((tenant, key_id))
            }))
        })
        .await
    }

    async fn meta_get_or_init(&self, key: &str, init: Vec<u8>) -> Result<Vec<u8>> {
        let key = key.to_string();
        self.write(move |c| {
            c.execute(
                "INSERT OR IGNORE INTO meta (key, value) VALUES (?1, ?2)",
                params![key, init],
            )
            .map_err(map_err)?;
            c.query_row("SELECT value FROM meta WHERE key = ?1", params![key], |r| {
                r.get(0)
            })
            .map_err(map_err)
        })
        .await
    }

    async fn insert_jobs(&self, jobs: Vec<NewJob>, dedup_window_ms: u64) -> Result<Vec<Admission>> {
        // Encode on the caller's thread: the writer thread is the serial stage of admission.
        let jobs = jobs
            .into_iter()
            .map(|j| Ok((json_encode(&j.spec)?, j)))
            .collect::<Result<Vec<_>>>()?;
        self.write(move |c| {
            let mut out = Vec::with_capacity(jobs.len());
            let mut find = c
                .prepare_cached(
                    "SELECT id, state, finished_at FROM jobs WHERE tenant_id = ?1 AND idempotent_key = ?2 ORDER BY id DESC LIMIT 1",
                )
                .map_err(map_err)?;
            let mut insert = c
                .prepare_cached(
                    "INSERT INTO jobs (id, tenant_id, lane, state, spec, idempotent_key, created_at, updated_at, run_at, deadline_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7, ?8, ?9)",
                )
                .map_err(map_err)?;
            for (spec, j) in jobs {
                let tenant = id_blob(j.tenant_id.0);
                let existing = find
                    .query_row(params![tenant, j.idempotent_key], |r| {
                        Ok((blob_id(&r.get::<_, Vec<u8>>(0)?), r.get::<_, String>(1)?, r.get::<_, Option<i64>>(2)?))
                    })
                    .optional()
                    .map_err(map_err)?;
                if let Some((id, state, finished)) = existing {
                    let state = parse_state(&state)?;
                    if ezt_store::dedups(state, finished.map(|f| f as u64), j.created_at, dedup_window_ms) {
                        out.push(Admission::Duplicate { existing: JobId(id) });
                        continue;
                    }
                }
                let state = if j.run_at > j.created_at { JobState::Scheduled } else { JobState::Queued };
                insert
                    .execute(params![
                        id_blob(j.id.0),
                        tenant,
                        j.lane.0,
                        state.as_str(),
                        spec,
                        j.idempotent_key,
                        j.created_at as i64,
                        j.run_at as i64,
                        j.deadline_at as i64
                    ])
                    .map_err(map_err)?;
                out.push(Admission::Inserted);
            }
            Ok(out)
        })
        .await
    }

    async fn get_job(&self, tenant: Option<TenantId>, id: JobId) -> Result<Option<JobRecord>> {
        self.read(move |c| {
            let (clause, t) = tenant_clause(tenant);
            let sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?1{clause}");
            let job = c
                .prepare_cached(&sql)
                .and_then(|mut st| st.query_row(params![id_blob(id.0), t], job_row).optional())
                .map_err(map_err)?;
            match job {
                Some(j) => {
                    let mut j = j?;
                    j.attempts = load_attempts(c, id)?;
                    j.deliveries = webhooks::latest_deliveries(c, id)?;
                    Ok(Some(j))
                }
                None => Ok(None),
            }
        })
        .await
    }

    async fn list_jobs(&self, tenant: Option<TenantId>, f: &JobFilter) -> Result<Vec<JobRecord>> {
        let f = f.clone();
        self.read(move |c| {
            let (clause, t) = tenant_clause(tenant);
            let sql = format!(
                "SELECT {JOB_COLUMNS} FROM jobs WHERE id < ?1{clause}
                 AND (?3 IS NULL OR state = ?3) AND (?4 IS NULL OR lane = ?4) AND (?5 IS NULL OR created_at > ?5)
                 ORDER BY id DESC LIMIT ?6"
            );
            let before = f.before.map_or([0xffu8; 16], |b| id_blob(b.0));
            let mut st = c.prepare_cached(&sql).map_err(map_err)?;
            let rows = st
                .query_map(
                    params![before, t, f.state.map(|s| s.as_str()), f.lane, f.created_after.map(|v| v as i64), f.limit as i64],
                    job_row,
                )
                .map_err(map_err)?;
            rows.map(|r| r.map_err(map_err)?).collect()
        })
        .await
    }

    async fn recover(&self, now_ms: u64, region: &str) -> Result<Recovered> {
        let region = region.to_string();
        let deliveries = self
            .write(move |c| {
                record_interrupted(c, &region)?;
                c.execute(
                    "UPDATE jobs SET state = CASE WHEN run_at > ?1 THEN 'scheduled' ELSE 'queued' END, lease_token = NULL, lease_expires_at = NULL
                     WHERE state = 'running'",
                    params![now_ms as i64],
                )
                .map_err(map_err)?;
                webhooks::recover(c)
            })
            .await?;
        let jobs = self.read(|c| {
            let mut st = c
                .prepare(
                    "SELECT id, tenant_id, lane, run_at, deadline_at FROM jobs WHERE state IN ('queued', 'scheduled', 'running') ORDER BY id",
                )
                .map_err(map_err)?;
            let rows = st
                .query_map([], |r| {
                    Ok(PendingJob {
                        id: JobId(blob_id(&r.get::<_, Vec<u8>>(0)?)),
                        tenant_id: TenantId(blob_id(&r.get::<_, Vec<u8>>(1)?)),
                        lane: ezt_core::lane::LaneKey(r.get(2)?),
                        run_at: r.get::<_, i64>(3)? as u64,
                        deadline_at: r.get::<_, i64>(4)? as u64,
                    })
                })
                .map_err(map_err)?;
            rows.map(|r| r.map_err(map_err)).collect()
        })
        .await?;
        Ok(Recovered { jobs, deliveries })
    }

    async fn lease(&self, id: JobId, lease: Lease) -> Result<Option<LeasedJob>> {
        self.write(move |c| {
            let row = c
                .prepare_cached(
                    "UPDATE jobs SET state = 'running', attempt_count = attempt_count + 1, lease_token = ?2, lease_expires_at = ?3, updated_at = ?4
                     WHERE id = ?1 AND state IN ('queued', 'scheduled')
                     RETURNING spec, tenant_id, idempotent_key, attempt_count, series, retries, reroutes, deadline_at",
                )
                .and_then(|mut st| {
                    st.query_row(params![id_blob(id.0), lease.token as i64, lease.expires_at as i64, lease.now_ms as i64], |r| {
                        Ok((
                            r.get::<_, String>(0)?,
                            blob_id(&r.get::<_, Vec<u8>>(1)?),
                            r.get::<_, String>(2)?,
                            r.get::<_, u32>(3)?,
                            r.get::<_, u32>(4)?,
                            r.get::<_, u32>(5)?,
                            r.get::<_, u32>(6)?,
                            r.get::<_, i64>(7)? as u64,
                        ))
                    })
                    .optional()
                })
                .map_err(map_err)?;
            let Some((spec, tenant, key, attempt_no, series, retries, reroutes, deadline_at)) = row else { return Ok(None) };
            Ok(Some(LeasedJob {
                spec: json_decode(&spec)?,
                tenant_id: TenantId(tenant),
                idempotent_key: key,
                attempt_no,
                series,
                counters: ezt_core::retry::Counters { retries, reroutes },
                deadline_at,
            }))
        })
        .await
    }

    async fn complete_attempt(&self, done: AttemptDone) -> Result<Option<Vec<PendingDelivery>>> {
        // Encoded here, off the writer thread (see insert_jobs).
        let attempt_json = json_encode(&done.attempt)?;
        let (response_json, error_json) = match &done.next {
            Next::Final {
                response, error, ..
            } => (
                response.as_ref().map(json_encode).transpose()?,
                error.as_ref().map(json_encode).transpose()?,
            ),
            Next::Retry { response, .. } => (response.as_ref().map(json_encode).transpose()?, None),
        };
        self.write(move |c| {
            let id = id_blob(done.id.0);
            let now = done.now_ms as i64;
            let mut deliveries = Vec::new();
            let applied = match &done.next {
                Next::Final { state, .. } => {
                    let sql = format!(
                        "UPDATE jobs SET state = ?3, response = COALESCE(?4, response), error = ?5, finished_at = ?6, updated_at = ?6,
                         lease_token = NULL, lease_expires_at = NULL
                         WHERE id = ?1 AND lease_token = ?2 AND state = 'running' RETURNING {}",
                        webhooks::HOOKED
                    );
                    let hooked = c
                        .prepare_cached(&sql)
                        .and_then(|mut st| {
                            st.query_row(
                                params![
                                    id,
                                    done.lease_token as i64,
                                    state.as_str(),
                                    response_json,
                                    error_json,
                                    now
                                ],
                                |r| r.get::<_, bool>(0),
                            )
                            .optional()
                        })
                        .map_err(map_err)?;
                    match hooked {
                        Some(hooked) => {
                            deliveries = webhooks::record_outcome(c, done.id, hooked, &done.attempt.region, done.now_ms)?;
                            true
                        }
                        None => false,
                    }
                }
                Next::Retry { run_at, counters, .. } => {
                    c.prepare_cached(
                        "UPDATE jobs SET state = 'scheduled', run_at = ?3, retries = ?4, reroutes = ?5, response = COALESCE(?6, response),
                         updated_at = ?7, lease_token = NULL, lease_expires_at = NULL
                         WHERE id = ?1 AND lease_token = ?2 AND state = 'running'",
                    )
                    .and_then(|mut st| {
                        st.execute(params![
                            id,
                            done.lease_token as i64,
                            *run_at as i64,
                            counters.retries,
                            counters.reroutes,
                            response_json,
                            now
                        ])
                    })
                    .map_err(map_err)?
                        > 0
                }
            };
            if !applied {
                return Ok(None);
            }
            c.prepare_cached("INSERT OR REPLACE INTO attempts (job_id, n, data) VALUES (?1, ?2, ?3)")
                .and_then(|mut st| st.execute(params![id, done.attempt.n, attempt_json]))
                .map_err(map_err)?;
            Ok(Some(deliveries))
        })
        .await
    }

    async fn expire(
        &self,
        id: JobId,
        now_ms: u64,
        region: &str,
    ) -> Result<Option<Vec<PendingDelivery>>> {
        let region = region.to_string();
        self.write(move |c| {
            let err = json_encode(&JobError::deadline())?;
            let sql = format!(
                "UPDATE jobs SET state = 'expired', error = ?3, finished_at = ?2, updated_at = ?2
                 WHERE id = ?1 AND state IN ('queued', 'scheduled') RETURNING {}",
                webhooks::HOOKED
            );
            let hooked = c
                .prepare_cached(&sql)
                .and_then(|mut st| {
                    st.query_row(params![id_blob(id.0), now_ms as i64, err], |r| {
                        r.get::<_, bool>(0)
                    })
                    .optional()
                })
                .map_err(map_err)?;
            hooked
                .map(|hooked| webhooks::record_outcome(c, id, hooked, &region, now_ms))
                .transpose()
        })
        .await
    }

    async fn cancel(
        &self,
        tenant: Option<TenantId>,
        id: JobId,
        now_ms: u64,
        region: &str,
    ) -> Result<CancelOutcome> {
        let region = region.to_string();
        self.write(move |c| {
            let (clause, t) = tenant_clause(tenant);
            let state: Option<String> = c
                .query_row(&format!("SELECT state FROM jobs WHERE id = ?1{clause}"), params![id_blob(id.0), t], |r| r.get(0))
                .optional()
                .map_err(map_err)?;
            let Some(state) = state else { return Ok(CancelOutcome::NotFound) };
            let state = parse_state(&state)?;
            if state.is_final() {
                return Ok(CancelOutcome::AlreadyFinal(state));
            }
            let err = json_encode(&JobError::cancelled())?;
            let hooked = c
                .query_row(
                    &format!(
                        "UPDATE jobs SET state = 'cancelled', error = ?3, finished_at = ?2, updated_at = ?2, lease_token = NULL, lease_expires_at = NULL
                         WHERE id = ?1 RETURNING {}",
                        webhooks::HOOKED
                    ),
                    params![id_blob(id.0), now_ms as i64, err],
                    |r| r.get::<_, bool>(0),
                )
                .map_err(map_err)?;
            let deliveries = webhooks::record_outcome(c, id, hooked, &region, now_ms)?;
            if !deliveries.is_empty() {
                c.execute("INSERT INTO wakeups (job_id) VALUES (?1)", params![id_blob(id.0)]).map_err(map_err)?;
            }
            Ok(CancelOutcome::Cancelled(deliveries))
        })
        .await
    }

    async fn replay(
        &self,
        tenant: Option<TenantId>,
        id: JobId,
        now_ms: u64,
        deadline_ms: u64,
    ) -> Result<ReplayOutcome> {
        self.write(move |c| {
            let (clause, t) = tenant_clause(tenant);
            let row: Option<(String, Vec<u8>, String)> = c
                .query_row(&format!("SELECT state, tenant_id, lane FROM jobs WHERE id = ?1{clause}"), params![id_blob(id.0), t], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                })
                .optional()
                .map_err(map_err)?;
            let Some((state, tenant_id, lane)) = row else { return Ok(ReplayOutcome::NotFound) };
            let state = parse_state(&state)?;
            if !state.can_retry() {
                return Ok(ReplayOutcome::NotReplayable(state));
            }
            c.execute(
                "UPDATE jobs SET state = 'queued', series = series + 1, retries = 0, reroutes = 0, run_at = ?2, deadline_at = ?3,
                 finished_at = NULL, error = NULL, updated_at = ?2 WHERE id = ?1",
                params![id_blob(id.0), now_ms as i64, deadline_ms as i64],
            )
            .map_err(map_err)?;
            c.execute("INSERT INTO wakeups (job_id) VALUES (?1)", params![id_blob(id.0)]).map_err(map_err)?;
            Ok(ReplayOutcome::Requeued(PendingJob {
                id,
                tenant_id: TenantId(blob_id(&tenant_id)),
                lane: ezt_core::lane::LaneKey(lane),
                run_at: now_ms,
                deadline_at: deadline_ms,
            }))
        })
        .await
    }

    async fn take_wakeups(&self) -> Result<Vec<JobId>> {
        // Read first: an empty table (the common case) costs no write transaction.
        let any: bool = self
            .read(|c| {
                c.query_row("SELECT EXISTS (SELECT 1 FROM wakeups)", [], |r| r.get(0))
                    .map_err(map_err)
            })
            .await?;
        if !any {
            return Ok(Vec::new());
        }
        self.write(|c| {
            let mut st = c
                .prepare_cached("DELETE FROM wakeups RETURNING job_id")
                .map_err(map_err)?;
            let rows = st
                .query_map([], |r| Ok(JobId(blob_id(&r.get::<_, Vec<u8>>(0)?))))
                .map_err(map_err)?;
            rows.map(|r| r.map_err(map_err)).collect()
        })
        .await
    }

    async fn lease_delivery(&self, id: DeliveryId, lease: Lease) -> Result<Option<LeasedDelivery>> {
        self.write(move |c| webhooks::lease(c, id, lease)).await
    }

    async fn complete_delivery(&self, done: DeliveryDone) -> Result<bool> {
        self.write(move |c| webhooks::complete(c, &done)).await
    }

    async fn redeliver(
        &self,
        tenant: Option<TenantId>,
        job: JobId,
        now_ms: u64,
    ) -> Result<RedeliverOutcome> {
        self.write(move |c| webhooks::redeliver(c, tenant, job, now_ms))
            .await
    }

    async fn oldest_pending_delivery(&self) -> Result<Option<u64>> {
        self.read(webhooks::oldest_pending).await
    }

    async fn put_webhook_secrets(&self, tenant: TenantId, secrets: WebhookSecrets) -> Result<()> {
        self.write(move |c| webhooks::put_secrets(c, tenant, &secrets))
            .await
    }

    async fn webhook_secrets(&self, tenant: TenantId) -> Result<Option<WebhookSecrets>> {
        self.read(move |c| webhooks::secrets(c, tenant)).await
    }

    async fn rotate_webhook_secret(
        &self,
        tenant: TenantId,
        primary: Vec<u8>,
        now_ms: u64,
    ) -> Result<Option<WebhookSecrets>> {
        self.write(move |c| webhooks::rotate(c, tenant, &primary, now_ms))
            .await
    }

    async fn delete_webhook_secrets(&self, tenant: TenantId) -> Result<bool> {
        self.write(move |c| webhooks::delete_secrets(c, tenant))
            .await
    }

    async fn count_by_state(&self) -> Result<Vec<(JobState, u64)>> {
        self.read(|c| {
            let mut st = c
                .prepare_cached("SELECT state, COUNT(*) FROM jobs GROUP BY state")
                .map_err(map_err)?;
            let rows = st
                .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
                .map_err(map_err)?;
            let mut counts: Vec<(JobState, u64)> = JobState::ALL.iter().map(|s| (*s, 0)).collect();
            for r in rows {
                let (s, n) = r.map_err(map_err)?;
                let s = parse_state(&s)?;
                if let Some(slot) = counts.iter_mut().find(|(st, _)| *st == s) {
                    slot.1 = n as u64;
                }
            }
            Ok(counts)
        })
        .await
    }

    async fn purge_finished(&self, cutoffs: &PurgeCutoffs, limit: usize) -> Result<usize> {
        let cutoffs = cutoffs.clone();
        self.write(move |c| retention::purge(c, &cutoffs, limit))
            .await
    }

    async fn ping(&self) -> Result<()> {
        self.read(|c| c.query_row("SELECT 1", [], |_| Ok(())).map_err(map_err))
            .await?;
        if self.writer.failing() {
            // The last write failed for lack of space or I/O (reads still work): ready again
            // only once a write lands. The probe dirties a page and leaves no row behind.
            self.write(|c| {
                c.execute_batch(
                    "INSERT OR REPLACE INTO meta (key, value) VALUES ('ready_probe', x'00');
                     DELETE FROM meta WHERE key = 'ready_probe';",
                )
                .map_err(map_err)
            })
            .await?;
        }
        Ok(())
    }

    async fn save_lane_state(&self, lane: &str, state: LaneState) -> Result<()> {
        let lane = lane.to_string();
        let data = json_encode(&state)?;
        self.write(move |c| {
            c.execute(
                "INSERT OR REPLACE INTO lane_states (lane, data) VALUES (?1, ?2)",
                params![lane, data],
            )
            .map(drop)
            .map_err(map_err)
        })
        .await
    }

    async fn lane_state(&self, lane: &str) -> Result<Option<LaneState>> {
        let lane = lane.to_string();
        let data: Option<String> = self
            .read(move |c| {
                c.query_row(
                    "SELECT data FROM lane_states WHERE lane = ?1",
                    params![lane],
                    |r| r.get(0),
                )
                .optional()
                .map_err(map_err)
            })
            .await?;
        data.map(|d| json_decode(&d)).transpose()
    }
}
