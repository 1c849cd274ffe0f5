//! `JobStore` on PostgreSQL: admission (group commit, see `admission`), the attempt lease
//! cycle, the caller's controls and wake-ups. Each write is one transaction; the ones that read
//! before they write lock the job row first (`FOR UPDATE`), so two nodes acting on one job
//! serialize on it.

use async_trait::async_trait;
use deadpool_postgres::GenericClient;
use ezt_core::{JobId, JobState, TenantId};
use ezt_store::*;

use crate::admission::Prepared;
use crate::codec::*;
use crate::{deliveries, recovery, PgStore};

/// The channel a server sharing the database listens on for wake-ups (cancel, replay).
pub(crate) const WAKEUP_CHANNEL: &str = "ezt_wakeups";

/// A job's attempts in order (their own table, so a list never loads them).
async fn load_attempts(c: &impl GenericClient, id: JobId) -> Result<Vec<Attempt>> {
    let st = c
        .prepare_cached("SELECT data FROM attempts WHERE job_id = $1 ORDER BY n")
        .await
        .map_err(pg_err)?;
    let rows = c.query(&st, &[&id_bytes(id.0)]).await.map_err(pg_err)?;
    rows.iter().map(|r| json_decode(r.get(0))).collect()
}

/// Records a wake-up for a server sharing the database, and tells listeners at commit.
async fn wake(c: &impl GenericClient, id: JobId) -> Result<()> {
    c.execute(
        "INSERT INTO wakeups (job_id) VALUES ($1)",
        &[&id_bytes(id.0)],
    )
    .await
    .map_err(pg_err)?;
    c.execute("SELECT pg_notify($1, '')", &[&WAKEUP_CHANNEL])
        .await
        .map_err(pg_err)?;
    Ok(())
}

#[async_trait]
impl JobStore for PgStore {
    async fn insert_jobs(&self, jobs: Vec<NewJob>, dedup_window_ms: u64) -> Result<Vec<Admission>> {
        // Encoded on the caller's task: the batcher is the serial stage of admission.
        let jobs = jobs
            .into_iter()
            .map(|j| Prepared::new(j, dedup_window_ms))
            .collect::<Result<Vec<_>>>()?;
        self.admit.admit(jobs).await
    }

    async fn get_job(&self, tenant: Option<TenantId>, id: JobId) -> Result<Option<JobRecord>> {
        let c = self.client().await?;
        let st = c
            .prepare_cached(&format!(
                "SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1 AND ($2::bytea IS NULL OR tenant_id = $2)"
            ))
            .await
            .map_err(pg_err)?;
        let Some(row) = c
            .query_opt(&st, &[&id_bytes(id.0), &tenant_param(tenant)])
            .await
            .map_err(pg_err)?
        else {
            return Ok(None);
        };
        let mut j = job_row(&row)?;
        // Two more reads on the same connection, pipelined.
        let (attempts, deliveries) =
            tokio::join!(load_attempts(&c, id), deliveries::latest_deliveries(&c, id));
        j.attempts = attempts?;
        j.deliveries = deliveries?;
        Ok(Some(j))
    }

    async fn list_jobs(&self, tenant: Option<TenantId>, f: &JobFilter) -> Result<Vec<JobRecord>> {
        let c = self.client().await?;
        let st = c
            .prepare_cached(&format!(
                "SELECT {JOB_COLUMNS} FROM jobs WHERE id < $1 AND ($2::bytea IS NULL OR tenant_id = $2)
                 AND ($3::text IS NULL OR state = $3) AND ($4::text IS NULL OR lane = $4)
                 AND ($5::int8 IS NULL OR created_at > $5)
                 ORDER BY id DESC LIMIT $6"
            ))
            .await
            .map_err(pg_err)?;
        let before = f.before.map_or(vec![0xffu8; 16], |b| id_bytes(b.0));
        let rows = c
            .query(
                &st,
                &[
                    &before,
                    &tenant_param(tenant),
                    &f.state.map(|s| s.as_str()),
                    &f.lane,
                    &f.created_after.map(|v| v as i64),
                    &(f.limit as i64),
                ],
            )
            .await
            .map_err(pg_err)?;
        rows.iter().map(job_row).collect()
    }

