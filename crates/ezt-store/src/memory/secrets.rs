//! `SecretStore` in memory.

use async_trait::async_trait;
use ezt_core::TenantId;

use super::MemoryStore;
use crate::*;

#[async_trait]
impl SecretStore for MemoryStore {
    async fn put_webhook_secrets(&self, tenant: TenantId, secrets: WebhookSecrets) -> Result<()> {
        self.lock().secrets.insert(tenant, secrets);
        Ok(())
    }

    async fn webhook_secrets(&self, tenant: TenantId) -> Result<Option<WebhookSecrets>> {
        Ok(self.lock().secrets.get(&tenant).cloned())
    }

    async fn rotate_webhook_secret(
        &self,
        tenant: TenantId,
        primary: Vec<u8>,
        now_ms: u64,
    ) -> Result<Option<WebhookSecrets>> {
        let mut g = self.lock();
        let Some(s) = g.secrets.get_mut(&tenant) else {
            return Ok(None);
        };
        s.secondary = Some(std::mem::replace(&mut s.primary, primary));
        s.updated_at = now_ms;
        Ok(Some(s.clone()))
    }

    async fn delete_webhook_secrets(&self, tenant: TenantId) -> Result<bool> {
        Ok(self.lock().secrets.remove(&tenant).is_some())
    }

    async fn meta_get_or_init(&self, key: &str, init: Vec<u8>) -> Result<Vec<u8>> {
        Ok(self
            .lock()
            .meta
            .entry(key.to_string())
            .or_insert(init)
            .clone())
    }

    async fn meta_get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        Ok(self.lock().meta.get(key).cloned())
    }
}
