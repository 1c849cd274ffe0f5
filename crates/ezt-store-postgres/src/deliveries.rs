//! `DeliveryStore` on PostgreSQL: webhook payloads and deliveries. `record_outcome` runs in the
//! transaction that makes a job final (called by `jobs`), so no crash ends a job without its
//! deliveries.

use async_trait::async_trait;
use deadpool_postgres::GenericClient;
use ezt_core::webhook::DeliveryState;
use ezt_core::{DeliveryId, JobId, TenantId};
use ezt_store::*;
use tokio_postgres::Row;

use crate::codec::*;
use crate::PgStore;

/// Creates the payload and deliveries of a job this transaction has just made final; `hooked`
/// is what the finishing `UPDATE … RETURNING hooked` said (most jobs have no webhooks, and
/// their spec is then never read back).
pub(crate) async fn record_outcome(
    c: &impl GenericClient,
    id: JobId,
    hooked: bool,
    region: &str,
    now_ms: u64,
) -> Result<Vec<PendingDelivery>> {
    if !hooked {
        return Ok(Vec::new());
    }
    let job = id_bytes(id.0);
    let st = c
        .prepare_cached(
            "SELECT tenant_id, series, spec, idempotent_key, state, response, error, attempt_count
             FROM jobs WHERE id = $1",
        )
        .await
        .map_err(pg_err)?;
    let row = c.query_one(&st, &[&job]).await.map_err(pg_err)?;
    let tenant_id: Vec<u8> = row.get(0);
    let series: i32 = row.get(1);
    let spec: ezt_core::job::JobSpec = json_decode(row.get(2))?;
    let idempotent_key: &str = row.get(3);
    let response: Option<Response> = row.get::<_, Option<&str>>(5).map(json_decode).transpose()?;
    let error: Option<JobError> = row.get::<_, Option<&str>>(6).map(json_decode).transpose()?;
    let ending = Ending {
        id,
        spec: &spec,
        idempotent_key,
        state: parse_state(row.get(4))?,
        response: response.as_ref(),
        error: error.as_ref(),
        attempts: row.get::<_, i32>(7) as u32,
        region,
        now_ms,
    };
    if let Some(child) = ending.child(TenantId(bytes_id(&tenant_id)), series as u32) {
        // Same transaction as the parent's end. A key claimed by another job (or the id
        // stored already) skips it: the child exists, or a live job holds its key.
        crate::workflows::insert_job(c, &child).await?;
    }
    let mut run_pending = crate::workflows::step_job_ended(c, &ending).await?;
    let Some(outcome) = ending.outcome() else {
        return Ok(run_pending);
    };
    crate::outcomes::insert_outcome(c, &job, &tenant_id, series, &outcome, now_ms).await?;
    run_pending.extend(outcome.pending(TenantId(bytes_id(&tenant_id)), now_ms));
    Ok(run_pending)
}

const DELIVERY_COLUMNS: &str =
    "id, job_id, tenant_id, series, idx, url, voting, state, attempts::text, \
     created_at, next_at, acked_at, failed_in_run";

fn delivery_row(r: &Row) -> Result<DeliveryRecord> {
    let state: &str = r.get(7);
    Ok(DeliveryRecord {
        id: DeliveryId(bytes_id(r.get(0))),
        job_id: JobId(bytes_id(r.get(1))),
        tenant_id: TenantId(bytes_id(r.get(2))),
        series: r.get::<_, i32>(3) as u32,
        index: r.get::<_, i32>(4) as u32,
        url: r.get(5),
        has_quorum_vote: r.get(6),
        state: DeliveryState::parse(state)
            .ok_or_else(|| Error::Other(format!("corrupt row: delivery state {state:?}")))?,
        attempts: json_decode(r.get(8))?,
        created_at: r.get::<_, i64>(9) as u64,
        next_at: r.get::<_, Option<i64>>(10).map(|v| v as u64),
        acked_at: r.get::<_, Option<i64>>(11).map(|v| v as u64),
        failed_in_run: r.get::<_, i32>(12) as u32,
    })
}

/// The deliveries of a job's latest outcome, in webhook order.
pub(crate) async fn latest_deliveries(
    c: &impl GenericClient,
    job: JobId,
) -> Result<Vec<DeliveryRecord>> {
    let st = c
        .prepare_cached(&format!(
            "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE job_id = $1
             AND series = (SELECT MAX(series) FROM webhook_deliveries WHERE job_id = $1) ORDER BY idx"
        ))
        .await
        .map_err(pg_err)?;
    let rows = c.query(&st, &[&id_bytes(job.0)]).await.map_err(pg_err)?;
    rows.iter().map(delivery_row).collect()
}

