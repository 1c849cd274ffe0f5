//! What the PostgreSQL store promises beyond the shared conformance suite: migrations that
//! concurrent nodes can run together, group commit, idempotency keys that hold across nodes,
//! database time for leases, and typed errors for a bad URL or an unreachable server.

use std::sync::Arc;

use ezt_core::JobId;
use ezt_store::conformance::new_job;
use ezt_store::prelude::*;
use ezt_store::{Admission, Error, Lease, NodeId};
use ezt_store_postgres::{testing, PgStore, MIGRATIONS};

const WINDOW: u64 = 24 * 3600 * 1000;

async fn raw(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(conn);
    client
}

/// Five nodes starting at once on an empty database: each migration runs exactly once, the
/// others wait on the lock and find it done; a later start applies nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_starts_migrate_once() {
    let url = testing::database_url().await;
    let stores: Vec<PgStore> = (0..5)
        .map(|_| PgStore::connect_without_migrating(&url).unwrap())
        .collect();
    assert!(stores[0].applied_migrations().await.unwrap().is_empty());
    let runs = futures::future::join_all(stores.iter().map(|s| s.migrate())).await;
    let ran: usize = runs.into_iter().map(|r| r.unwrap()).sum();
    assert_eq!(ran, MIGRATIONS.len(), "every migration ran once in total");
    let versions: Vec<i32> = MIGRATIONS.iter().map(|m| m.0).collect();
    assert_eq!(stores[3].applied_migrations().await.unwrap(), versions);
    assert_eq!(
        stores[4].migrate().await.unwrap(),
        0,
        "nothing left to apply"
    );
    let c = raw(&url).await;
    let n: i64 = c
        .query_one("SELECT count(*) FROM schema_migrations", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n as usize, MIGRATIONS.len());
}

/// A database migrated by a newer binary is refused, not silently used.
#[tokio::test]
async fn a_newer_schema_is_refused() {
    let url = testing::database_url().await;
    let s = PgStore::connect(&url).await.unwrap();
    let c = raw(&url).await;
    c.execute(
        "INSERT INTO schema_migrations (version, name) VALUES (9999, 'from the future')",
        &[],
    )
    .await
    .unwrap();
    let err = s.migrate().await.unwrap_err();
    assert!(
        matches!(&err, Error::Other(m) if m.contains("9999") && m.contains("newer")),
        "{err:?}"
    );
}

