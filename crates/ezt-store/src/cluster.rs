//! Cluster membership and lane ownership (issue 13): node leases with epochs on the database's
//! clock, lane claims with a fencing epoch, and what an adopter needs to carry on a lane.
//!
//! On PostgreSQL this is shared by every node. The embedded backends (SQLite, memory) are a
//! one-member cluster ([`SoloCluster`]): the same answers, kept in memory, with the process's
//! own clock standing in for the database's.

use async_trait::async_trait;
use serde::Serialize;

use crate::{LaneState, NodeId, Result};

/// What a node says about itself when it joins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    /// Its id.
    pub id: NodeId,
    /// Its region.
    pub region: String,
    /// How other nodes reach it, if set.
    pub advertise_url: Option<String>,
    /// Its version.
    pub version: String,
}

/// A member as the store sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeRecord {
    /// Its id.
    pub id: String,
    /// Its current membership's epoch (new at every join).
    pub epoch: u64,
    /// Its region.
    pub region: String,
    /// How other nodes reach it.
    pub advertise_url: Option<String>,
    /// Its version.
    pub version: String,
    /// When it joined (database time, ms).
    pub started_at_ms: u64,
    /// Until when its lease holds (database time, ms).
    pub expires_at_ms: u64,
    /// Whether its lease holds now (database time).
    pub alive: bool,
    /// Shutting down: it owns no lanes and takes none, but finishes its calls in flight.
    pub draining: bool,
    /// Lanes it owns.
    pub lanes: u64,
}

/// The fencing check an attempt lease is conditional on: the lane is still owned by the
/// leasing node under this lane epoch, and the node's own lease (this node epoch) holds on the
/// database's clock. A node that lost either leases nothing, so it sends nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    /// The lane's stored name (`job:` + lane key).
    pub lane: String,
    /// The lane epoch the node claimed it under.
    pub lane_epoch: u64,
    /// The node's membership epoch.
    pub node_epoch: u64,
}

/// What a node learns when it owns a lane (claimed now, or already its own).
#[derive(Debug, Clone, PartialEq)]
pub struct OwnedLane {
    /// The fencing token of this ownership; grows on every change of owner.
    pub lane_epoch: u64,
    /// What the lane learned (written through by earlier owners).
    pub state: Option<LaneState>,
    /// How much of a Retry-After pause is left, computed on the database clock (so a node with
    /// a skewed clock neither ends it early nor stretches it).
    pub pause_left_ms: Option<u64>,
    /// Attempts of this lane still running under other owners' leases (not yet completed, lease
    /// not expired): for each, how long until its lease expires. The new owner counts them as in
    /// flight until then.
    pub foreign_in_flight_ms: Vec<u64>,
    /// How long ago (database time) each attempt of the recent past was leased in this lane: the
    /// ledger the new owner rebuilds its limiter from.
    pub ledger_ages_ms: Vec<u64>,
}

/// The answer to a claim.
#[derive(Debug, Clone, PartialEq)]
pub enum LaneClaim {
    /// This node owns the lane now.
    Owned(Box<OwnedLane>),
    /// Another live node owns it (or it is free and the caller did not take it: `owner` None).
    Elsewhere {
        /// The live owner, if any.
        owner: Option<String>,
    },
}

/// A lane's owner as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LaneOwner {
    /// Stored lane name.
    pub lane: String,
    /// Owner node id (None: free).
    pub owner_node: Option<String>,
    /// The owner's epoch when it claimed.
    pub owner_node_epoch: Option<u64>,
    /// Fencing epoch.
    pub lane_epoch: u64,
    /// Whether the owner's lease holds now.
    pub owner_alive: bool,
}

/// A lane as the shared store sees it: who dispatches it, what it learned, its queue. Read by
/// any node, so every node answers the same view (`GET /api/v1/lanes` in cluster mode).
#[derive(Debug, Clone, PartialEq)]
pub struct LaneRow {
    /// Stored name (`prefix` + key).
    pub lane: String,
    /// The live owner, if any.
    pub owner_node: Option<String>,
    /// Its fencing epoch (0: never claimed).
    pub lane_epoch: u64,
    /// What it learned, as last written through (None: nothing yet: the configured limits).
    pub state: Option<LaneState>,
    /// Whether the stored pause is still in force on the database clock.
    pub paused: bool,
    /// Jobs waiting in it now (queued, not leased).
    pub queued: u64,
    /// Attempts running in it now (leased).
    pub running: u64,
}

