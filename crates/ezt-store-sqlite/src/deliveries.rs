//! `DeliveryStore` on SQLite: webhook payloads and deliveries. The free functions run on a
//! connection the caller holds (the writer's transaction, or a reader), so `JobStore` can make
//! a job final and create its deliveries in one transaction (`record_outcome`).

use async_trait::async_trait;
use ezt_core::webhook::DeliveryState;
use ezt_core::{DeliveryId, JobId, TenantId};
use ezt_store::*;
use rusqlite::{params, Connection, OptionalExtension, Row};

use crate::codec::*;
use crate::SqliteStore;

pub(crate) const MIGRATION: &str = r#"
CREATE TABLE webhook_payloads (
    job_id BLOB NOT NULL, series INTEGER NOT NULL, payload BLOB NOT NULL, PRIMARY KEY (job_id, series)
) WITHOUT ROWID;
CREATE TABLE webhook_deliveries (
    id BLOB PRIMARY KEY, job_id BLOB NOT NULL, tenant_id BLOB NOT NULL, series INTEGER NOT NULL, idx INTEGER NOT NULL,
    url TEXT NOT NULL, voting INTEGER NOT NULL, state TEXT NOT NULL, attempts TEXT NOT NULL DEFAULT '[]',
    created_at INTEGER NOT NULL, next_at INTEGER, acked_at INTEGER, failed_in_run INTEGER NOT NULL DEFAULT 0,
    lease_token INTEGER
);
CREATE INDEX deliveries_by_job ON webhook_deliveries (job_id, series, idx);
CREATE INDEX deliveries_pending ON webhook_deliveries (created_at) WHERE state = 'pending';
CREATE TABLE webhook_secrets (
    tenant_id BLOB PRIMARY KEY, primary_secret BLOB NOT NULL, secondary_secret BLOB, updated_at INTEGER NOT NULL
);
"#;

/// What a finishing `UPDATE … RETURNING` yields: whether the job has webhooks. The spec omits
/// an empty `webhooks` list, so most jobs answer false without their spec (whose body may be
/// 256 KiB) being copied out of SQLite on the dispatch path.
pub(crate) const HOOKED: &str = "(instr(spec, '\"webhooks\":') > 0 OR instr(spec, '\"on_success\":') > 0 OR instr(spec, '\"on_failure\":') > 0 OR instr(spec, '\"workflow\":') > 0)";

/// Creates the payload and deliveries of a job that this transaction has just made final;
/// `hooked` is what the finishing UPDATE returned as `HOOKED`.
pub(crate) fn record_outcome(
    c: &Connection,
    id: JobId,
    hooked: bool,
    region: &str,
    now_ms: u64,
) -> Result<Vec<PendingDelivery>> {
    if !hooked {
        return Ok(Vec::new());
    }
    let row = c
        .prepare_cached(
            "SELECT tenant_id, series, spec, idempotent_key, state, response, error, attempt_count FROM jobs WHERE id = ?1",
        )
        .and_then(|mut st| st.query_row(params![id_blob(id.0)], EndingRow::from_row))
        .map_err(map_err)?;
    let spec: ezt_core::job::JobSpec = json_decode(&row.spec)?;
    let response: Option<Response> = row.response.as_deref().map(json_decode).transpose()?;
    let error: Option<JobError> = row.error.as_deref().map(json_decode).transpose()?;
    let ending = Ending {
        id,
        spec: &spec,
        idempotent_key: &row.idempotent_key,
        state: parse_state(&row.state)?,
        response: response.as_ref(),
        error: error.as_ref(),
        attempts: row.attempt_count,
        region,
        now_ms,
    };
    let tenant = TenantId(blob_id(&row.tenant_id));
    if let Some(child) = ending.child(tenant, row.series) {
        // Same transaction as the parent's end; a key a live job holds makes it a duplicate.
        let spec = json_encode(&child.spec)?;
        crate::admission::insert_one(c, &spec, child, 0)?;
    }
    let mut run_pending = crate::workflows::step_job_ended(c, &ending)?;
    let Some(outcome) = ending.outcome() else {
        return Ok(run_pending);
    };
    let job = id_blob(id.0);
    c.prepare_cached(
        "INSERT OR REPLACE INTO webhook_payloads (job_id, series, payload) VALUES (?1, ?2, ?3)",
    )
    .and_then(|mut st| st.execute(params![job, row.series, outcome.payload]))
    .map_err(map_err)?;
    let mut insert = c
        .prepare_cached(
            "INSERT INTO webhook_deliveries (id, job_id, tenant_id, series, idx, url, voting, state, created_at, next_at, regions)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'pending', ?8, ?8, ?9)",
        )
        .map_err(map_err)?;
    for (did, idx, url, voting, regions) in &outcome.deliveries {
        insert
            .execute(params![
                id_blob(did.0),
                job,
                row.tenant_id,
                row.series,
                idx,
                url,
                voting,
                now_ms as i64,
                regions_column(regions)?
            ])
            .map_err(map_err)?;
    }
    run_pending.extend(outcome.pending(tenant, now_ms));
    Ok(run_pending)
}

