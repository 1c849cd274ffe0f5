//! Group-committed admission: the PostgreSQL counterpart of the SQLite writer thread.
//!
//! Every `insert_jobs` call hands its jobs to one batcher task and waits. The task takes
//! whatever calls are waiting (up to `MAX_BATCH` jobs), admits all of them in one transaction
//! (one multi-row `INSERT … SELECT FROM unnest(…)` plus a few statements for duplicates) and
//! answers every caller once that transaction has committed. While one batch commits, the next
//! one gathers, so one commit (one WAL flush) acknowledges many submissions.
//!
//! Idempotency keys are claimed by the unique partial index `jobs_key_claim (tenant_id,
//! idempotent_key) WHERE key_claim`: the insert skips (`ON CONFLICT DO NOTHING`) a job whose key
//! is claimed, in this batch or by any node's committed or in-flight transaction (PostgreSQL
//! makes the second inserter wait for the first to commit). A skipped job is then either a
//! duplicate of the claim holder, or, if the holder's claim has lapsed (final for longer than
//! the dedup window), the holder gives the key up and the job is inserted.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use deadpool_postgres::{GenericClient, Pool};
use ezt_core::{JobId, JobState};
use ezt_store::{Admission, Error, NewJob, Result};
use tokio::sync::{mpsc, oneshot};

use crate::codec::*;

/// Most jobs folded into one transaction.
const MAX_BATCH: usize = 2048;
/// Calls that may wait for the batcher before `insert_jobs` itself waits to queue.
const QUEUE: usize = 4096;
/// Times a batch is run again after a deadlock or serialization failure.
const RETRIES: usize = 3;
/// A batch transaction not finished within this fails as unavailable and its connection is
/// dropped from the pool: a connection whose peer vanished without a word (a blackholing
/// middlebox, a user-space proxy that keeps the socket open) would otherwise hold the batcher,
/// and every admission behind it, until TCP gives up, which through a proxy is never.
const BATCH_DEADLINE: std::time::Duration = std::time::Duration::from_secs(5);

/// A job ready for the batch: its spec already encoded on the caller's task.
pub(crate) struct Prepared {
    job: NewJob,
    spec: String,
    hooked: bool,
    window_ms: u64,
}

impl Prepared {
    pub(crate) fn new(job: NewJob, window_ms: u64) -> Result<Self> {
        Ok(Self {
            spec: json_encode(&job.spec)?,
            // Children are created where webhooks are: when the job ends.
            hooked: !job.spec.webhooks.is_empty() || ezt_store::has_children(&job.spec),
            job,
            window_ms,
        })
    }
}

struct Request {
    jobs: Vec<Prepared>,
    reply: oneshot::Sender<Result<Vec<Admission>>>,
}

/// Handle to the batcher task; the task ends when every handle is gone.
#[derive(Clone)]
pub(crate) struct Admitter {
    tx: mpsc::Sender<Request>,
    /// Transactions committed so far (each holds one or more calls).
    batches: Arc<AtomicU64>,
}

impl Admitter {
    pub(crate) fn start(pool: Pool) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        let batches = Arc::new(AtomicU64::new(0));
        tokio::spawn(run(pool, rx, batches.clone()));
        Self { tx, batches }
    }

    /// Admission transactions committed since the store was opened.
    pub(crate) fn batches(&self) -> u64 {
        self.batches.load(Ordering::Relaxed)
    }

    /// Admits `jobs` in the next group transaction; answers after it committed.
    pub(crate) async fn admit(&self, jobs: Vec<Prepared>) -> Result<Vec<Admission>> {
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        let (reply, rx) = oneshot::channel();
        let stopped = || Error::Unavailable {
            message: "the admission batcher stopped".into(),
        };
        self.tx
            .send(Request { jobs, reply })
            .await
            .map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }
}

