//! `LaneStore` on PostgreSQL: what a lane learned, written through to its `lanes` row (the row
//! cluster mode also keeps the lane's owner and epoch in; saving never touches those).

use async_trait::async_trait;
use ezt_store::*;

use crate::codec::*;
use crate::PgStore;

#[async_trait]
impl LaneStore for PgStore {
    async fn save_lane_state(&self, lane: &str, s: LaneState) -> Result<()> {
        let c = self.client().await?;
        let st = c
            .prepare_cached(
                "INSERT INTO lanes (lane, rate, burst, max_in_flight, paused_until_ms, learned_at_ms, updated_at, paused_until_db)
                 VALUES ($1, $2, $3, $4, $5, $6, ezt_now_ms(), ezt_now_ms() + $7)
                 ON CONFLICT (lane) DO UPDATE SET rate = EXCLUDED.rate, burst = EXCLUDED.burst,
                 max_in_flight = EXCLUDED.max_in_flight, paused_until_ms = EXCLUDED.paused_until_ms,
                 learned_at_ms = EXCLUDED.learned_at_ms, updated_at = EXCLUDED.updated_at,
                 paused_until_db = EXCLUDED.paused_until_db",
            )
            .await
            .map_err(pg_err)?;
        c.execute(
            &st,
            &[
                &lane,
                &s.rate,
                &(s.burst as i32),
                &(s.max_in_flight as i32),
                &s.paused_until_ms.map(|v| v as i64),
                &(s.updated_at_ms as i64),
                // The pause as the saving node's clock sees it (until − now at saving), moved
                // onto the database clock: an adopter reads the remaining pause from it.
                &s.paused_until_ms
                    .map(|p| p.saturating_sub(s.updated_at_ms) as i64),
            ],
        )
        .await
        .map_err(pg_err)?;
        Ok(())
    }

    async fn lane_state(&self, lane: &str) -> Result<Option<LaneState>> {
        let c = self.client().await?;
        // A row made by an ownership claim alone has learned nothing yet.
        let row = c
            .query_opt(
                "SELECT rate, burst, max_in_flight, paused_until_ms, learned_at_ms FROM lanes
                 WHERE lane = $1 AND rate IS NOT NULL",
                &[&lane],
            )
            .await
            .map_err(pg_err)?;
        Ok(row.map(|r| LaneState {
            rate: r.get(0),
            burst: r.get::<_, Option<i32>>(1).unwrap_or(0) as u32,
            max_in_flight: r.get::<_, Option<i32>>(2).unwrap_or(0) as u32,
            paused_until_ms: r.get::<_, Option<i64>>(3).map(|v| v as u64),
            updated_at_ms: r.get::<_, Option<i64>>(4).unwrap_or(0) as u64,
        }))
    }
}
