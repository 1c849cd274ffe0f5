//! Cluster membership (issue 13): this node's identity, its lease on the `nodes` table, the
//! self-fence, lane placement and the sweeper that adopts dead nodes' lanes.
//!
//! Depends on `fence` and the store; never on `lanes` (the lanes learn what they own from the
//! commands it sends through their handle's seam in `lib.rs`).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ezt_store::{NodeId, NodeInfo, NodeRecord, PendingDelivery, PendingJob, Store};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::config::{valid_node_id, Config};
use crate::fence::NodeFence;

/// How often a node renews its lease and sweeps.
pub const HEARTBEAT: Duration = Duration::from_secs(1);
/// A node's lease, on the database clock: declared dead this long after its last renewal.
pub const NODE_TTL: Duration = Duration::from_secs(5);
/// The self-fence closes this much before the lease could expire (`NODE_TTL - MARGIN` after
/// the heartbeat was *sent*), so a node stops sending before anyone may adopt its lanes.
pub const MARGIN: Duration = Duration::from_millis(500);
/// Lanes' stored names for jobs.
const JOB_PREFIX: &str = "job:";
/// A member counts for moving lanes that already have a live owner only once this node has
/// seen it alive (same epoch, not draining) for this long: a node that joins and leaves (or
/// dies) quickly moves nothing, so lanes do not flap. New and orphaned lanes use every live
/// member at once.
pub const SETTLE: Duration = Duration::from_secs(3);
/// [`SETTLE`] for a member seen before under an older epoch (it was declared dead, restarted,
/// or paused past its lease and rejoined): lanes move back to it only after this long.
pub const REJOIN_SETTLE: Duration = Duration::from_secs(10);
/// A member whose last renewal is more than this older than this node's own (a member killed
/// whose lease has not yet expired) is not handed lanes.
pub const FRESH: Duration = Duration::from_millis(1500);
/// The row of a member whose lease expired this long ago (database time) is deleted (by any
/// live node, looking once a minute). Epochs come from a sequence, so a node that rejoins
/// later still gets a larger epoch.
pub const DEAD_NODE_RETENTION: Duration = Duration::from_secs(3600);
/// How often a node looks for members past [`DEAD_NODE_RETENTION`].
const FORGET_EVERY: Duration = Duration::from_secs(60);
/// An owner's read of new work starts this far below the newest waiting job's id it has seen
/// (capped at its own clock): ids carry their admitting node's clock and a job commits a little
/// after it is named (group commit). Work with older ids (a child of an old job, a spooled job
/// forwarded late, a recovered lease, a node whose clock is behind) comes with a notification
/// naming its lowest id, and the owner reads from there.
const NEW_WORK_MARGIN: Duration = Duration::from_secs(1);
/// How often an owner reads the whole backlog of its lanes: the safety net for a notification
/// lost (its session reconnecting also asks for one). Otherwise a lane's backlog is read whole
/// only when the lane is (re)claimed; a read per second of every backlog made a node's database
/// cost grow with its queue (three nodes admitting 100k delayed jobs into one lane re-read
/// ~50k rows a second, five times one node's database CPU per job).
const FULL_READ_EVERY: Duration = Duration::from_secs(10);

/// What membership tells the rest of the runtime (`lib.rs` forwards it to the lanes).
#[derive(Debug)]
pub enum Event {
    /// Waiting jobs of lanes this node owns or should adopt: index them (their lanes claim
    /// before dispatching).
    Jobs(Vec<PendingJob>),
    /// Deliveries freed by recovering a dead node.
    Deliveries(Vec<PendingDelivery>),
    /// The membership was lost or renewed under a new epoch: lanes must be claimed again.
    Fenced,
    /// A tenant pinned this lane on another node (an empty pin: unpinned): its owner applies
    /// it (the pin is in the lane's row too).
    Pin {
        /// The lane's key.
        lane: ezt_core::lane::LaneKey,
        /// The pin.
        pin: ezt_store::LanePin,
    },
    /// Lanes (keys, without the stored prefix) this node owns under `epoch` whose place is now
    /// another live member (one joined): hand them over.
    HandOver {
        /// The membership they are owned under.
        epoch: u64,
        /// Their keys.
        lanes: Vec<ezt_core::lane::LaneKey>,
    },
}

