//! `WorkflowStore` on PostgreSQL: one row per run (definition and state as JSON), advanced by
//! the outcome hook of its step jobs in their transaction, under a row lock (`FOR UPDATE`) so
//! two steps ending at once on two connections (or nodes) never lose each other's update.

use async_trait::async_trait;
use deadpool_postgres::GenericClient;
use ezt_core::{JobState, TenantId, WorkflowId};
use ezt_store::*;

use crate::codec::*;
use crate::PgStore;

/// Inserts a job inside the caller's transaction; a job whose id is stored already, or whose
/// key a live job claims, is skipped.
pub(crate) async fn insert_job(c: &impl GenericClient, j: &NewJob) -> Result<()> {
    let st = c
        .prepare_cached(
            "INSERT INTO jobs (id, tenant_id, lane, state, spec, hooked, idempotent_key, created_at, updated_at, run_at, deadline_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8, $9, $10) ON CONFLICT DO NOTHING",
        )
        .await
        .map_err(pg_err)?;
    let state = if j.run_at > j.created_at {
        JobState::Scheduled
    } else {
        JobState::Queued
    };
    let hooked = !j.spec.webhooks.is_empty() || has_children(&j.spec);
    c.execute(
        &st,
        &[
            &id_bytes(j.id.0),
            &id_bytes(j.tenant_id.0),
            &j.lane.0,
            &state.as_str(),
            &json_encode(&j.spec)?,
            &hooked,
            &j.idempotent_key,
            &(j.created_at as i64),
            &(j.run_at as i64),
            &(j.deadline_at as i64),
        ],
    )
    .await
    .map_err(pg_err)?;
    Ok(())
}

async fn load(
    c: &impl GenericClient,
    tenant: Option<TenantId>,
    id: WorkflowId,
    lock: bool,
) -> Result<Option<WorkflowRecord>> {
    let sql = format!(
        "SELECT tenant_id, run, created_at, updated_at FROM workflows WHERE id = $1 AND ($2::bytea IS NULL OR tenant_id = $2){}",
        if lock { " FOR UPDATE" } else { "" }
    );
    let row = c
        .query_opt(&sql, &[&id_bytes(id.0), &tenant_param(tenant)])
        .await
        .map_err(pg_err)?;
    row.map(|r| {
        Ok(WorkflowRecord {
            id,
            tenant_id: TenantId(bytes_id(r.get(0))),
            run: json_decode(r.get(1))?,
            created_at: r.get::<_, i64>(2) as u64,
            updated_at: r.get::<_, i64>(3) as u64,
        })
    })
    .transpose()
}

/// The outcome hook's part for a step job: advance its run, insert what it releases and the
/// deliveries of the run's events; answers those deliveries.
pub(crate) async fn step_job_ended(
    c: &impl GenericClient,
    ending: &Ending<'_>,
) -> Result<Vec<PendingDelivery>> {
    let Some((wf, r)) = workflow_of(ending.spec) else {
        return Ok(Vec::new());
    };
    let Some(mut rec) = load(c, None, wf, true).await? else {
        return Ok(Vec::new());
    };
    let (jobs, outs) = step_ended_with_events(&mut rec, r, ending);
    c.execute(
        "UPDATE workflows SET run = $2, updated_at = $3 WHERE id = $1",
        &[
            &id_bytes(wf.0),
            &json_encode(&rec.run)?,
            &(rec.updated_at as i64),
        ],
    )
    .await
    .map_err(pg_err)?;
    for j in &jobs {
        insert_job(c, j).await?;
    }
    insert_run_outcomes(c, &rec, outs, ending.now_ms).await
}

/// Stores the payloads and deliveries of a run's events under the run's key; answers the
/// deliveries.
pub(crate) async fn insert_run_outcomes(
    c: &impl GenericClient,
    rec: &WorkflowRecord,
    outs: Vec<RunOutcome>,
    now_ms: u64,
) -> Result<Vec<PendingDelivery>> {
    let key = id_bytes(run_key(rec.id).0);
    let tenant = id_bytes(rec.tenant_id.0);
    let mut pending = Vec::new();
    for o in outs {
        if o.outcome.deliveries.is_empty() {
            continue;
        }
        let series = o.event.series as i32;
        crate::outcomes::insert_outcome(c, &key, &tenant, series, &o.outcome, now_ms).await?;
        pending.extend(o.pending(rec.tenant_id, now_ms));
    }
    Ok(pending)
}

