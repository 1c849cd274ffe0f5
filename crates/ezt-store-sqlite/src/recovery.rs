//! Recovery (`JobStore::recover`): releasing one holder's leases, and listing the work no one
//! holds so the schedulers can rebuild their indexes.
//!
//! Only the given holder's leases are touched. A single node passes its own id at start-up
//! (the data dir is locked, so its previous run is dead); a cluster node would pass a dead
//! peer's, leaving live nodes' running attempts and deliveries alone.

use ezt_core::{DeliveryId, JobId, TenantId};
use ezt_store::*;
use rusqlite::{params, Connection};

use crate::codec::*;

/// Releases `holder`'s job and delivery leases in the writer's transaction, so a crash during
/// recovery leaves all of them held or all released. Each released job gets its `interrupted`
/// attempt and goes back to `queued` (or `scheduled` if its next run is still ahead). Returns
/// the pending deliveries no one holds now.
pub(crate) fn release(
    c: &Connection,
    holder: &str,
    now_ms: u64,
    region: &str,
) -> Result<Vec<PendingDelivery>> {
    record_interrupted(c, holder, region)?;
    c.execute(
        "UPDATE jobs SET state = CASE WHEN run_at > ?1 THEN 'scheduled' ELSE 'queued' END,
         lease_token = NULL, lease_expires_at = NULL, lease_holder = NULL
         WHERE state = 'running' AND lease_holder = ?2",
        params![now_ms as i64, holder],
    )
    .map_err(map_err)?;
    c.execute(
        "UPDATE webhook_deliveries SET lease_token = NULL, lease_holder = NULL
         WHERE state = 'pending' AND lease_token IS NOT NULL AND lease_holder = ?1",
        params![holder],
    )
    .map_err(map_err)?;
    let mut st = c
        .prepare(
            "SELECT id, tenant_id, url, COALESCE(next_at, created_at) FROM webhook_deliveries
             WHERE state = 'pending' AND lease_token IS NULL ORDER BY id",
        )
        .map_err(map_err)?;
    let rows = st
        .query_map([], |r| {
            Ok(PendingDelivery {
                id: DeliveryId(blob_id(&r.get::<_, Vec<u8>>(0)?)),
                tenant_id: TenantId(blob_id(&r.get::<_, Vec<u8>>(1)?)),
                url: r.get(2)?,
                next_at: r.get::<_, i64>(3)? as u64,
            })
        })
        .map_err(map_err)?;
    rows.map(|r| r.map_err(map_err)).collect()
}

/// Jobs not yet final that no one holds (a job running under a live holder's lease is that
/// holder's until it completes or the holder is recovered).
pub(crate) fn waiting_jobs(c: &Connection) -> Result<Vec<PendingJob>> {
    // The state list matches the `jobs_pending` partial index; a lease token means "held".
    let mut st = c
        .prepare(
            "SELECT id, tenant_id, lane, run_at, deadline_at FROM jobs
             WHERE state IN ('queued', 'scheduled', 'running') AND lease_token IS NULL ORDER BY id",
        )
        .map_err(map_err)?;
    let rows = st
        .query_map([], |r| {
            Ok(PendingJob {
                id: JobId(blob_id(&r.get::<_, Vec<u8>>(0)?)),
                tenant_id: TenantId(blob_id(&r.get::<_, Vec<u8>>(1)?)),
                lane: ezt_core::lane::LaneKey(r.get(2)?),
                run_at: r.get::<_, i64>(3)? as u64,
                deadline_at: r.get::<_, i64>(4)? as u64,
            })
        })
        .map_err(map_err)?;
    rows.map(|r| r.map_err(map_err)).collect()
}

/// Records an `interrupted` attempt for every job `holder` left `running` (same transaction as
/// the release). `INSERT OR IGNORE`: an attempt already recorded under that number wins.
fn record_interrupted(c: &Connection, holder: &str, region: &str) -> Result<()> {
    let cut: Vec<(Vec<u8>, u32, u32, u64)> = {
        let mut st = c
            .prepare(
                "SELECT id, attempt_count, series, updated_at FROM jobs
                 WHERE state = 'running' AND lease_holder = ?1",
            )
            .map_err(map_err)?;
        let rows = st
            .query_map(params![holder], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get::<_, i64>(3)? as u64))
            })
            .map_err(map_err)?;
        rows.collect::<rusqlite::Result<_>>().map_err(map_err)?
    };
    for (id, n, series, at) in cut {
        let data = json_encode(&Attempt::interrupted(n, series, at, region))?;
        c.prepare_cached("INSERT OR IGNORE INTO attempts (job_id, n, data) VALUES (?1, ?2, ?3)")
            .and_then(|mut st| st.execute(params![id, n, data]))
            .map_err(map_err)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use ezt_core::{JobId, JobState};
    use ezt_store::prelude::*;
    use ezt_store::NodeId;

    use crate::SqliteStore;

    /// A file written before leases had holders, left with a job running (a crash), is
    /// upgraded so that the single node's recovery still releases that lease.
    #[tokio::test]
    async fn leases_from_before_holders_belong_to_the_single_node() {
        let dir = std::env::temp_dir().join(format!(
            "ezt-holder-migration-{}-{}",
            std::process::id(),
            rand_nanos()
        ));
        let db = dir.join("t.db");
        let id = JobId::new(100, 1);
        {
            let s = SqliteStore::open(&db).unwrap();
            s.insert_jobs(vec![ezt_store::conformance::new_job(1, 1, "k", 100)], 1)
                .await
                .unwrap();
            let lease = ezt_store::Lease {
                token: 7,
                now_ms: 110,
                expires_at: 999,
                holder: NodeId::local(),
                fence: None,
            };
            s.lease(id, lease).await.unwrap().unwrap();
        }
        // Back to the schema version before holders: the holder column (and what later
        // migrations added) gone, the lease kept.
        let version = holder_migration();
        let c = rusqlite::Connection::open(&db).unwrap();
        c.execute_batch(&format!(
            "ALTER TABLE jobs DROP COLUMN lease_holder;
             ALTER TABLE webhook_deliveries DROP COLUMN lease_holder;
             ALTER TABLE webhook_deliveries DROP COLUMN regions;
             DROP TABLE IF EXISTS workflows;
             PRAGMA user_version = {version};"
        ))
        .unwrap();
        drop(c);

        let s = SqliteStore::open(&db).unwrap();
        let rec = s.recover(&NodeId::local(), 200, "here").await.unwrap();
        assert_eq!(rec.jobs.iter().map(|p| p.id).collect::<Vec<_>>(), vec![id]);
        let got = s.get_job(None, id).await.unwrap().unwrap();
        assert_eq!(got.state, JobState::Queued);
        assert_eq!(got.attempts.len(), 1, "the cut-off attempt is recorded");
        std::fs::remove_dir_all(&dir).ok();
    }

    /// The upgrade hands old leases to the id the single node leases under.
    #[test]
    fn the_migration_names_the_local_node() {
        let m = crate::schema::MIGRATIONS[holder_migration()];
        assert!(m.contains(&format!("lease_holder = '{}'", NodeId::LOCAL)));
    }

    /// Index of the migration that added lease holders.
    fn holder_migration() -> usize {
        crate::schema::MIGRATIONS
            .iter()
            .position(|m| m.contains("ADD COLUMN lease_holder"))
            .expect("the holder migration")
    }

    fn rand_nanos() -> u128 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    }
}