/// What placement remembers of the members it saw.
#[derive(Debug, Default)]
struct Seen {
    /// (id, epoch) seen alive and not draining: since when, and the settle delay it needs.
    since: std::collections::HashMap<(String, u64), (Instant, Duration)>,
    /// The newest epoch seen of each id.
    epochs: std::collections::HashMap<String, u64>,
}

/// What an owner has read of its lanes' waiting work, so that it reads only what is new.
#[derive(Debug, Default)]
struct Reads {
    /// The newest waiting job's id read so far.
    newest: Option<ezt_core::JobId>,
    /// A notification without ids came since the last read (a lane released): the next
    /// notification's read looks at every lane's new work.
    plain: bool,
    /// Per lane (stored name), the range of job ids notifications named since the last read:
    /// a notification's read covers those lanes' ranges, nothing more.
    floors: std::collections::HashMap<String, (ezt_core::JobId, ezt_core::JobId)>,
    /// The lanes owned at the last read, with their epochs: a lane not among them (or under
    /// another epoch) is read whole.
    lanes: std::collections::HashMap<String, u64>,
    /// When every lane was last read whole (`None`: now).
    full_at: Option<Instant>,
}

impl Reads {
    /// A notification named new work in `lane`, ids `floor` to `ceiling`.
    fn notified(&mut self, lane: &str, floor: ezt_core::JobId, ceiling: ezt_core::JobId) {
        self.floors
            .entry(lane.to_string())
            .and_modify(|(lo, hi)| (*lo, *hi) = ((*lo).min(floor), (*hi).max(ceiling)))
            .or_insert((floor, ceiling));
    }
}

/// This node's membership: joins, heartbeats, sweeps, hands over at shutdown.
pub struct Membership {
    store: Arc<dyn Store>,
    node: Arc<NodeFence>,
    info: NodeInfo,
    clock: Arc<dyn Clock>,
    events: mpsc::UnboundedSender<Event>,
    /// Cancelled once the runtime's calls in flight have ended (then the node leaves).
    done: CancellationToken,
    /// Wakes the owned-lane poll at once (a notification from another node).
    poke: Arc<tokio::sync::Notify>,
    task: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Members (id, epoch) seen alive and not draining, since when (monotonic) and how long
    /// they must stay to count ([`SETTLE`] or [`REJOIN_SETTLE`]); and the last epoch seen of
    /// each id.
    seen: std::sync::Mutex<Seen>,
    /// What this node has read of its lanes' waiting work (see [`Reads`]).
    reads: Arc<std::sync::Mutex<Reads>>,
    /// When orphan lanes were last looked for among every lane with waiting work (else only
    /// among the lanes with a row): every [`FULL_READ_EVERY`].
    thorough_at: std::sync::Mutex<Option<Instant>>,
}

impl std::fmt::Debug for Membership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Membership")
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