/// Concurrent `insert_jobs` calls share transactions (group commit), and every caller gets its
/// own answers in its own order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_admissions_share_transactions() {
    let url = testing::database_url().await;
    let s = Arc::new(PgStore::connect(&url).await.unwrap());
    let before = s.admission_batches();
    let calls = 200u128;
    let tasks: Vec<_> = (0..calls)
        .map(|i| {
            let s = s.clone();
            tokio::spawn(async move {
                // Each call: one new job and one duplicate of it.
                let a = new_job(i * 2, 1, &format!("k{i}"), 100);
                let b = new_job(i * 2 + 1, 1, &format!("k{i}"), 100);
                let id = a.id;
                let res = s.insert_jobs(vec![a, b], WINDOW).await.unwrap();
                assert_eq!(
                    res,
                    vec![Admission::Inserted, Admission::Duplicate { existing: id }]
                );
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let batches = s.admission_batches() - before;
    assert!(
        batches >= 1 && batches < calls as u64,
        "{calls} overlapping calls took {batches} transactions"
    );
    let counts = s.count_by_state().await.unwrap();
    assert!(
        counts.contains(&(ezt_core::JobState::Queued, calls as u64)),
        "{counts:?}"
    );
}

/// Two nodes (two stores on one database) admitting the same keys at the same moment: each
/// key gets exactly one job, and every duplicate names it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_keys_hold_across_nodes() {
    let url = testing::database_url().await;
    let a = Arc::new(PgStore::connect(&url).await.unwrap());
    let b = Arc::new(PgStore::connect(&url).await.unwrap());
    let keys = 50u128;
    let mut tasks = Vec::new();
    for node in 0..2u128 {
        for round in 0..3u128 {
            for k in 0..keys {
                let s = if node == 0 { a.clone() } else { b.clone() };
                let id = 1_000 * (node * 3 + round + 1) + k;
                tasks.push(tokio::spawn(async move {
                    let j = new_job(id, 7, &format!("key-{k}"), 100);
                    let res = s.insert_jobs(vec![j.clone()], WINDOW).await.unwrap();
                    (k, j.id, res.into_iter().next().unwrap())
                }));
            }
        }
    }
    let mut inserted: std::collections::HashMap<u128, JobId> = Default::default();
    let mut dups = Vec::new();
    for t in tasks {
        let (k, id, res) = t.await.unwrap();
        match res {
            Admission::Inserted => {
                assert!(inserted.insert(k, id).is_none(), "key-{k} inserted twice");
            }
            Admission::Duplicate { existing } => dups.push((k, existing)),
        }
    }
    assert_eq!(inserted.len(), keys as usize, "every key got its job");
    assert_eq!(dups.len(), keys as usize * 5);
    for (k, existing) in dups {
        assert_eq!(existing, inserted[&k], "duplicates of key-{k} name its job");
    }
}

/// A job submitted again under its own id (a resubmission) is a duplicate of itself, and does
/// not fail the other jobs of its batch.
#[tokio::test]
async fn a_resubmitted_job_is_a_duplicate_of_itself() {
    let url = testing::database_url().await;
    let s = PgStore::connect(&url).await.unwrap();
    let a = new_job(1, 1, "a", 100);
    s.insert_jobs(vec![a.clone()], WINDOW).await.unwrap();
    let mut renamed = a.clone();
    renamed.idempotent_key = "another key".into();
    let b = new_job(2, 1, "b", 100);
    let res = s
        .insert_jobs(vec![a.clone(), renamed, b.clone()], WINDOW)
        .await
        .unwrap();
    assert_eq!(
        res,
        vec![
            Admission::Duplicate { existing: a.id },
            Admission::Duplicate { existing: a.id },
            Admission::Inserted
        ]
    );
    assert!(s.get_job(None, b.id).await.unwrap().is_some());
}

/// The lease's times are the database's: a node whose clock is years off still leases for the
/// length it asked, from the database's now.
#[tokio::test]
async fn leases_run_on_database_time() {
    let url = testing::database_url().await;
    let s = PgStore::connect(&url).await.unwrap();
    let j = new_job(1, 1, "k", 100);
    s.insert_jobs(vec![j.clone()], WINDOW).await.unwrap();
    let t0 = s.db_now_ms().await.unwrap();
    let lease = Lease {
        token: 5,
        now_ms: 100, // a clock stuck in 1970
        expires_at: 100 + 30_000,
        holder: NodeId::new("skewed"),
        fence: None,
    };
    s.lease(j.id, lease).await.unwrap().unwrap();
    let t1 = s.db_now_ms().await.unwrap();
    let c = raw(&url).await;
    let row = c
        .query_one(
            "SELECT leased_at, lease_expires_at, lease_holder FROM jobs WHERE id = $1",
            &[&j.id.0.to_be_bytes().as_slice()],
        )
        .await
        .unwrap();
    let (leased_at, expires): (i64, i64) = (row.get(0), row.get(1));
    assert!(
        (t0 as i64..=t1 as i64).contains(&leased_at),
        "leased_at {leased_at} is database time ({t0}..={t1})"
    );
    assert_eq!(expires - leased_at, 30_000, "the caller's lease length");
    assert_eq!(row.get::<_, &str>(2), "skewed");
}

/// The database restarts under a running store: while it is down every call is `Unavailable`
/// (nothing half-done, nothing hangs), and once it is back the same store works again on its
/// own, with everything committed before still there.
#[tokio::test]
async fn the_store_carries_on_after_a_database_restart() {
    let server = testing::OwnServer::start();
    let url = server.url().to_string();
    let s = PgStore::connect(&url).await.unwrap();
    let before = new_job(1, 1, "before", 100);
    s.insert_jobs(vec![before.clone()], WINDOW).await.unwrap();

    server.stop();
    let err = s.ping().await.unwrap_err();
    assert!(matches!(err, Error::Unavailable { .. }), "{err:?}");
    let err = s
        .insert_jobs(vec![new_job(2, 1, "down", 100)], WINDOW)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Unavailable { .. }), "{err:?}");

    server.restart();
    // Pooled connections from before the restart fail once each and are replaced: poll the
    // probe (no event exists for "reconnected") with a deadline.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while let Err(e) = s.ping().await {
        assert!(matches!(e, Error::Unavailable { .. }), "{e:?}");
        assert!(std::time::Instant::now() < deadline, "no reconnect: {e:?}");
        tokio::task::yield_now().await;
    }
    let got = s.get_job(None, before.id).await.unwrap();
    assert!(
        got.is_some(),
        "committed before the restart, there after it"
    );
    let after = new_job(3, 1, "after", 100);
    assert_eq!(
        s.insert_jobs(vec![after], WINDOW).await.unwrap(),
        vec![Admission::Inserted]
    );
}

