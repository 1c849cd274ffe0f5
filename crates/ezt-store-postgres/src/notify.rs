//! Lane notifications, coalesced.
//!
//! A non-owner tells a lane's owner about new work with `pg_notify`. Sent once per admitted
//! job, each in its own statement and transaction, they serialise on PostgreSQL's notification
//! queue lock: three nodes admitted less than one (the cluster bench: 0.29 × one node's rate,
//! ten times the database CPU per job). Here every lane asked for is kept once in a set, and one
//! task sends the whole set in one statement while the next set fills: under load a lane is
//! notified once per round trip, however many jobs arrived for it. New work keeps the lowest
//! job id told for its lane (the owner reads from there).

use std::collections::{BTreeMap, BTreeSet};

use ezt_core::JobId;
use std::sync::{Arc, Mutex};

use deadpool_postgres::Pool;
use tokio::sync::Notify;

use crate::cluster::LANE_CHANNEL;

/// Payloads waiting to be sent: messages as they are, and new work per lane with its lowest job.
#[derive(Default)]
struct Pending {
    messages: BTreeSet<String>,
    work: BTreeMap<String, (JobId, JobId)>,
}

impl Pending {
    fn is_empty(&self) -> bool {
        self.messages.is_empty() && self.work.is_empty()
    }

    fn payloads(self) -> Vec<String> {
        let mut out: Vec<String> = self.messages.into_iter().collect();
        out.extend(
            self.work
                .iter()
                .map(|(lane, (floor, ceiling))| ezt_store::work_message(lane, floor, ceiling)),
        );
        out
    }
}

/// Lanes waiting for their notification; the sender task.
#[derive(Clone)]
pub(crate) struct LaneNotifier {
    pending: Arc<Mutex<Pending>>,
    wake: Arc<Notify>,
}

impl LaneNotifier {
    /// Starts the sender on `pool` (inside a tokio runtime).
    pub(crate) fn start(pool: Pool) -> Self {
        let n = Self {
            pending: Default::default(),
            wake: Arc::new(Notify::new()),
        };
        tokio::spawn(n.clone().run(pool));
        n
    }

    /// Asks for `lane`'s notification; returns at once. The set holds each lane once, so it is
    /// bounded by the number of lanes even while the database is unreachable.
    pub(crate) fn tell(&self, lane: &str) {
        let mut p = self.pending.lock().expect("notifier lock");
        let was_empty = p.is_empty();
        p.messages.insert(lane.to_string());
        drop(p);
        if was_empty {
            self.wake.notify_one();
        }
    }

    /// Asks for a notification of new work in `lane`, its ids from `floor` to `ceiling` (one
    /// notification per lane covers every range asked for it meanwhile).
    pub(crate) fn tell_work(&self, lane: &str, floor: JobId, ceiling: JobId) {
        let mut p = self.pending.lock().expect("notifier lock");
        let was_empty = p.is_empty();
        p.work
            .entry(lane.to_string())
            .and_modify(|(lo, hi)| (*lo, *hi) = ((*lo).min(floor), (*hi).max(ceiling)))
            .or_insert((floor, ceiling));
        drop(p);
        if was_empty {
            self.wake.notify_one();
        }
    }

    async fn run(self, pool: Pool) {
        loop {
            self.wake.notified().await;
            let lanes: Vec<String> =
                std::mem::take(&mut *self.pending.lock().expect("notifier lock")).payloads();
            if lanes.is_empty() {
                continue;
            }
            let sent = match pool.get().await {
                Ok(c) => c
                    .execute(
                        "SELECT pg_notify($1, l) FROM unnest($2::text[]) AS l",
                        &[&LANE_CHANNEL, &lanes],
                    )
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            // A lost notification costs latency, never work: owners sweep their lanes every
            // second. Nothing is retried here.
            if let Err(e) = sent {
                tracing::debug!(lanes = lanes.len(), error = %e, "lane notifications not sent");
            }
            // The last `Arc` is this task's own once the store is gone.
            if Arc::strong_count(&self.pending) == 1 {
                return;
            }
        }
    }
}
