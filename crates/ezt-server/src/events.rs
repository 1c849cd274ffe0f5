//! Per-job event fan-out for `/events` (SSE), `/wait` and `?wait=`.
//!
//! Only jobs somebody is watching have a channel, so the dispatch path pays one map lookup per
//! event and nothing more.

use std::collections::HashMap;
use std::sync::Mutex;

use ezt_core::JobId;
use serde::Serialize;
use tokio::sync::broadcast;

/// One event in a job's life.
#[derive(Debug, Clone, Serialize)]
pub struct JobEvent {
    /// `queued`, `position`, `dispatching`, `attempt`, or a final state name.
    pub event: String,
    /// Event data.
    pub data: serde_json::Value,
    /// True for the last event of a job (a final state).
    #[serde(skip)]
    pub terminal: bool,
}

/// The hub.
#[derive(Debug, Default)]
pub struct Events {
    subs: Mutex<HashMap<JobId, broadcast::Sender<JobEvent>>>,
}

impl Events {
    /// Starts receiving `id`'s future events.
    pub fn subscribe(&self, id: JobId) -> broadcast::Receiver<JobEvent> {
        let mut g = self.subs.lock().unwrap_or_else(|p| p.into_inner());
        g.entry(id)
            .or_insert_with(|| broadcast::channel(64).0)
            .subscribe()
    }

    /// Whether anyone watches `id` (so callers can skip building an event nobody reads).
    pub fn is_watched(&self, id: JobId) -> bool {
        self.subs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(&id)
    }

    /// Sends an event to whoever watches `id`; `make` runs only when someone does, which keeps
    /// serialisation off the dispatch path of unwatched jobs.
    pub fn publish(&self, id: JobId, make: impl FnOnce() -> JobEvent) {
        let mut g = self.subs.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(tx) = g.get(&id) {
            let event = make();
            let terminal = event.terminal;
            let _ = tx.send(event);
            if terminal || tx.receiver_count() == 0 {
                g.remove(&id);
            }
        }
    }
}
