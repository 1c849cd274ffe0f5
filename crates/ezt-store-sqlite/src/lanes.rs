//! `LaneStore` on SQLite: one JSON row per lane.

use async_trait::async_trait;
use ezt_store::*;
use rusqlite::{params, OptionalExtension};

use crate::codec::*;
use crate::SqliteStore;

impl SqliteStore {
    /// Replaces a lane's state by `f(what is stored)`, in one write.
    async fn update_lane(
        &self,
        lane: &str,
        f: impl FnOnce(Option<LaneState>) -> LaneState + Send + 'static,
    ) -> Result<()> {
        let lane = lane.to_string();
        self.write(move |c| {
            let old: Option<String> = c
                .query_row(
                    "SELECT data FROM lane_states WHERE lane = ?1",
                    params![lane],
                    |r| r.get(0),
                )
                .optional()
                .map_err(map_err)?;
            let old = old.map(|d| json_decode::<LaneState>(&d)).transpose()?;
            let data = json_encode(&f(old))?;
            c.execute(
                "INSERT OR REPLACE INTO lane_states (lane, data) VALUES (?1, ?2)",
                params![lane, data],
            )
            .map(drop)
            .map_err(map_err)
        })
        .await
    }
}

#[async_trait]
impl LaneStore for SqliteStore {
    async fn save_lane_state(&self, lane: &str, state: LaneState) -> Result<()> {
        // The stored pin stays (only `pin_lane` changes it).
        self.update_lane(lane, move |old| {
            let mut state = state;
            if let Some(old) = old {
                state.detail.pin = old.detail.pin;
            }
            state
        })
        .await
    }

    async fn pin_lane(&self, lane: &str, pin: Option<LanePin>, fallback: LaneState) -> Result<()> {
        self.update_lane(lane, move |old| {
            let mut st = old.unwrap_or(fallback);
            st.detail.pin = pin;
            st
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
