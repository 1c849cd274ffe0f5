//! Recovery (`JobStore::recover`): releasing one holder's leases and listing the work no one
//! holds. Only the given holder's leases are touched, so in a cluster a node recovering a dead
//! peer leaves the live nodes' running attempts and deliveries alone.

use deadpool_postgres::GenericClient;
use ezt_core::{DeliveryId, JobId, TenantId};
use ezt_store::*;

use crate::codec::*;

/// Releases `holder`'s job and delivery leases inside the caller's transaction. Each released
/// job gets its `interrupted` attempt (number and time from its lease) and goes back to
/// `queued` (or `scheduled` if its next run is still ahead). Returns the pending deliveries no
/// one holds now, and the lanes (keys) whose jobs went back to waiting with the lowest and
/// highest of their ids (their owners are told: the ids are older than what an owner reads as
/// new).
pub(crate) async fn release(
    c: &impl GenericClient,
    holder: &str,
    now_ms: u64,
    region: &str,
) -> Result<(Vec<PendingDelivery>, Vec<(String, (JobId, JobId))>)> {
    let cut = c
        .query(
            // SKIP LOCKED: a row locked by a paused node's open transaction (a zombie stopped
            // mid-write) must not hold up the recovery of everything else; the server ends such
            // a transaction (`idle_in_transaction_session_timeout`) and a later sweep takes it.
            "SELECT id, attempt_count, series, updated_at, lane FROM jobs
             WHERE state = 'running' AND lease_holder = $1 FOR UPDATE SKIP LOCKED",
            &[&holder],
        )
        .await
        .map_err(pg_err)?;
    let mut released: std::collections::BTreeMap<String, (JobId, JobId)> = Default::default();
    for r in &cut {
        let id = JobId(bytes_id(r.get(0)));
        released
            .entry(r.get(4))
            .and_modify(|(lo, hi)| (*lo, *hi) = ((*lo).min(id), (*hi).max(id)))
            .or_insert((id, id));
    }
    if !cut.is_empty() {
        let mut ids = Vec::with_capacity(cut.len());
        let mut ns = Vec::with_capacity(cut.len());
        let mut data = Vec::with_capacity(cut.len());
        for r in &cut {
            let n = r.get::<_, i32>(1);
            let a = Attempt::interrupted(
                n as u32,
                r.get::<_, i32>(2) as u32,
                r.get::<_, i64>(3) as u64,
                region,
            );
            ids.push(r.get::<_, Vec<u8>>(0));
            ns.push(n);
            data.push(json_encode(&a)?);
        }
        // `lease_expires_at` stays: the cut-off call may still be running at its target, so a
        // lane's adopter counts it as in flight until then (`ClusterStore::claim_lane`).
        // An attempt already recorded under that number wins.
        c.execute(
            "INSERT INTO attempts (job_id, n, data) SELECT * FROM unnest($1::bytea[], $2::int4[], $3::text[])
             ON CONFLICT (job_id, n) DO NOTHING",
            &[&ids, &ns, &data],
        )
        .await
        .map_err(pg_err)?;
        c.execute(
            "UPDATE jobs SET state = CASE WHEN run_at > $1 THEN 'scheduled' ELSE 'queued' END,
             lease_token = NULL, lease_holder = NULL
             WHERE id = ANY($3) AND state = 'running' AND lease_holder = $2",
            &[&(now_ms as i64), &holder, &ids],
        )
        .await
        .map_err(pg_err)?;
    }
    c.execute(
        "UPDATE webhook_deliveries SET lease_token = NULL, lease_holder = NULL
         WHERE id IN (SELECT id FROM webhook_deliveries
                      WHERE state = 'pending' AND lease_token IS NOT NULL AND lease_holder = $1
                      FOR UPDATE SKIP LOCKED)",
        &[&holder],
    )
    .await
    .map_err(pg_err)?;
    let rows = c
        .query(
            "SELECT id, tenant_id, url, COALESCE(next_at, created_at) FROM webhook_deliveries
             WHERE state = 'pending' AND lease_token IS NULL ORDER BY id",
            &[],
        )
        .await
        .map_err(pg_err)?;
    let deliveries = rows
        .iter()
        .map(|r| PendingDelivery {
            id: DeliveryId(bytes_id(r.get(0))),
            tenant_id: TenantId(bytes_id(r.get(1))),
            url: r.get(2),
            next_at: r.get::<_, i64>(3) as u64,
        })
        .collect();
    Ok((deliveries, released.into_iter().collect()))
}

/// Jobs not yet final that no one holds (a job running under a live holder's lease is that
/// holder's until it completes or the holder is recovered).
pub(crate) async fn waiting_jobs(c: &impl GenericClient) -> Result<Vec<PendingJob>> {
    let rows = c
        .query(
            "SELECT id, tenant_id, lane, run_at, deadline_at FROM jobs
             WHERE state IN ('queued', 'scheduled', 'running') AND lease_token IS NULL ORDER BY id",
            &[],
        )
        .await
        .map_err(pg_err)?;
    Ok(rows
        .iter()
        .map(|r| PendingJob {
            id: JobId(bytes_id(r.get(0))),
            tenant_id: TenantId(bytes_id(r.get(1))),
            lane: ezt_core::lane::LaneKey(r.get(2)),
            run_at: r.get::<_, i64>(3) as u64,
            deadline_at: r.get::<_, i64>(4) as u64,
        })
        .collect())
}