/// The lane-notification payload that says the members changed (one joined, is draining or
/// left): every node re-reads them at once, so claims place lanes over the members as they
/// are, not as the last sweep (up to a second ago) read them.
pub const MEMBERS_MESSAGE: &str = "members";

/// The lane-notification payload that tells a lane's owner of new work in `lane` (stored
/// name), its job ids between `floor` and `ceiling`: the owner reads just that range of the
/// lane's waiting work, so work whose id is old (a child of an old job, a spooled job forwarded
/// late, a lease recovered, a job named by a clock behind) is found at once, and work it has
/// read already is not read again.
pub fn work_message(
    lane: &str,
    floor: impl std::fmt::Display,
    ceiling: impl std::fmt::Display,
) -> String {
    format!("{lane}\t{floor}\t{ceiling}")
}

/// A [`work_message`]'s lane, floor and ceiling.
pub fn parse_work_message(payload: &str) -> Option<(&str, ezt_core::JobId, ezt_core::JobId)> {
    let (lane, range) = payload.split_once('\t')?;
    let (floor, ceiling) = range.split_once('\t')?;
    Some((lane, floor.parse().ok()?, ceiling.parse().ok()?))
}

/// The lane-notification payload that tells a lane's owner a tenant pinned the lane on
/// another node (an empty pin: unpinned); see [`parse_pin_message`].
pub fn pin_message(lane: &str, pin: &crate::LanePin) -> Result<String> {
    Ok(format!("pin\t{lane}\t{}", crate::codec::json_encode(pin)?))
}

/// A lane notification's pin: `(lane, pin)` if the payload is a [`pin_message`].
pub fn parse_pin_message(payload: &str) -> Option<(String, crate::LanePin)> {
    let rest = payload.strip_prefix("pin\t")?;
    let (lane, json) = rest.split_once('\t')?;
    Some((lane.to_string(), serde_json::from_str(json).ok()?))
}