impl Membership {
    /// Starts the membership task of `node`; events go to the returned receiver.
    pub fn start(
        cfg: &Config,
        store: Arc<dyn Store>,
        node: Arc<NodeFence>,
        clock: Arc<dyn Clock>,
        shutdown: CancellationToken,
    ) -> (Arc<Self>, mpsc::UnboundedReceiver<Event>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let info = NodeInfo {
            id: node.id().clone(),
            region: cfg.region.clone(),
            advertise_url: cfg.advertise_url.clone(),
            version: env!("CARGO_PKG_VERSION").to_string(),
        };
        let m = Arc::new(Self {
            store,
            node,
            info,
            clock,
            events: tx,
            done: CancellationToken::new(),
            poke: Arc::default(),
            task: Default::default(),
            seen: Default::default(),
            reads: Default::default(),
            thorough_at: Default::default(),
        });
        // Notifications (another node admitted work, or released lanes) wake the sweep at once;
        // polling every second stays the safety net.
        let (store, poke, stop) = (m.store.clone(), m.poke.clone(), shutdown.clone());
        let pins = m.events.clone();
        let me = m.info.id.to_string();
        let fence = m.node.clone();
        let reads = m.reads.clone();
        tokio::spawn(async move {
            loop {
                let ev = tokio::select! {
                    _ = stop.cancelled() => return,
                    ev = store.lane_event() => ev,
                };
                match ev {
                    Ok(Some(msg)) => match ezt_store::parse_pin_message(&msg) {
                        Some((lane, pin)) => {
                            if let Some(key) = lane.strip_prefix(JOB_PREFIX) {
                                let _ = pins.send(Event::Pin {
                                    lane: ezt_core::lane::LaneKey(key.to_string()),
                                    pin,
                                });
                            }
                        }
                        None if msg == ezt_store::MEMBERS_MESSAGE => {
                            refresh_members(store.as_ref(), &fence).await;
                        }
                        None if msg.is_empty() => {
                            // The listening session (re)connected: notifications sent while it
                            // was down are lost. Read every lane whole, and re-read the pins of
                            // this node's lanes (one set on another node meanwhile).
                            reads.lock().unwrap_or_else(|p| p.into_inner()).full_at = None;
                            poke.notify_one();
                            resync_pins(store.as_ref(), &me, &pins).await;
                        }
                        None => {
                            let mut r = reads.lock().unwrap_or_else(|p| p.into_inner());
                            match ezt_store::parse_work_message(&msg) {
                                Some((lane, floor, ceiling)) => r.notified(lane, floor, ceiling),
                                // A lane released (or other news): look at what is new.
                                None => r.plain = true,
                            }
                            drop(r);
                            poke.notify_one();
                        }
                    },
                    Ok(None) => return,
                    Err(_) => tokio::time::sleep(Duration::from_secs(1)).await,
                }
            }
        });
        let task = tokio::spawn(m.clone().run(cfg.region.clone(), shutdown));
        *m.task.lock().unwrap_or_else(|p| p.into_inner()) = Some(task);
        (m, rx)
    }

    /// A handle that wakes the owned-lane poll at once (for a notification listener).
    pub fn poke(&self) -> Arc<tokio::sync::Notify> {
        self.poke.clone()
    }

    /// After shutdown, once calls in flight have ended: leaves the cluster (waits briefly).
    pub async fn finish(&self) {
        self.done.cancel();
        let task = self.task.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(t) = task {
            let _ = tokio::time::timeout(Duration::from_secs(3), t).await;
        }
    }

