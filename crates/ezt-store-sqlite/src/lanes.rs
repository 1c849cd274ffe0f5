//! `LaneStore` on SQLite: one JSON row per lane.

use async_trait::async_trait;
use ezt_store::*;
use rusqlite::{params, OptionalExtension};

use crate::codec::*;
use crate::SqliteStore;

#[async_trait]
impl LaneStore for SqliteStore {
    async fn save_lane_state(&self, lane: &str, state: LaneState) -> Result<()> {
        let lane = lane.to_string();
        let data = json_encode(&state)?;
        self.write(move |c| {
            c.execute(
                "INSERT OR REPLACE INTO lane_states (lane, data) VALUES (?1, ?2)",
                params![lane, data],
            )
            .map(drop)
            .map_err(map_err)
        })
        .await
    }

    async fn lane_state(&self, lane: &str) -> Result<Option<LaneState>> {
        let lane = lane.to_string();
        let data: Option<String> = self
            .read(move |c| {
                c.query_row(
                    "SELECT data FROM lane_states WHERE lane = ?1",
                    params![lane],
                    |r| r.get(0),
                )
                .optional()
                .map_err(map_err)
            })
            .await?;
        data.map(|d| json_decode(&d)).transpose()
    }
}