/// Cluster membership and lane ownership.
#[async_trait]
pub trait ClusterStore: Send + Sync + 'static {
    /// Joins with a new epoch and a lease of `ttl_ms` (database time). `Conflict` when a live
    /// node already has this id (two processes must not share one).
    async fn join(&self, node: &NodeInfo, ttl_ms: u64) -> Result<u64>;
    /// Extends the lease by `ttl_ms` from the database's now. `false`: this membership has been
    /// declared dead (the lease expired, or a newer epoch joined): stop and rejoin.
    async fn heartbeat(&self, id: &NodeId, epoch: u64, ttl_ms: u64) -> Result<bool>;
    /// Starts a graceful hand-over: releases this membership's lanes (others may claim them
    /// at once) and marks it draining; the lease keeps holding (heartbeats go on) so that its
    /// calls in flight can still record their outcome.
    async fn drain(&self, id: &NodeId, epoch: u64) -> Result<()>;
    /// Leaves: releases this membership's lanes and ends the lease.
    async fn leave(&self, id: &NodeId, epoch: u64) -> Result<()>;
    /// Every member, alive or not, by id.
    async fn nodes(&self) -> Result<Vec<NodeRecord>>;
    /// The shared view of lanes (stored names starting with `prefix`), by name: with a tenant,
    /// the lanes it has work in (waiting or running, or updated at or after `active_since_ms`);
    /// without, every lane with a row. `Ok(None)`: this store has no shared view (one node:
    /// the node's memory is the view).
    async fn lane_rows(
        &self,
        prefix: &str,
        tenant: Option<ezt_core::TenantId>,
        active_since_ms: u64,
    ) -> Result<Option<Vec<LaneRow>>> {
        let _ = (prefix, tenant, active_since_ms);
        Ok(None)
    }
    /// Deletes the rows of members whose lease expired at least `older_than_ms` ago (database
    /// time); answers how many. Epochs stay monotonic: a node id that joins again later gets
    /// a larger epoch than any it had.
    async fn forget_dead_nodes(&self, older_than_ms: u64) -> Result<u64>;
    /// Claims `lane` for this membership when it is free, its owner's lease has expired, or it
    /// is this node's under an older epoch, and `take` is set; answers what the owner needs.
    /// A lane this membership already owns answers `Owned` with its current epoch.
    async fn claim_lane(
        &self,
        id: &NodeId,
        epoch: u64,
        lane: &str,
        take: bool,
    ) -> Result<LaneClaim>;
    /// Gives up lanes this membership owns.
    async fn release_lanes(&self, id: &NodeId, epoch: u64, lanes: &[String]) -> Result<()>;
    /// Owners of the given lanes (unknown lanes are free, epoch 0).
    async fn lane_owners(&self, lanes: &[String]) -> Result<Vec<LaneOwner>>;
    /// Lanes (stored names, `prefix` + key) that have waiting jobs (queued or scheduled, not
    /// leased) and no live owner. `thorough`: every lane with waiting jobs is considered (a read
    /// of every waiting job); else a backend may consider only the lanes it has a row for (a
    /// lane gets one when it is first claimed or asked for, which admission does at once): a
    /// read of the lanes, not of the whole backlog. A lane whose work was committed but never
    /// asked for (its admitting node died in between) is found by a thorough call.
    async fn orphan_lanes(&self, prefix: &str, thorough: bool) -> Result<Vec<String>>;
    /// Lanes (stored names) this membership owns, each with its lane epoch (a new epoch: the
    /// lane was claimed again, and its owner reads its whole backlog afresh).
    async fn owned_lanes(&self, id: &NodeId, epoch: u64) -> Result<Vec<(String, u64)>>;
    /// Waiting jobs (queued or scheduled, not leased) of the given lanes (stored names,
    /// `prefix` + key), for their owner's index.
    async fn waiting_jobs(&self, prefix: &str, lanes: &[String]) -> Result<Vec<crate::PendingJob>>;
    /// [`waiting_jobs`](Self::waiting_jobs) whose id is greater than `after` (and at most
    /// `until`): what a notification brought, without reading a lane's whole backlog again.
    /// Ids are time-ordered by their admitting node's clock, so callers pass a margin below the
    /// newest id they saw, and keep a full read as the safety net.
    async fn waiting_jobs_after(
        &self,
        prefix: &str,
        lanes: &[String],
        after: ezt_core::JobId,
        until: Option<ezt_core::JobId>,
    ) -> Result<Vec<crate::PendingJob>> {
        let mut jobs = self.waiting_jobs(prefix, lanes).await?;
        jobs.retain(|j| j.id > after && until.is_none_or(|u| j.id <= u));
        Ok(jobs)
    }
    /// Holders of job or delivery leases that are no live member (dead nodes, or the single
    /// node's `local` from before cluster mode).
    async fn dead_holders(&self) -> Result<Vec<NodeId>>;
    /// Sends a lane notification (a lane released, a [`work_message`], a pin, the members
    /// changed); a speed-up only: owners also poll.
    async fn notify_lane(&self, lane: &str) -> Result<()>;
    /// Waits for the next "new work / lane released" notification (its lane name). `Ok(None)`:
    /// this store has no push channel (owners rely on polling alone); stop asking. One caller
    /// per store.
    async fn lane_event(&self) -> Result<Option<String>> {
        Ok(None)
    }
    /// Undoes an attempt lease whose call never left (the node fenced itself between the lease
    /// and the send): the job waits again, as if never leased. `false` if the token no longer
    /// holds.
    async fn unlease(&self, job: ezt_core::JobId, token: u64) -> Result<bool>;
}

/// A one-member cluster for the embedded backends: membership and claims in memory, on the
/// process's clock. Whatever joins is the only member; its lanes are its own.
#[derive(Debug, Default)]
pub struct SoloCluster {
    inner: std::sync::Mutex<Solo>,
}

#[derive(Debug, Default)]
struct Solo {
    node: Option<(NodeInfo, u64, u64, u64)>, // info, epoch, started, expires
    draining: bool,
    epochs: u64,
    lane_epochs: u64,
    lanes: std::collections::BTreeMap<String, (String, u64, u64)>, // owner, owner epoch, lane epoch
}

