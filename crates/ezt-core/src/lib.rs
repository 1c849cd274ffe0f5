//! Pure domain logic of EZThrottle.
//!
//! Nothing in this crate performs I/O or reads the clock: time, randomness and inputs are passed
//! in, decisions come out. That keeps the rules that matter most (what a valid job is, which lane
//! it joins, when the limiter lets it go, who goes next, when it is retried) deterministic and
//! testable with plain unit and property tests.
#![warn(missing_docs)]

pub mod aimd;
pub mod api_key;
pub mod condition;
pub mod duration;
pub mod error;
pub mod fair_queue;
pub mod gcra;
pub mod hedge;
pub mod idempotency;
pub mod ids;
pub mod job;
pub mod lane;
#[cfg(feature = "openapi")]
pub mod openapi;
pub mod ratelimit_headers;
pub mod retry;
pub mod ssrf;
pub mod state;
pub mod template;
pub mod tier;
pub mod webhook;
pub mod workflow;
pub mod workflow_events;

pub use error::FieldError;
pub use ids::{ApiKeyId, DeliveryId, JobId, TenantId, WorkflowId};
pub use state::JobState;
