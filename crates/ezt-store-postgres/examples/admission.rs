//! A quick look at group-committed admission against the physical baseline, on one database:
//! `insert_jobs` from many concurrent callers (one job each) vs a plain single-row `INSERT`
//! loop (autocommit, the same spec text), on one connection and on 16.
//!
//! `cargo run --release -p ezt-store-postgres --example admission [JOBS]` (a throwaway server
//! via scripts/pg.sh, or EZT_TEST_DATABASE_URL). Numbers vary ±30 % on a shared box: compare
//! the ratio, not the rates. The benchmark suite proper lives in bench/.

use std::sync::Arc;
use std::time::Instant;

use ezt_store::conformance::new_job;
use ezt_store::prelude::*;
use ezt_store_postgres::{testing, PgStore};

const WINDOW: u64 = 24 * 3600 * 1000;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let jobs: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(20_000);
    let url = testing::database_url().await;
    let store = Arc::new(PgStore::connect(&url).await.expect("connect"));
    let spec = serde_json::to_string(&new_job(0, 1, "k", 1).spec).unwrap();

    for clients in [1usize, 16] {
        let n = (jobs / 4).max(clients);
        let (c, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        c.batch_execute(
            "DROP TABLE IF EXISTS baseline; CREATE TABLE baseline (id bytea PRIMARY KEY, spec text NOT NULL)",
        )
        .await
        .unwrap();
        let t0 = Instant::now();
        let mut tasks = Vec::new();
        for w in 0..clients {
            let (url, spec) = (url.clone(), spec.clone());
            tasks.push(tokio::spawn(async move {
                let (c, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                    .await
                    .unwrap();
                tokio::spawn(conn);
                let st = c
                    .prepare("INSERT INTO baseline (id, spec) VALUES ($1, $2)")
                    .await
                    .unwrap();
                for i in (w..n).step_by(clients) {
                    c.execute(&st, &[&(i as u128).to_be_bytes().as_slice(), &spec])
                        .await
                        .unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let secs = t0.elapsed().as_secs_f64();
        println!(
            "baseline single-row INSERT, {clients:>2} client(s): {n} rows in {secs:.2} s = {:.0} rows/s",
            n as f64 / secs
        );
    }

    for callers in [1usize, 64] {
        let n = if callers == 1 { jobs / 4 } else { jobs };
        let before = store.admission_batches();
        let t0 = Instant::now();
        let mut tasks = Vec::new();
        let base = callers as u128 * 1_000_000_000;
        for w in 0..callers {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let mut lat = Vec::new();
                for i in (w..n).step_by(callers) {
                    let id = base + i as u128;
                    let j = new_job(id, 1, &format!("k{id}"), 1);
                    let t = Instant::now();
                    store.insert_jobs(vec![j], WINDOW).await.unwrap();
                    lat.push(t.elapsed().as_secs_f64() * 1e3);
                }
                lat
            }));
        }
        let mut lat = Vec::new();
        for t in tasks {
            lat.extend(t.await.unwrap());
        }
        let secs = t0.elapsed().as_secs_f64();
        lat.sort_by(f64::total_cmp);
        let batches = store.admission_batches() - before;
        println!(
            "insert_jobs (group commit), {callers:>2} caller(s): {n} jobs in {secs:.2} s = {:.0} jobs/s, \
             {batches} transactions ({:.1} jobs each), latency p50 {:.2} ms p99 {:.2} ms",
            n as f64 / secs,
            n as f64 / batches as f64,
            lat[lat.len() / 2],
            lat[lat.len() * 99 / 100]
        );
    }
}
