//! `TenantStore` on SQLite: tenants and API keys.

use async_trait::async_trait;
use ezt_core::{ApiKeyId, TenantId};
use ezt_store::*;
use rusqlite::{params, OptionalExtension};

use crate::codec::*;
use crate::{tenant_clause, SqliteStore};

#[async_trait]
impl TenantStore for SqliteStore {
    async fn create_tenant(&self, tenant: Tenant) -> Result<Tenant> {
        self.write(move |c| {
            c.prepare_cached(
                "INSERT INTO tenants (id, name, tier, created_at) VALUES (?1, ?2, ?3, ?4)",
            )
            .and_then(|mut st| {
                st.execute(params![
                    id_blob(tenant.id.0),
                    tenant.name,
                    tenant.tier.as_str(),
                    tenant.created_at as i64
                ])
            })
            .map_err(|e| match map_err(e) {
                Error::Other(m) if m.contains("UNIQUE") => {
                    Error::Conflict(format!("tenant {:?} exists", tenant.name))
                }
                other => other,
            })?;
            Ok(tenant)
        })
        .await
    }

    async fn list_tenants(&self) -> Result<Vec<Tenant>> {
        self.read(|c| {
            let mut st = c
                .prepare_cached(
                    "SELECT id, name, tier, created_at FROM tenants ORDER BY created_at, name",
                )
                .map_err(map_err)?;
            let rows = st.query_map([], tenant_row).map_err(map_err)?;
            rows.map(|r| r.map_err(map_err)).collect()
        })
        .await
    }

    async fn tenant_by_name(&self, name: &str) -> Result<Option<Tenant>> {
        let name = name.to_string();
        self.read(move |c| {
            c.query_row(
                "SELECT id, name, tier, created_at FROM tenants WHERE name = ?1",
                params![name],
                tenant_row,
            )
            .optional()
            .map_err(map_err)
        })
        .await
    }

    async fn create_api_key(&self, key: ApiKeyRecord) -> Result<()> {
        self.write(move |c| {
            c.prepare_cached("INSERT INTO api_keys (id, tenant_id, digest, prefix, created_at) VALUES (?1, ?2, ?3, ?4, ?5)")
                .and_then(|mut st| {
                    st.execute(params![id_blob(key.id.0), id_blob(key.tenant_id.0), key.digest.to_vec(), key.prefix, key.created_at as i64])
                })
                .map_err(map_err)?;
            Ok(())
        })
        .await
    }

    async fn list_api_keys(&self, tenant: Option<TenantId>) -> Result<Vec<ApiKeyRecord>> {
        self.read(move |c| {
            let (clause, t) = tenant_clause(tenant);
            let sql = format!(
                "SELECT id, tenant_id, digest, prefix, created_at, revoked_at FROM api_keys WHERE ?1 = 1{clause} ORDER BY created_at, id"
            );
            let mut st = c.prepare_cached(&sql).map_err(map_err)?;
            let rows = st.query_map(params![1, t], key_row).map_err(map_err)?;
            rows.map(|r| r.map_err(map_err)).collect()
        })
        .await
    }

    async fn revoke_api_key(&self, id: ApiKeyId, now_ms: u64) -> Result<()> {
        self.write(move |c| {
            let n = c
                .execute(
                    "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, ?2) WHERE id = ?1",
                    params![id_blob(id.0), now_ms as i64],
                )
                .map_err(map_err)?;
            if n == 0 {
                Err(Error::NotFound)
            } else {
                Ok(())
            }
        })
        .await
    }

    async fn authenticate(&self, digest: [u8; 32]) -> Result<Option<(Tenant, ApiKeyId)>> {
        self.read(move |c| {
            let row = c
                .prepare_cached(
                    "SELECT k.digest, k.id, t.id, t.name, t.tier, t.created_at FROM api_keys k JOIN tenants t ON t.id = k.tenant_id
                     WHERE k.digest = ?1 AND k.revoked_at IS NULL",
                )
                .and_then(|mut st| {
                    st.query_row(params![digest.to_vec()], |r| {
                        let stored: Vec<u8> = r.get(0)?;
                        let key_id = ApiKeyId(blob_id(&r.get::<_, Vec<u8>>(1)?));
                        let tenant = Tenant {
                            id: TenantId(blob_id(&r.get::<_, Vec<u8>>(2)?)),
                            name: r.get(3)?,
                            tier: parse_tier(&r.get::<_, String>(4)?),
                            created_at: r.get::<_, i64>(5)? as u64,
                        };
                        Ok((stored, tenant, key_id))
                    })
                    .optional()
                })
                .map_err(map_err)?;
            Ok(row.and_then(|(stored, tenant, key_id)| {
                let stored: [u8; 32] = stored.try_into().ok()?;
                ezt_core::api_key::digests_match(&stored, &digest).then_some((tenant, key_id))
            }))
        })
        .await
    }
}
