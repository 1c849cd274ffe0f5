//! `LaneStore` in memory.

use async_trait::async_trait;

use super::MemoryStore;
use crate::*;

#[async_trait]
impl LaneStore for MemoryStore {
    async fn save_lane_state(&self, lane: &str, state: LaneState) -> Result<()> {
        self.lock().lane_states.insert(lane.to_string(), state);
        Ok(())
    }

    async fn lane_state(&self, lane: &str) -> Result<Option<LaneState>> {
        Ok(self.lock().lane_states.get(lane).copied())
    }
}
