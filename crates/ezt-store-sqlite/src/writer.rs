//! The writer thread and its group commit.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;

use ezt_store::{Error, Result};
use rusqlite::Connection;
use tokio::sync::oneshot;

use crate::codec::map_err;

/// Most writes folded into one transaction.
const MAX_BATCH: usize = 2048;

type Reply = Box<dyn FnOnce(Option<&Error>) + Send>;
/// Runs against the open transaction, or (given `None`) only builds the reply when no
/// transaction could be opened.
type Op = Box<dyn FnOnce(Option<&Connection>) -> Reply + Send>;

/// Handle to the writer thread. Dropping every handle stops the thread.
#[derive(Debug, Clone)]
pub(crate) struct Writer {
    tx: mpsc::Sender<Op>,
    /// Set while the last transaction failed because the store could not take writes (disk
    /// full, I/O error); cleared by the next commit that lands.
    failing: Arc<AtomicBool>,
    /// Set by a write whose own statements hit an unavailable store, even if its batch-mates
    /// committed; folded into `failing` after the batch.
    op_unavailable: Arc<AtomicBool>,
}

impl Writer {
    pub(crate) fn start(conn: Connection) -> Self {
        let (tx, rx) = mpsc::channel::<Op>();
        let failing = Arc::new(AtomicBool::new(false));
        let op_unavailable = Arc::new(AtomicBool::new(false));
        let flags = (failing.clone(), op_unavailable.clone());
        thread::Builder::new()
            .name("ezt-sqlite-writer".into())
            .spawn(move || run(conn, rx, &flags.0, &flags.1))
            .expect("spawn writer thread");
        Self {
            tx,
            failing,
            op_unavailable,
        }
    }

    /// Whether the last write transaction failed for lack of space or I/O.
    pub(crate) fn failing(&self) -> bool {
        self.failing.load(Ordering::Acquire)
    }

    /// Runs `f` inside the next group transaction and answers once it is durably committed.
    pub(crate) async fn write<R: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<R> + Send + 'static,
    ) -> Result<R> {
        let (tx, rx) = oneshot::channel();
        let op_unavailable = self.op_unavailable.clone();
        let op: Op = Box::new(move |conn| {
            let res = match conn {
                Some(conn) => in_savepoint(conn, f).inspect_err(|e| {
                    if matches!(e, Error::Unavailable { .. }) {
                        op_unavailable.store(true, Ordering::Release);
                    }
                }),
                None => Err(Error::Unavailable {
                    message: "no transaction".into(),
                }),
            };
            Box::new(move |commit_err: Option<&Error>| {
                let out = match (commit_err, res) {
                    (Some(e), _) => Err(e.clone()),
                    (None, r) => r,
                };
                let _ = tx.send(out);
            })
        });
        self.tx.send(op).map_err(|_| Error::Unavailable {
            message: "writer stopped".into(),
        })?;
        rx.await.map_err(|_| Error::Unavailable {
            message: "writer stopped".into(),
        })?
    }
}

/// One write's failure rolls back only that write, not its batch-mates.
fn in_savepoint<R>(conn: &Connection, f: impl FnOnce(&Connection) -> Result<R>) -> Result<R> {
    // Cached statements: these run once per write on the admission hot path.
    conn.prepare_cached("SAVEPOINT op")
        .and_then(|mut s| s.execute([]))
        .map_err(map_err)?;
    match f(conn) {
        Ok(v) => {
            conn.prepare_cached("RELEASE op")
                .and_then(|mut s| s.execute([]))
                .map_err(map_err)?;
            Ok(v)
        }
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK TO op; RELEASE op");
            Err(e)
        }
    }
}

fn run(
    conn: Connection,
    rx: mpsc::Receiver<Op>,
    failing: &AtomicBool,
    op_unavailable: &AtomicBool,
) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE").map_err(map_err) {
            tracing::warn!(error = %e, "store: cannot begin a write transaction");
            failing.store(matches!(e, Error::Unavailable { .. }), Ordering::Release);
            for op in batch {
                op(None)(Some(&e));
            }
            continue;
        }
        // On SQLITE_FULL or an I/O error SQLite may roll the whole transaction back by itself.
        // The writes after that point would then run in autocommit mode, each committed alone
        // while the batch is answered with the commit's error: stop feeding the batch instead,
        // and fail all of it.
        let mut replies: Vec<Reply> = Vec::with_capacity(batch.len());
        let mut aborted = false;
        for op in batch {
            if aborted {
                replies.push(op(None));
                continue;
            }
            replies.push(op(Some(&conn)));
            aborted = conn.is_autocommit();
        }
        let commit = if aborted {
            Err(Error::Unavailable {
                message: "the write transaction was rolled back by SQLite (disk full or I/O error)"
                    .into(),
            })
        } else {
            conn.execute_batch("COMMIT").map_err(map_err)
        };
        if let Err(e) = &commit {
            tracing::warn!(error = %e, writes = replies.len(), "store: commit failed; the batch is rolled back");
            if !conn.is_autocommit() {
                let _ = conn.execute_batch("ROLLBACK");
            }
        }
        let op_failed = op_unavailable.swap(false, Ordering::AcqRel);
        failing.store(
            op_failed || matches!(commit, Err(Error::Unavailable { .. })),
            Ordering::Release,
        );
        let err = commit.err();
        for reply in replies {
            reply(err.as_ref());
        }
    }
}