/// What `record_outcome` needs of the finished job.
struct EndingRow {
    tenant_id: Vec<u8>,
    series: u32,
    spec: String,
    idempotent_key: String,
    state: String,
    response: Option<String>,
    error: Option<String>,
    attempt_count: u32,
}

impl EndingRow {
    fn from_row(r: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            tenant_id: r.get(0)?,
            series: r.get(1)?,
            spec: r.get(2)?,
            idempotent_key: r.get(3)?,
            state: r.get(4)?,
            response: r.get(5)?,
            error: r.get(6)?,
            attempt_count: r.get(7)?,
        })
    }
}

const DELIVERY_COLUMNS: &str = "id, job_id, tenant_id, series, idx, url, voting, state, attempts, created_at, next_at, acked_at, failed_in_run";

fn delivery_row(r: &Row<'_>) -> rusqlite::Result<Result<DeliveryRecord>> {
    let state: String = r.get(7)?;
    let attempts: String = r.get(8)?;
    let rec = (
        DeliveryId(blob_id(&r.get::<_, Vec<u8>>(0)?)),
        JobId(blob_id(&r.get::<_, Vec<u8>>(1)?)),
        TenantId(blob_id(&r.get::<_, Vec<u8>>(2)?)),
        r.get::<_, u32>(3)?,
        r.get::<_, u32>(4)?,
        r.get::<_, String>(5)?,
        r.get::<_, bool>(6)?,
        r.get::<_, i64>(9)? as u64,
        r.get::<_, Option<i64>>(10)?.map(|v| v as u64),
        r.get::<_, Option<i64>>(11)?.map(|v| v as u64),
        r.get::<_, u32>(12)?,
    );
    Ok((|| {
        Ok(DeliveryRecord {
            id: rec.0,
            job_id: rec.1,
            tenant_id: rec.2,
            series: rec.3,
            index: rec.4,
            url: rec.5,
            has_quorum_vote: rec.6,
            state: DeliveryState::parse(&state)
                .ok_or_else(|| Error::Other(format!("corrupt row: delivery state {state:?}")))?,
            attempts: json_decode(&attempts)?,
            created_at: rec.7,
            next_at: rec.8,
            acked_at: rec.9,
            failed_in_run: rec.10,
        })
    })())
}

/// The deliveries of a job's latest outcome, in webhook order.
pub(crate) fn latest_deliveries(c: &Connection, job: JobId) -> Result<Vec<DeliveryRecord>> {
    let sql = format!(
        "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE job_id = ?1
         AND series = (SELECT MAX(series) FROM webhook_deliveries WHERE job_id = ?1) ORDER BY idx"
    );
    let mut st = c.prepare_cached(&sql).map_err(map_err)?;
    let rows = st
        .query_map(params![id_blob(job.0)], delivery_row)
        .map_err(map_err)?;
    rows.map(|r| r.map_err(map_err)?).collect()
}

pub(crate) fn lease(
    c: &Connection,
    id: DeliveryId,
    lease: Lease,
) -> Result<Option<LeasedDelivery>> {
    let row = c
        .prepare_cached(
            "UPDATE webhook_deliveries SET lease_token = ?2, lease_holder = ?3 WHERE id = ?1 AND state = 'pending' AND lease_token IS NULL
             RETURNING job_id, tenant_id, series, url, json_array_length(attempts), failed_in_run, created_at, acked_at IS NOT NULL, regions",
        )
        .and_then(|mut st| {
            st.query_row(params![id_blob(id.0), lease.token as i64, lease.holder.as_str()], |r| {
                Ok((
                    r.get::<_, Vec<u8>>(0)?,
                    r.get::<_, Vec<u8>>(1)?,
                    r.get::<_, u32>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, u32>(4)?,
                    r.get::<_, u32>(5)?,
                    r.get::<_, i64>(6)? as u64,
                    r.get::<_, bool>(7)?,
                    r.get::<_, Option<String>>(8)?,
                ))
            })
            .optional()
        })
        .map_err(map_err)?;
    let Some((job, tenant, series, url, made, failed_in_run, created_at, acked_before, regions)) =
        row
    else {
        return Ok(None);
    };
    let payload: Vec<u8> = c
        .prepare_cached("SELECT payload FROM webhook_payloads WHERE job_id = ?1 AND series = ?2")
        .and_then(|mut st| st.query_row(params![job, series], |r| r.get(0)))
        .map_err(map_err)?;
    Ok(Some(LeasedDelivery {
        id,
        job_id: JobId(blob_id(&job)),
        tenant_id: TenantId(blob_id(&tenant)),
        url,
        payload,
        attempt_no: made + 1,
        failed_in_run,
        created_at,
        acked_before,
        regions: regions
            .as_deref()
            .map(json_decode)
            .transpose()?
            .unwrap_or_default(),
    }))
}

