//! `SecretStore` on SQLite: tenants' webhook signing secrets (sealed by the server) and the
//! installation's `meta` key/value table.

use async_trait::async_trait;
use ezt_core::TenantId;
use ezt_store::*;
use rusqlite::{params, Connection, OptionalExtension};

use crate::codec::*;
use crate::SqliteStore;

#[async_trait]
impl SecretStore for SqliteStore {
    async fn put_webhook_secrets(&self, tenant: TenantId, secrets: WebhookSecrets) -> Result<()> {
        self.write(move |c| self::put_secrets(c, tenant, &secrets))
            .await
    }

    async fn webhook_secrets(&self, tenant: TenantId) -> Result<Option<WebhookSecrets>> {
        self.read(move |c| self::secrets(c, tenant)).await
    }

    async fn rotate_webhook_secret(
        &self,
        tenant: TenantId,
        primary: Vec<u8>,
        now_ms: u64,
    ) -> Result<Option<WebhookSecrets>> {
        self.write(move |c| self::rotate(c, tenant, &primary, now_ms))
            .await
    }

    async fn delete_webhook_secrets(&self, tenant: TenantId) -> Result<bool> {
        self.write(move |c| self::delete_secrets(c, tenant)).await
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

    async fn meta_get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let key = key.to_string();
        self.read(move |c| {
            c.query_row("SELECT value FROM meta WHERE key = ?1", params![key], |r| {
                r.get(0)
            })
            .optional()
            .map_err(map_err)
        })
        .await
    }
}

pub(crate) fn put_secrets(c: &Connection, tenant: TenantId, s: &WebhookSecrets) -> Result<()> {
    c.execute(
        "INSERT OR REPLACE INTO webhook_secrets (tenant_id, primary_secret, secondary_secret, updated_at) VALUES (?1, ?2, ?3, ?4)",
        params![id_blob(tenant.0), s.primary, s.secondary, s.updated_at as i64],
    )
    .map_err(map_err)?;
    Ok(())
}

pub(crate) fn secrets(c: &Connection, tenant: TenantId) -> Result<Option<WebhookSecrets>> {
    c.prepare_cached(
        "SELECT primary_secret, secondary_secret, updated_at FROM webhook_secrets WHERE tenant_id = ?1",
    )
    .and_then(|mut st| {
        st.query_row(params![id_blob(tenant.0)], |r| {
            Ok(WebhookSecrets {
                primary: r.get(0)?,
                secondary: r.get(1)?,
                updated_at: r.get::<_, i64>(2)? as u64,
            })
        })
        .optional()
    })
    .map_err(map_err)
}

pub(crate) fn rotate(
    c: &Connection,
    tenant: TenantId,
    primary: &[u8],
    now_ms: u64,
) -> Result<Option<WebhookSecrets>> {
    let n = c
        .execute(
            "UPDATE webhook_secrets SET secondary_secret = primary_secret, primary_secret = ?2, updated_at = ?3 WHERE tenant_id = ?1",
            params![id_blob(tenant.0), primary, now_ms as i64],
        )
        .map_err(map_err)?;
    if n == 0 {
        return Ok(None);
    }
    secrets(c, tenant)
}

pub(crate) fn delete_secrets(c: &Connection, tenant: TenantId) -> Result<bool> {
    let n = c
        .execute(
            "DELETE FROM webhook_secrets WHERE tenant_id = ?1",
            params![id_blob(tenant.0)],
        )
        .map_err(map_err)?;
    Ok(n > 0)
}