    async fn recover(&self, holder: &NodeId, now_ms: u64, region: &str) -> Result<Recovered> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg_err)?;
        let (deliveries, released) =
            recovery::release(&tx, holder.as_str(), now_ms, region).await?;
        tx.commit().await.map_err(pg_err)?;
        // Their owners read them from their ids (older than what an owner reads as new).
        for (lane, (floor, ceiling)) in released {
            self.notifier
                .tell_work(&format!("job:{lane}"), floor, ceiling);
        }
        let jobs = recovery::waiting_jobs(&c).await?;
        Ok(Recovered { jobs, deliveries })
    }

    async fn lease(&self, id: JobId, lease: Lease) -> Result<Option<LeasedJob>> {
        let c = self.client().await?;
        // `leased_at` and `lease_expires_at` are database time; the caller's clock only says
        // how long the lease is. `updated_at` is the caller's lease time, as the trait says (an
        // interrupted attempt's `at`).
        let st = c
            .prepare_cached(
                "UPDATE jobs SET state = 'running', attempt_count = attempt_count + 1, lease_token = $2,
                 leased_at = db.now, lease_expires_at = db.now + $3, updated_at = $4, lease_holder = $5,
                 lane_epoch = $7
                 FROM (SELECT ezt_now_ms() AS now) db
                 WHERE id = $1 AND state IN ('queued', 'scheduled')
                   AND ($6::text IS NULL OR EXISTS (
                     SELECT 1 FROM lanes l JOIN nodes n ON n.id = l.owner_node
                     WHERE l.lane = $6 AND l.lane_epoch = $7 AND l.owner_node = $5
                       AND l.owner_node_epoch = $8 AND n.epoch = $8 AND n.expires_at > db.now))
                 RETURNING spec, tenant_id, idempotent_key, attempt_count, series, retries, reroutes, deadline_at",
            )
            .await
            .map_err(pg_err)?;
        let ttl = lease.expires_at.saturating_sub(lease.now_ms) as i64;
        let Some(r) = c
            .query_opt(
                &st,
                &[
                    &id_bytes(id.0),
                    &(lease.token as i64),
                    &ttl,
                    &(lease.now_ms as i64),
                    &lease.holder.as_str(),
                    &lease.fence.as_ref().map(|f| f.lane.as_str()),
                    &lease.fence.as_ref().map(|f| f.lane_epoch as i64),
                    &lease.fence.as_ref().map(|f| f.node_epoch as i64),
                ],
            )
            .await
            .map_err(pg_err)?
        else {
            return Ok(None);
        };
        Ok(Some(LeasedJob {
            spec: json_decode(r.get(0))?,
            tenant_id: TenantId(bytes_id(r.get(1))),
            idempotent_key: r.get(2),
            attempt_no: r.get::<_, i32>(3) as u32,
            series: r.get::<_, i32>(4) as u32,
            counters: ezt_core::retry::Counters {
                retries: r.get::<_, i32>(5) as u32,
                reroutes: r.get::<_, i32>(6) as u32,
            },
            deadline_at: r.get::<_, i64>(7) as u64,
        }))
    }

    async fn complete_attempt(&self, done: AttemptDone) -> Result<Option<Vec<PendingDelivery>>> {
        let (attempt_json, response_json, error_json) = encode_outcome(&done)?;
        let id = id_bytes(done.id.0);
        let token = done.lease_token as i64;
        let now = done.now_ms as i64;
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg_err)?;
        let mut created = Vec::new();
        match &done.next {
            Next::Final { state, .. } => {
                let st = tx
                    .prepare_cached(
                        "UPDATE jobs SET state = $3, response = COALESCE($4, response), error = $5, finished_at = $6,
                         updated_at = $6, lease_token = NULL, lease_expires_at = NULL, lease_holder = NULL
                         WHERE id = $1 AND lease_token = $2 AND state = 'running' RETURNING hooked",
                    )
                    .await
                    .map_err(pg_err)?;
                let Some(row) = tx
                    .query_opt(
                        &st,
                        &[
                            &id,
                            &token,
                            &state.as_str(),
                            &response_json,
                            &error_json,
                            &now,
                        ],
                    )
                    .await
                    .map_err(pg_err)?
                else {
                    return Ok(None);
                };
                created = deliveries::record_outcome(
                    &tx,
                    done.id,
                    row.get(0),
                    &done.attempt.region,
                    done.now_ms,
                )
                .await?;
            }
            Next::Retry {
                run_at, counters, ..
            } => {
                let st = tx
                    .prepare_cached(
                        "UPDATE jobs SET state = 'scheduled', run_at = $3, retries = $4, reroutes = $5,
                         response = COALESCE($6, response), updated_at = $7, lease_token = NULL,
                         lease_expires_at = NULL, lease_holder = NULL
                         WHERE id = $1 AND lease_token = $2 AND state = 'running'",
                    )
                    .await
                    .map_err(pg_err)?;
                let n = tx
                    .execute(
                        &st,
                        &[
                            &id,
                            &token,
                            &(*run_at as i64),
                            &(counters.retries as i32),
                            &(counters.reroutes as i32),
                            &response_json,
                            &now,
                        ],
                    )
                    .await
                    .map_err(pg_err)?;
                if n == 0 {
                    return Ok(None);
                }
            }
        }
        let st = tx
            .prepare_cached(
                "INSERT INTO attempts (job_id, n, data) VALUES ($1, $2, $3)
                 ON CONFLICT (job_id, n) DO UPDATE SET data = EXCLUDED.data",
            )
            .await
            .map_err(pg_err)?;
        tx.execute(&st, &[&id, &(done.attempt.n as i32), &attempt_json])
            .await
            .map_err(pg_err)?;
        tx.commit().await.map_err(pg_err)?;
        Ok(Some(created))
    }

    async fn expire(
        &self,
        id: JobId,
        now_ms: u64,
        region: &str,
    ) -> Result<Option<Vec<PendingDelivery>>> {
        let err = json_encode(&JobError::deadline())?;
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg_err)?;
        let row = tx
            .query_opt(
                "UPDATE jobs SET state = 'expired', error = $3, finished_at = $2, updated_at = $2
                 WHERE id = $1 AND state IN ('queued', 'scheduled') RETURNING hooked",
                &[&id_bytes(id.0), &(now_ms as i64), &err],
            )
            .await
            .map_err(pg_err)?;
        let Some(row) = row else { return Ok(None) };
        let created = deliveries::record_outcome(&tx, id, row.get(0), region, now_ms).await?;
        tx.commit().await.map_err(pg_err)?;
        Ok(Some(created))
    }

    async fn cancel(
        &self,
        tenant: Option<TenantId>,
        id: JobId,
        now_ms: u64,
        region: &str,
    ) -> Result<CancelOutcome> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg_err)?;
        let row = tx
            .query_opt(
                "SELECT state FROM jobs WHERE id = $1 AND ($2::bytea IS NULL OR tenant_id = $2) FOR UPDATE",
                &[&id_bytes(id.0), &tenant_param(tenant)],
            )
            .await
            .map_err(pg_err)?;
        let Some(row) = row else {
            return Ok(CancelOutcome::NotFound);
        };
        let state = parse_state(row.get(0))?;
        if state.is_final() {
            return Ok(CancelOutcome::AlreadyFinal(state));
        }
        let err = json_encode(&JobError::cancelled())?;
        let hooked: bool = tx
            .query_one(
                "UPDATE jobs SET state = 'cancelled', error = $3, finished_at = $2, updated_at = $2,
                 lease_token = NULL, lease_expires_at = NULL, lease_holder = NULL
                 WHERE id = $1 RETURNING hooked",
                &[&id_bytes(id.0), &(now_ms as i64), &err],
            )
            .await
            .map_err(pg_err)?
            .get(0);
        let created = deliveries::record_outcome(&tx, id, hooked, region, now_ms).await?;
        if !created.is_empty() {
            wake(&tx, id).await?;
        }
        tx.commit().await.map_err(pg_err)?;
        Ok(CancelOutcome::Cancelled(created))
    }

    async fn replay(
        &self,
        tenant: Option<TenantId>,
        id: JobId,
        now_ms: u64,
        deadline_ms: u64,
    ) -> Result<ReplayOutcome> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg_err)?;
        let row = tx
            .query_opt(
                "SELECT state, tenant_id, lane FROM jobs WHERE id = $1 AND ($2::bytea IS NULL OR tenant_id = $2)
                 FOR UPDATE",
                &[&id_bytes(id.0), &tenant_param(tenant)],
            )
            .await
            .map_err(pg_err)?;
        let Some(row) = row else {
            return Ok(ReplayOutcome::NotFound);
        };
        let state = parse_state(row.get(0))?;
        if !state.can_retry() {
            return Ok(ReplayOutcome::NotReplayable(state));
        }
        tx.execute(
            "UPDATE jobs SET state = 'queued', series = series + 1, retries = 0, reroutes = 0, run_at = $2,
             deadline_at = $3, finished_at = NULL, error = NULL, updated_at = $2 WHERE id = $1",
            &[&id_bytes(id.0), &(now_ms as i64), &(deadline_ms as i64)],
        )
        .await
        .map_err(pg_err)?;
        wake(&tx, id).await?;
        tx.commit().await.map_err(pg_err)?;
        Ok(ReplayOutcome::Requeued(PendingJob {
            id,
            tenant_id: TenantId(bytes_id(row.get(1))),
            lane: ezt_core::lane::LaneKey(row.get(2)),
            run_at: now_ms,
            deadline_at: deadline_ms,
        }))
    }

    async fn take_wakeups(&self) -> Result<Vec<JobId>> {
        let c = self.client().await?;
        // SKIP LOCKED: two servers polling at once split the rows instead of queueing.
        let st = c
            .prepare_cached(
                "DELETE FROM wakeups WHERE seq IN
                 (SELECT seq FROM wakeups ORDER BY seq LIMIT 1000 FOR UPDATE SKIP LOCKED)
                 RETURNING seq, job_id",
            )
            .await
            .map_err(pg_err)?;
        let mut rows: Vec<(i64, JobId)> = c
            .query(&st, &[])
            .await
            .map_err(pg_err)?
            .iter()
            .map(|r| (r.get(0), JobId(bytes_id(r.get(1)))))
            .collect();
        rows.sort_by_key(|r| r.0);
        Ok(rows.into_iter().map(|r| r.1).collect())
    }

    async fn count_by_state(&self) -> Result<Vec<(JobState, u64)>> {
        let c = self.client().await?;
        let rows = c
            .query("SELECT state, COUNT(*) FROM jobs GROUP BY state", &[])
            .await
            .map_err(pg_err)?;
        let mut counts: Vec<(JobState, u64)> = JobState::ALL.iter().map(|s| (*s, 0)).collect();
        for r in rows {
            let s = parse_state(r.get(0))?;
            if let Some(slot) = counts.iter_mut().find(|(st, _)| *st == s) {
                slot.1 = r.get::<_, i64>(1) as u64;
            }
        }
        Ok(counts)
    }
}
