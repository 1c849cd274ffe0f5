//! `JobStore::recover`: what a restart (or, in a cluster, a dead peer) leaves behind is
//! released, recorded and listed again, and nothing a live holder runs is touched.

use ezt_core::retry::{Counters, Verdict};
use ezt_core::{JobId, JobState};

use super::fixtures::*;
use crate::*;

/// Restart: running jobs are released; final ones are not pending.
pub async fn recover_releases_running<S: JobStore>(s: S) {
    let a = new_job(1, 1, "a", 100);
    let b = new_job(2, 1, "b", 100);
    let c = new_job(3, 1, "c", 100);
    s.insert_jobs(vec![a.clone(), b.clone(), c.clone()], WINDOW)
        .await
        .unwrap();
    s.lease(a.id, lease(1, 110)).await.unwrap().unwrap();
    s.cancel(None, c.id, 120, "local").await.unwrap();
    let mut pending: Vec<JobId> = s
        .recover(&NodeId::local(), 130, "local")
        .await
        .unwrap()
        .jobs
        .into_iter()
        .map(|p| p.id)
        .collect();
    pending.sort();
    assert_eq!(pending, vec![a.id, b.id]);
    assert_eq!(
        s.get_job(None, a.id).await.unwrap().unwrap().state,
        JobState::Queued
    );
    let late = succeeded(a.id, 1, 140);
    assert!(
        s.complete_attempt(late).await.unwrap().is_none(),
        "the dead run's lease is void"
    );
    assert_eq!(
        s.lease(a.id, lease(5, 150))
            .await
            .unwrap()
            .unwrap()
            .attempt_no,
        2,
        "attempt counted"
    );
}

/// Restart: an attempt cut off by the crash stays in the job's history as `interrupted` (its
/// number from lease time, `at` the lease time, this node's region), once; the re-run is the next
/// number and the interruption costs no retry.
pub async fn recover_records_interrupted_attempt<S: JobStore>(s: S) {
    let j = new_job(1, 1, "j", 100);
    let idle = new_job(2, 1, "idle", 100);
    let done = new_job(3, 1, "done", 100);
    s.insert_jobs(vec![j.clone(), idle.clone(), done.clone()], WINDOW)
        .await
        .unwrap();
    s.lease(done.id, lease(9, 105)).await.unwrap().unwrap();
    s.complete_attempt(succeeded(done.id, 9, 106))
        .await
        .unwrap()
        .unwrap();
    s.lease(j.id, lease(1, 110)).await.unwrap().unwrap();
    let retried = Counters {
        retries: 1,
        reroutes: 0,
    };
    s.complete_attempt(AttemptDone {
        id: j.id,
        lease_token: 1,
        attempt: attempt(1, Verdict::Retry),
        next: Next::Retry {
            run_at: 200,
            counters: retried,
            response: None,
        },
        now_ms: 120,
    })
    .await
    .unwrap()
    .unwrap();
    let second = s.lease(j.id, lease(2, 200)).await.unwrap().unwrap();
    assert_eq!(second.attempt_no, 2);

    s.recover(&NodeId::local(), 300, "here").await.unwrap();
    let got = s.get_job(None, j.id).await.unwrap().unwrap();
    assert!(
        !got.state.is_final() && got.state != JobState::Running,
        "{:?}",
        got.state
    );
    assert_eq!(got.attempts.len(), 2, "{:?}", got.attempts);
    assert_eq!(got.attempts[0], attempt(1, Verdict::Retry));
    let cut = &got.attempts[1];
    assert_eq!(
        (cut.n, cut.series, cut.at, cut.region.as_str(), cut.decision),
        (2, 1, 200, "here", Verdict::Interrupted)
    );
    assert_eq!(
        (cut.status_code, cut.latency_ms, cut.wait_ms),
        (None, 0, None)
    );
    assert!(cut.error.as_deref().unwrap_or("").contains("interrupted"));
    let json = serde_json::to_value(cut).unwrap();
    assert_eq!(json["decision"], "interrupted", "as the API shows it");
    for other in [idle.id, done.id] {
        let o = s.get_job(None, other).await.unwrap().unwrap();
        assert!(
            o.attempts
                .iter()
                .all(|a| a.decision != Verdict::Interrupted),
            "only running jobs were cut off"
        );
    }

    // A second restart adds nothing; the re-run is attempt 3 with the retry counters intact.
    s.recover(&NodeId::local(), 400, "here").await.unwrap();
    assert_eq!(
        s.get_job(None, j.id).await.unwrap().unwrap().attempts.len(),
        2
    );
    let third = s.lease(j.id, lease(3, 410)).await.unwrap().unwrap();
    assert_eq!((third.attempt_no, third.counters), (3, retried));
    let mut last = succeeded(j.id, 3, 420);
    last.attempt = attempt(3, Verdict::Success);
    s.complete_attempt(last).await.unwrap().unwrap();
    let got = s.get_job(None, j.id).await.unwrap().unwrap();
    let ns: Vec<(u32, Verdict)> = got.attempts.iter().map(|a| (a.n, a.decision)).collect();
    assert_eq!(
        ns,
        vec![
            (1, Verdict::Retry),
            (2, Verdict::Interrupted),
            (3, Verdict::Success)
        ]
    );
}

