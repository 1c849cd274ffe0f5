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

    async fn lane_states(&self) -> Result<Vec<(String, LaneState)>> {
        let rows: Vec<(String, String)> = self
            .read(move |c| {
                let mut st = c
                    .prepare("SELECT lane, data FROM lane_states ORDER BY lane")
                    .map_err(map_err)?;
                let rows = st
                    .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                    .map_err(map_err)?
                    .collect::<std::result::Result<Vec<_>, _>>()
                    .map_err(map_err)?;
                Ok(rows)
            })
            .await?;
        rows.into_iter()
            .map(|(lane, d)| Ok((lane, json_decode(&d)?)))
            .collect()
    }
}
