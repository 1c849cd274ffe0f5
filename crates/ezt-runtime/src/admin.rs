//! Operator actions shared by the CLI and the first start: tenants and API keys.

use ezt_core::tier::Tier;
use ezt_core::{ApiKeyId, TenantId};
use ezt_store::{ApiKeyRecord, Store, Tenant};

use crate::clock::Clock;

/// Creates a tenant.
pub async fn create_tenant(
    store: &dyn Store,
    clock: &dyn Clock,
    name: &str,
    tier: Tier,
) -> ezt_store::Result<Tenant> {
    if name.is_empty()
        || name.len() > 64
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        return Err(ezt_store::Error::Conflict(
            "tenant names are 1-64 letters, digits, '-', '_' or '.'".into(),
        ));
    }
    let now = clock.now_ms();
    store
        .create_tenant(Tenant {
            id: TenantId::new(now, rand::random()),
            name: name.into(),
            tier,
            created_at: now,
        })
        .await
}

/// Creates an API key for a tenant; returns the key (shown once) and its record.
pub async fn create_key(
    store: &dyn Store,
    clock: &dyn Clock,
    tenant: TenantId,
) -> ezt_store::Result<(String, ApiKeyRecord)> {
    let key = ezt_core::api_key::generate(&mut rand::thread_rng());
    let now = clock.now_ms();
    let rec = ApiKeyRecord {
        id: ApiKeyId::new(now, rand::random()),
        tenant_id: tenant,
        digest: ezt_core::api_key::digest(&key),
        prefix: ezt_core::api_key::display_prefix(&key),
        created_at: now,
        revoked_at: None,
    };
    store.create_api_key(rec.clone()).await?;
    Ok((key, rec))
}

/// On an empty store, creates the `default` tenant and one key, returned so the caller can show
/// it once. `None` when tenants already exist.
pub async fn bootstrap(store: &dyn Store, clock: &dyn Clock) -> ezt_store::Result<Option<String>> {
    if !store.list_tenants().await?.is_empty() {
        return Ok(None);
    }
    let t = create_tenant(store, clock, "default", Tier::Paid).await?;
    Ok(Some(create_key(store, clock, t.id).await?.0))
}