impl SoloCluster {
    /// The clock of a one-member cluster: the process's wall clock stands in for a database
    /// clock (one member, one clock), for the embedded backends that use this type.
    pub fn wall_ms() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Solo> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// See [`ClusterStore::join`]; `now_ms` is the process's clock.
    pub fn join(&self, node: &NodeInfo, ttl_ms: u64, now_ms: u64) -> Result<u64> {
        let mut g = self.lock();
        if let Some((n, _, _, exp)) = &g.node {
            if n.id == node.id && *exp > now_ms {
                return Err(crate::Error::Conflict(format!(
                    "a live node named {} is already a member",
                    node.id
                )));
            }
        }
        g.epochs += 1;
        g.draining = false;
        let e = g.epochs;
        g.node = Some((node.clone(), e, now_ms, now_ms + ttl_ms));
        Ok(e)
    }

    /// See [`ClusterStore::heartbeat`].
    pub fn heartbeat(&self, id: &NodeId, epoch: u64, ttl_ms: u64, now_ms: u64) -> bool {
        let mut g = self.lock();
        match &mut g.node {
            Some((n, e, _, exp)) if n.id == *id && *e == epoch && *exp > now_ms => {
                *exp = now_ms + ttl_ms;
                true
            }
            _ => false,
        }
    }

    /// See [`ClusterStore::drain`].
    pub fn drain(&self, id: &NodeId, epoch: u64) {
        let mut g = self.lock();
        if g.node
            .as_ref()
            .is_some_and(|(n, e, _, _)| n.id == *id && *e == epoch)
        {
            g.draining = true;
        }
        g.lanes
            .retain(|_, (o, oe, _)| !(o == id.as_str() && *oe == epoch));
    }

    /// See [`ClusterStore::leave`].
    pub fn leave(&self, id: &NodeId, epoch: u64, now_ms: u64) {
        let mut g = self.lock();
        if let Some((n, e, _, exp)) = &mut g.node {
            if n.id == *id && *e == epoch {
                *exp = now_ms.min(*exp);
            }
        }
        g.lanes
            .retain(|_, (o, oe, _)| !(o == id.as_str() && *oe == epoch));
    }

    fn alive(&self, g: &Solo, owner: &str, owner_epoch: u64, now_ms: u64) -> bool {
        g.node.as_ref().is_some_and(|(n, e, _, exp)| {
            n.id.as_str() == owner && *e == owner_epoch && *exp > now_ms
        })
    }

    /// See [`ClusterStore::forget_dead_nodes`] (the epoch counter is kept).
    pub fn forget_dead_nodes(&self, older_than_ms: u64, now_ms: u64) -> u64 {
        let mut g = self.lock();
        let dead = g
            .node
            .as_ref()
            .is_some_and(|(_, _, _, exp)| exp.saturating_add(older_than_ms) <= now_ms);
        if dead {
            g.node = None;
            g.draining = false;
        }
        u64::from(dead)
    }

    /// See [`ClusterStore::nodes`].
    pub fn nodes(&self, now_ms: u64) -> Vec<NodeRecord> {
        let g = self.lock();
        g.node
            .iter()
            .map(|(n, e, started, exp)| NodeRecord {
                id: n.id.to_string(),
                epoch: *e,
                region: n.region.clone(),
                advertise_url: n.advertise_url.clone(),
                version: n.version.clone(),
                started_at_ms: *started,
                expires_at_ms: *exp,
                alive: *exp > now_ms,
                draining: g.draining,
                lanes: g
                    .lanes
                    .values()
                    .filter(|(o, oe, _)| o == n.id.as_str() && oe == e)
                    .count() as u64,
            })
            .collect()
    }

