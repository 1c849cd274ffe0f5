//! The cluster's live members as the data path reads them (where to hand an attempt, a TORRENT
//! leg, a forwarded race): alive, not draining, re-read from the store at most every
//! [`TTL`], one cache per node shared by the job path and TORRENT.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use ezt_store::{NodeRecord, Store};
use tokio::time::Instant;

/// How long the list is reused before it is read again.
const TTL: Duration = Duration::from_millis(500);

/// Live members, cached.
pub struct LiveMembers {
    store: Arc<dyn Store>,
    cached: Mutex<Option<(Instant, Arc<Vec<NodeRecord>>)>>,
}

impl std::fmt::Debug for LiveMembers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveMembers").finish_non_exhaustive()
    }
}

impl LiveMembers {
    /// Members of the cluster `store` holds.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self {
            store,
            cached: Mutex::new(None),
        }
    }

    /// Forgets the list: the next read goes to the store (a hand-off to a listed node failed).
    pub fn forget(&self) {
        *self.cached.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// Members alive and not draining (this node included), read at most every 500 ms.
    pub async fn get(&self) -> Result<Arc<Vec<NodeRecord>>, ezt_store::Error> {
        if let Some((at, n)) = &*self.cached.lock().unwrap_or_else(|p| p.into_inner()) {
            if at.elapsed() < TTL {
                return Ok(n.clone());
            }
        }
        let fresh = Arc::new(
            self.store
                .nodes()
                .await?
                .into_iter()
                .filter(|n| n.alive && !n.draining)
                .collect::<Vec<_>>(),
        );
        *self.cached.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((Instant::now(), fresh.clone()));
        Ok(fresh)
    }
}