/// Cluster seam: recovery releases the leases of the holder it is given and no other. The dead
/// holder's running job is requeued with an `interrupted` attempt and its late result is void;
/// its delivery is released. A live holder's running job and delivery stay leased, are not
/// listed as waiting, and its results still apply.
pub async fn recover_releases_only_that_holders_leases<S: JobStore + DeliveryStore>(s: S) {
    let (dead, live) = (NodeId::new("node-a"), NodeId::new("node-b"));
    let hooks = [("http://127.0.0.1:7/h", true)];
    let mine = new_job(1, 1, "mine", 100);
    let theirs = new_job(2, 1, "theirs", 100);
    let idle = new_job(3, 1, "idle", 100);
    let ha = hooked_job(4, 1, "ha", 100, &hooks, 1);
    let hb = hooked_job(5, 1, "hb", 100, &hooks, 1);
    let all = [&mine, &theirs, &idle, &ha, &hb];
    s.insert_jobs(all.iter().map(|j| (*j).clone()).collect(), WINDOW)
        .await
        .unwrap();
    let mut finish = Vec::new();
    for (j, token) in [(&ha, 1), (&hb, 2)] {
        s.lease(j.id, lease_by(token, 105, dead.clone()))
            .await
            .unwrap()
            .unwrap();
        let created = s
            .complete_attempt(succeeded(j.id, token, 106))
            .await
            .unwrap()
            .unwrap();
        finish.push(created[0].id);
    }
    let (da, db) = (finish[0], finish[1]);
    s.lease_delivery(da, lease_by(3, 110, dead.clone()))
        .await
        .unwrap()
        .unwrap();
    s.lease_delivery(db, lease_by(4, 110, live.clone()))
        .await
        .unwrap()
        .unwrap();
    s.lease(mine.id, lease_by(5, 120, dead.clone()))
        .await
        .unwrap()
        .unwrap();
    s.lease(theirs.id, lease_by(6, 120, live.clone()))
        .await
        .unwrap()
        .unwrap();

    let rec = s.recover(&dead, 130, "here").await.unwrap();
    let mut jobs: Vec<JobId> = rec.jobs.iter().map(|p| p.id).collect();
    jobs.sort();
    let mut want = vec![mine.id, idle.id];
    want.sort();
    assert_eq!(jobs, want, "the live holder's running job is not waiting");
    let deliveries: Vec<_> = rec.deliveries.iter().map(|d| d.id).collect();
    assert_eq!(
        deliveries,
        vec![da],
        "the live holder's delivery is not waiting"
    );

    let got = s.get_job(None, mine.id).await.unwrap().unwrap();
    assert!(
        !got.state.is_final() && got.state != JobState::Running,
        "{:?}",
        got.state
    );
    assert_eq!(
        got.attempts.iter().map(|a| a.decision).collect::<Vec<_>>(),
        vec![Verdict::Interrupted]
    );
    let other = s.get_job(None, theirs.id).await.unwrap().unwrap();
    assert_eq!(
        other.state,
        JobState::Running,
        "a live attempt is left alone"
    );
    assert!(other.attempts.is_empty(), "{:?}", other.attempts);

    assert!(
        s.complete_attempt(succeeded(mine.id, 5, 140))
            .await
            .unwrap()
            .is_none(),
        "the dead holder's lease is void"
    );
    assert_eq!(
        s.complete_attempt(succeeded(theirs.id, 6, 140))
            .await
            .unwrap(),
        Some(vec![]),
        "the live holder's lease still holds"
    );
    let done = |id, token| DeliveryDone {
        id,
        lease_token: token,
        attempt: delivery_attempt(1, 200, "delivered"),
        next: DeliveryNext::Delivered,
        now_ms: 150,
    };
    assert!(!s.complete_delivery(done(da, 3)).await.unwrap(), "void");
    assert!(
        s.complete_delivery(done(db, 4)).await.unwrap(),
        "still held"
    );
    assert!(
        s.lease_delivery(da, lease_by(7, 160, live.clone()))
            .await
            .unwrap()
            .is_some(),
        "the released delivery can be taken over"
    );
}