    async fn run(self: Arc<Self>, region: String, shutdown: CancellationToken) {
        let mut epoch: Option<u64> = None;
        let mut warned_at: Option<Instant> = None;
        let mut fenced_told = false;
        let (current, epochs) = tokio::sync::watch::channel(None);
        let sweeper = tokio::spawn(self.clone().sweeps(region, epochs, shutdown.clone()));
        loop {
            let t0 = Instant::now();
            if shutdown.is_cancelled() {
                break;
            }
            match epoch {
                None => match self
                    .store
                    .join(&self.info, NODE_TTL.as_millis() as u64)
                    .await
                {
                    Ok(e) => {
                        self.node.renew(e, t0, NODE_TTL - MARGIN);
                        tracing::info!(node = %self.info.id, epoch = e, "joined the cluster");
                        epoch = Some(e);
                        fenced_told = false;
                        let _ = self.events.send(Event::Fenced);
                    }
                    Err(e) => {
                        if warned_at.is_none_or(|w| w.elapsed() > Duration::from_secs(10)) {
                            tracing::warn!(node = %self.info.id, error = %e, "cannot join the cluster yet; retrying every second");
                            warned_at = Some(Instant::now());
                        }
                    }
                },
                Some(e) => {
                    let beat = tokio::time::timeout(
                        NODE_TTL - MARGIN,
                        self.store
                            .heartbeat(&self.info.id, e, NODE_TTL.as_millis() as u64),
                    )
                    .await;
                    match beat {
                        Ok(Ok(true)) => {
                            self.node.renew(e, t0, NODE_TTL - MARGIN);
                            fenced_told = false;
                        }
                        Ok(Ok(false)) => {
                            self.node.close();
                            tracing::warn!(node = %self.info.id, epoch = e, "this node was declared dead (its lease expired); it stopped sending and rejoins");
                            epoch = None;
                            let _ = self.events.send(Event::Fenced);
                            continue;
                        }
                        Ok(Err(err)) => {
                            tracing::warn!(error = %err, left_ms = self.node.remaining().as_millis() as u64, "heartbeat failed");
                        }
                        Err(_) => {
                            tracing::warn!(
                                left_ms = self.node.remaining().as_millis() as u64,
                                "heartbeat timed out"
                            );
                        }
                    }
                    if !self.node.is_open() && !fenced_told {
                        fenced_told = true;
                        tracing::warn!("self-fenced: the lease could not be renewed in time; nothing is sent until it is");
                        let _ = self.events.send(Event::Fenced);
                    }
                }
            }
            // The sweep runs on its own task (see `sweeps`): however slow it is under load,
            // the next heartbeat leaves on time.
            current.send_replace(epoch);
            tokio::select! {
                _ = shutdown.cancelled() => {}
                _ = tokio::time::sleep_until(t0 + HEARTBEAT) => {}
            }
        }
        current.send_replace(None);
        sweeper.abort();
        // Hand-over: lanes released at once (others claim them), nothing more leaves from
        // here; the lease is kept while calls in flight finish, then the node leaves.
        self.node.leave();
        let Some(e) = epoch else { return };
        match self.store.drain(&self.info.id, e).await {
            Ok(()) => tracing::info!(node = %self.info.id, "released this node's lanes"),
            Err(err) => {
                tracing::warn!(error = %err, "cannot release this node's lanes; others adopt them when its lease expires")
            }
        }
        loop {
            let t0 = Instant::now();
            tokio::select! {
                _ = self.done.cancelled() => break,
                _ = tokio::time::sleep_until(t0 + HEARTBEAT) => {}
            }
            let _ = self
                .store
                .heartbeat(&self.info.id, e, NODE_TTL.as_millis() as u64)
                .await;
        }
        match self.store.leave(&self.info.id, e).await {
            Ok(()) => tracing::info!(node = %self.info.id, "left the cluster"),
            Err(err) => {
                tracing::warn!(error = %err, "cannot leave the cluster; its lease expires on its own")
            }
        }
    }

