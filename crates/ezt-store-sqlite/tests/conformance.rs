//! The SQLite store passes the conformance suite, each case on a fresh file.
ezt_store::conformance_tests!({
    let dir =
        std::env::temp_dir().join(format!("ezt-conf-{}-{}", std::process::id(), rand_suffix()));
    ezt_store_sqlite::SqliteStore::open(dir.join("t.db")).expect("open")
});

fn rand_suffix() -> u128 {
    use std::time::{SystemTime, UNIX_EPOCH};
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos()
        + N.fetch_add(1, std::sync::atomic::Ordering::Relaxed) as u128
}
