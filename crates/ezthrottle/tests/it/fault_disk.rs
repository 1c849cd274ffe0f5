//! Disk full: the data dir on a small tmpfs that the test fills. Submissions are answered 2xx
//! (really stored) or 503 `unavailable` with Retry-After, never anything else; a 503'd job is
//! not in the store (nothing half-written); readiness says so; once space is freed the same
//! server accepts again; afterwards the file passes `PRAGMA integrity_check` and holds every
//! acked job. Needs root (mount).

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::json;

use crate::fault_common::{await_final, record, sigterm_and_wait, skip_privileged};
use crate::support::{Target, TestServer};

/// A tmpfs mounted for the test's life; unmounted on drop (after the server using it is gone).
struct Tmpfs {
    dir: PathBuf,
    _parent: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Result<Self, String> {
        let parent = tempfile::tempdir().map_err(|e| e.to_string())?;
        let dir = parent.path().join("mnt");
        std::fs::create_dir(&dir).map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(&dir)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "mount -t tmpfs failed (needs root): {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(Self {
            dir,
            _parent: parent,
        })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.dir).status();
    }
}

/// Writes a file until the filesystem refuses (ENOSPC), in ever smaller pieces.
fn fill(path: &Path) -> u64 {
    let mut f = std::fs::File::create(path).expect("create filler");
    let mut written = 0u64;
    for size in [1 << 20, 64 << 10, 4 << 10, 512, 1] {
        let chunk = vec![0xA5u8; size];
        while f.write_all(&chunk).is_ok() {
            written += size as u64;
        }
    }
    let _ = f.sync_all();
    written
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_disk_full_answers_503_and_recovers_without_restart() {
    let mnt = match Tmpfs::mount("16m") {
        Ok(m) => m,
        Err(e) => return skip_privileged(&format!("disk-full test: {e}")),
    };
    let data = mnt.dir.join("data");
    std::fs::create_dir(&data).unwrap();
    let target = Target::start().await;
    let config = "[lanes.default]\nrate = 500.0\nburst = 10\nmax_in_flight = 8\n";
    let mut server = TestServer::spawn(&data, config, None);
    let body = "x".repeat(32 * 1024);
    let job = |k: String| json!({"url": target.url("ok"), "idempotent_key": k, "method": "POST", "body": body});

    let mut acked: Vec<(String, String)> = Vec::new(); // (key, id)
    for i in 0..5 {
        let k = format!("before-{i}");
        acked.push((k.clone(), server.submit(job(k)).await));
    }
    let ids: Vec<String> = acked.iter().map(|(_, id)| id.clone()).collect();
    await_final(&server, &ids, Duration::from_secs(20)).await;

    let filler = mnt.dir.join("filler");
    let filled = fill(&filler);
    // Concurrent submitters, so refusals also come from shared (group-committed) batches.
    let answers = futures::future::join_all((0..60).map(|i| {
        let k = format!("full-{i}");
        let req = server
            .http
            .post(server.url("/api/v1/jobs"))
            .bearer_auth(&server.key)
            .json(&job(k.clone()));
        async move {
            let r = req
                .send()
                .await
                .expect("the server answers while the disk is full");
            let status = r.status().as_u16();
            let retry_after = r.headers().get("retry-after").is_some();
            let b: serde_json::Value = r.json().await.unwrap_or_default();
            (k, status, retry_after, b)
        }
    }))
    .await;
    let (mut refused, mut refused_keys) = (0, Vec::new());
    for (k, status, retry_after, b) in answers {
        match status {
            // Space SQLite still had (WAL, free pages): really stored, must survive.
            202 => acked.push((k, b["job_id"].as_str().unwrap().to_string())),
            503 => {
                assert_eq!(b["error"]["code"], "unavailable", "{b}");
                assert!(retry_after, "503 without Retry-After");
                refused += 1;
                refused_keys.push(k);
            }
            other => panic!("disk full answered {other}, expected 202 or 503: {b}"),
        }
    }
    assert!(
        refused >= 40,
        "with the disk full most submissions must be refused; {refused} of 60 were (filled {filled} bytes)"
    );
    // A batch is one transaction: all of it or a 503.
    let batch: Vec<_> = (0..10).map(|i| job(format!("full-batch-{i}"))).collect();
    let (s, b) = server
        .post("/api/v1/jobs/batch", json!({ "jobs": batch }))
        .await;
    assert_eq!(s, 503, "batch on a full disk: {b}");
    refused_keys.extend((0..10).map(|i| format!("full-batch-{i}")));
    let (s, b) = server.get("/readyz").await;
    assert_eq!(
        s, 503,
        "readiness must report a store that cannot write: {b}"
    );
    assert_eq!(server.get("/healthz").await.0, 200);
    let (s, _) = server.get(&format!("/api/v1/jobs/{}", acked[0].1)).await;
    assert_eq!(s, 200, "reads still work on a full disk");

    // Free the space: the same process recovers.
    std::fs::remove_file(&filler).unwrap();
    let (s, b) = server.get("/readyz").await;
    assert_eq!(s, 200, "ready again once space is back: {b}");
    for i in 0..10 {
        let k = format!("after-{i}");
        acked.push((k.clone(), server.submit(job(k)).await));
    }
    let ids: Vec<String> = acked.iter().map(|(_, id)| id.clone()).collect();
    let (views, lost) = await_final(&server, &ids, Duration::from_secs(30)).await;
    assert!(lost.is_empty(), "acked jobs lost: {lost:?}");
    for v in views.values() {
        assert_eq!(v["state"], "succeeded", "{v}");
    }
    assert_eq!(
        sigterm_and_wait(&mut server, Duration::from_secs(20)).await,
        Some(0)
    );

    // The file itself, read-only.
    let db = rusqlite::Connection::open_with_flags(
        data.join("ezthrottle.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .expect("open the database read-only");
    let check: String = db
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    let keys: HashSet<String> = db
        .prepare("SELECT idempotent_key FROM jobs")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    for (k, id) in &acked {
        assert!(keys.contains(k), "acked job {id} ({k}) is not in the file");
    }
    for k in &refused_keys {
        assert!(
            !keys.contains(k),
            "{k} was refused with 503 but is in the file (half-written)"
        );
    }
    record(
        "disk_full",
        json!({"acked": acked.len(), "lost": 0, "refused_503": refused + 10,
               "acked_while_full": acked.len() - 15,
               "integrity_check": check}),
    );
    drop(server);
}