#[async_trait]
impl DeliveryStore for PgStore {
    async fn lease_delivery(&self, id: DeliveryId, lease: Lease) -> Result<Option<LeasedDelivery>> {
        let c = self.client().await?;
        // One statement: the lease and the payload it carries.
        let st = c
            .prepare_cached(
                "WITH l AS (
                   UPDATE webhook_deliveries SET lease_token = $2, lease_holder = $3
                   WHERE id = $1 AND state = 'pending' AND lease_token IS NULL
                   RETURNING job_id, tenant_id, series, url, jsonb_array_length(attempts) AS made,
                             failed_in_run, created_at, acked_at IS NOT NULL AS acked, regions)
                 SELECT l.job_id, l.tenant_id, l.url, l.made, l.failed_in_run, l.created_at, l.acked, p.payload,
                        l.regions::text
                 FROM l JOIN webhook_payloads p ON p.job_id = l.job_id AND p.series = l.series",
            )
            .await
            .map_err(pg_err)?;
        let Some(r) = c
            .query_opt(
                &st,
                &[
                    &id_bytes(id.0),
                    &(lease.token as i64),
                    &lease.holder.as_str(),
                ],
            )
            .await
            .map_err(pg_err)?
        else {
            return Ok(None);
        };
        Ok(Some(LeasedDelivery {
            id,
            job_id: JobId(bytes_id(r.get(0))),
            tenant_id: TenantId(bytes_id(r.get(1))),
            url: r.get(2),
            attempt_no: r.get::<_, i32>(3) as u32 + 1,
            failed_in_run: r.get::<_, i32>(4) as u32,
            created_at: r.get::<_, i64>(5) as u64,
            acked_before: r.get(6),
            payload: r.get(7),
            regions: r
                .get::<_, Option<String>>(8)
                .map(|t| serde_json::from_str(&t))
                .transpose()
                .map_err(|e| Error::Other(format!("a delivery's regions: {e}")))?
                .unwrap_or_default(),
        }))
    }

    async fn complete_delivery(&self, done: DeliveryDone) -> Result<bool> {
        let (state, next_at, failed) = match done.next {
            DeliveryNext::Delivered => (DeliveryState::Delivered, None, 0i32),
            DeliveryNext::RetryAt(t) => (DeliveryState::Pending, Some(t as i64), 1),
            DeliveryNext::Failed => (DeliveryState::Failed, None, 1),
        };
        let acked = (done.next == DeliveryNext::Delivered).then_some(done.now_ms as i64);
        let attempt = json_encode(&done.attempt)?;
        let c = self.client().await?;
        let st = c
            .prepare_cached(
                "UPDATE webhook_deliveries SET state = $3, next_at = $4, failed_in_run = failed_in_run + $5,
                 acked_at = COALESCE(acked_at, $6), attempts = attempts || jsonb_build_array(($7::text)::jsonb),
                 lease_token = NULL, lease_holder = NULL WHERE id = $1 AND lease_token = $2",
            )
            .await
            .map_err(pg_err)?;
        let n = c
            .execute(
                &st,
                &[
                    &id_bytes(done.id.0),
                    &(done.lease_token as i64),
                    &state.as_str(),
                    &next_at,
                    &failed,
                    &acked,
                    &attempt,
                ],
            )
            .await
            .map_err(pg_err)?;
        Ok(n > 0)
    }

    async fn redeliver(
        &self,
        tenant: Option<TenantId>,
        job: JobId,
        now_ms: u64,
    ) -> Result<RedeliverOutcome> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg_err)?;
        let exists = tx
            .query_opt(
                "SELECT 1 FROM jobs WHERE id = $1 AND ($2::bytea IS NULL OR tenant_id = $2) FOR UPDATE",
                &[&id_bytes(job.0), &tenant_param(tenant)],
            )
            .await
            .map_err(pg_err)?
            .is_some();
        if !exists {
            return Ok(RedeliverOutcome::NotFound);
        }
        let latest = latest_deliveries(&tx, job).await?;
        if latest.is_empty() {
            return Ok(RedeliverOutcome::NoDeliveries);
        }
        let ids: Vec<Vec<u8>> = latest.iter().map(|d| id_bytes(d.id.0)).collect();
        // In-flight deliveries (leased) are left to finish.
        let rows = tx
            .query(
                "UPDATE webhook_deliveries SET state = 'pending', next_at = $2, failed_in_run = 0
                 WHERE id = ANY($1) AND lease_token IS NULL RETURNING id",
                &[&ids, &(now_ms as i64)],
            )
            .await
            .map_err(pg_err)?;
        tx.commit().await.map_err(pg_err)?;
        let requeued: Vec<u128> = rows.iter().map(|r| bytes_id(r.get(0))).collect();
        Ok(RedeliverOutcome::Requeued(
            latest
                .into_iter()
                .filter(|d| requeued.contains(&d.id.0))
                .map(|d| PendingDelivery {
                    id: d.id,
                    tenant_id: d.tenant_id,
                    url: d.url,
                    next_at: now_ms,
                })
                .collect(),
        ))
    }

    async fn oldest_pending_delivery(&self) -> Result<Option<u64>> {
        let c = self.client().await?;
        let row = c
            .query_one(
                "SELECT MIN(created_at) FROM webhook_deliveries WHERE state = 'pending'",
                &[],
            )
            .await
            .map_err(pg_err)?;
        Ok(row.get::<_, Option<i64>>(0).map(|v| v as u64))
    }

    async fn deliveries_under(&self, tenant: TenantId, key: JobId) -> Result<Vec<DeliveryRecord>> {
        let c = self.client().await?;
        let rows = c
            .query(
                &format!(
                    "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE job_id = $1 AND tenant_id = $2
                     ORDER BY series, idx"
                ),
                &[&id_bytes(key.0), &id_bytes(tenant.0)],
            )
            .await
            .map_err(pg_err)?;
        rows.iter().map(delivery_row).collect()
    }
}
