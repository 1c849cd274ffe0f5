//! Wake-ups from other processes: the CLI's `jobs retry` re-queues a job and `jobs cancel`
//! creates deliveries in the store, and the running server has to learn of them.
//!
//! A [`Notifier`] yields the ids of jobs another process changed. The embedded store has no
//! push channel, so [`PollNotifier`] polls `take_wakeups` every second; a PostgreSQL backend can
//! implement the trait with LISTEN/NOTIFY without touching [`run`].

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use ezt_core::{JobId, TenantId};
use ezt_store::Store;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::followups::{Followups, Transition};

/// A source of "these jobs changed elsewhere".
pub trait Notifier: Send + 'static {
    /// Waits for the next batch of changed jobs (possibly empty); `None` when it has ended.
    fn next(&mut self) -> impl Future<Output = Option<Vec<JobId>>> + Send;
}

/// Polls the store's wake-up table.
pub struct PollNotifier {
    store: Arc<dyn Store>,
    tick: tokio::time::Interval,
}

impl PollNotifier {
    /// Polls `store` every `every`.
    pub fn new(store: Arc<dyn Store>, every: Duration) -> Self {
        Self {
            store,
            tick: tokio::time::interval(every),
        }
    }
}

impl std::fmt::Debug for PollNotifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PollNotifier").finish_non_exhaustive()
    }
}

impl Notifier for PollNotifier {
    async fn next(&mut self) -> Option<Vec<JobId>> {
        self.tick.tick().await;
        // A store error is a missed poll: the next one takes what is left.
        Some(self.store.take_wakeups().await.unwrap_or_default())
    }
}

/// Tenants' fair-share weights, by tenant.
pub(crate) async fn tenant_weights(
    cfg: &Config,
    store: &dyn Store,
) -> ezt_store::Result<HashMap<TenantId, u32>> {
    Ok(store
        .list_tenants()
        .await?
        .into_iter()
        .map(|t| (t.id, cfg.tiers.weight(t.tier)))
        .collect())
}

/// Hands what `notifier` reports to `followups` until `shutdown`.
pub async fn run(
    mut notifier: impl Notifier,
    cfg: Arc<Config>,
    store: Arc<dyn Store>,
    followups: Arc<Followups>,
    shutdown: CancellationToken,
) {
    loop {
        let ids = tokio::select! {
            _ = shutdown.cancelled() => return,
            ids = notifier.next() => match ids {
                Some(ids) => ids,
                None => return,
            },
        };
        if ids.is_empty() {
            continue;
        }
        let Ok(weights) = tenant_weights(&cfg, store.as_ref()).await else {
            continue;
        };
        let mut jobs = Vec::new();
        for id in ids {
            if let Ok(Some(j)) = store.get_job(None, id).await {
                let weight = weights.get(&j.tenant_id).copied().unwrap_or(1);
                jobs.push((j, weight));
            }
        }
        followups.after(Transition::Woken(jobs)).await;
    }
}
