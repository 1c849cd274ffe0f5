//! Retention: deletes finished jobs once they are older than the configured period (default
//! 7 days, per-tenant overrides), so the database stops growing at a steady job rate.
//!
//! Each pass deletes in batches of `retention.batch` jobs, one short write transaction each,
//! and pauses between batches: the store has one writer, and a long purge must not hold up
//! admissions, which share it.

use std::sync::Arc;
use std::time::Duration;

use ezt_store::{PurgeCutoffs, Store};

use crate::clock::Clock;
use crate::config::{parse_retention, RetentionConfig};
use tokio_util::sync::CancellationToken;

/// Pause between two batches of one pass: admissions queued meanwhile commit without waiting
/// behind the next batch.
const BETWEEN_BATCHES: Duration = Duration::from_millis(20);

/// Purges every `retention.interval` until `shutdown`.
pub async fn run(
    store: Arc<dyn Store>,
    cfg: RetentionConfig,
    clock: Arc<dyn Clock>,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(Duration::from_millis(cfg.interval_ms()));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Err(e) = pass(store.as_ref(), &cfg, clock.as_ref(), &shutdown).await {
            tracing::warn!(error = %e, "retention: purge failed; trying again next interval");
        }
    }
}

/// One pass: batches until nothing is due (or shutdown). Returns how many jobs went.
pub async fn pass(
    store: &dyn Store,
    cfg: &RetentionConfig,
    clock: &dyn Clock,
    shutdown: &CancellationToken,
) -> ezt_store::Result<usize> {
    let cutoffs = cutoffs(store, cfg, clock.now_ms()).await?;
    if cutoffs.latest().is_none() {
        return Ok(0);
    }
    let t0 = crate::clock::monotonic();
    let mut total = 0;
    loop {
        let n = store.purge_finished(&cutoffs, cfg.batch).await?;
        total += n;
        if n < cfg.batch || shutdown.is_cancelled() {
            break;
        }
        tokio::time::sleep(BETWEEN_BATCHES).await;
    }
    if total > 0 {
        tracing::info!(
            jobs = total,
            ms = t0.elapsed().as_millis() as u64,
            "retention: purged finished jobs"
        );
    }
    Ok(total)
}

/// Each tenant's cutoff at `now`: tenants named in `retention.tenants` get their own period
/// (names not yet created are skipped).
pub async fn cutoffs(
    store: &dyn Store,
    cfg: &RetentionConfig,
    now: u64,
) -> ezt_store::Result<PurgeCutoffs> {
    let at = |period: Option<u64>| period.map(|ms| now.saturating_sub(ms));
    let mut out = PurgeCutoffs {
        default: at(cfg.default_ms()),
        tenants: Vec::new(),
    };
    if cfg.tenants.is_empty() {
        return Ok(out);
    }
    for t in store.list_tenants().await? {
        if let Some(period) = cfg.tenants.get(&t.name) {
            out.tenants
                .push((t.id, at(parse_retention(period).ok().flatten())));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ezt_store::prelude::*;
    use ezt_store::{MemoryStore, Tenant};

    #[tokio::test]
    async fn cutoffs_follow_the_config_and_tenant_names() {
        let store = MemoryStore::new();
        for (id, name) in [(1, "a"), (2, "b"), (3, "c")] {
            store
                .create_tenant(Tenant {
                    id: ezt_core::TenantId(id),
                    name: name.into(),
                    tier: ezt_core::tier::Tier::Paid,
                    created_at: 1,
                })
                .await
                .unwrap();
        }
        let mut cfg = RetentionConfig::default();
        cfg.tenants.insert("a".into(), "30d".into());
        cfg.tenants.insert("b".into(), "never".into());
        cfg.tenants.insert("ghost".into(), "1h".into());
        let day = 86_400_000;
        let now = 100 * day;
        let c = cutoffs(&store, &cfg, now).await.unwrap();
        assert_eq!(c.of(ezt_core::TenantId(1)), Some(70 * day));
        assert_eq!(c.of(ezt_core::TenantId(2)), None);
        assert_eq!(c.of(ezt_core::TenantId(3)), Some(93 * day), "default 7d");
        cfg.finished_jobs = "never".into();
        cfg.tenants.clear();
        let c = cutoffs(&store, &cfg, now).await.unwrap();
        assert_eq!(c.latest(), None, "nothing is ever purged");
    }
}
