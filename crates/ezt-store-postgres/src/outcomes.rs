//! Storing an outcome (a job's, or a workflow run's event): its payload and its deliveries,
//! inside the caller's transaction. Shared by `deliveries` (a job's end) and `workflows` (a
//! run's events).

use deadpool_postgres::GenericClient;
use ezt_store::*;

use crate::codec::*;

/// Stores an outcome's payload under `(job, series)` and its deliveries.
pub(crate) async fn insert_outcome(
    c: &impl GenericClient,
    job: &[u8],
    tenant_id: &[u8],
    series: i32,
    outcome: &Outcome,
    now_ms: u64,
) -> Result<()> {
    let st = c
        .prepare_cached(
            "INSERT INTO webhook_payloads (job_id, series, payload) VALUES ($1, $2, $3)
             ON CONFLICT (job_id, series) DO UPDATE SET payload = EXCLUDED.payload",
        )
        .await
        .map_err(pg_err)?;
    c.execute(&st, &[&job, &series, &outcome.payload])
        .await
        .map_err(pg_err)?;
    let ids: Vec<Vec<u8>> = outcome
        .deliveries
        .iter()
        .map(|d| id_bytes(d.0 .0))
        .collect();
    let idx: Vec<i32> = outcome.deliveries.iter().map(|d| d.1 as i32).collect();
    let urls: Vec<&str> = outcome.deliveries.iter().map(|d| d.2.as_str()).collect();
    let voting: Vec<bool> = outcome.deliveries.iter().map(|d| d.3).collect();
    // A webhook's `regions` as a JSON array text; NULL when it lists none.
    let regions: Vec<Option<String>> = outcome
        .deliveries
        .iter()
        .map(|d| (!d.4.is_empty()).then(|| serde_json::to_string(&d.4).expect("strings serialize")))
        .collect();
    let st = c
        .prepare_cached(
            "INSERT INTO webhook_deliveries (id, job_id, tenant_id, series, idx, url, voting, state, created_at, next_at, regions)
             SELECT id, $2, $3, $4, idx, url, voting, 'pending', $8, $8, regions::jsonb
             FROM unnest($1::bytea[], $5::int4[], $6::text[], $7::bool[], $9::text[]) AS t(id, idx, url, voting, regions)",
        )
        .await
        .map_err(pg_err)?;
    c.execute(
        &st,
        &[
            &ids,
            &job,
            &tenant_id,
            &series,
            &idx,
            &urls,
            &voting,
            &(now_ms as i64),
            &regions,
        ],
    )
    .await
    .map_err(pg_err)?;
    Ok(())
}