/// Bad input is a typed error at once; an unreachable server is `Unavailable` (retry later),
/// not a panic or a hang.
#[tokio::test]
async fn bad_urls_and_dead_servers_are_typed_errors() {
    let err = PgStore::connect_without_migrating("mysql://nope").unwrap_err();
    assert!(
        matches!(&err, Error::Other(m) if m.contains("database URL")),
        "{err:?}"
    );
    // A port nothing listens on (bound, then released).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let s =
        PgStore::connect_without_migrating(&format!("postgres://ezt@127.0.0.1:{port}/x")).unwrap();
    let err = s.ping().await.unwrap_err();
    assert!(matches!(err, Error::Unavailable { .. }), "{err:?}");
    let err = PgStore::connect(&format!("postgres://ezt@127.0.0.1:{port}/x"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Unavailable { .. }), "{err:?}");
}

/// What an adopter is handed when a node dies mid-call: the dead node's unexpired attempt
/// counts as in flight (also after its lease was recovered), its dispatch is in the ledger, and
/// a pause saved by a node whose clock is far off is moved onto the database clock.
#[tokio::test]
async fn an_adopter_gets_the_dead_owners_calls_ledger_and_pause() {
    use ezt_store::{Fence, LaneClaim, LaneState, NodeInfo};
    let url = testing::database_url().await;
    let s = PgStore::connect(&url).await.unwrap();
    let info = |id: &str| NodeInfo {
        id: NodeId::new(id),
        region: "r".into(),
        advertise_url: None,
        version: "t".into(),
    };
    let (a, b) = (info("a"), info("b"));
    let lane = format!("job:{}", new_job(1, 1, "x", 100).lane.0);
    // Node a owns the lane and has one call running; its lease is short (3 s).
    let ea = s.join(&a, 3_000).await.unwrap();
    let LaneClaim::Owned(oa) = s.claim_lane(&a.id, ea, &lane, true).await.unwrap() else {
        panic!("a takes the free lane");
    };
    let (j1, j2) = (new_job(1, 1, "j1", 100), new_job(2, 1, "j2", 100));
    s.insert_jobs(vec![j1.clone(), j2.clone()], WINDOW)
        .await
        .unwrap();
    let lease = Lease {
        token: 7,
        now_ms: 100,
        expires_at: 100 + 30_000,
        holder: a.id.clone(),
        fence: Some(Fence {
            lane: lane.clone(),
            lane_epoch: oa.lane_epoch,
            node_epoch: ea,
        }),
    };
    s.lease(j1.id, lease)
        .await
        .unwrap()
        .expect("the owner leases");
    // A pause learned by a node whose clock reads 1970: 60 s left when it was saved.
    s.save_lane_state(
        &lane,
        LaneState {
            rate: 10.0,
            burst: 1,
            max_in_flight: 5,
            paused_until_ms: Some(1_000 + 60_000),
            updated_at_ms: 1_000,
            detail: Default::default(),
        },
    )
    .await
    .unwrap();
    // b waits for a's lease to end (polling the membership: no event exists for it).
    let eb = s.join(&b, 60_000).await.unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while s
        .nodes()
        .await
        .unwrap()
        .iter()
        .any(|n| n.id == "a" && n.alive)
    {
        assert!(
            std::time::Instant::now() < deadline,
            "a's lease never ended"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(s.dead_holders().await.unwrap(), vec![a.id.clone()]);
    s.recover(&a.id, 200, "r").await.unwrap();
    assert!(s.dead_holders().await.unwrap().is_empty());
    let LaneClaim::Owned(ob) = s.claim_lane(&b.id, eb, &lane, true).await.unwrap() else {
        panic!("b adopts a dead node's lane");
    };
    assert!(ob.lane_epoch > oa.lane_epoch);
    assert_eq!(
        ob.foreign_in_flight_ms.len(),
        1,
        "a's call may still be running"
    );
    assert!(
        ob.foreign_in_flight_ms[0] > 25_000,
        "{:?}",
        ob.foreign_in_flight_ms
    );
    assert_eq!(ob.ledger_ages_ms.len(), 1, "a's dispatch is in the ledger");
    assert!(ob.ledger_ages_ms[0] < 10_000, "{:?}", ob.ledger_ages_ms);
    let left = ob.pause_left_ms.expect("the pause is handed over");
    assert!((50_000..=60_000).contains(&left), "{left} ms left");
    // The old owner's fence is void; the new owner's holds.
    let stale = Lease {
        token: 8,
        now_ms: 300,
        expires_at: 300 + 30_000,
        holder: a.id.clone(),
        fence: Some(Fence {
            lane: lane.clone(),
            lane_epoch: oa.lane_epoch,
            node_epoch: ea,
        }),
    };
    assert!(
        s.lease(j2.id, stale).await.unwrap().is_none(),
        "a zombie leases nothing"
    );
    let fresh = Lease {
        token: 9,
        now_ms: 300,
        expires_at: 300 + 30_000,
        holder: b.id.clone(),
        fence: Some(Fence {
            lane,
            lane_epoch: ob.lane_epoch,
            node_epoch: eb,
        }),
    };
    assert!(s.lease(j2.id, fresh).await.unwrap().is_some());
}

/// Two nodes admitting runs with one `idempotent_key` at once: the unique index lets exactly one
/// be stored, every other admission answers it (and stores none of its jobs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workflow_keys_hold_across_nodes() {
    use ezt_core::workflow::{Definition, JobTemplate, Run, StepDef};
    use ezt_core::{TenantId, WorkflowId};
    use ezt_store::{release_jobs, WorkflowAdmission, WorkflowRecord};
    let url = testing::database_url().await;
    let a = Arc::new(PgStore::connect(&url).await.unwrap());
    let b = Arc::new(PgStore::connect(&url).await.unwrap());
    let spec = new_job(1, 1, "x", 100).spec;
    let mut tasks = Vec::new();
    for n in 0..20u128 {
        let s = if n % 2 == 0 { a.clone() } else { b.clone() };
        let spec = spec.clone();
        tasks.push(tokio::spawn(async move {
            let def = Definition {
                name: "k".into(),
                input: serde_json::json!({}),
                steps: vec![StepDef {
                    name: "only".into(),
                    job: JobTemplate {
                        spec,
                        lane: "127.0.0.1:9".into(),
                    },
                    depends_on: vec![],
                    critical: true,
                    non_blocking: false,
                    compensate: None,
                    paginate: None,
                    when: None,
                }],
                webhooks: vec![],
                idempotent_key: Some("order-7".into()),
            };
            let wf = WorkflowId::new(1_000, 77_000 + n);
            let mut run = Run::new(def);
            let jobs = release_jobs(run.start(wf), TenantId(9), 1_000);
            let job = jobs[0].id;
            let rec = WorkflowRecord {
                id: wf,
                tenant_id: TenantId(9),
                run,
                created_at: 1_000,
                updated_at: 1_000,
            };
            (wf, job, s.insert_workflow(rec, jobs).await.unwrap())
        }));
    }
    let mut stored = Vec::new();
    let mut dups = Vec::new();
    for t in tasks {
        let (wf, job, res) = t.await.unwrap();
        match res {
            WorkflowAdmission::Stored => stored.push(wf),
            WorkflowAdmission::Duplicate { existing } => dups.push((job, existing)),
        }
    }
    assert_eq!(stored.len(), 1, "one run per key: {stored:?}");
    assert_eq!(dups.len(), 19);
    for (job, existing) in dups {
        assert_eq!(existing, stored[0]);
        assert!(
            a.get_job(None, job).await.unwrap().is_none(),
            "no job of a duplicate"
        );
    }
}

/// The membership heartbeat has a session of its own: with every pooled connection taken
/// (admissions or slow queries saturating the pool), a healthy node still renews its lease;
/// when that session is killed, the next heartbeat connects again.
#[tokio::test]
async fn the_heartbeat_needs_no_pooled_connection_and_reconnects() {
    use ezt_store::{NodeId, NodeInfo};
    let app = format!("beat-{}", std::process::id());
    let url = format!("{}&application_name={app}", testing::database_url().await);
    let s = PgStore::connect(&url).await.unwrap();
    let info = NodeInfo {
        id: NodeId::new("beat"),
        region: "r1".into(),
        advertise_url: None,
        version: "test".into(),
    };
    let e = s.join(&info, 60_000).await.unwrap();
    let held = s.hold_connections(16).await.unwrap();
    let beat = tokio::time::timeout(
        std::time::Duration::from_secs(2),
        s.heartbeat(&info.id, e, 60_000),
    )
    .await
    .expect("the heartbeat waited for the saturated pool");
    assert!(beat.unwrap(), "renewed");
    // Kill this store's sessions that are not the pool's held ones: the heartbeat's.
    let c = raw(&testing::server_url()).await;
    let pool_pids: Vec<i32> = {
        let mut v = Vec::new();
        for h in &held {
            v.push(
                h.query_one("SELECT pg_backend_pid()", &[])
                    .await
                    .unwrap()
                    .get(0),
            );
        }
        v
    };
    let killed: i64 = c
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
             WHERE application_name = $1 AND NOT (pid = ANY($2))",
            &[&app, &pool_pids],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(killed, 1, "the heartbeat's own session");
    let mut ok = false;
    for _ in 0..2 {
        if let Ok(Ok(true)) = tokio::time::timeout(
            std::time::Duration::from_secs(2),
            s.heartbeat(&info.id, e, 60_000),
        )
        .await
        {
            ok = true;
            break;
        }
    }
    assert!(ok, "the heartbeat connected again");
    drop(held);
}
