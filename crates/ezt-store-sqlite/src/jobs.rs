//! `JobStore` on SQLite: admission, the attempt lease cycle, the caller's controls and
//! wake-ups. Every write here is one closure on the writer thread, so each is one transaction.

use async_trait::async_trait;
use ezt_core::{JobId, JobState, TenantId};
use ezt_store::*;
use rusqlite::{params, Connection, OptionalExtension};

use crate::codec::*;
use crate::{admission, deliveries, recovery, tenant_clause, SqliteStore};

/// A job's attempts in order (they live in their own table so a list never loads them).
fn load_attempts(conn: &Connection, id: JobId) -> Result<Vec<Attempt>> {
    let mut st = conn
        .prepare_cached("SELECT data FROM attempts WHERE job_id = ?1 ORDER BY n")
        .map_err(map_err)?;
    let rows = st
        .query_map(params![id_blob(id.0)], |r| r.get::<_, String>(0))
        .map_err(map_err)?;
    rows.map(|r| json_decode(&r.map_err(map_err)?)).collect()
}

#[async_trait]
impl JobStore for SqliteStore {
    async fn insert_jobs(&self, jobs: Vec<NewJob>, dedup_window_ms: u64) -> Result<Vec<Admission>> {
        // Encode on the caller's thread: the writer thread is the serial stage of admission.
        let jobs = jobs
            .into_iter()
            .map(|j| Ok((json_encode(&j.spec)?, j)))
            .collect::<Result<Vec<_>>>()?;
        self.write(move |c| {
            jobs.into_iter()
                .map(|(spec, j)| admission::insert_one(c, &spec, j, dedup_window_ms))
                .collect()
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
                    j.deliveries = deliveries::latest_deliveries(c, id)?;
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

    async fn recover(&self, holder: &NodeId, now_ms: u64, region: &str) -> Result<Recovered> {
        let (holder, region) = (holder.clone(), region.to_string());
        let deliveries = self
            .write(move |c| recovery::release(c, holder.as_str(), now_ms, &region))
            .await?;
        let jobs = self.read(recovery::waiting_jobs).await?;
        Ok(Recovered { jobs, deliveries })
    }

    async fn lease(&self, id: JobId, lease: Lease) -> Result<Option<LeasedJob>> {
        if let Some(f) = &lease.fence {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            if !self.solo.fence_holds(&lease.holder, f, now) {
                return Ok(None);
            }
        }
        self.write(move |c| {
            let row = c
                .prepare_cached(
                    "UPDATE jobs SET state = 'running', attempt_count = attempt_count + 1, lease_token = ?2, lease_expires_at = ?3, updated_at = ?4,
                     lease_holder = ?5 WHERE id = ?1 AND state IN ('queued', 'scheduled')
                     RETURNING spec, tenant_id, idempotent_key, attempt_count, series, retries, reroutes, deadline_at",
                )
                .and_then(|mut st| {
                    st.query_row(params![id_blob(id.0), lease.token as i64, lease.expires_at as i64, lease.now_ms as i64, lease.holder.as_str()], |r| {
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
        let (attempt_json, response_json, error_json) = encode_outcome(&done)?;
        self.write(move |c| {
            let id = id_blob(done.id.0);
            let now = done.now_ms as i64;
            let mut deliveries = Vec::new();
            let applied = match &done.next {
                Next::Final { state, .. } => {
                    let sql = format!(
                        "UPDATE jobs SET state = ?3, response = COALESCE(?4, response), error = ?5, finished_at = ?6, updated_at = ?6,
                         lease_token = NULL, lease_expires_at = NULL, lease_holder = NULL
                         WHERE id = ?1 AND lease_token = ?2 AND state = 'running' RETURNING {}",
                        deliveries::HOOKED
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
                            deliveries = deliveries::record_outcome(c, done.id, hooked, &done.attempt.region, done.now_ms)?;
                            true
                        }
                        None => false,
                    }
                }
                Next::Retry { run_at, counters, .. } => {
                    c.prepare_cached(
                        "UPDATE jobs SET state = 'scheduled', run_at = ?3, retries = ?4, reroutes = ?5, response = COALESCE(?6, response),
                         updated_at = ?7, lease_token = NULL, lease_expires_at = NULL, lease_holder = NULL
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
                deliveries::HOOKED
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
                .map(|hooked| deliveries::record_outcome(c, id, hooked, &region, now_ms))
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
                        "UPDATE jobs SET state = 'cancelled', error = ?3, finished_at = ?2, updated_at = ?2, lease_token = NULL, lease_expires_at = NULL, lease_holder = NULL
                         WHERE id = ?1 RETURNING {}",
                        deliveries::HOOKED
                    ),
                    params![id_blob(id.0), now_ms as i64, err],
                    |r| r.get::<_, bool>(0),
                )
                .map_err(map_err)?;
            let deliveries = deliveries::record_outcome(c, id, hooked, &region, now_ms)?;
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
}
