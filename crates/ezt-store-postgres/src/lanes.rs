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
                "INSERT INTO lanes (lane, rate, burst, max_in_flight, paused_until_ms, learned_at_ms, detail, updated_at, paused_until_db, pinned)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, ezt_now_ms(), ezt_now_ms() + $8, $9)
                 ON CONFLICT (lane) DO UPDATE SET rate = EXCLUDED.rate, burst = EXCLUDED.burst,
                 max_in_flight = EXCLUDED.max_in_flight, paused_until_ms = EXCLUDED.paused_until_ms,
                 learned_at_ms = EXCLUDED.learned_at_ms,
                 detail = CASE WHEN lanes.detail IS NULL THEN EXCLUDED.detail
                   WHEN lanes.detail::jsonb ? 'pin'
                   THEN jsonb_set(EXCLUDED.detail::jsonb, '{pin}', lanes.detail::jsonb -> 'pin')::text
                   ELSE (EXCLUDED.detail::jsonb - 'pin')::text END,
                 pinned = CASE WHEN lanes.detail IS NULL THEN EXCLUDED.pinned ELSE lanes.pinned END,
                 updated_at = EXCLUDED.updated_at, paused_until_db = EXCLUDED.paused_until_db",
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
                &json_encode(&s.detail)?,
                // The pause as the saving node's clock sees it (until − now at saving), moved
                // onto the database clock: an adopter reads the remaining pause from it.
                &s.paused_until_ms
                    .map(|p| p.saturating_sub(s.updated_at_ms) as i64),
                &s.detail.pin.is_some(),
            ],
        )
        .await
        .map_err(pg_err)?;
        Ok(())
    }

    async fn pin_lane(&self, lane: &str, pin: Option<LanePin>, fallback: LaneState) -> Result<()> {
        // One statement: the owner's saves of what it learned may run at the same time, and
        // only the pin is this caller's to change.
        let pinned = pin.is_some();
        let pin_json = pin.as_ref().map(json_encode).transpose()?;
        let fallback = LaneState {
            detail: LaneDetail {
                pin,
                ..fallback.detail
            },
            ..fallback
        };
        let c = self.client().await?;
        c.execute(
            "INSERT INTO lanes (lane, rate, burst, max_in_flight, learned_at_ms, detail, pinned)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (lane) DO UPDATE SET
               rate = COALESCE(lanes.rate, EXCLUDED.rate),
               burst = COALESCE(lanes.burst, EXCLUDED.burst),
               max_in_flight = COALESCE(lanes.max_in_flight, EXCLUDED.max_in_flight),
               learned_at_ms = COALESCE(lanes.learned_at_ms, EXCLUDED.learned_at_ms),
               detail = CASE WHEN lanes.rate IS NULL THEN EXCLUDED.detail
                        WHEN $8::text IS NULL THEN (COALESCE(lanes.detail, '{}')::jsonb - 'pin')::text
                        ELSE jsonb_set(COALESCE(lanes.detail, '{}')::jsonb, '{pin}', ($8::text)::jsonb)::text END,
               pinned = EXCLUDED.pinned, updated_at = ezt_now_ms()",
            &[
                &lane,
                &fallback.rate,
                &(fallback.burst as i32),
                &(fallback.max_in_flight as i32),
                &(fallback.updated_at_ms as i64),
                &json_encode(&fallback.detail)?,
                &pinned,
                &pin_json,
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
                "SELECT rate, burst, max_in_flight, paused_until_ms, learned_at_ms, detail FROM lanes
                 WHERE lane = $1 AND rate IS NOT NULL",
                &[&lane],
            )
            .await
            .map_err(pg_err)?;
        row.map(|r| lane_state_of(&r, 0)).transpose()
    }

    async fn lane_states(&self) -> Result<Vec<(String, LaneState)>> {
        let c = self.client().await?;
        let rows = c
            .query(
                "SELECT lane, rate, burst, max_in_flight, paused_until_ms, learned_at_ms, detail
                 FROM lanes WHERE rate IS NOT NULL ORDER BY lane",
                &[],
            )
            .await
            .map_err(pg_err)?;
        rows.iter()
            .map(|r| Ok((r.get::<_, String>(0), lane_state_of(r, 1)?)))
            .collect()
    }
}

/// [`lane_state_of`], or `None` for a row that has learned nothing yet (`rate` NULL: made by
/// an ownership claim alone).
pub(crate) fn learned_state(r: &tokio_postgres::Row, at: usize) -> Result<Option<LaneState>> {
    match r.get::<_, Option<f64>>(at) {
        Some(_) => lane_state_of(r, at).map(Some),
        None => Ok(None),
    }
}

/// A lane state from the columns `rate, burst, max_in_flight, paused_until_ms, learned_at_ms,
/// detail` starting at `at`.
fn lane_state_of(r: &tokio_postgres::Row, at: usize) -> Result<LaneState> {
    Ok(LaneState {
        rate: r.get(at),
        burst: r.get::<_, Option<i32>>(at + 1).unwrap_or(0) as u32,
        max_in_flight: r.get::<_, Option<i32>>(at + 2).unwrap_or(0) as u32,
        paused_until_ms: r.get::<_, Option<i64>>(at + 3).map(|v| v as u64),
        updated_at_ms: r.get::<_, Option<i64>>(at + 4).unwrap_or(0) as u64,
        detail: r
            .get::<_, Option<&str>>(at + 5)
            .map(json_decode)
            .transpose()?
            .unwrap_or_default(),
    })
}
