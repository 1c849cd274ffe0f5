//! This node's identity and its self-fence (cluster mode, issue 13).
//!
//! A leaf: it imports nothing of the crate. `membership` renews it after every successful
//! heartbeat; dispatch and delivery name their leases after it and check it right before the
//! bytes leave (the send gate), so a node that lost its lease stops sending *before* the
//! database could declare it dead and another node adopt its lanes.
//!
//! The deadline is on the monotonic clock (`tokio::time::Instant`), never the wall clock: a
//! heartbeat sent at `t0` that succeeds extends the lease to the database's `now + ttl`, which
//! is never before `t0 + ttl` on any clock that does not run fast by more than the margin, so the
//! local deadline `t0 + ttl − margin` passes first. A node whose wall clock is skewed is not
//! affected; one whose monotonic clock runs slow by more than `margin / ttl` is out of contract
//! (see `docs/cluster.md`).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use ezt_store::NodeId;
use tokio::time::Instant;

/// This node: its id, its current epoch, and until when (monotonic) it may send.
#[derive(Debug)]
pub struct NodeFence {
    id: NodeId,
    /// False on one node (SQLite, memory): always open, epoch 0.
    clustered: bool,
    base: Instant,
    epoch: AtomicU64,
    /// Milliseconds after `base` until which sending is allowed (0 = fenced).
    deadline_ms: AtomicU64,
    /// Set on a graceful leave: never reopened.
    left: AtomicBool,
    /// The live, non-draining members as last read (ids), for placement.
    members: std::sync::RwLock<Vec<NodeId>>,
}

impl NodeFence {
    /// A single node: never fenced, epoch 0.
    pub fn single(id: NodeId) -> Self {
        Self {
            id,
            clustered: false,
            base: Instant::now(),
            epoch: AtomicU64::new(0),
            deadline_ms: AtomicU64::new(u64::MAX),
            left: AtomicBool::new(false),
            members: Default::default(),
        }
    }

    /// A cluster member: fenced until its first heartbeat ([`renew`](Self::renew)).
    pub fn clustered(id: NodeId) -> Self {
        Self {
            id,
            clustered: true,
            base: Instant::now(),
            epoch: AtomicU64::new(0),
            deadline_ms: AtomicU64::new(0),
            left: AtomicBool::new(false),
            members: Default::default(),
        }
    }

    /// The node's id (the holder of its leases).
    pub fn id(&self) -> &NodeId {
        &self.id
    }

    /// Whether this node is one of a cluster's members.
    pub fn is_clustered(&self) -> bool {
        self.clustered
    }

    /// The epoch of the node's current membership (0 before joining or on one node).
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// Whether the node may send now.
    pub fn is_open(&self) -> bool {
        self.open_at(Instant::now())
    }

    /// Whether the node may send at `now`.
    pub fn open_at(&self, now: Instant) -> bool {
        if self.left.load(Ordering::Acquire) {
            return false;
        }
        let d = self.deadline_ms.load(Ordering::Acquire);
        d == u64::MAX || (now.saturating_duration_since(self.base).as_millis() as u64) < d
    }

    /// How long the node may still send (zero when fenced).
    pub fn remaining(&self) -> std::time::Duration {
        let d = self.deadline_ms.load(Ordering::Acquire);
        if d == u64::MAX {
            return std::time::Duration::MAX;
        }
        let now = Instant::now()
            .saturating_duration_since(self.base)
            .as_millis() as u64;
        std::time::Duration::from_millis(d.saturating_sub(now))
    }

    /// After a heartbeat sent at `sent` succeeded under `epoch`: sending is allowed until
    /// `sent + valid` (the caller passes the lease length minus its safety margin).
    pub fn renew(&self, epoch: u64, sent: Instant, valid: std::time::Duration) {
        if !self.clustered || self.left.load(Ordering::Acquire) {
            return;
        }
        let until = (sent.saturating_duration_since(self.base) + valid).as_millis() as u64;
        self.epoch.store(epoch, Ordering::Release);
        // Never moves the deadline back within one epoch (a slow heartbeat's answer arriving
        // after a newer one), but a new epoch starts afresh.
        self.deadline_ms.fetch_max(until, Ordering::AcqRel);
    }

    /// Fences the node at once (the lease was lost, or a new epoch begins).
    pub fn close(&self) {
        if self.clustered {
            self.deadline_ms.store(0, Ordering::Release);
        }
    }

    /// Fences the node for good (graceful leave).
    pub fn leave(&self) {
        self.left.store(true, Ordering::Release);
        self.close();
    }
}

