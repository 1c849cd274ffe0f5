//! `MaintenanceStore` on PostgreSQL: the readiness probe and retention.

use async_trait::async_trait;
use ezt_store::*;

use crate::codec::*;
use crate::PgStore;

#[async_trait]
impl MaintenanceStore for PgStore {
    async fn ping(&self) -> Result<()> {
        let c = self.client().await?;
        c.query_one("SELECT 1", &[]).await.map_err(pg_err)?;
        Ok(())
    }

    async fn purge_finished(&self, cutoffs: &PurgeCutoffs, limit: usize) -> Result<usize> {
        let Some(latest) = cutoffs.latest() else {
            return Ok(0);
        };
        let tenants: Vec<Vec<u8>> = cutoffs.tenants.iter().map(|(t, _)| id_bytes(t.0)).collect();
        let tenant_cutoffs: Vec<Option<i64>> = cutoffs
            .tenants
            .iter()
            .map(|(_, c)| c.map(|c| c as i64))
            .collect();
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg_err)?;
        // Each tenant's own cutoff (NULL keeps its jobs); the bound on the latest cutoff lets
        // the partial index pick candidates in finish order. SKIP LOCKED: a job another
        // transaction is touching waits for the next round.
        let rows = tx
            .query(
                "WITH c AS (SELECT * FROM unnest($2::bytea[], $3::int8[]) AS c(tenant_id, cutoff))
                 SELECT j.id FROM jobs j LEFT JOIN c ON c.tenant_id = j.tenant_id
                 WHERE j.finished_at IS NOT NULL AND j.finished_at < $1
                 AND j.finished_at < (CASE WHEN c.tenant_id IS NULL THEN $4::int8 ELSE c.cutoff END)
                 AND NOT EXISTS (SELECT 1 FROM webhook_deliveries d WHERE d.job_id = j.id AND d.state = 'pending')
                 ORDER BY j.finished_at LIMIT $5 FOR UPDATE OF j SKIP LOCKED",
                &[
                    &(latest as i64),
                    &tenants,
                    &tenant_cutoffs,
                    &cutoffs.default.map(|c| c as i64),
                    &(limit as i64),
                ],
            )
            .await
            .map_err(pg_err)?;
        let ids: Vec<Vec<u8>> = rows.iter().map(|r| r.get(0)).collect();
        if ids.is_empty() {
            return Ok(0);
        }
        for sql in [
            "DELETE FROM attempts WHERE job_id = ANY($1)",
            "DELETE FROM webhook_payloads WHERE job_id = ANY($1)",
            "DELETE FROM webhook_deliveries WHERE job_id = ANY($1)",
            "DELETE FROM wakeups WHERE job_id = ANY($1)",
            "DELETE FROM jobs WHERE id = ANY($1)",
        ] {
            tx.execute(sql, &[&ids]).await.map_err(pg_err)?;
        }
        tx.commit().await.map_err(pg_err)?;
        Ok(ids.len())
    }
}
