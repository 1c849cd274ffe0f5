//! `WorkflowStore` on SQLite: one row per run (definition and state as JSON), advanced by the
//! outcome hook of its step jobs in their transaction (`step_ended`).

use async_trait::async_trait;
use ezt_core::{TenantId, WorkflowId};
use ezt_store::*;
use rusqlite::{params, Connection, OptionalExtension};

use crate::codec::*;
use crate::{admission, tenant_clause, SqliteStore};

pub(crate) const MIGRATION: &str = "CREATE TABLE workflows (
    id BLOB PRIMARY KEY, tenant_id BLOB NOT NULL, run TEXT NOT NULL, created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);";

/// Workflow-level idempotency keys: a tenant's runs with the same key are one run.
pub(crate) const KEY_MIGRATION: &str = "ALTER TABLE workflows ADD COLUMN idempotent_key TEXT;
CREATE UNIQUE INDEX workflows_by_key ON workflows (tenant_id, idempotent_key)
    WHERE idempotent_key IS NOT NULL;";

fn load(
    c: &Connection,
    tenant: Option<TenantId>,
    id: WorkflowId,
) -> Result<Option<WorkflowRecord>> {
    let (clause, t) = tenant_clause(tenant);
    let row = c
        .prepare_cached(&format!(
            "SELECT tenant_id, run, created_at, updated_at FROM workflows WHERE id = ?1{clause}"
        ))
        .and_then(|mut st| {
            st.query_row(params![id_blob(id.0), t], |r| {
                Ok((
                    r.get::<_, Vec<u8>>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, i64>(3)?,
                ))
            })
            .optional()
        })
        .map_err(map_err)?;
    row.map(|(tenant, run, created, updated)| {
        Ok(WorkflowRecord {
            id,
            tenant_id: TenantId(blob_id(&tenant)),
            run: json_decode(&run)?,
            created_at: created as u64,
            updated_at: updated as u64,
        })
    })
    .transpose()
}

/// The outcome hook's part for a step job: advance its run, insert what it releases and the
/// deliveries of the run's events; answers those deliveries.
pub(crate) fn step_job_ended(c: &Connection, ending: &Ending<'_>) -> Result<Vec<PendingDelivery>> {
    let Some((wf, r)) = workflow_of(ending.spec) else {
        return Ok(Vec::new());
    };
    let Some(mut rec) = load(c, None, wf)? else {
        return Ok(Vec::new());
    };
    let (jobs, outs) = step_ended_with_events(&mut rec, r, ending);
    c.prepare_cached("UPDATE workflows SET run = ?2, updated_at = ?3 WHERE id = ?1")
        .and_then(|mut st| {
            st.execute(params![
                id_blob(wf.0),
                json_encode(&rec.run)
                    .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?,
                rec.updated_at as i64
            ])
        })
        .map_err(map_err)?;
    for j in jobs {
        let spec = json_encode(&j.spec)?;
        admission::insert_one(c, &spec, j, 0)?;
    }
    insert_run_outcomes(c, &rec, outs, ending.now_ms)
}

/// Stores the payloads and deliveries of a run's events under the run's key; answers the
/// deliveries.
pub(crate) fn insert_run_outcomes(
    c: &Connection,
    rec: &WorkflowRecord,
    outs: Vec<RunOutcome>,
    now_ms: u64,
) -> Result<Vec<PendingDelivery>> {
    let key = id_blob(run_key(rec.id).0);
    let tenant = id_blob(rec.tenant_id.0);
    let mut pending = Vec::new();
    for o in outs {
        if o.outcome.deliveries.is_empty() {
            continue;
        }
        c.prepare_cached(
            "INSERT OR REPLACE INTO webhook_payloads (job_id, series, payload) VALUES (?1, ?2, ?3)",
        )
        .and_then(|mut st| st.execute(params![key, o.event.series, o.outcome.payload]))
        .map_err(map_err)?;
        let mut insert = c
            .prepare_cached(
                "INSERT INTO webhook_deliveries (id, job_id, tenant_id, series, idx, url, voting, state, created_at, next_at, regions)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'pending', ?8, ?8, ?9)",
            )
            .map_err(map_err)?;
        for (did, idx, url, voting, regions) in &o.outcome.deliveries {
            insert
                .execute(params![
                    id_blob(did.0),
                    key,
                    tenant,
                    o.event.series,
                    idx,
                    url,
                    voting,
                    now_ms as i64,
                    regions_column(regions)?
                ])
                .map_err(map_err)?;
        }
        pending.extend(o.pending(rec.tenant_id, now_ms));
    }
    Ok(pending)
}

