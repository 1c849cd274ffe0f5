//! `ClusterStore` in memory: a one-member cluster ([`SoloCluster`]).

use async_trait::async_trait;
use ezt_core::JobState;

use super::MemoryStore;
use crate::*;

#[async_trait]
impl ClusterStore for MemoryStore {
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
        let state = self.lock().lane_states.get(lane).cloned();
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
        let now = SoloCluster::wall_ms();
        let g = self.lock();
        let mut out: Vec<String> = g
            .jobs
            .values()
            .filter(|j| {
                matches!(j.state, JobState::Queued | JobState::Scheduled)
                    && !g.leases.contains_key(&j.id)
            })
            .map(|j| format!("{prefix}{}", j.lane.0))
            .collect();
        drop(g);
        out.sort();
        out.dedup();
        out.retain(|l| !self.solo.owned(l, now));
        Ok(out)
    }

    async fn owned_lanes(&self, id: &NodeId, epoch: u64) -> Result<Vec<(String, u64)>> {
        Ok(self.solo.owned_lanes(id, epoch))
    }

    async fn waiting_jobs(&self, prefix: &str, lanes: &[String]) -> Result<Vec<PendingJob>> {
        let g = self.lock();
        Ok(g.jobs
            .values()
            .filter(|j| {
                matches!(j.state, JobState::Queued | JobState::Scheduled)
                    && !g.leases.contains_key(&j.id)
                    && lanes
                        .iter()
                        .any(|l| l.strip_prefix(prefix) == Some(j.lane.0.as_str()))
            })
            .map(|j| PendingJob {
                id: j.id,
                tenant_id: j.tenant_id,
                lane: j.lane.clone(),
                run_at: j.run_at,
                deadline_at: j.deadline_at,
            })
            .collect())
    }

    async fn dead_holders(&self) -> Result<Vec<NodeId>> {
        let now = SoloCluster::wall_ms();
        let g = self.lock();
        let mut out: Vec<NodeId> = g
            .leases
            .values()
            .map(|(_, h)| h.clone())
            .chain(g.delivery_leases.values().map(|(_, h)| h.clone()))
            .filter(|h| !self.solo.is_live(h.as_str(), now))
            .collect();
        out.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        out.dedup();
        Ok(out)
    }

    async fn notify_lane(&self, _lane: &str) -> Result<()> {
        Ok(())
    }

    async fn unlease(&self, job: ezt_core::JobId, token: u64) -> Result<bool> {
        let mut g = self.lock();
        if g.leases.get(&job).map(|(t, _)| *t) != Some(token) {
            return Ok(false);
        }
        g.leases.remove(&job);
        let j = g.jobs.get_mut(&job).expect("leased job exists");
        j.state = JobState::Queued;
        j.attempt_count = j.attempt_count.saturating_sub(1);
        Ok(true)
    }
}
