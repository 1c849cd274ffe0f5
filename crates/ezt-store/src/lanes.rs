//! What lanes learned from their targets (rate, concurrency, a pause).
//!
//! Apart because it is the scheduler's memory, not job data: it outlives a lane's eviction and
//! a restart, and in a cluster it is what a node adopting a lane reads first.

use async_trait::async_trait;

use crate::{LaneState, Result};

/// Saved lane state.
#[async_trait]
pub trait LaneStore: Send + Sync + 'static {
    /// Saves what a lane learned (replacing what was saved for `lane` before). `lane` is the
    /// scheduler's name for it (job and webhook lanes are prefixed apart).
    async fn save_lane_state(&self, lane: &str, state: LaneState) -> Result<()>;
    /// What was last saved for `lane`.
    async fn lane_state(&self, lane: &str) -> Result<Option<LaneState>>;
    /// Every saved lane state, by lane name (for `ezthrottle lanes list`), in name order.
    async fn lane_states(&self) -> Result<Vec<(String, LaneState)>>;
}
