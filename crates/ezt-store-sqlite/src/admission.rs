//! Admitting one job inside a transaction: shared by `insert_jobs` and by the end of a job
//! that creates its `on_success` / `on_failure` child.

use ezt_core::{JobId, JobState};
use ezt_store::{Admission, NewJob, Result};
use rusqlite::{params, Connection, OptionalExtension};

use crate::codec::*;

/// Admits one job in the caller's transaction: inserted, or a duplicate of the live job holding
/// its key (or of itself, when its id is stored already).
pub(crate) fn insert_one(
    c: &Connection,
    spec: &str,
    j: NewJob,
    dedup_window_ms: u64,
) -> Result<Admission> {
    let mut find = c
        .prepare_cached(
            "SELECT id, state, finished_at FROM jobs WHERE tenant_id = ?1 AND idempotent_key = ?2 ORDER BY id DESC LIMIT 1",
        )
        .map_err(map_err)?;
    let mut insert = c
        .prepare_cached(
            "INSERT INTO jobs (id, tenant_id, lane, state, spec, idempotent_key, created_at, updated_at, run_at, deadline_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7, ?8, ?9) ON CONFLICT (id) DO NOTHING",
        )
        .map_err(map_err)?;
    let tenant = id_blob(j.tenant_id.0);
    let existing = find
        .query_row(params![tenant, j.idempotent_key], |r| {
            Ok((
                blob_id(&r.get::<_, Vec<u8>>(0)?),
                r.get::<_, String>(1)?,
                r.get::<_, Option<i64>>(2)?,
            ))
        })
        .optional()
        .map_err(map_err)?;
    if let Some((id, state, finished)) = existing {
        let state = parse_state(&state)?;
        if ezt_store::dedups(
            state,
            finished.map(|f| f as u64),
            j.created_at,
            dedup_window_ms,
        ) {
            return Ok(Admission::Duplicate {
                existing: JobId(id),
            });
        }
    }
    let state = if j.run_at > j.created_at {
        JobState::Scheduled
    } else {
        JobState::Queued
    };
    let n = insert
        .execute(params![
            id_blob(j.id.0),
            tenant,
            j.lane.0,
            state.as_str(),
            spec,
            j.idempotent_key,
            j.created_at as i64,
            j.run_at as i64,
            j.deadline_at as i64
        ])
        .map_err(map_err)?;
    if n == 0 {
        return Ok(Admission::Duplicate { existing: j.id });
    }
    Ok(Admission::Inserted)
}