pub(crate) fn complete(c: &Connection, done: &DeliveryDone) -> Result<bool> {
    let (state, next_at, failed) = match done.next {
        DeliveryNext::Delivered => (DeliveryState::Delivered, None, 0),
        DeliveryNext::RetryAt(t) => (DeliveryState::Pending, Some(t as i64), 1),
        DeliveryNext::Failed => (DeliveryState::Failed, None, 1),
    };
    let acked = (done.next == DeliveryNext::Delivered).then_some(done.now_ms as i64);
    let n = c
        .prepare_cached(
            "UPDATE webhook_deliveries SET state = ?3, next_at = ?4, failed_in_run = failed_in_run + ?5,
             acked_at = COALESCE(acked_at, ?6), attempts = json_insert(attempts, '$[#]', json(?7)), lease_token = NULL,
             lease_holder = NULL WHERE id = ?1 AND lease_token = ?2",
        )
        .and_then(|mut st| {
            st.execute(params![
                id_blob(done.id.0),
                done.lease_token as i64,
                state.as_str(),
                next_at,
                failed,
                acked,
                json_encode(&done.attempt).unwrap_or_default()
            ])
        })
        .map_err(map_err)?;
    Ok(n > 0)
}

pub(crate) fn redeliver(
    c: &Connection,
    tenant: Option<TenantId>,
    job: JobId,
    now_ms: u64,
) -> Result<RedeliverOutcome> {
    let (clause, t) = crate::tenant_clause(tenant);
    let exists: bool = c
        .query_row(
            &format!("SELECT EXISTS (SELECT 1 FROM jobs WHERE id = ?1{clause})"),
            params![id_blob(job.0), t],
            |r| r.get(0),
        )
        .map_err(map_err)?;
    if !exists {
        return Ok(RedeliverOutcome::NotFound);
    }
    let latest = latest_deliveries(c, job)?;
    if latest.is_empty() {
        return Ok(RedeliverOutcome::NoDeliveries);
    }
    let mut st = c
        .prepare_cached(
            "UPDATE webhook_deliveries SET state = 'pending', next_at = ?2, failed_in_run = 0
             WHERE id = ?1 AND lease_token IS NULL",
        )
        .map_err(map_err)?;
    let mut out = Vec::new();
    for d in latest {
        if st
            .execute(params![id_blob(d.id.0), now_ms as i64])
            .map_err(map_err)?
            > 0
        {
            out.push(PendingDelivery {
                id: d.id,
                tenant_id: d.tenant_id,
                url: d.url,
                next_at: now_ms,
            });
        }
    }
    Ok(RedeliverOutcome::Requeued(out))
}

pub(crate) fn oldest_pending(c: &Connection) -> Result<Option<u64>> {
    c.query_row(
        "SELECT MIN(created_at) FROM webhook_deliveries WHERE state = 'pending'",
        [],
        |r| r.get::<_, Option<i64>>(0),
    )
    .map(|v| v.map(|v| v as u64))
    .map_err(map_err)
}

#[async_trait]
impl DeliveryStore for SqliteStore {
    async fn lease_delivery(&self, id: DeliveryId, lease: Lease) -> Result<Option<LeasedDelivery>> {
        self.write(move |c| self::lease(c, id, lease)).await
    }

    async fn complete_delivery(&self, done: DeliveryDone) -> Result<bool> {
        self.write(move |c| self::complete(c, &done)).await
    }

    async fn redeliver(
        &self,
        tenant: Option<TenantId>,
        job: JobId,
        now_ms: u64,
    ) -> Result<RedeliverOutcome> {
        self.write(move |c| self::redeliver(c, tenant, job, now_ms))
            .await
    }

    async fn oldest_pending_delivery(&self) -> Result<Option<u64>> {
        self.read(self::oldest_pending).await
    }

    async fn deliveries_under(&self, tenant: TenantId, key: JobId) -> Result<Vec<DeliveryRecord>> {
        self.read(move |c| {
            let sql = format!(
                "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE job_id = ?1 AND tenant_id = ?2
                 ORDER BY series, idx"
            );
            let mut st = c.prepare_cached(&sql).map_err(map_err)?;
            let rows = st
                .query_map(params![id_blob(key.0), id_blob(tenant.0)], delivery_row)
                .map_err(map_err)?;
            rows.map(|r| r.map_err(map_err)?).collect()
        })
        .await
    }
}