#[async_trait]
impl WorkflowStore for SqliteStore {
    async fn insert_workflow(
        &self,
        wf: WorkflowRecord,
        jobs: Vec<NewJob>,
    ) -> Result<WorkflowAdmission> {
        let run = json_encode(&wf.run)?;
        let key = wf.run.def.idempotent_key.clone();
        let jobs = jobs
            .into_iter()
            .map(|j| Ok((json_encode(&j.spec)?, j)))
            .collect::<Result<Vec<_>>>()?;
        self.write(move |c| {
            let tenant = id_blob(wf.tenant_id.0);
            if let Some(k) = &key {
                let existing = c
                    .prepare_cached(
                        "SELECT id FROM workflows WHERE tenant_id = ?1 AND idempotent_key = ?2",
                    )
                    .and_then(|mut st| {
                        st.query_row(params![tenant, k], |r| r.get::<_, Vec<u8>>(0))
                            .optional()
                    })
                    .map_err(map_err)?;
                if let Some(e) = existing {
                    return Ok(WorkflowAdmission::Duplicate {
                        existing: WorkflowId(blob_id(&e)),
                    });
                }
            }
            c.prepare_cached(
                "INSERT INTO workflows (id, tenant_id, run, created_at, updated_at, idempotent_key) VALUES (?1, ?2, ?3, ?4, ?4, ?5)",
            )
            .and_then(|mut st| {
                st.execute(params![id_blob(wf.id.0), tenant, run, wf.created_at as i64, key])
            })
            .map_err(map_err)?;
            for (spec, j) in jobs {
                admission::insert_one(c, &spec, j, 0)?;
            }
            Ok(WorkflowAdmission::Stored)
        })
        .await
    }

    async fn control_workflow(
        &self,
        tenant: TenantId,
        id: WorkflowId,
        control: RunControl,
        now_ms: u64,
    ) -> Result<ControlOutcome> {
        self.write(move |c| {
            let Some(mut rec) = load(c, Some(tenant), id)? else {
                return Ok(ControlOutcome::NotFound);
            };
            let applied = match apply_control(&mut rec, control, now_ms) {
                Ok(a) => a,
                Err(e) => return Ok(ControlOutcome::Refused(e)),
            };
            c.prepare_cached("UPDATE workflows SET run = ?2, updated_at = ?3 WHERE id = ?1")
                .and_then(|mut st| {
                    st.execute(params![
                        id_blob(id.0),
                        json_encode(&rec.run)
                            .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?,
                        rec.updated_at as i64
                    ])
                })
                .map_err(map_err)?;
            let err = json_encode(&JobError::cancelled())?;
            let mut cancelled = Vec::new();
            for jid in applied.cancel {
                let n = c
                    .prepare_cached(
                        "UPDATE jobs SET state = 'cancelled', error = ?3, finished_at = ?2, updated_at = ?2, lease_token = NULL, lease_expires_at = NULL, lease_holder = NULL
                         WHERE id = ?1 AND state IN ('queued', 'scheduled', 'running')",
                    )
                    .and_then(|mut st| st.execute(params![id_blob(jid.0), now_ms as i64, err]))
                    .map_err(map_err)?;
                if n > 0 {
                    cancelled.push(jid);
                }
            }
            let released = applied.jobs.iter().map(pending_of).collect();
            for j in applied.jobs {
                let spec = json_encode(&j.spec)?;
                admission::insert_one(c, &spec, j, 0)?;
            }
            let deliveries = insert_run_outcomes(c, &rec, applied.outcomes, now_ms)?;
            Ok(ControlOutcome::Applied {
                record: Box::new(rec),
                cancelled,
                released,
                deliveries,
            })
        })
        .await
    }

    async fn get_workflow(
        &self,
        tenant: Option<TenantId>,
        id: WorkflowId,
    ) -> Result<Option<WorkflowRecord>> {
        self.read(move |c| load(c, tenant, id)).await
    }
}
