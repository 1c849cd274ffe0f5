//! Row encoding: ids as 16-byte big-endian blobs (so byte order is time order), JSON for
//! nested values, and the mapping from SQLite errors to the store's error kinds.

use ezt_core::{ApiKeyId, JobId, TenantId};
use ezt_store::{ApiKeyRecord, Error, JobRecord, Result, Tenant};
use rusqlite::{ErrorCode, Row};

pub(crate) use ezt_store::codec::{
    bytes_id as blob_id, encode_outcome, id_bytes as id_blob, json_decode, json_encode,
    parse_state, parse_tier,
};

/// Disk full, I/O failure, locked or read-only database: the store is unavailable, not broken.
pub(crate) fn map_err(e: rusqlite::Error) -> Error {
    if let rusqlite::Error::SqliteFailure(f, _) = &e {
        if matches!(
            f.code,
            ErrorCode::DiskFull
                | ErrorCode::SystemIoFailure
                | ErrorCode::DatabaseBusy
                | ErrorCode::DatabaseLocked
                | ErrorCode::ReadOnly
                | ErrorCode::CannotOpen
                | ErrorCode::OutOfMemory
        ) {
            return Error::Unavailable {
                message: e.to_string(),
            };
        }
    }
    Error::Other(e.to_string())
}

pub(crate) fn tenant_row(r: &Row<'_>) -> rusqlite::Result<Tenant> {
    Ok(Tenant {
        id: TenantId(blob_id(&r.get::<_, Vec<u8>>(0)?)),
        name: r.get(1)?,
        tier: parse_tier(&r.get::<_, String>(2)?),
        created_at: r.get::<_, i64>(3)? as u64,
    })
}

pub(crate) fn key_row(r: &Row<'_>) -> rusqlite::Result<ApiKeyRecord> {
    let digest: Vec<u8> = r.get(2)?;
    Ok(ApiKeyRecord {
        id: ApiKeyId(blob_id(&r.get::<_, Vec<u8>>(0)?)),
        tenant_id: TenantId(blob_id(&r.get::<_, Vec<u8>>(1)?)),
        digest: digest.try_into().unwrap_or([0; 32]),
        prefix: r.get(3)?,
        created_at: r.get::<_, i64>(4)? as u64,
        revoked_at: r.get::<_, Option<i64>>(5)?.map(|v| v as u64),
    })
}

pub(crate) const JOB_COLUMNS: &str = "id, tenant_id, lane, state, spec, idempotent_key, created_at, updated_at, run_at, deadline_at, \
     attempt_count, retries, reroutes, series, response, error, finished_at";

/// Decodes a row of `JOB_COLUMNS`; the outer error is SQLite's, the inner one a corrupt value.
pub(crate) fn job_row(r: &Row<'_>) -> rusqlite::Result<Result<JobRecord>> {
    let state: String = r.get(3)?;
    let spec: String = r.get(4)?;
    let response: Option<String> = r.get(14)?;
    let error: Option<String> = r.get(15)?;
    let id = JobId(blob_id(&r.get::<_, Vec<u8>>(0)?));
    let tenant_id = TenantId(blob_id(&r.get::<_, Vec<u8>>(1)?));
    let lane = ezt_core::lane::LaneKey(r.get(2)?);
    let idempotent_key: String = r.get(5)?;
    let nums = (
        r.get::<_, i64>(6)? as u64,
        r.get::<_, i64>(7)? as u64,
        r.get::<_, i64>(8)? as u64,
        r.get::<_, i64>(9)? as u64,
        r.get::<_, u32>(10)?,
        r.get::<_, u32>(11)?,
        r.get::<_, u32>(12)?,
        r.get::<_, u32>(13)?,
        r.get::<_, Option<i64>>(16)?.map(|v| v as u64),
    );
    Ok((|| {
        Ok(JobRecord {
            id,
            tenant_id,
            lane,
            state: parse_state(&state)?,
            spec: json_decode(&spec)?,
            idempotent_key,
            created_at: nums.0,
            updated_at: nums.1,
            run_at: nums.2,
            deadline_at: nums.3,
            attempt_count: nums.4,
            retries: nums.5,
            reroutes: nums.6,
            series: nums.7,
            response: response.as_deref().map(json_decode).transpose()?,
            error: error.as_deref().map(json_decode).transpose()?,
            finished_at: nums.8,
            attempts: Vec::new(),
            deliveries: Vec::new(),
        })
    })())
}

/// The `regions` column of a delivery: a JSON array, NULL when the webhook lists none.
pub(crate) fn regions_column(regions: &[String]) -> Result<Option<String>> {
    if regions.is_empty() {
        return Ok(None);
    }
    json_encode(&regions).map(Some)
}