async fn run(pool: Pool, mut rx: mpsc::Receiver<Request>, batches: Arc<AtomicU64>) {
    while let Some(first) = rx.recv().await {
        let mut n = first.jobs.len();
        let mut batch = vec![first];
        while n < MAX_BATCH {
            match rx.try_recv() {
                Ok(r) => {
                    n += r.jobs.len();
                    batch.push(r);
                }
                Err(_) => break,
            }
        }
        let jobs: Vec<&Prepared> = batch.iter().flat_map(|r| r.jobs.iter()).collect();
        let mut result = admit_batch(&pool, &jobs).await;
        for _ in 0..RETRIES {
            match &result {
                Err(Retry::Again(_)) => result = admit_batch(&pool, &jobs).await,
                _ => break,
            }
        }
        let mut result = result.map_err(|e| match e {
            Retry::Again(e) | Retry::Fail(e) => e,
        });
        if result.is_ok() {
            batches.fetch_add(1, Ordering::Relaxed);
        }
        if let Err(e) = &result {
            tracing::warn!(error = %e, jobs = jobs.len(), "store: admission batch failed; it is rolled back");
        }
        drop(jobs);
        for req in batch {
            let n = req.jobs.len();
            let out = match &mut result {
                Ok(all) => Ok(all.drain(..n).collect()),
                Err(e) => Err(e.clone()),
            };
            let _ = req.reply.send(out);
        }
    }
}

enum Retry {
    /// Deadlock or serialization failure: nothing was written, run the batch again.
    Again(Error),
    Fail(Error),
}

fn fail(e: tokio_postgres::Error) -> Retry {
    if retryable(&e) {
        Retry::Again(pg_err(e))
    } else {
        Retry::Fail(pg_err(e))
    }
}

/// Inserts every job whose key is free, in input order per key (sorted by tenant and key so
/// concurrent batches on several nodes take the index's locks in one order: no deadlocks). Any
/// conflict skips the row rather than failing the batch: a job whose id is already stored (a
/// resubmission, e.g. a spool forwarding again) must not fail its batch-mates.
const INSERT_MANY: &str = "
INSERT INTO jobs (id, tenant_id, lane, state, spec, hooked, idempotent_key, created_at, updated_at, run_at, deadline_at)
SELECT id, tenant_id, lane, state, spec, hooked, key, created_at, created_at, run_at, deadline_at
FROM unnest($1::bytea[], $2::bytea[], $3::text[], $4::text[], $5::text[], $6::bool[], $7::text[], $8::int8[], $9::int8[], $10::int8[])
     WITH ORDINALITY AS t(id, tenant_id, lane, state, spec, hooked, key, created_at, run_at, deadline_at, ord)
ORDER BY tenant_id, key, ord
ON CONFLICT DO NOTHING
RETURNING id";

const INSERT_ONE: &str = "
INSERT INTO jobs (id, tenant_id, lane, state, spec, hooked, idempotent_key, created_at, updated_at, run_at, deadline_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8, $9, $10)
ON CONFLICT DO NOTHING
RETURNING id";

const SAME_ID: &str = "SELECT 1 FROM jobs WHERE id = $1";

const CLAIM_HOLDER: &str = "SELECT id, state, finished_at FROM jobs
WHERE tenant_id = $1 AND idempotent_key = $2 AND key_claim FOR UPDATE";

const RELEASE_CLAIM: &str = "UPDATE jobs SET key_claim = NULL WHERE id = $1";

fn initial_state(j: &NewJob) -> JobState {
    if j.run_at > j.created_at {
        JobState::Scheduled
    } else {
        JobState::Queued
    }
}

async fn admit_batch(pool: &Pool, jobs: &[&Prepared]) -> Result<Vec<Admission>, Retry> {
    let deadline = tokio::time::Instant::now() + BATCH_DEADLINE;
    let unanswered = || {
        Retry::Fail(Error::Unavailable {
            message: format!(
                "the database did not answer within {} s",
                BATCH_DEADLINE.as_secs()
            ),
        })
    };
    let mut client = tokio::time::timeout_at(deadline, pool.get())
        .await
        .map_err(|_| unanswered())?
        .map_err(|e| Retry::Fail(pool_err(e)))?;
    match tokio::time::timeout_at(deadline, admit_on(&mut client, jobs)).await {
        Ok(r) => r,
        Err(_) => {
            // Out of the pool and closed: its state is unknown (the transaction may still be
            // open on the server, which rolls it back when the connection ends).
            drop(deadpool_postgres::Object::take(client));
            Err(unanswered())
        }
    }
}

