//! `MaintenanceStore` on SQLite: the readiness probe, and retention (see `retention`).

use async_trait::async_trait;
use ezt_store::*;

use crate::codec::*;
use crate::{retention, SqliteStore};

#[async_trait]
impl MaintenanceStore for SqliteStore {
    async fn ping(&self) -> Result<()> {
        self.read(|c| c.query_row("SELECT 1", [], |_| Ok(())).map_err(map_err))
            .await?;
        if self.writer.failing() {
            // The last write failed for lack of space or I/O (reads still work): ready again
            // only once a write lands. The probe dirties a page and leaves no row behind.
            self.write(|c| {
                c.execute_batch(
                    "INSERT OR REPLACE INTO meta (key, value) VALUES ('ready_probe', x'00');
                     DELETE FROM meta WHERE key = 'ready_probe';",
                )
                .map_err(map_err)
            })
            .await?;
        }
        Ok(())
    }

    async fn purge_finished(&self, cutoffs: &PurgeCutoffs, limit: usize) -> Result<usize> {
        let cutoffs = cutoffs.clone();
        self.write(move |c| retention::purge(c, &cutoffs, limit))
            .await
    }
}
