//! Secrets: each tenant's webhook signing secrets, and the installation's own (the
//! credential-fingerprint key) in a small key/value table.
//!
//! Apart because these are the only values the server seals before storing (the store never
//! sees them in clear), and because they change rarely and are read through a cache.

use async_trait::async_trait;
use ezt_core::TenantId;

use crate::{Result, WebhookSecrets};

/// Webhook signing secrets and installation secrets.
#[async_trait]
pub trait SecretStore: Send + Sync + 'static {
    /// Sets a tenant's signing secrets (sealed by the caller), replacing any.
    async fn put_webhook_secrets(&self, tenant: TenantId, secrets: WebhookSecrets) -> Result<()>;
    /// A tenant's signing secrets.
    async fn webhook_secrets(&self, tenant: TenantId) -> Result<Option<WebhookSecrets>>;
    /// Atomically makes `primary` the primary secret and the old primary the secondary; `None`
    /// when the tenant has no secrets yet.
    async fn rotate_webhook_secret(
        &self,
        tenant: TenantId,
        primary: Vec<u8>,
        now_ms: u64,
    ) -> Result<Option<WebhookSecrets>>;
    /// Deletes a tenant's secrets (webhooks go unsigned); whether there were any.
    async fn delete_webhook_secrets(&self, tenant: TenantId) -> Result<bool>;
    /// A value from the installation's small key/value table (e.g. the fingerprint secret),
    /// set to `init` atomically if absent, so every node (and the CLI) agrees on the first one.
    async fn meta_get_or_init(&self, key: &str, init: Vec<u8>) -> Result<Vec<u8>>;
    /// A value from that table, without setting it (e.g. a spooled job id's alias).
    async fn meta_get(&self, key: &str) -> Result<Option<Vec<u8>>>;
}