async fn admit_on(
    client: &mut deadpool_postgres::Object,
    jobs: &[&Prepared],
) -> Result<Vec<Admission>, Retry> {
    let tx = client.transaction().await.map_err(fail)?;
    let insert = tx.prepare_cached(INSERT_MANY).await.map_err(fail)?;
    let ids: Vec<Vec<u8>> = jobs.iter().map(|p| id_bytes(p.job.id.0)).collect();
    let tenants: Vec<Vec<u8>> = jobs.iter().map(|p| id_bytes(p.job.tenant_id.0)).collect();
    let lanes: Vec<&str> = jobs.iter().map(|p| p.job.lane.0.as_str()).collect();
    let states: Vec<&str> = jobs
        .iter()
        .map(|p| initial_state(&p.job).as_str())
        .collect();
    let specs: Vec<&str> = jobs.iter().map(|p| p.spec.as_str()).collect();
    let hooked: Vec<bool> = jobs.iter().map(|p| p.hooked).collect();
    let keys: Vec<&str> = jobs.iter().map(|p| p.job.idempotent_key.as_str()).collect();
    let created: Vec<i64> = jobs.iter().map(|p| p.job.created_at as i64).collect();
    let run_at: Vec<i64> = jobs.iter().map(|p| p.job.run_at as i64).collect();
    let deadline: Vec<i64> = jobs.iter().map(|p| p.job.deadline_at as i64).collect();
    let rows = tx
        .query(
            &insert,
            &[
                &ids, &tenants, &lanes, &states, &specs, &hooked, &keys, &created, &run_at,
                &deadline,
            ],
        )
        .await
        .map_err(fail)?;
    let inserted: HashSet<&[u8]> = rows.iter().map(|r| r.get::<_, &[u8]>(0)).collect();
    let mut out = Vec::with_capacity(jobs.len());
    for (p, id) in jobs.iter().zip(&ids) {
        if inserted.contains(id.as_slice()) {
            out.push(Admission::Inserted);
        } else {
            out.push(resolve(&tx, p).await?);
        }
    }
    tx.commit().await.map_err(fail)?;
    Ok(out)
}

/// A job the bulk insert skipped: already stored under its id, a duplicate of the key's holder,
/// or inserted after the holder gives up a lapsed claim.
async fn resolve(
    tx: &deadpool_postgres::Transaction<'_>,
    p: &Prepared,
) -> Result<Admission, Retry> {
    let j = &p.job;
    let tenant = id_bytes(j.tenant_id.0);
    // This very job is stored already: it was admitted before.
    let same = tx.prepare_cached(SAME_ID).await.map_err(fail)?;
    if tx
        .query_opt(&same, &[&id_bytes(j.id.0)])
        .await
        .map_err(fail)?
        .is_some()
    {
        return Ok(Admission::Duplicate { existing: j.id });
    }
    let holder = tx.prepare_cached(CLAIM_HOLDER).await.map_err(fail)?;
    let release = tx.prepare_cached(RELEASE_CLAIM).await.map_err(fail)?;
    let insert = tx.prepare_cached(INSERT_ONE).await.map_err(fail)?;
    // Each round either answers or sees the holder change (a concurrent admission took the
    // key, then the next round finds it as the holder); more than a few rounds is contention.
    for _ in 0..4 {
        if let Some(h) = tx
            .query_opt(&holder, &[&tenant, &j.idempotent_key])
            .await
            .map_err(fail)?
        {
            let existing = JobId(bytes_id(h.get(0)));
            let state = parse_state(h.get(1)).map_err(Retry::Fail)?;
            let finished = h.get::<_, Option<i64>>(2).map(|v| v as u64);
            if ezt_store::dedups(state, finished, j.created_at, p.window_ms) {
                return Ok(Admission::Duplicate { existing });
            }
            tx.execute(&release, &[&h.get::<_, &[u8]>(0)])
                .await
                .map_err(fail)?;
        }
        let row = tx
            .query_opt(
                &insert,
                &[
                    &id_bytes(j.id.0),
                    &tenant,
                    &j.lane.0,
                    &initial_state(j).as_str(),
                    &p.spec,
                    &p.hooked,
                    &j.idempotent_key,
                    &(j.created_at as i64),
                    &(j.run_at as i64),
                    &(j.deadline_at as i64),
                ],
            )
            .await
            .map_err(fail)?;
        if row.is_some() {
            return Ok(Admission::Inserted);
        }
    }
    Err(Retry::Again(Error::Unavailable {
        message: format!("idempotency key {:?} is contended", j.idempotent_key),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_due_later_starts_scheduled() {
        let mut j = ezt_store::conformance::new_job(1, 1, "k", 100);
        assert_eq!(initial_state(&j), JobState::Queued);
        j.run_at = 101;
        assert_eq!(initial_state(&j), JobState::Scheduled);
    }
}
