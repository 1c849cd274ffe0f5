//! Storage for EZThrottle: the store traits every backend implements, the records they speak,
//! the in-memory backend, and (behind the `testing` feature) the conformance suite that every
//! backend runs, so SQLite, PostgreSQL and memory cannot drift apart.
//!
//! The storage contract is split by capability, one trait per module, so code that needs one
//! capability asks for just that and a new backend can be built (and checked) a part at a time:
//!
//! | trait              | owns                                                          |
//! |--------------------|---------------------------------------------------------------|
//! | [`TenantStore`]    | tenants, API keys, authentication                             |
//! | [`JobStore`]       | admission, the attempt lease cycle, cancel/replay/expire, recovery, wake-ups |
//! | [`DeliveryStore`]  | the webhook delivery lease cycle, redelivery                  |
//! | [`SecretStore`]    | webhook signing secrets, the installation's key/value secrets |
//! | [`LaneStore`]      | what lanes learned from their targets                         |
//! | [`MaintenanceStore`] | readiness probe, retention                                  |
//! | [`WorkflowStore`]  | workflow runs (advanced by the outcome of their step jobs)     |
//! | [`ClusterStore`]   | node membership, lane ownership and fencing (cluster mode)     |
//!
//! [`Store`] is all of them at once (implemented for every type that has them), so the server
//! can hold one `Arc<dyn Store>`. Every capability's methods can be called on a `dyn Store` (and
//! on a generic `S: Store`) without importing anything; on a concrete backend (`MemoryStore`,
//! `SqliteStore`) bring the traits into scope with `use ezt_store::prelude::*;`.
//!
//! Atomicity lives here, never in handlers: "insert job + claim idempotency key" and "finish
//! attempt + schedule the next step (+ create the job's webhook deliveries)" are each one call
//! and one transaction.
#![warn(missing_docs)]

mod cluster;
pub mod codec;
mod deliveries;
mod error;
mod jobs;
mod lanes;
mod maintenance;
mod memory;
mod records;
mod secrets;
mod tenants;
mod workflows;

#[cfg(feature = "testing")]
pub mod conformance;

pub use cluster::{
    parse_pin_message, parse_work_message, pin_message, work_message, ClusterStore, Fence,
    LaneClaim, LaneOwner, LaneRow, NodeInfo, NodeRecord, OwnedLane, SoloCluster, MEMBERS_MESSAGE,
};
pub use deliveries::DeliveryStore;
pub use error::{Error, Result};
pub use jobs::JobStore;
pub use lanes::LaneStore;
pub use maintenance::MaintenanceStore;
pub use memory::MemoryStore;
pub use records::*;
pub use secrets::SecretStore;
pub use tenants::TenantStore;
pub use workflows::{
    apply_control, pending_of, release_jobs, run_key, run_outcomes, step_ended,
    step_ended_with_events, workflow_of, Applied, ControlOutcome, RunControl, RunOutcome,
    WorkflowAdmission, WorkflowRecord, WorkflowStore,
};

/// Everything the server needs from durable storage: every capability trait at once.
///
/// Implemented for every type that implements them all; never implement it by hand. Times are
/// passed in (ms since the epoch) by the caller's clock, so tests are deterministic.
pub trait Store:
    TenantStore
    + JobStore
    + DeliveryStore
    + SecretStore
    + LaneStore
    + MaintenanceStore
    + WorkflowStore
    + ClusterStore
{
}

impl<T> Store for T where
    T: TenantStore
        + JobStore
        + DeliveryStore
        + SecretStore
        + LaneStore
        + MaintenanceStore
        + WorkflowStore
        + ClusterStore
{
}

/// The capability traits, so their methods can be called on a concrete store:
/// `use ezt_store::prelude::*;`.
pub mod prelude {
    pub use crate::{
        ClusterStore, DeliveryStore, JobStore, LaneStore, MaintenanceStore, SecretStore, Store,
        TenantStore, WorkflowStore,
    };
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    /// One `Arc<dyn Store>` serves every capability without imports, and hands a part of
    /// itself to code that needs only one capability.
    #[tokio::test]
    async fn a_store_object_is_every_capability() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        store.ping().await.unwrap();
        assert!(store.list_tenants().await.unwrap().is_empty());
        let lanes: Arc<dyn LaneStore> = store.clone();
        let jobs: Arc<dyn JobStore> = store.clone();
        assert_eq!(lanes.lane_state("job:a").await.unwrap(), None);
        assert!(jobs.take_wakeups().await.unwrap().is_empty());
        let rec = jobs.recover(&NodeId::local(), 1, "local").await.unwrap();
        assert_eq!(rec, Recovered::default());
    }

    #[test]
    fn the_local_node_is_shared_not_allocated_per_lease() {
        let (a, b) = (NodeId::local(), NodeId::local());
        assert_eq!(a.as_str(), NodeId::LOCAL);
        assert!(std::ptr::eq(a.as_str(), b.as_str()));
        assert_ne!(NodeId::new("node-b"), a);
    }
}
