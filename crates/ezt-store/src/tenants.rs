//! Tenants and their API keys: who may call, and as whom.
//!
//! Apart from the jobs because it is read on every request (`authenticate`) but written only by
//! an operator, and because a cluster may keep it in a different place (or cache it harder)
//! than the hot job tables.

use async_trait::async_trait;
use ezt_core::{ApiKeyId, TenantId};

use crate::{ApiKeyRecord, Result, Tenant};

/// Tenants, API keys and authentication.
#[async_trait]
pub trait TenantStore: Send + Sync + 'static {
    /// Creates a tenant; `Conflict` if the name is taken.
    async fn create_tenant(&self, tenant: Tenant) -> Result<Tenant>;
    /// All tenants, oldest first.
    async fn list_tenants(&self) -> Result<Vec<Tenant>>;
    /// One tenant by name.
    async fn tenant_by_name(&self, name: &str) -> Result<Option<Tenant>>;
    /// Stores a new key (its digest only).
    async fn create_api_key(&self, key: ApiKeyRecord) -> Result<()>;
    /// Keys, all or of one tenant, oldest first.
    async fn list_api_keys(&self, tenant: Option<TenantId>) -> Result<Vec<ApiKeyRecord>>;
    /// Revokes a key; `NotFound` if there is none with that id.
    async fn revoke_api_key(&self, id: ApiKeyId, now_ms: u64) -> Result<()>;
    /// The tenant of an active (unrevoked) key with this digest.
    async fn authenticate(&self, digest: [u8; 32]) -> Result<Option<(Tenant, ApiKeyId)>>;
}
