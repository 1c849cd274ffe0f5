//! Tests of the runtime's parts working together: the whole runtime (`start_with_clock`) over a
//! memory store and an injected clock, against scripted targets on 127.0.0.1: one attempt of
//! dispatch, webhook delivery, admission.
//!
//! They live here, under the crate root, rather than in each module, because they need the
//! wiring that only the root does; a module importing the root (or `dispatch` importing the
//! jobs service for its test) would break the layering that `tests/layers.rs` checks. The
//! root's items are reached through `super::` (this is the root's own test module).

// Re-exported for the submodules: the root wires the runtime.
use super::{start_with_clock, Runtime};

mod admission;
mod deliver;
mod dispatch;
mod rig;
