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
/// it once. `None` when tenants already exist — also when another node of a cluster, started at
/// the same moment on the same empty database, created `default` first (that node shows the
/// key; this one starts normally instead of failing on the name conflict).
pub async fn bootstrap(store: &dyn Store, clock: &dyn Clock) -> ezt_store::Result<Option<String>> {
    if !store.list_tenants().await?.is_empty() {
        return Ok(None);
    }
    let t = match create_tenant(store, clock, "default", Tier::Paid).await {
        Ok(t) => t,
        Err(ezt_store::Error::Conflict(_)) if !store.list_tenants().await?.is_empty() => {
            return Ok(None)
        }
        Err(e) => return Err(e),
    };
    Ok(Some(create_key(store, clock, t.id).await?.0))
}

/// The cluster's members as operators see them (`GET /admin/v1/nodes`, `ezthrottle nodes
/// list`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct NodesView {
    /// The node that answered.
    pub node: String,
    /// Whether this is a cluster (PostgreSQL) or a single node.
    pub clustered: bool,
    /// Every member the store knows, alive or not.
    pub nodes: Vec<ezt_store::NodeRecord>,
}

/// The members, as the answering node `me` sees them. A single node lists itself alone.
pub async fn nodes(
    store: &dyn Store,
    me: &crate::fence::NodeFence,
    region: &str,
    clock: &dyn Clock,
) -> ezt_store::Result<NodesView> {
    let nodes = if me.is_clustered() {
        store.nodes().await?
    } else {
        vec![ezt_store::NodeRecord {
            id: me.id().to_string(),
            epoch: 0,
            region: region.to_string(),
            advertise_url: None,
            version: env!("CARGO_PKG_VERSION").to_string(),
            started_at_ms: 0,
            expires_at_ms: clock.now_ms(),
            alive: true,
            draining: false,
            lanes: 0,
        }]
    };
    Ok(NodesView {
        node: me.id().to_string(),
        clustered: me.is_clustered(),
        nodes,
    })
}
