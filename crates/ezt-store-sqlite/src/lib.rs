//! The embedded default store: one SQLite file in WAL mode with `synchronous=FULL`.
//!
//! Every write goes through one writer thread that practises group commit: it takes whatever
//! writes are waiting (up to `MAX_BATCH`), runs each inside its own SAVEPOINT in one transaction,
//! and commits once, so a single fsync acknowledges many concurrent submissions. A write's
//! caller is answered only after that commit returns, which is what lets a 202 mean "on disk".
//! Reads use a small pool of separate connections (WAL lets them run beside the writer).
//!
//! The store traits are implemented one module per capability (`tenants`, `jobs` with
//! `recovery`, `deliveries`, `secrets`, `lanes`, `maintenance` with `retention`), each on top of
//! the same two primitives here: `read` (a pooled reader) and `write` (the writer thread).
#![warn(missing_docs)]

mod admission;
mod cluster;
mod codec;
mod deliveries;
mod jobs;
mod lanes;
mod maintenance;
pub mod private;
mod recovery;
mod retention;
mod schema;
mod secrets;
mod tenants;
mod workflows;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use ezt_core::TenantId;
use ezt_store::{Error, Result};
use rusqlite::Connection;

use codec::*;
use writer::Writer;

const READERS: usize = 4;

/// The SQLite store. Cheap to clone.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    writer: Writer,
    readers: Arc<Mutex<Vec<Connection>>>,
    path: PathBuf,
    /// Membership and lane ownership of the one-member cluster.
    solo: Arc<ezt_store::SoloCluster>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database file and migrates it.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let conn = schema::open(&path, true)?;
        let writer = Writer::start(conn);
        let mut readers = Vec::with_capacity(READERS);
        for _ in 0..READERS {
            readers.push(schema::open(&path, false)?);
        }
        Ok(Self {
            writer,
            readers: Arc::new(Mutex::new(readers)),
            path,
            solo: Arc::default(),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    async fn read<R: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<R> + Send + 'static,
    ) -> Result<R> {
        let readers = self.readers.clone();
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            let conn = readers.lock().unwrap_or_else(|p| p.into_inner()).pop();
            let conn = match conn {
                Some(c) => c,
                None => schema::open(&path, false)?,
            };
            let res = f(&conn);
            let mut pool = readers.lock().unwrap_or_else(|p| p.into_inner());
            if pool.len() < READERS {
                pool.push(conn);
            }
            res
        })
        .await
        .map_err(|e| Error::Other(format!("reader task: {e}")))?
    }

    async fn write<R: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<R> + Send + 'static,
    ) -> Result<R> {
        self.writer.write(f).await
    }
}

/// The tenant filter as SQL bound to `?2`. Unscoped callers (the CLI, the executor) bind a
/// placeholder that always passes, so every query keeps one shape and one parameter numbering.
pub(crate) fn tenant_clause(tenant: Option<TenantId>) -> (&'static str, Vec<u8>) {
    match tenant {
        Some(t) => (" AND tenant_id = ?2", id_blob(t.0).to_vec()),
        None => (" AND ?2 IS NOT NULL", vec![0]),
    }
}
