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
        Ok(self.lock().lane_states.get(lane).cloned())
    }

    async fn lane_states(&self) -> Result<Vec<(String, LaneState)>> {
        let mut all: Vec<(String, LaneState)> = self
            .lock()
            .lane_states
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(all)
    }
}