impl NodeFence {
    /// Replaces the view of live members placement works over.
    pub fn set_members(&self, mut ids: Vec<NodeId>) {
        ids.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        *self.members.write().unwrap_or_else(|p| p.into_inner()) = ids;
    }

    /// Sets the members for placement from the store's member rows: those alive and not
    /// draining.
    pub fn set_live(&self, nodes: &[ezt_store::NodeRecord]) {
        self.set_members(
            nodes
                .iter()
                .filter(|n| n.alive && !n.draining)
                .map(|n| NodeId::new(n.id.as_str()))
                .collect(),
        );
    }

    /// The live members as last read.
    pub fn members(&self) -> Vec<NodeId> {
        self.members
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Whether this node is where `lane` belongs: the member with the highest rendezvous
    /// weight for it. True when the member view is empty or lacks this node (before the first
    /// read, or while it is being re-read) only if no other member is known.
    pub fn preferred(&self, lane: &str) -> bool {
        let members = self.members.read().unwrap_or_else(|p| p.into_inner());
        match rendezvous(lane, members.iter()) {
            Some(best) => best == &self.id,
            None => true,
        }
    }
}

/// Highest-random-weight placement: the member whose hash with `lane` is largest. Adding or
/// removing a member moves only the lanes that member wins or held.
pub fn rendezvous<'a>(lane: &str, members: impl Iterator<Item = &'a NodeId>) -> Option<&'a NodeId> {
    members.max_by_key(|m| (weight(m.as_str(), lane), m.as_str()))
}

/// A stable 64-bit hash of (node, lane): FNV-1a, then a SplitMix64 finaliser for spread.
fn weight(node: &str, lane: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in node.bytes().chain([0xff]).chain(lane.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

#[cfg(test)]
mod tests {
    #[test]
    fn rendezvous_spreads_lanes_and_moves_few_on_a_change() {
        let three: Vec<NodeId> = ["a", "b", "c"].into_iter().map(NodeId::new).collect();
        let lanes: Vec<String> = (0..3000).map(|i| format!("job:host{i}:443")).collect();
        let owner = |ms: &[NodeId], l: &str| rendezvous(l, ms.iter()).unwrap().clone();
        let before: Vec<NodeId> = lanes.iter().map(|l| owner(&three, l)).collect();
        for n in &three {
            let k = before.iter().filter(|o| *o == n).count();
            assert!((800..1200).contains(&k), "{n}: {k} of 3000");
        }
        let two = &three[..2];
        let moved = lanes
            .iter()
            .zip(&before)
            .filter(|(l, o)| owner(two, l) != **o)
            .count();
        let held_by_c = before.iter().filter(|o| o.as_str() == "c").count();
        assert_eq!(moved, held_by_c, "only the removed node's lanes move");
        let f = NodeFence::clustered(NodeId::new("b"));
        assert!(f.preferred("job:x"), "alone, every lane is ours");
        f.set_members(three.clone());
        let mine = lanes.iter().filter(|l| f.preferred(l)).count();
        assert_eq!(mine, before.iter().filter(|o| o.as_str() == "b").count());
    }

    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_clustered_node_is_fenced_until_renewed_and_after_its_deadline() {
        let f = NodeFence::clustered(NodeId::new("a"));
        assert!(!f.is_open(), "fenced before the first heartbeat");
        let t0 = Instant::now();
        f.renew(7, t0, Duration::from_millis(4500));
        assert!(f.is_open());
        assert_eq!(f.epoch(), 7);
        tokio::time::advance(Duration::from_millis(4499)).await;
        assert!(f.is_open());
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(!f.is_open(), "self-fenced at sent + valid");
        // An older heartbeat's late answer cannot shorten the lease.
        f.renew(7, Instant::now(), Duration::from_millis(4500));
        f.renew(7, t0, Duration::from_millis(4500));
        assert!(f.is_open());
        f.close();
        assert!(!f.is_open());
        f.renew(8, Instant::now(), Duration::from_millis(4500));
        assert!(f.is_open());
        f.leave();
        f.renew(8, Instant::now(), Duration::from_millis(4500));
        assert!(!f.is_open(), "a node that left never sends again");
    }

    #[test]
    fn a_single_node_is_never_fenced() {
        let f = NodeFence::single(NodeId::local());
        assert!(f.is_open());
        f.close();
        assert!(f.is_open());
        assert_eq!(f.epoch(), 0);
        assert!(!f.is_clustered());
    }
}
