//! `LaneStore` in memory.

use async_trait::async_trait;

use super::MemoryStore;
use crate::*;

#[async_trait]
impl LaneStore for MemoryStore {
    async fn save_lane_state(&self, lane: &str, mut state: LaneState) -> Result<()> {
        let mut g = self.lock();
        if let Some(old) = g.lane_states.get(lane) {
            state.detail.pin = old.detail.pin.clone();
        }
        g.lane_states.insert(lane.to_string(), state);
        Ok(())
    }

    async fn pin_lane(&self, lane: &str, pin: Option<LanePin>, fallback: LaneState) -> Result<()> {
        let mut g = self.lock();
        let st = g.lane_states.entry(lane.to_string()).or_insert(fallback);
        st.detail.pin = pin;
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
