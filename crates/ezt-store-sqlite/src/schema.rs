//! Opening connections and migrating the schema.

use std::path::Path;

use ezt_store::{Error, Result};
use rusqlite::Connection;

use crate::codec::map_err;

const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE tenants (
    id BLOB PRIMARY KEY, name TEXT NOT NULL UNIQUE, tier TEXT NOT NULL, created_at INTEGER NOT NULL
);
CREATE TABLE api_keys (
    id BLOB PRIMARY KEY, tenant_id BLOB NOT NULL REFERENCES tenants (id), digest BLOB NOT NULL UNIQUE,
    prefix TEXT NOT NULL, created_at INTEGER NOT NULL, revoked_at INTEGER
);
CREATE TABLE jobs (
    id BLOB PRIMARY KEY, tenant_id BLOB NOT NULL, lane TEXT NOT NULL, state TEXT NOT NULL, spec TEXT NOT NULL,
    idempotent_key TEXT NOT NULL, created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL, run_at INTEGER NOT NULL,
    deadline_at INTEGER NOT NULL, attempt_count INTEGER NOT NULL DEFAULT 0, retries INTEGER NOT NULL DEFAULT 0,
    reroutes INTEGER NOT NULL DEFAULT 0, series INTEGER NOT NULL DEFAULT 1, lease_token INTEGER, lease_expires_at INTEGER,
    response TEXT, error TEXT, finished_at INTEGER
);
CREATE INDEX jobs_by_tenant ON jobs (tenant_id, id);
CREATE INDEX jobs_by_key ON jobs (tenant_id, idempotent_key, id);
CREATE INDEX jobs_pending ON jobs (id) WHERE state IN ('queued', 'scheduled', 'running');
CREATE TABLE attempts (job_id BLOB NOT NULL, n INTEGER NOT NULL, data TEXT NOT NULL, PRIMARY KEY (job_id, n)) WITHOUT ROWID;
CREATE TABLE wakeups (job_id BLOB NOT NULL);
"#,
    crate::webhooks::MIGRATION,
    // What idle lanes learned (rate, concurrency, pause), so eviction and restarts keep it.
    "CREATE TABLE lane_states (lane TEXT PRIMARY KEY, data TEXT NOT NULL) WITHOUT ROWID;",
];

/// Opens a connection with the durability settings a 202 relies on. The writer connection
/// also migrates the schema.
pub(crate) fn open(path: &Path, migrate: bool) -> Result<Connection> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| Error::Unavailable {
            message: format!("create {}: {e}", dir.display()),
        })?;
    }
    let conn = Connection::open(path).map_err(map_err)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))
        .map_err(map_err)?;
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .map_err(map_err)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(Error::Other(format!("could not enable WAL (got {mode})")));
    }
    conn.execute_batch(
        "PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON; PRAGMA cache_size = -32000;",
    )
    .map_err(map_err)?;
    let sync: i64 = conn
        .query_row("PRAGMA synchronous", [], |r| r.get(0))
        .map_err(map_err)?;
    if sync < 2 {
        return Err(Error::Other(format!(
            "synchronous is {sync}, FULL (2) is required for durable acks"
        )));
    }
    if migrate {
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(map_err)?;
        for (i, m) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            conn.execute_batch(&format!(
                "BEGIN IMMEDIATE; {m}; PRAGMA user_version = {}; COMMIT;",
                i + 1
            ))
            .map_err(map_err)?;
        }
    }
    Ok(conn)
}