    /// See [`ClusterStore::claim_lane`]; `state` is what the backend's `LaneStore` remembers.
    pub fn claim_lane(
        &self,
        id: &NodeId,
        epoch: u64,
        lane: &str,
        take: bool,
        state: Option<LaneState>,
        now_ms: u64,
    ) -> LaneClaim {
        let mut g = self.lock();
        let current = g.lanes.get(lane).cloned();
        let lane_epoch = match current {
            Some((o, oe, le)) if o == id.as_str() && oe == epoch => le,
            Some((o, oe, _)) if self.alive(&g, &o, oe, now_ms) => {
                return LaneClaim::Elsewhere { owner: Some(o) };
            }
            _ if !take => return LaneClaim::Elsewhere { owner: None },
            _ => {
                g.lane_epochs += 1;
                let le = g.lane_epochs;
                g.lanes
                    .insert(lane.to_string(), (id.to_string(), epoch, le));
                le
            }
        };
        let pause_left_ms = state
            .as_ref()
            .and_then(|s| s.paused_until_ms)
            .filter(|&p| p > now_ms)
            .map(|p| p - now_ms);
        LaneClaim::Owned(Box::new(OwnedLane {
            lane_epoch,
            state,
            pause_left_ms,
            foreign_in_flight_ms: Vec::new(),
            ledger_ages_ms: Vec::new(),
        }))
    }

    /// See [`ClusterStore::release_lanes`].
    pub fn release_lanes(&self, id: &NodeId, epoch: u64, lanes: &[String]) {
        let mut g = self.lock();
        for l in lanes {
            if g.lanes
                .get(l)
                .is_some_and(|(o, oe, _)| o == id.as_str() && *oe == epoch)
            {
                g.lanes.remove(l);
            }
        }
    }

    /// See [`ClusterStore::lane_owners`].
    pub fn lane_owners(&self, lanes: &[String], now_ms: u64) -> Vec<LaneOwner> {
        let g = self.lock();
        lanes
            .iter()
            .map(|l| match g.lanes.get(l) {
                Some((o, oe, le)) => LaneOwner {
                    lane: l.clone(),
                    owner_node: Some(o.clone()),
                    owner_node_epoch: Some(*oe),
                    lane_epoch: *le,
                    owner_alive: self.alive(&g, o, *oe, now_ms),
                },
                None => LaneOwner {
                    lane: l.clone(),
                    owner_node: None,
                    owner_node_epoch: None,
                    lane_epoch: 0,
                    owner_alive: false,
                },
            })
            .collect()
    }

    /// See [`ClusterStore::owned_lanes`].
    pub fn owned_lanes(&self, id: &NodeId, epoch: u64) -> Vec<(String, u64)> {
        let g = self.lock();
        let mut out: Vec<(String, u64)> = g
            .lanes
            .iter()
            .filter(|(_, (o, oe, _))| o == id.as_str() && *oe == epoch)
            .map(|(l, (_, _, le))| (l.clone(), *le))
            .collect();
        out.sort();
        out
    }

    /// Whether `holder` may lease under `fence` now.
    pub fn fence_holds(&self, holder: &NodeId, fence: &Fence, now_ms: u64) -> bool {
        let g = self.lock();
        g.lanes.get(&fence.lane).is_some_and(|(o, oe, le)| {
            o == holder.as_str()
                && *oe == fence.node_epoch
                && *le == fence.lane_epoch
                && self.alive(&g, o, *oe, now_ms)
        })
    }

    /// Whether `holder` is the live member.
    pub fn is_live(&self, holder: &str, now_ms: u64) -> bool {
        let g = self.lock();
        g.node
            .as_ref()
            .is_some_and(|(n, _, _, exp)| n.id.as_str() == holder && *exp > now_ms)
    }

    /// Whether `lane` has a live owner.
    pub fn owned(&self, lane: &str, now_ms: u64) -> bool {
        let g = self.lock();
        g.lanes
            .get(lane)
            .is_some_and(|(o, oe, _)| self.alive(&g, o, *oe, now_ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_work_message_names_its_lane_and_floor_and_nothing_else_parses_as_one() {
        let floor = ezt_core::JobId::new(1_700_000_000_000, 7);
        let ceiling = ezt_core::JobId::new(1_700_000_000_050, 3);
        let msg = work_message("job:api.example.com:443#00ff", floor, ceiling);
        assert_eq!(
            parse_work_message(&msg),
            Some(("job:api.example.com:443#00ff", floor, ceiling))
        );
        let pin = pin_message("job:x", &crate::LanePin::default()).unwrap();
        for other in [
            "job:x",
            "",
            MEMBERS_MESSAGE,
            pin.as_str(),
            "job:x\tnot-an-id",
        ] {
            assert_eq!(parse_work_message(other), None, "{other:?}");
        }
    }
}
