//! `TenantStore` on PostgreSQL: tenants and API keys.

use async_trait::async_trait;
use ezt_core::{ApiKeyId, TenantId};
use ezt_store::*;

use crate::codec::*;
use crate::PgStore;

#[async_trait]
impl TenantStore for PgStore {
    async fn create_tenant(&self, tenant: Tenant) -> Result<Tenant> {
        let c = self.client().await?;
        c.execute(
            "INSERT INTO tenants (id, name, tier, created_at) VALUES ($1, $2, $3, $4)",
            &[
                &id_bytes(tenant.id.0),
                &tenant.name,
                &tenant.tier.as_str(),
                &(tenant.created_at as i64),
            ],
        )
        .await
        .map_err(|e| match pg_err(e) {
            Error::Conflict(_) => Error::Conflict(format!("tenant {:?} exists", tenant.name)),
            other => other,
        })?;
        Ok(tenant)
    }

    async fn list_tenants(&self) -> Result<Vec<Tenant>> {
        let c = self.client().await?;
        let rows = c
            .query(
                "SELECT id, name, tier, created_at FROM tenants ORDER BY created_at, name",
                &[],
            )
            .await
            .map_err(pg_err)?;
        Ok(rows.iter().map(tenant_row).collect())
    }

    async fn tenant_by_name(&self, name: &str) -> Result<Option<Tenant>> {
        let c = self.client().await?;
        let row = c
            .query_opt(
                "SELECT id, name, tier, created_at FROM tenants WHERE name = $1",
                &[&name],
            )
            .await
            .map_err(pg_err)?;
        Ok(row.as_ref().map(tenant_row))
    }

    async fn create_api_key(&self, key: ApiKeyRecord) -> Result<()> {
        let c = self.client().await?;
        c.execute(
            "INSERT INTO api_keys (id, tenant_id, digest, prefix, created_at) VALUES ($1, $2, $3, $4, $5)",
            &[
                &id_bytes(key.id.0),
                &id_bytes(key.tenant_id.0),
                &key.digest.as_slice(),
                &key.prefix,
                &(key.created_at as i64),
            ],
        )
        .await
        .map_err(pg_err)?;
        Ok(())
    }

    async fn list_api_keys(&self, tenant: Option<TenantId>) -> Result<Vec<ApiKeyRecord>> {
        let c = self.client().await?;
        let rows = c
            .query(
                "SELECT id, tenant_id, digest, prefix, created_at, revoked_at FROM api_keys
                 WHERE ($1::bytea IS NULL OR tenant_id = $1) ORDER BY created_at, id",
                &[&tenant_param(tenant)],
            )
            .await
            .map_err(pg_err)?;
        Ok(rows.iter().map(key_row).collect())
    }

    async fn revoke_api_key(&self, id: ApiKeyId, now_ms: u64) -> Result<()> {
        let c = self.client().await?;
        let n = c
            .execute(
                "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, $2) WHERE id = $1",
                &[&id_bytes(id.0), &(now_ms as i64)],
            )
            .await
            .map_err(pg_err)?;
        if n == 0 {
            Err(Error::NotFound)
        } else {
            Ok(())
        }
    }

    async fn authenticate(&self, digest: [u8; 32]) -> Result<Option<(Tenant, ApiKeyId)>> {
        let c = self.client().await?;
        let st = c
            .prepare_cached(
                "SELECT t.id, t.name, t.tier, t.created_at, k.digest, k.id FROM api_keys k
                 JOIN tenants t ON t.id = k.tenant_id WHERE k.digest = $1 AND k.revoked_at IS NULL",
            )
            .await
            .map_err(pg_err)?;
        let row = c
            .query_opt(&st, &[&digest.as_slice()])
            .await
            .map_err(pg_err)?;
        Ok(row.and_then(|r| {
            let stored: [u8; 32] = r.get::<_, &[u8]>(4).try_into().ok()?;
            let key = ApiKeyId(bytes_id(r.get(5)));
            ezt_core::api_key::digests_match(&stored, &digest).then(|| (tenant_row(&r), key))
        }))
    }
}
