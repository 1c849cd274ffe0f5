//! The SQLite files are private from creation, and purged space is reused.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use ezt_store::conformance::new_job;
use ezt_store::prelude::*;
use ezt_store::{Lease, NodeId, PurgeCutoffs};
use ezt_store_sqlite::SqliteStore;

fn scratch(name: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    std::env::temp_dir().join(format!("ezt-at-rest-{name}-{}-{nanos}", std::process::id()))
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

fn side(db: &Path, suffix: &str) -> PathBuf {
    let mut s = db.as_os_str().to_owned();
    s.push(suffix);
    s.into()
}

fn pragma(db: &Path, name: &str) -> i64 {
    let c = rusqlite::Connection::open(db).unwrap();
    c.query_row(&format!("PRAGMA {name}"), [], |r| r.get(0))
        .unwrap()
}

async fn fill_and_finish(s: &SqliteStore, from: u128, n: u128, now: u64) {
    let jobs: Vec<_> = (from..from + n)
        .map(|i| {
            let mut j = new_job(i, 1, &format!("k{i}"), now);
            j.spec.body = Some("x".repeat(2_000));
            j
        })
        .collect();
    let ids: Vec<_> = jobs.iter().map(|j| j.id).collect();
    s.insert_jobs(jobs, 1).await.unwrap();
    for (k, id) in ids.into_iter().enumerate() {
        let token = k as u64 + 1;
        let lease = Lease {
            token,
            now_ms: now,
            expires_at: now + 1_000,
            holder: NodeId::local(),
            fence: None,
        };
        s.lease(id, lease).await.unwrap().unwrap();
        s.complete_attempt(ezt_store::AttemptDone {
            id,
            lease_token: token,
            attempt: ezt_store::Attempt {
                n: 1,
                series: 1,
                at: now,
                region: "local".into(),
                status_code: Some(200),
                error: None,
                latency_ms: 1,
                decision: ezt_core::retry::Verdict::Success,
                wait_ms: None,
                link: 0,
                next_link: None,
                node: None,
                reason: None,
                legs: Vec::new(),
            },
            next: ezt_store::Next::Final {
                state: ezt_core::JobState::Succeeded,
                response: None,
                error: None,
            },
            now_ms: now,
        })
        .await
        .unwrap()
        .unwrap();
    }
}

#[tokio::test]
async fn files_are_private_from_creation_whatever_the_umask() {
    let dir = scratch("modes").join("data");
    let db = dir.join("ezthrottle.db");
    let s = SqliteStore::open(&db).unwrap();
    s.insert_jobs(vec![new_job(1, 1, "a", 10)], 1)
        .await
        .unwrap();
    assert_eq!(mode(&dir), 0o700, "data dir");
    for f in [db.clone(), side(&db, "-wal"), side(&db, "-shm")] {
        assert!(f.exists(), "{} exists", f.display());
        assert_eq!(mode(&f), 0o600, "{}", f.display());
    }
    drop(s);
    // An older version's open directory and files are tightened on the next open.
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
    let _s = SqliteStore::open(&db).unwrap();
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&db), 0o600);
    std::fs::remove_dir_all(dir.parent().unwrap()).unwrap();
}

#[tokio::test]
async fn purged_space_is_reused_and_old_files_lose_auto_vacuum() {
    let dir = scratch("vacuum");
    let db = dir.join("t.db");
    let s = SqliteStore::open(&db).unwrap();
    assert_eq!(pragma(&db, "auto_vacuum"), 0, "NONE on a new file");
    drop(s);
    // As a file made by the version that used INCREMENTAL would be.
    {
        let c = rusqlite::Connection::open(&db).unwrap();
        c.execute_batch("PRAGMA auto_vacuum = INCREMENTAL; VACUUM;")
            .unwrap();
    }
    assert_eq!(pragma(&db, "auto_vacuum"), 2);
    let s = SqliteStore::open(&db).unwrap();
    assert_eq!(pragma(&db, "auto_vacuum"), 0, "converted once on open");

    // Steady state: fill, purge, fill again: the file does not grow by the second fill.
    fill_and_finish(&s, 1, 500, 1_000).await;
    let cutoff = PurgeCutoffs {
        default: Some(2_000),
        tenants: vec![],
    };
    while s.purge_finished(&cutoff, 100).await.unwrap() > 0 {}
    s.ping().await.unwrap();
    let pages_after_purge = pragma(&db, "page_count");
    assert!(
        pragma(&db, "freelist_count") > 0,
        "the purge freed pages for reuse"
    );
    fill_and_finish(&s, 1_000, 400, 3_000).await;
    let cutoff = PurgeCutoffs {
        default: Some(4_000),
        tenants: vec![],
    };
    while s.purge_finished(&cutoff, 100).await.unwrap() > 0 {}
    let pages = pragma(&db, "page_count");
    assert!(
        pages <= pages_after_purge + 50,
        "{pages} pages after the second round vs {pages_after_purge}"
    );
    drop(s);
    std::fs::remove_dir_all(&dir).unwrap();
}
