//! `TenantStore` in memory.

use async_trait::async_trait;
use ezt_core::{ApiKeyId, TenantId};

use super::MemoryStore;
use crate::*;

#[async_trait]
impl TenantStore for MemoryStore {
    async fn create_tenant(&self, tenant: Tenant) -> Result<Tenant> {
        let mut g = self.lock();
        if g.tenants.iter().any(|t| t.name == tenant.name) {
            return Err(Error::Conflict(format!("tenant {:?} exists", tenant.name)));
        }
        g.tenants.push(tenant.clone());
        Ok(tenant)
    }

    async fn list_tenants(&self) -> Result<Vec<Tenant>> {
        Ok(self.lock().tenants.clone())
    }

    async fn tenant_by_name(&self, name: &str) -> Result<Option<Tenant>> {
        Ok(self.lock().tenants.iter().find(|t| t.name == name).cloned())
    }

    async fn create_api_key(&self, key: ApiKeyRecord) -> Result<()> {
        self.lock().keys.push(key);
        Ok(())
    }

    async fn list_api_keys(&self, tenant: Option<TenantId>) -> Result<Vec<ApiKeyRecord>> {
        Ok(self
            .lock()
            .keys
            .iter()
            .filter(|k| tenant.is_none_or(|t| t == k.tenant_id))
            .cloned()
            .collect())
    }

    async fn revoke_api_key(&self, id: ApiKeyId, now_ms: u64) -> Result<()> {
        let mut g = self.lock();
        let k = g
            .keys
            .iter_mut()
            .find(|k| k.id == id)
            .ok_or(Error::NotFound)?;
        k.revoked_at.get_or_insert(now_ms);
        Ok(())
    }

    async fn authenticate(&self, digest: [u8; 32]) -> Result<Option<(Tenant, ApiKeyId)>> {
        let g = self.lock();
        let Some(k) = g.keys.iter().find(|k| {
            k.revoked_at.is_none() && ezt_core::api_key::digests_match(&k.digest, &digest)
        }) else {
            return Ok(None);
        };
        Ok(g.tenants
            .iter()
            .find(|t| t.id == k.tenant_id)
            .map(|t| (t.clone(), k.id)))
    }
}