#[async_trait]
impl WorkflowStore for PgStore {
    async fn insert_workflow(
        &self,
        wf: WorkflowRecord,
        jobs: Vec<NewJob>,
    ) -> Result<WorkflowAdmission> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg_err)?;
        let tenant = id_bytes(wf.tenant_id.0);
        let key = wf.run.def.idempotent_key.clone();
        // The unique index decides between two nodes admitting one key at once.
        let stored = tx
            .execute(
                "INSERT INTO workflows (id, tenant_id, run, created_at, updated_at, idempotent_key)
                 VALUES ($1, $2, $3, $4, $4, $5)
                 ON CONFLICT (tenant_id, idempotent_key) WHERE idempotent_key IS NOT NULL DO NOTHING",
                &[
                    &id_bytes(wf.id.0),
                    &tenant,
                    &json_encode(&wf.run)?,
                    &(wf.created_at as i64),
                    &key,
                ],
            )
            .await
            .map_err(pg_err)?;
        if stored == 0 {
            let row = tx
                .query_one(
                    "SELECT id FROM workflows WHERE tenant_id = $1 AND idempotent_key = $2",
                    &[&tenant, &key],
                )
                .await
                .map_err(pg_err)?;
            return Ok(WorkflowAdmission::Duplicate {
                existing: WorkflowId(bytes_id(row.get(0))),
            });
        }
        for j in &jobs {
            insert_job(&tx, j).await?;
        }
        tx.commit().await.map_err(pg_err)?;
        Ok(WorkflowAdmission::Stored)
    }

    async fn control_workflow(
        &self,
        tenant: TenantId,
        id: WorkflowId,
        control: RunControl,
        now_ms: u64,
    ) -> Result<ControlOutcome> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg_err)?;
        let Some(mut rec) = load(&tx, Some(tenant), id, true).await? else {
            return Ok(ControlOutcome::NotFound);
        };
        let applied = match apply_control(&mut rec, control, now_ms) {
            Ok(a) => a,
            Err(e) => return Ok(ControlOutcome::Refused(e)),
        };
        tx.execute(
            "UPDATE workflows SET run = $2, updated_at = $3 WHERE id = $1",
            &[
                &id_bytes(id.0),
                &json_encode(&rec.run)?,
                &(rec.updated_at as i64),
            ],
        )
        .await
        .map_err(pg_err)?;
        let err = json_encode(&JobError::cancelled())?;
        let mut cancelled = Vec::new();
        for jid in applied.cancel {
            let n = tx
                .execute(
                    "UPDATE jobs SET state = 'cancelled', error = $3, finished_at = $2, updated_at = $2,
                     lease_token = NULL, lease_expires_at = NULL, lease_holder = NULL
                     WHERE id = $1 AND state IN ('queued', 'scheduled', 'running')",
                    &[&id_bytes(jid.0), &(now_ms as i64), &err],
                )
                .await
                .map_err(pg_err)?;
            if n > 0 {
                cancelled.push(jid);
            }
        }
        let released = applied.jobs.iter().map(pending_of).collect();
        for j in &applied.jobs {
            insert_job(&tx, j).await?;
        }
        let deliveries = insert_run_outcomes(&tx, &rec, applied.outcomes, now_ms).await?;
        tx.commit().await.map_err(pg_err)?;
        Ok(ControlOutcome::Applied {
            record: Box::new(rec),
            cancelled,
            released,
            deliveries,
        })
    }

    async fn get_workflow(
        &self,
        tenant: Option<TenantId>,
        id: WorkflowId,
    ) -> Result<Option<WorkflowRecord>> {
        let c = self.client().await?;
        load(&c, tenant, id, false).await
    }
}