    /// Once a second (and on each notification, only the new work) while this node is a member
    /// and not fenced: the sweep, and once a minute the deletion of long-dead members. Apart
    /// from the heartbeat so that neither waits for the other.
    async fn sweeps(
        self: Arc<Self>,
        region: String,
        mut epochs: tokio::sync::watch::Receiver<Option<u64>>,
        shutdown: CancellationToken,
    ) {
        let mut forgot_at: Option<Instant> = None;
        loop {
            let t0 = Instant::now();
            let epoch = *epochs.borrow_and_update();
            if let (Some(e), true) = (epoch, self.node.is_open()) {
                if let Err(err) = self.sweep(e, &region).await {
                    tracing::debug!(error = %err, "sweep failed; next second");
                }
                if forgot_at.is_none_or(|t| t.elapsed() >= FORGET_EVERY) {
                    forgot_at = Some(t0);
                    match self
                        .store
                        .forget_dead_nodes(DEAD_NODE_RETENTION.as_millis() as u64)
                        .await
                    {
                        Ok(0) => {}
                        Ok(n) => tracing::info!(
                            nodes = n,
                            "deleted members dead for longer than the retention"
                        ),
                        Err(err) => tracing::debug!(error = %err, "cannot delete dead members"),
                    }
                }
            }
            let next = t0 + HEARTBEAT;
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep_until(next) => break,
                    // A new membership (joined, rejoined): sweep at once.
                    r = epochs.changed() => {
                        if r.is_err() {
                            return;
                        }
                        if epochs.borrow().is_some() {
                            break;
                        }
                    }
                    _ = self.poke.notified() => {
                        let epoch = *epochs.borrow();
                        if let (Some(e), true) = (epoch, self.node.is_open()) {
                            if let Err(err) = self.poll_new(e).await {
                                tracing::debug!(error = %err, "reading new work failed; next second");
                            }
                        }
                    }
                }
            }
        }
    }

    /// Members for placement, dead nodes' leases freed, lanes without a live owner adopted
    /// where this node is their place, and this node's own lanes' waiting work indexed.
    async fn sweep(&self, epoch: u64, region: &str) -> ezt_store::Result<()> {
        // This node's own lanes first: a notification is usually new work for one of them.
        let owned = self.poll_owned(epoch).await?;
        let nodes = self.store.nodes().await?;
        let live: Vec<&NodeRecord> = nodes.iter().filter(|n| n.alive && !n.draining).collect();
        self.node.set_live(&nodes);
        let members = self.node.members();
        let settled = self.settled(&live);
        // Without this node in the view (a stale read), nothing is decided.
        let in_view = settled.iter().any(|n| n == self.node.id());
        // A lane's place is its winner over the live members, as claims and adoption decide
        // it (`NodeFence::preferred`); it moves there only once that member has settled. Placing
        // moves over the settled members alone disagreed with claims while members settled: a
        // lane claimed on its live winner moved to the winner of a partial settled set, then
        // perhaps back (case 1 lost a second of its lane to such a move).
        let moving: Vec<ezt_core::lane::LaneKey> = owned
            .iter()
            .filter(|_| in_view)
            .filter(|l| {
                crate::fence::rendezvous(l, members.iter())
                    .is_some_and(|w| w != self.node.id() && settled.contains(w))
            })
            .filter_map(|l| l.strip_prefix(JOB_PREFIX))
            .map(|k| ezt_core::lane::LaneKey(k.to_string()))
            .collect();
        if !moving.is_empty() {
            tracing::debug!(
                lanes = moving.len(),
                owned = owned.len(),
                "lanes now belong on another member; handing them over"
            );
            let _ = self.events.send(Event::HandOver {
                epoch,
                lanes: moving,
            });
        }
        for holder in self.store.dead_holders().await? {
            if holder == *self.node.id() {
                continue;
            }
            let rec = self
                .store
                .recover(&holder, self.clock.now_ms(), region)
                .await?;
            tracing::info!(dead = %holder, deliveries = rec.deliveries.len(), "recovered a dead node's leases");
            if !rec.deliveries.is_empty() {
                let _ = self.events.send(Event::Deliveries(rec.deliveries));
            }
        }
        let thorough = self
            .thorough_at
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_none_or(|t| t.elapsed() >= FULL_READ_EVERY);
        let orphans: Vec<String> = self
            .store
            .orphan_lanes(JOB_PREFIX, thorough)
            .await?
            .into_iter()
            .filter(|l| self.node.preferred(l))
            .collect();
        if thorough {
            *self.thorough_at.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
        }
        if !orphans.is_empty() {
            let jobs = self.store.waiting_jobs(JOB_PREFIX, &orphans).await?;
            tracing::info!(
                lanes = orphans.len(),
                jobs = jobs.len(),
                "adopting lanes without a live owner"
            );
            let _ = self.events.send(Event::Jobs(jobs));
        }
        Ok(())
    }

    /// Indexes the waiting work of this node's lanes (admitted on other nodes meanwhile):
    /// lanes (re)claimed since the last read whole, every lane whole each
    /// [`FULL_READ_EVERY`], else what is new; answers the lanes it owns (stored names).
    async fn poll_owned(&self, epoch: u64) -> ezt_store::Result<Vec<String>> {
        self.read_owned(epoch, true).await
    }

    /// What a notification brought: the new waiting work of this node's lanes (and the whole
    /// backlog of lanes claimed since the last read).
    async fn poll_new(&self, epoch: u64) -> ezt_store::Result<()> {
        self.read_owned(epoch, false).await.map(|_| ())
    }

    /// Reads this node's lanes' waiting work into the index: whole when due (see
    /// [`Reads`]); lanes (re)claimed since the last read whole; then, for a notification that
    /// named its lanes' lowest new jobs, those lanes from there — else (a sweep, or a
    /// notification without ids) every lane's work newer than the newest read less
    /// [`NEW_WORK_MARGIN`] (and than any id notified).
    async fn read_owned(&self, epoch: u64, sweep: bool) -> ezt_store::Result<Vec<String>> {
        let owned = self.store.owned_lanes(&self.info.id, epoch).await?;
        let names: Vec<String> = owned.iter().map(|(l, _)| l.clone()).collect();
        let (whole, fresh, newest, floors, plain) = {
            let mut r = self.reads.lock().unwrap_or_else(|p| p.into_inner());
            let whole = r.newest.is_none()
                || r.full_at.is_none()
                || (sweep && r.full_at.is_some_and(|t| t.elapsed() >= FULL_READ_EVERY));
            let fresh: Vec<String> = owned
                .iter()
                .filter(|(l, e)| r.lanes.get(l) != Some(e))
                .map(|(l, _)| l.clone())
                .collect();
            let newest = r
                .newest
                .map_or(0, |n| n.timestamp_ms().min(self.clock.now_ms()));
            let plain = std::mem::take(&mut r.plain);
            (whole, fresh, newest, std::mem::take(&mut r.floors), plain)
        };
        let lowest = floors.values().map(|(f, _)| f.timestamp_ms()).min();
        let highest = floors.values().map(|(_, c)| *c).max();
        let read = async {
            if names.is_empty() {
                return Ok(());
            }
            if whole {
                let jobs = self.store.waiting_jobs(JOB_PREFIX, &names).await?;
                self.index(jobs);
                return Ok(());
            }
            if !fresh.is_empty() {
                let jobs = self.store.waiting_jobs(JOB_PREFIX, &fresh).await?;
                self.index(jobs);
            }
            if !sweep && floors.is_empty() && !plain {
                // Woken for ranges an earlier read took already: nothing new to look at.
                return Ok(());
            }
            let (lanes, from, until): (Vec<String>, u64, _) = match lowest {
                Some(low) if !sweep => (
                    names
                        .iter()
                        .filter(|l| floors.contains_key(*l))
                        .cloned()
                        .collect(),
                    low.saturating_sub(1),
                    highest,
                ),
                _ => {
                    let from = newest.saturating_sub(NEW_WORK_MARGIN.as_millis() as u64);
                    (
                        names.clone(),
                        lowest.map_or(from, |l| from.min(l.saturating_sub(1))),
                        None,
                    )
                }
            };
            if lanes.is_empty() {
                return Ok(());
            }
            let jobs = self
                .store
                .waiting_jobs_after(JOB_PREFIX, &lanes, ezt_core::JobId::new(from, 0), until)
                .await?;
            self.index(jobs);
            Ok(())
        }
        .await;
        let mut r = self.reads.lock().unwrap_or_else(|p| p.into_inner());
        match read {
            Ok(()) => {
                r.lanes = owned.into_iter().collect();
                if whole {
                    r.full_at = Some(Instant::now());
                }
                Ok(names)
            }
            Err(e) => {
                // Asked again next time.
                r.plain |= plain;
                for (lane, (floor, ceiling)) in floors {
                    r.notified(&lane, floor, ceiling);
                }
                Err(e)
            }
        }
    }

    /// Hands waiting jobs to the lanes (which skip those they know) and remembers the newest.
    fn index(&self, jobs: Vec<ezt_store::PendingJob>) {
        if let Some(max) = jobs.iter().map(|j| j.id).max() {
            let mut r = self.reads.lock().unwrap_or_else(|p| p.into_inner());
            r.newest = Some(r.newest.map_or(max, |m| m.max(max)));
        }
        if !jobs.is_empty() {
            let _ = self.events.send(Event::Jobs(jobs));
        }
    }

    /// The members lanes with a live owner are placed over: this node, and the live members
    /// seen alive (same epoch) for at least [`SETTLE`] whose lease was renewed within
    /// [`FRESH`] of this node's own (database clock), so a member that died meanwhile (its
    /// lease not yet expired) is not handed lanes.
    fn settled(&self, live: &[&NodeRecord]) -> Vec<NodeId> {
        let now = Instant::now();
        let mine = live
            .iter()
            .find(|n| n.id == self.info.id.as_str())
            .map_or(0, |n| n.expires_at_ms);
        let mut g = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let Seen { since, epochs } = &mut *g;
        since.retain(|(id, e), _| live.iter().any(|n| n.id == *id && n.epoch == *e));
        let mut out = Vec::new();
        for n in live {
            let rejoined = epochs.get(&n.id).is_some_and(|&e| e < n.epoch);
            let (at, settle) = *since
                .entry((n.id.clone(), n.epoch))
                .or_insert((now, if rejoined { REJOIN_SETTLE } else { SETTLE }));
            let last = epochs.entry(n.id.clone()).or_insert(n.epoch);
            *last = (*last).max(n.epoch);
            let fresh = mine.saturating_sub(n.expires_at_ms) <= FRESH.as_millis() as u64;
            if n.id == self.info.id.as_str()
                || (fresh && now.saturating_duration_since(at) >= settle)
            {
                out.push(NodeId::new(n.id.as_str()));
            }
        }
        out
    }
}

