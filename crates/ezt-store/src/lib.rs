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

mod deliveries;
mod error;
mod jobs;
mod lanes;
mod maintenance;
mod memory;
mod records;
mod secrets;
mod tenants;

#[cfg(feature = "testing")]
pub mod conformance;

pub use deliveries::DeliveryStore;
pub use error::{Error, Result};
pub use jobs::JobStore;
pub use lanes::LaneStore;
pub use maintenance::MaintenanceStore;
pub use memory::MemoryStore;
pub use records::*;
pub use secrets::SecretStore;
pub use tenants::TenantStore;

/// Everything the server needs from durable storage: every capability trait at once.
///
/// Implemented for every type that implements them all; never implement it by hand. Times are
/// passed in (ms since the epoch) by the caller's clock, so tests are deterministic.
pub trait Store:
    TenantStore + JobStore + DeliveryStore + SecretStore + LaneStore + MaintenanceStore
{
}

impl<T> Store for T where
    T: TenantStore + JobStore + DeliveryStore + SecretStore + LaneStore + MaintenanceStore
{
}

/// The capability traits, so their methods can be called on a concrete store:
/// `use ezt_store::prelude::*;`.
pub mod prelude {
    pub use crate::{
        DeliveryStore, JobStore, LaneStore, MaintenanceStore, SecretStore, Store, TenantStore,
    };
}
