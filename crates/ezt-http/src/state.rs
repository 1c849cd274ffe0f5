//! What every handler shares.

use std::sync::Arc;
use std::time::Duration;

use ezt_runtime::ttl_cache::TtlCache;
use ezt_runtime::Runtime;
use ezt_store::Tenant;

/// How long a verified API key is trusted without asking the store again: a revocation (which
/// may come from the CLI in another process) takes effect within this bound.
pub const AUTH_TTL: Duration = Duration::from_secs(1);

/// With store and forward, while the database is unreachable: how long ago a key must have
/// been verified on this node to keep admitting (a revocation made meanwhile is not seen).
pub const STALE_AUTH: Duration = Duration::from_secs(3600);

/// Recently verified keys: key digest → tenant, fresh for [`AUTH_TTL`].
pub type AuthCache = TtlCache<[u8; 32], Tenant>;

/// Shared state of the handlers: the runtime's services, and the edge's own API-key cache.
///
/// axum clones the state for every extractor of every request, so it is two `Arc`s: cloning the
/// runtime itself (a dozen `Arc`s and channel senders) showed up in the admission profile.
#[derive(Clone, Debug)]
pub struct AppState {
    /// The runtime (jobs service, store, lanes, events, metrics, configuration).
    pub rt: Arc<Runtime>,
    /// Recently verified API keys.
    pub auth: Arc<AuthCache>,
}

impl AppState {
    /// The state of an API over `rt`.
    pub fn new(rt: Runtime) -> Self {
        Self {
            rt: Arc::new(rt),
            auth: Arc::new(TtlCache::new(AUTH_TTL)),
        }
    }
}
