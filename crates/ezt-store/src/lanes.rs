//! What lanes learned from their targets (rate, concurrency, a pause).
//!
//! Apart because it is the scheduler's memory, not job data: it outlives a lane's eviction and
//! a restart, and in a cluster it is what a node adopting a lane reads first.

use async_trait::async_trait;

use crate::{LaneState, Result};

/// Saved lane state.
#[async_trait]
pub trait LaneStore: Send + Sync + 'static {
    /// Saves what a lane learned (replacing what was saved for `lane` before), except the
    /// tenant's pin: a lane saved before keeps its stored pin (only [`pin_lane`](Self::pin_lane)
    /// changes it, so an owner that has not heard of a pin set elsewhere cannot drop it); a
    /// lane saved for the first time takes `state`'s. `lane` is the scheduler's name for it
    /// (job and webhook lanes are prefixed apart).
    async fn save_lane_state(&self, lane: &str, state: LaneState) -> Result<()>;
    /// What was last saved for `lane`.
    async fn lane_state(&self, lane: &str) -> Result<Option<LaneState>>;
    /// Every saved lane state, by lane name (for `ezthrottle lanes list`), in name order.
    async fn lane_states(&self) -> Result<Vec<(String, LaneState)>>;
    /// Sets the tenant's pin of `lane` (`None` clears it) and nothing else of what the lane
    /// learned; a lane with nothing saved yet gets `fallback` (its configured limits, with the
    /// pin). The only write that changes a stored pin.
    async fn pin_lane(
        &self,
        lane: &str,
        pin: Option<crate::LanePin>,
        fallback: LaneState,
    ) -> Result<()>;
}
