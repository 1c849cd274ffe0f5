//! Opening connections and migrating the schema.

use std::path::Path;

use ezt_store::{Error, Result};
use rusqlite::Connection;

use crate::codec::map_err;

pub(crate) const MIGRATIONS: &[&str] = &[
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
    crate::deliveries::MIGRATION,
    // What idle lanes learned (rate, concurrency, pause), so eviction and restarts keep it.
    "CREATE TABLE lane_states (lane TEXT PRIMARY KEY, data TEXT NOT NULL) WITHOUT ROWID;",
    crate::retention::MIGRATION,
    // Who holds each lease, so recovery releases a dead holder's leases only. Leases taken
    // before holders were stored belong to the single node ('local' = `NodeId::LOCAL`).
    r#"
ALTER TABLE jobs ADD COLUMN lease_holder TEXT;
ALTER TABLE webhook_deliveries ADD COLUMN lease_holder TEXT;
UPDATE jobs SET lease_holder = 'local' WHERE lease_token IS NOT NULL;
UPDATE webhook_deliveries SET lease_holder = 'local' WHERE lease_token IS NOT NULL;
"#,
    crate::workflows::MIGRATION,
    crate::workflows::KEY_MIGRATION,
    // A webhook's `regions` (JSON array; NULL: deliver from anywhere).
    "ALTER TABLE webhook_deliveries ADD COLUMN regions TEXT;",
];

/// Opens a connection with the durability settings a 202 relies on. The writer connection
/// also migrates the schema.
pub(crate) fn open(path: &Path, migrate: bool) -> Result<Connection> {
    if migrate {
        private_files(path)?;
    }
    let conn = Connection::open(path).map_err(map_err)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))
        .map_err(map_err)?;
    if migrate {
        // Before WAL mode, like any change of the vacuum mode.
        no_auto_vacuum(&conn)?;
    }
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

/// Creates the data directory (0700) and the database file (0600) before SQLite opens it, and
/// tightens the files of an older version; see `private`.
fn private_files(path: &Path) -> Result<()> {
    let fail = |what: &Path, e: std::io::Error| Error::Unavailable {
        message: format!("create {}: {e}", what.display()),
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        crate::private::create_private_dir(dir).map_err(|e| fail(dir, e))?;
    }
    crate::private::create_private_file(path).map_err(|e| fail(path, e))?;
    for suffix in ["-wal", "-shm", "-journal"] {
        let mut side = path.as_os_str().to_owned();
        side.push(suffix);
        crate::private::tighten_or_warn(std::path::Path::new(&side));
    }
    Ok(())
}

/// Keeps SQLite's default `auto_vacuum = NONE`: purged jobs' pages go to the freelist and new
/// jobs reuse them, so under retention the file stays at its high-water size instead of growing.
/// INCREMENTAL would also hand pages back to the file system, but keeping its pointer map
/// cost ~5 % of admission throughput with 64 clients (one more page in every group commit),
/// so a file an earlier version switched to it is rewritten once (VACUUM) to NONE.
fn no_auto_vacuum(conn: &Connection) -> Result<()> {
    const NONE: i64 = 0;
    let mode: i64 = conn
        .query_row("PRAGMA auto_vacuum", [], |r| r.get(0))
        .map_err(map_err)?;
    if mode == NONE {
        return Ok(());
    }
    let t0 = std::time::Instant::now();
    conn.execute_batch("PRAGMA auto_vacuum = NONE; VACUUM;")
        .map_err(map_err)?;
    tracing::info!(
        ms = t0.elapsed().as_millis() as u64,
        "store: rewrote the database once (VACUUM) without auto-vacuum's pointer map"
    );
    Ok(())
}
