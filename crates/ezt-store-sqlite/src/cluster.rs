//! `ClusterStore` on SQLite: a one-member cluster. One data dir is one node (its lock file
//! says so), so membership and lane claims are kept in memory ([`SoloCluster`]); leases,
//! orphan lanes and dead holders read the file.

use async_trait::async_trait;
use ezt_store::*;
use rusqlite::params;

use crate::codec::*;
use crate::SqliteStore;

#[async_trait]
impl ClusterStore for SqliteStore {
    async fn join(&self, node: &NodeInfo, ttl_ms: u64) -> Result<u64> {
        self.solo.join(node, ttl_ms, SoloCluster::wall_ms())
    }

    async fn heartbeat(&self, id: &NodeId, epoch: u64, ttl_ms: u64) -> Result<bool> {
        Ok(self
            .solo
            .heartbeat(id, epoch, ttl_ms, SoloCluster::wall_ms()))
    }

    async fn drain(&self, id: &NodeId, epoch: u64) -> Result<()> {
        self.solo.drain(id, epoch);
        Ok(())
    }

    async fn leave(&self, id: &NodeId, epoch: u64) -> Result<()> {
        self.solo.leave(id, epoch, SoloCluster::wall_ms());
        Ok(())
    }

    async fn nodes(&self) -> Result<Vec<NodeRecord>> {
        Ok(self.solo.nodes(SoloCluster::wall_ms()))
    }

    async fn forget_dead_nodes(&self, older_than_ms: u64) -> Result<u64> {
        Ok(self
            .solo
            .forget_dead_nodes(older_than_ms, SoloCluster::wall_ms()))
    }

    async fn claim_lane(
        &self,
        id: &NodeId,
        epoch: u64,
        lane: &str,
        take: bool,
    ) -> Result<LaneClaim> {
        let state = self.lane_state(lane).await?;
        Ok(self
            .solo
            .claim_lane(id, epoch, lane, take, state, SoloCluster::wall_ms()))
    }

    async fn release_lanes(&self, id: &NodeId, epoch: u64, lanes: &[String]) -> Result<()> {
        self.solo.release_lanes(id, epoch, lanes);
        Ok(())
    }

    async fn lane_owners(&self, lanes: &[String]) -> Result<Vec<LaneOwner>> {
        Ok(self.solo.lane_owners(lanes, SoloCluster::wall_ms()))
    }

    async fn orphan_lanes(&self, prefix: &str, _thorough: bool) -> Result<Vec<String>> {
        let prefix = prefix.to_string();
        let lanes: Vec<String> = self
            .read(move |c| {
                let mut st = c
                    .prepare_cached(
                        "SELECT DISTINCT lane FROM jobs
                         WHERE state IN ('queued', 'scheduled') AND lease_token IS NULL",
                    )
                    .map_err(map_err)?;
                let rows = st
                    .query_map([], |r| r.get::<_, String>(0))
                    .map_err(map_err)?
                    .collect::<std::result::Result<Vec<_>, _>>()
                    .map_err(map_err)?;
                Ok(rows.into_iter().map(|l| format!("{prefix}{l}")).collect())
            })
            .await?;
        let now = SoloCluster::wall_ms();
        Ok(lanes
            .into_iter()
            .filter(|l| !self.solo.owned(l, now))
            .collect())
    }

    async fn owned_lanes(&self, id: &NodeId, epoch: u64) -> Result<Vec<(String, u64)>> {
        Ok(self.solo.owned_lanes(id, epoch))
    }

    async fn waiting_jobs(&self, prefix: &str, lanes: &[String]) -> Result<Vec<PendingJob>> {
        let keys: Vec<String> = lanes
            .iter()
            .filter_map(|l| l.strip_prefix(prefix).map(str::to_string))
            .collect();
        self.read(move |c| {
            let mut st = c
                .prepare_cached(
                    "SELECT id, tenant_id, lane, run_at, deadline_at FROM jobs
                     WHERE state IN ('queued', 'scheduled') AND lease_token IS NULL AND lane = ?1
                     ORDER BY id",
                )
                .map_err(map_err)?;
            let mut out = Vec::new();
            for k in &keys {
                let rows = st
                    .query_map(params![k], |r| {
                        Ok(PendingJob {
                            id: ezt_core::JobId(blob_id(&r.get::<_, Vec<u8>>(0)?)),
                            tenant_id: ezt_core::TenantId(blob_id(&r.get::<_, Vec<u8>>(1)?)),
                            lane: ezt_core::lane::LaneKey(r.get(2)?),
                            run_at: r.get::<_, i64>(3)? as u64,
                            deadline_at: r.get::<_, i64>(4)? as u64,
                        })
                    })
                    .map_err(map_err)?;
                for r in rows {
                    out.push(r.map_err(map_err)?);
                }
            }
            Ok(out)
        })
        .await
    }

    async fn dead_holders(&self) -> Result<Vec<NodeId>> {
        let holders: Vec<String> = self
            .read(|c| {
                let mut st = c
                    .prepare_cached(
                        "SELECT lease_holder FROM jobs WHERE lease_token IS NOT NULL AND lease_holder IS NOT NULL
                         UNION SELECT lease_holder FROM webhook_deliveries
                         WHERE lease_token IS NOT NULL AND lease_holder IS NOT NULL",
                    )
                    .map_err(map_err)?;
                let rows = st
                    .query_map([], |r| r.get::<_, String>(0))
                    .map_err(map_err)?
                    .collect::<std::result::Result<Vec<_>, _>>()
                    .map_err(map_err)?;
                Ok(rows)
            })
            .await?;
        let now = SoloCluster::wall_ms();
        Ok(holders
            .into_iter()
            .filter(|h| !self.solo.is_live(h, now))
            .map(NodeId::new)
            .collect())
    }

    async fn notify_lane(&self, _lane: &str) -> Result<()> {
        Ok(())
    }

    async fn unlease(&self, job: ezt_core::JobId, token: u64) -> Result<bool> {
        self.write(move |c| {
            c.execute(
                "UPDATE jobs SET state = 'queued', attempt_count = attempt_count - 1,
                 lease_token = NULL, lease_expires_at = NULL, lease_holder = NULL
                 WHERE id = ?1 AND state = 'running' AND lease_token = ?2",
                params![id_blob(job.0), token as i64],
            )
            .map(|n| n == 1)
            .map_err(map_err)
        })
        .await
    }
}
