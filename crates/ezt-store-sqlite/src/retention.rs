//! Purging finished jobs in small batches; SQLite reuses the freed pages for new jobs.

use ezt_store::{PurgeCutoffs, Result};
use rusqlite::{params_from_iter, types::Value, Connection};

use crate::codec::*;

/// Finished jobs by finish time, so a purge reads only what it deletes.
pub(crate) const MIGRATION: &str =
    "CREATE INDEX jobs_finished ON jobs (finished_at) WHERE finished_at IS NOT NULL;";

/// Deletes up to `limit` purgeable jobs and everything hanging off them; see
/// `MaintenanceStore::purge_finished`.
pub(crate) fn purge(c: &Connection, cutoffs: &PurgeCutoffs, limit: usize) -> Result<usize> {
    let Some(latest) = cutoffs.latest() else {
        return Ok(0);
    };
    // Each tenant's own cutoff as a CASE (NULL keeps the job); the outer bound on the latest
    // cutoff lets the partial index pick the candidates in finish order.
    let mut args: Vec<Value> = vec![Value::Integer(latest as i64)];
    let mut case = String::from("CASE tenant_id");
    for (t, cutoff) in &cutoffs.tenants {
        args.push(Value::Blob(id_blob(t.0).to_vec()));
        args.push(cutoff.map_or(Value::Null, |c| Value::Integer(c as i64)));
        case.push_str(&format!(" WHEN ?{} THEN ?{}", args.len() - 1, args.len()));
    }
    args.push(
        cutoffs
            .default
            .map_or(Value::Null, |c| Value::Integer(c as i64)),
    );
    if cutoffs.tenants.is_empty() {
        case = format!("?{}", args.len());
    } else {
        case.push_str(&format!(" ELSE ?{} END", args.len()));
    }
    args.push(Value::Integer(limit as i64));
    let sql = format!(
        "SELECT id FROM jobs WHERE finished_at IS NOT NULL AND finished_at < ?1 AND finished_at < ({case})
         AND NOT EXISTS (SELECT 1 FROM webhook_deliveries d WHERE d.job_id = jobs.id AND d.state = 'pending')
         ORDER BY finished_at LIMIT ?{}",
        args.len()
    );
    let ids: Vec<Vec<u8>> = {
        let mut st = c.prepare_cached(&sql).map_err(map_err)?;
        let rows = st
            .query_map(params_from_iter(args), |r| r.get(0))
            .map_err(map_err)?;
        rows.collect::<rusqlite::Result<_>>().map_err(map_err)?
    };
    for sql in [
        "DELETE FROM attempts WHERE job_id = ?1",
        "DELETE FROM webhook_payloads WHERE job_id = ?1",
        "DELETE FROM webhook_deliveries WHERE job_id = ?1",
        "DELETE FROM wakeups WHERE job_id = ?1",
        "DELETE FROM jobs WHERE id = ?1",
    ] {
        let mut st = c.prepare_cached(sql).map_err(map_err)?;
        for id in &ids {
            st.execute([id]).map_err(map_err)?;
        }
    }
    Ok(ids.len())
}
