//! `SecretStore` on PostgreSQL: tenants' webhook signing secrets (sealed by the server) and the
//! installation's `meta` key/value table.

use async_trait::async_trait;
use ezt_core::TenantId;
use ezt_store::*;

use crate::codec::*;
use crate::PgStore;

fn secrets_row(r: &tokio_postgres::Row) -> WebhookSecrets {
    WebhookSecrets {
        primary: r.get(0),
        secondary: r.get(1),
        updated_at: r.get::<_, i64>(2) as u64,
    }
}

#[async_trait]
impl SecretStore for PgStore {
    async fn put_webhook_secrets(&self, tenant: TenantId, s: WebhookSecrets) -> Result<()> {
        let c = self.client().await?;
        c.execute(
            "INSERT INTO webhook_secrets (tenant_id, primary_secret, secondary_secret, updated_at)
             VALUES ($1, $2, $3, $4) ON CONFLICT (tenant_id) DO UPDATE SET primary_secret = EXCLUDED.primary_secret,
             secondary_secret = EXCLUDED.secondary_secret, updated_at = EXCLUDED.updated_at",
            &[&id_bytes(tenant.0), &s.primary, &s.secondary, &(s.updated_at as i64)],
        )
        .await
        .map_err(pg_err)?;
        Ok(())
    }

    async fn webhook_secrets(&self, tenant: TenantId) -> Result<Option<WebhookSecrets>> {
        let c = self.client().await?;
        let row = c
            .query_opt(
                "SELECT primary_secret, secondary_secret, updated_at FROM webhook_secrets WHERE tenant_id = $1",
                &[&id_bytes(tenant.0)],
            )
            .await
            .map_err(pg_err)?;
        Ok(row.as_ref().map(secrets_row))
    }

    async fn rotate_webhook_secret(
        &self,
        tenant: TenantId,
        primary: Vec<u8>,
        now_ms: u64,
    ) -> Result<Option<WebhookSecrets>> {
        let c = self.client().await?;
        // One statement: the old primary moves to secondary atomically (the SET sees the row
        // as it was).
        let row = c
            .query_opt(
                "UPDATE webhook_secrets SET secondary_secret = primary_secret, primary_secret = $2, updated_at = $3
                 WHERE tenant_id = $1 RETURNING primary_secret, secondary_secret, updated_at",
                &[&id_bytes(tenant.0), &primary, &(now_ms as i64)],
            )
            .await
            .map_err(pg_err)?;
        Ok(row.as_ref().map(secrets_row))
    }

    async fn delete_webhook_secrets(&self, tenant: TenantId) -> Result<bool> {
        let c = self.client().await?;
        let n = c
            .execute(
                "DELETE FROM webhook_secrets WHERE tenant_id = $1",
                &[&id_bytes(tenant.0)],
            )
            .await
            .map_err(pg_err)?;
        Ok(n > 0)
    }

    async fn meta_get_or_init(&self, key: &str, init: Vec<u8>) -> Result<Vec<u8>> {
        let c = self.client().await?;
        // Insert-or-keep, then read: under concurrent first calls (two nodes starting) the
        // loser's insert waits for the winner's row and does nothing, so everyone reads one value.
        c.execute(
            "INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
            &[&key, &init],
        )
        .await
        .map_err(pg_err)?;
        let row = c
            .query_one("SELECT value FROM meta WHERE key = $1", &[&key])
            .await
            .map_err(pg_err)?;
        Ok(row.get(0))
    }

    async fn meta_get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let c = self.client().await?;
        let row = c
            .query_opt("SELECT value FROM meta WHERE key = $1", &[&key])
            .await
            .map_err(pg_err)?;
        Ok(row.map(|r| r.get(0)))
    }
}
