//! Row encoding (ids as 16-byte big-endian `bytea`, so byte order is time order; JSON text for
//! nested values) and the mapping from driver errors to the store's error kinds.

use ezt_core::{ApiKeyId, JobId, TenantId};
use ezt_store::{ApiKeyRecord, Error, JobRecord, Result, Tenant};
use tokio_postgres::error::SqlState;
use tokio_postgres::Row;

pub(crate) use ezt_store::codec::{
    bytes_id, encode_outcome, json_decode, json_encode, parse_state, parse_tier,
};

/// An id as a `bytea` parameter.
pub(crate) fn id_bytes(v: u128) -> Vec<u8> {
    ezt_store::codec::id_bytes(v).to_vec()
}

/// The tenant filter as a parameter: `NULL` (any tenant, for the CLI and the executor) or the
/// tenant's id. Queries say `($N::bytea IS NULL OR tenant_id = $N)`.
pub(crate) fn tenant_param(t: Option<TenantId>) -> Option<Vec<u8>> {
    t.map(|t| id_bytes(t.0))
}

/// Whether a failed transaction may simply be run again (deadlock, serialization failure).
pub(crate) fn retryable(e: &tokio_postgres::Error) -> bool {
    e.code().is_some_and(|c| {
        *c == SqlState::T_R_DEADLOCK_DETECTED || *c == SqlState::T_R_SERIALIZATION_FAILURE
    })
}

/// Connection trouble, a server shutting down or out of resources, a read-only standby: the
/// store is unavailable (the caller may retry), not broken. A uniqueness violation is a
/// conflict. Anything else is a bug or corruption.
pub(crate) fn pg_err(e: tokio_postgres::Error) -> Error {
    let Some(db) = e.as_db_error() else {
        // No server answer: the connection broke, timed out or was closed.
        let text = e.to_string();
        if text.contains("serializ") || text.contains("deserializ") {
            return Error::Other(text);
        }
        return Error::Unavailable { message: text };
    };
    let code = db.code().code();
    if *db.code() == SqlState::UNIQUE_VIOLATION {
        return Error::Conflict(db.message().to_string());
    }
    // Classes 08 (connection), 53 (resources), 57 (operator intervention, e.g. shutdown),
    // 40 (transaction rollback: deadlock, serialization), 25006 (read-only transaction).
    if ["08", "53", "57", "40"].iter().any(|c| code.starts_with(c)) || code == "25006" {
        return Error::Unavailable {
            message: format!("{}: {}", code, db.message()),
        };
    }
    Error::Other(format!("{}: {}", code, db.message()))
}

pub(crate) fn pool_err(e: deadpool_postgres::PoolError) -> Error {
    match e {
        deadpool_postgres::PoolError::Backend(e) => pg_err(e),
        other => Error::Unavailable {
            message: format!("database connection: {other}"),
        },
    }
}

pub(crate) fn tenant_row(r: &Row) -> Tenant {
    Tenant {
        id: TenantId(bytes_id(r.get(0))),
        name: r.get(1),
        tier: parse_tier(r.get(2)),
        created_at: r.get::<_, i64>(3) as u64,
    }
}

pub(crate) fn key_row(r: &Row) -> ApiKeyRecord {
    let digest: &[u8] = r.get(2);
    ApiKeyRecord {
        id: ApiKeyId(bytes_id(r.get(0))),
        tenant_id: TenantId(bytes_id(r.get(1))),
        digest: digest.try_into().unwrap_or([0; 32]),
        prefix: r.get(3),
        created_at: r.get::<_, i64>(4) as u64,
        revoked_at: r.get::<_, Option<i64>>(5).map(|v| v as u64),
    }
}

pub(crate) const JOB_COLUMNS: &str = "id, tenant_id, lane, state, spec, idempotent_key, created_at, updated_at, run_at, deadline_at, \
     attempt_count, retries, reroutes, series, response, error, finished_at";

/// Decodes a row of `JOB_COLUMNS`.
pub(crate) fn job_row(r: &Row) -> Result<JobRecord> {
    let response: Option<&str> = r.get(14);
    let error: Option<&str> = r.get(15);
    Ok(JobRecord {
        id: JobId(bytes_id(r.get(0))),
        tenant_id: TenantId(bytes_id(r.get(1))),
        lane: ezt_core::lane::LaneKey(r.get(2)),
        state: parse_state(r.get(3))?,
        spec: json_decode(r.get(4))?,
        idempotent_key: r.get(5),
        created_at: r.get::<_, i64>(6) as u64,
        updated_at: r.get::<_, i64>(7) as u64,
        run_at: r.get::<_, i64>(8) as u64,
        deadline_at: r.get::<_, i64>(9) as u64,
        attempt_count: r.get::<_, i32>(10) as u32,
        retries: r.get::<_, i32>(11) as u32,
        reroutes: r.get::<_, i32>(12) as u32,
        series: r.get::<_, i32>(13) as u32,
        response: response.map(json_decode).transpose()?,
        error: error.map(json_decode).transpose()?,
        finished_at: r.get::<_, Option<i64>>(16).map(|v| v as u64),
        attempts: Vec::new(),
        deliveries: Vec::new(),
    })
}