/// Re-reads the live members for placement (a member joined, is draining or left).
async fn refresh_members(store: &dyn Store, node: &NodeFence) {
    match store.nodes().await {
        Ok(nodes) => node.set_live(&nodes),
        Err(e) => tracing::debug!(error = %e, "cannot re-read the members; the next sweep does"),
    }
}

/// Sends the stored pin (or its absence) of every lane `me` owns to the lanes (which apply
/// only what changed).
async fn resync_pins(store: &dyn Store, me: &str, events: &mpsc::UnboundedSender<Event>) {
    let rows = match store.lane_rows(JOB_PREFIX, None, 0).await {
        Ok(Some(rows)) => rows,
        Ok(None) => return,
        Err(e) => {
            tracing::debug!(error = %e, "cannot re-read the pins of this node's lanes");
            return;
        }
    };
    for r in rows {
        if r.owner_node.as_deref() != Some(me) {
            continue;
        }
        let Some(key) = r.lane.strip_prefix(JOB_PREFIX) else {
            continue;
        };
        let pin = r.state.and_then(|s| s.detail.pin).unwrap_or_default();
        let _ = events.send(Event::Pin {
            lane: ezt_core::lane::LaneKey(key.to_string()),
            pin,
        });
    }
}

/// The name of the file in the data dir that keeps a node's id across restarts.
pub const NODE_ID_FILE: &str = "node_id";

