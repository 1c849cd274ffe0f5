//! Versioned migrations: embedded SQL files, recorded in `schema_migrations`, applied in one
//! transaction under a transaction-scoped advisory lock.
//!
//! Nodes starting together all call `migrate`: the first takes the lock and applies what is
//! missing; the others wait on the lock, then find everything recorded and apply nothing. DDL is
//! transactional in PostgreSQL, so a crash mid-migration leaves the previous version intact.

use deadpool_postgres::GenericClient;
use ezt_store::{Error, Result};

use crate::codec::pg_err;

/// (version, name, SQL) of every migration, in order. Versions are never reused or edited once
/// released: a change is a new file.
pub const MIGRATIONS: &[(i32, &str, &str)] = &[
    (1, "init", include_str!("../migrations/0001_init.sql")),
    (
        2,
        "lane_detail",
        include_str!("../migrations/0002_lane_detail.sql"),
    ),
    (
        3,
        "workflows",
        include_str!("../migrations/0003_workflows.sql"),
    ),
    (4, "cluster", include_str!("../migrations/0004_cluster.sql")),
    (
        5,
        "workflow_keys",
        include_str!("../migrations/0005_workflow_keys.sql"),
    ),
    (
        6,
        "webhook_regions",
        include_str!("../migrations/0006_webhook_regions.sql"),
    ),
    (
        7,
        "waiting_by_lane_and_id",
        include_str!("../migrations/0007_waiting_by_lane_and_id.sql"),
    ),
];

/// The advisory lock migrations run under, with the schema's hash as its second half (one
/// installation is one schema; tests migrate many side by side in one database).
const MIGRATION_LOCK: i32 = 0x657a_746d; // "eztm"

const CREATE_LEDGER: &str = "CREATE TABLE IF NOT EXISTS schema_migrations (
    version integer PRIMARY KEY,
    name text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)";

/// Applies the missing migrations; returns how many ran.
pub(crate) async fn migrate(client: &mut deadpool_postgres::Object) -> Result<usize> {
    let tx = client.transaction().await.map_err(pg_err)?;
    // Waiting for another node's migration is expected: no session lock timeout here.
    tx.batch_execute(
        "SET LOCAL lock_timeout = 0; SET LOCAL idle_in_transaction_session_timeout = 0",
    )
    .await
    .map_err(pg_err)?;
    tx.execute(
        "SELECT pg_advisory_xact_lock($1, hashtext(COALESCE(current_schema(), '')))",
        &[&MIGRATION_LOCK],
    )
    .await
    .map_err(pg_err)?;
    tx.batch_execute(CREATE_LEDGER).await.map_err(pg_err)?;
    let done = applied(&tx).await?;
    let newest_known = MIGRATIONS.last().map_or(0, |m| m.0);
    if let Some(v) = done.iter().find(|v| **v > newest_known) {
        return Err(Error::Other(format!(
            "the database has schema version {v}, newer than this binary knows ({newest_known}); \
             run a newer ezthrottle"
        )));
    }
    let mut ran = 0;
    for (version, name, sql) in MIGRATIONS {
        if done.contains(version) {
            continue;
        }
        tx.batch_execute(sql)
            .await
            .map_err(|e| Error::Other(format!("migration {version} ({name}): {}", pg_err(e))))?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
            &[version, name],
        )
        .await
        .map_err(pg_err)?;
        ran += 1;
    }
    tx.commit().await.map_err(pg_err)?;
    if ran > 0 {
        tracing::info!(
            applied = ran,
            version = newest_known,
            "store: migrated the database"
        );
    }
    Ok(ran)
}

/// Versions recorded as applied, oldest first (empty before the first migration).
pub(crate) async fn applied(c: &impl GenericClient) -> Result<Vec<i32>> {
    let exists = c
        .query_one("SELECT to_regclass('schema_migrations') IS NOT NULL", &[])
        .await
        .map_err(pg_err)?
        .get::<_, bool>(0);
    if !exists {
        return Ok(Vec::new());
    }
    let rows = c
        .query(
            "SELECT version FROM schema_migrations ORDER BY version",
            &[],
        )
        .await
        .map_err(pg_err)?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}