/// This node's id: on one node (SQLite) the shared local holder; in a cluster the configured
/// `node_id`, else the one kept in the data dir (made at random on first start). The data dir's
/// lock file guarantees that no other live process uses the same kept id, which is what makes
/// recovering this id's leases at start safe.
pub fn node_id(cfg: &Config) -> std::io::Result<NodeId> {
    if !cfg.clustered() {
        return Ok(NodeId::local());
    }
    if let Some(id) = &cfg.node_id {
        return Ok(NodeId::new(id.as_str()));
    }
    kept_or_new(&cfg.data_dir).map(NodeId::new)
}

fn kept_or_new(dir: &Path) -> std::io::Result<String> {
    let path = dir.join(NODE_ID_FILE);
    match std::fs::read_to_string(&path) {
        Ok(s) if valid_node_id(s.trim()) => return Ok(s.trim().to_string()),
        Ok(s) => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "{}: {:?} is not a node id (1-64 of letters, digits, - _ .)",
                    path.display(),
                    s.trim()
                ),
            ))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let id = format!("n-{:012x}", rand::random::<u64>() >> 16);
    let tmp = dir.join(format!("{NODE_ID_FILE}.tmp"));
    std::fs::write(&tmp, format!("{id}\n"))?;
    std::fs::rename(&tmp, &path)?;
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_keeps_its_id_in_the_data_dir() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = Config {
            data_dir: dir.path().to_path_buf(),
            database_url: Some(crate::config::SecretKey("postgres://x@h/db".into())),
            ..Config::default()
        };
        let a = node_id(&cfg).unwrap();
        assert!(a.as_str().starts_with("n-"), "{a}");
        assert_eq!(node_id(&cfg).unwrap(), a, "kept across restarts");
        let named = Config {
            node_id: Some("east-1".into()),
            ..cfg.clone()
        };
        assert_eq!(node_id(&named).unwrap().as_str(), "east-1");
        std::fs::write(dir.path().join(NODE_ID_FILE), "no spaces allowed").unwrap();
        let e = node_id(&cfg).unwrap_err();
        assert!(e.to_string().contains("not a node id"), "{e}");
        let single = Config {
            database_url: None,
            ..cfg
        };
        assert_eq!(node_id(&single).unwrap(), NodeId::local());
    }
}
