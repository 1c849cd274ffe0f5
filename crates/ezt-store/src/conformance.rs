//! The conformance suite: every `Store` backend must pass every case.
//!
//! Backends call `ezt_store::conformance_tests!(async_factory_expr)` from a test file; the macro
//! expands to one `#[tokio::test]` per case, each with a fresh store.

use ezt_core::job::JobSpec;
use ezt_core::lane::LaneKey;
use ezt_core::retry::{Counters, RetryPolicy, Verdict};
use ezt_core::tier::Tier;
use ezt_core::{ApiKeyId, JobId, JobState, TenantId};

use crate::*;

const WINDOW: u64 = 24 * 3600 * 1000;

fn tenant(n: u128, name: &str) -> Tenant {
    Tenant {
        id: TenantId(n),
        name: name.into(),
        tier: Tier::Paid,
        created_at: 1,
    }
}

fn spec(url: &str) -> JobSpec {
    JobSpec {
        url: url.into(),
        method: "POST".into(),
        headers: vec![("Authorization".into(), "Bearer x".into())],
        body: Some("{\"a\":1}".into()),
        metadata: Default::default(),
        regions: vec![],
        retry_policy: RetryPolicy::default(),
        timeout_ms: 60_000,
        retry_at: None,
    }
}

/// A new job for tests.
pub fn new_job(id: u128, tenant: u128, key: &str, now: u64) -> NewJob {
    NewJob {
        id: JobId::new(now, id),
        tenant_id: TenantId(tenant),
        lane: LaneKey("127.0.0.1:9".into()),
        spec: spec("http://127.0.0.1:9/x"),
        idempotent_key: key.into(),
        created_at: now,
        run_at: now,
        deadline_at: now + 60_000,
    }
}

fn lease(token: u64, now: u64) -> Lease {
    Lease {
        token,
        now_ms: now,
        expires_at: now + 30_000,
    }
}

fn attempt(n: u32, decision: Verdict) -> Attempt {
    Attempt {
        n,
        series: 1,
        at: 10,
        region: "local".into(),
        status_code: Some(200),
        error: None,
        latency_ms: 1,
        decision,
        wait_ms: None,
    }
}

/// A successful first attempt, completed under `token` at `now`.
fn succeeded(id: JobId, token: u64, now: u64) -> AttemptDone {
    AttemptDone {
        id,
        lease_token: token,
        attempt: attempt(1, Verdict::Success),
        next: Next::Final {
            state: JobState::Succeeded,
            response: None,
            error: None,
        },
        now_ms: now,
    }
}

fn ok_response() -> Response {
    Response {
        status_code: 200,
        headers: vec![("content-type".into(), "text/plain".into())],
        body: "ok".into(),
        body_truncated: false,
    }
}

/// Tenants, keys, authentication and revocation.
pub async fn tenants_and_keys<S: Store>(s: S) {
    s.create_tenant(tenant(1, "a")).await.unwrap();
    assert!(
        matches!(
            s.create_tenant(tenant(2, "a")).await,
            Err(Error::Conflict(_))
        ),
        "names are unique"
    );
    s.create_tenant(tenant(3, "b")).await.unwrap();
    assert_eq!(s.list_tenants().await.unwrap().len(), 2);
    assert_eq!(
        s.tenant_by_name("b").await.unwrap().unwrap().id,
        TenantId(3)
    );
    let digest = [7u8; 32];
    let key = ApiKeyRecord {
        id: ApiKeyId(9),
        tenant_id: TenantId(1),
        digest,
        prefix: "ezt_live_abcd".into(),
        created_at: 1,
        revoked_at: None,
    };
    s.create_api_key(key).await.unwrap();
    let (t, k) = s
        .authenticate(digest)
        .await
        .unwrap()
        .expect("active key authenticates");
    assert_eq!((t.id, k), (TenantId(1), ApiKeyId(9)));
    assert!(
        s.authenticate([8u8; 32]).await.unwrap().is_none(),
        "unknown digest"
    );
    assert_eq!(
        s.list_api_keys(Some(TenantId(3))).await.unwrap().len(),
        0,
        "keys are per tenant"
    );
    s.revoke_api_key(ApiKeyId(9), 5).await.unwrap();
    assert!(
        s.authenticate(digest).await.unwrap().is_none(),
        "revoked key fails"
    );
    assert_eq!(s.list_api_keys(None).await.unwrap()[0].revoked_at, Some(5));
    assert!(matches!(
        s.revoke_api_key(ApiKeyId(10), 5).await,
        Err(Error::NotFound)
    ));
    let m1 = s.meta_get_or_init("fp", vec![1, 2]).await.unwrap();
    let m2 = s.meta_get_or_init("fp", vec![3]).await.unwrap();
    assert_eq!((m1, m2), (vec![1, 2], vec![1, 2]), "meta is set once");
}

/// Jobs are visible only to their tenant.
pub async fn jobs_are_tenant_scoped<S: Store>(s: S) {
    let j = new_job(1, 1, "k1", 100);
    let id = j.id;
    assert_eq!(
        s.insert_jobs(vec![j], WINDOW).await.unwrap(),
        vec![Admission::Inserted]
    );
    let got = s
        .get_job(Some(TenantId(1)), id)
        .await
        .unwrap()
        .expect("owner sees it");
    assert_eq!(
        (got.state, got.spec.url.as_str(), got.series),
        (JobState::Queued, "http://127.0.0.1:9/x", 1)
    );
    assert!(
        s.get_job(Some(TenantId(2)), id).await.unwrap().is_none(),
        "other tenant does not"
    );
    let f = JobFilter {
        limit: 10,
        ..Default::default()
    };
    assert_eq!(s.list_jobs(Some(TenantId(2)), &f).await.unwrap().len(), 0);
    assert_eq!(s.list_jobs(Some(TenantId(1)), &f).await.unwrap().len(), 1);
    assert_eq!(
        s.cancel(Some(TenantId(2)), id, 5).await.unwrap(),
        CancelOutcome::NotFound
    );
    assert_eq!(
        s.replay(Some(TenantId(2)), id, 5, 10).await.unwrap(),
        ReplayOutcome::NotFound
    );
}

/// Same key: duplicate while alive or recently final, inserted again after the window.
pub async fn idempotency_dedups<S: Store>(s: S) {
    let a = new_job(1, 1, "same", 100);
    let b = new_job(2, 1, "same", 100);
    let other_tenant = new_job(3, 2, "same", 100);
    let res = s
        .insert_jobs(vec![a.clone(), b, other_tenant], WINDOW)
        .await
        .unwrap();
    assert_eq!(
        res,
        vec![
            Admission::Inserted,
            Admission::Duplicate { existing: a.id },
            Admission::Inserted
        ]
    );
    let res = s
        .insert_jobs(vec![new_job(4, 1, "same", 200)], WINDOW)
        .await
        .unwrap();
    assert_eq!(
        res,
        vec![Admission::Duplicate { existing: a.id }],
        "across transactions"
    );
    assert_eq!(
        s.cancel(None, a.id, 300).await.unwrap(),
        CancelOutcome::Cancelled
    );
    let res = s
        .insert_jobs(vec![new_job(5, 1, "same", 400)], WINDOW)
        .await
        .unwrap();
    assert_eq!(
        res,
        vec![Admission::Duplicate { existing: a.id }],
        "final less than the window ago"
    );
    let later = new_job(6, 1, "same", 300 + WINDOW);
    let res = s.insert_jobs(vec![later.clone()], WINDOW).await.unwrap();
    assert_eq!(
        res,
        vec![Admission::Inserted],
        "after the window a new job is made"
    );
    let res = s
        .insert_jobs(vec![new_job(7, 1, "same", 301 + WINDOW)], WINDOW)
        .await
        .unwrap();
    assert_eq!(
        res,
        vec![Admission::Duplicate { existing: later.id }],
        "dedups against the newest"
    );
}

/// Leases fence completions; attempts and the final state are recorded.
pub async fn lease_fences_completion<S: Store>(s: S) {
    let j = new_job(1, 1, "k", 100);
    s.insert_jobs(vec![j.clone()], WINDOW).await.unwrap();
    let l = s
        .lease(j.id, lease(11, 200))
        .await
        .unwrap()
        .expect("queued job leases");
    assert_eq!(
        (l.attempt_no, l.series, l.idempotent_key.as_str()),
        (1, 1, "k")
    );
    assert_eq!(
        l.spec.headers[0].1, "Bearer x",
        "the executor gets credentials"
    );
    assert!(
        s.lease(j.id, lease(12, 201)).await.unwrap().is_none(),
        "running job does not lease twice"
    );
    let done = |token| AttemptDone {
        id: j.id,
        lease_token: token,
        attempt: attempt(1, Verdict::Success),
        next: Next::Final {
            state: JobState::Succeeded,
            response: Some(ok_response()),
            error: None,
        },
        now_ms: 300,
    };
    assert!(
        !s.complete_attempt(done(99)).await.unwrap(),
        "zombie token is discarded"
    );
    assert!(s.complete_attempt(done(11)).await.unwrap());
    assert!(
        !s.complete_attempt(done(11)).await.unwrap(),
        "completes once"
    );
    let got = s.get_job(None, j.id).await.unwrap().unwrap();
    assert_eq!(got.state, JobState::Succeeded);
    assert_eq!(got.finished_at, Some(300));
    assert_eq!(got.response, Some(ok_response()));
    assert_eq!(got.attempts, vec![attempt(1, Verdict::Success)]);
    assert_eq!(
        s.cancel(None, j.id, 400).await.unwrap(),
        CancelOutcome::AlreadyFinal(JobState::Succeeded)
    );
}

/// A retry schedules the job with new counters, and it can be leased again.
pub async fn retry_schedules_next_attempt<S: Store>(s: S) {
    let j = new_job(1, 1, "k", 100);
    s.insert_jobs(vec![j.clone()], WINDOW).await.unwrap();
    s.lease(j.id, lease(1, 100)).await.unwrap().unwrap();
    let counters = Counters {
        retries: 1,
        reroutes: 0,
    };
    let applied = s
        .complete_attempt(AttemptDone {
            id: j.id,
            lease_token: 1,
            attempt: attempt(1, Verdict::Retry),
            next: Next::Retry {
                run_at: 5_000,
                counters,
                response: None,
            },
            now_ms: 150,
        })
        .await
        .unwrap();
    assert!(applied);
    let got = s.get_job(None, j.id).await.unwrap().unwrap();
    assert_eq!(
        (got.state, got.run_at, got.retries),
        (JobState::Scheduled, 5_000, 1)
    );
    let l = s
        .lease(j.id, lease(2, 5_000))
        .await
        .unwrap()
        .expect("scheduled job leases");
    assert_eq!((l.attempt_no, l.counters), (2, counters));
}

/// Cancel stops waiting and running jobs; a late completion is discarded.
pub async fn cancel_wins_over_late_completion<S: Store>(s: S) {
    let a = new_job(1, 1, "a", 100);
    let b = new_job(2, 1, "b", 100);
    s.insert_jobs(vec![a.clone(), b.clone()], WINDOW)
        .await
        .unwrap();
    assert_eq!(
        s.cancel(Some(TenantId(1)), a.id, 150).await.unwrap(),
        CancelOutcome::Cancelled
    );
    assert!(
        s.lease(a.id, lease(1, 160)).await.unwrap().is_none(),
        "cancelled job is not leased"
    );
    s.lease(b.id, lease(2, 160)).await.unwrap().unwrap();
    assert_eq!(
        s.cancel(Some(TenantId(1)), b.id, 170).await.unwrap(),
        CancelOutcome::Cancelled
    );
    let late = succeeded(b.id, 2, 180);
    assert!(
        !s.complete_attempt(late).await.unwrap(),
        "cancel fenced the running attempt"
    );
    assert_eq!(
        s.get_job(None, b.id).await.unwrap().unwrap().state,
        JobState::Cancelled
    );
}

/// Restart: running jobs are released; final ones are not pending.
pub async fn recover_releases_running<S: Store>(s: S) {
    let a = new_job(1, 1, "a", 100);
    let b = new_job(2, 1, "b", 100);
    let c = new_job(3, 1, "c", 100);
    s.insert_jobs(vec![a.clone(), b.clone(), c.clone()], WINDOW)
        .await
        .unwrap();
    s.lease(a.id, lease(1, 110)).await.unwrap().unwrap();
    s.cancel(None, c.id, 120).await.unwrap();
    let mut pending: Vec<JobId> = s
        .recover(130)
        .await
        .unwrap()
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
        !s.complete_attempt(late).await.unwrap(),
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

/// Replay re-queues failed and expired jobs as a new series and leaves a wakeup.
pub async fn replay_and_expire<S: Store>(s: S) {
    let a = new_job(1, 1, "a", 100);
    let b = new_job(2, 1, "b", 100);
    s.insert_jobs(vec![a.clone(), b.clone()], WINDOW)
        .await
        .unwrap();
    assert_eq!(
        s.replay(None, a.id, 110, 999).await.unwrap(),
        ReplayOutcome::NotReplayable(JobState::Queued)
    );
    assert!(s.expire(a.id, 120).await.unwrap());
    assert!(!s.expire(a.id, 121).await.unwrap(), "expires once");
    let got = s.get_job(None, a.id).await.unwrap().unwrap();
    assert_eq!(
        (got.state, got.error.as_ref().map(|e| e.code.as_str())),
        (JobState::Expired, Some("deadline"))
    );
    s.take_wakeups().await.unwrap();
    let ReplayOutcome::Requeued(p) = s.replay(Some(TenantId(1)), a.id, 130, 9_999).await.unwrap()
    else {
        panic!("replays")
    };
    assert_eq!((p.id, p.run_at, p.deadline_at), (a.id, 130, 9_999));
    let got = s.get_job(None, a.id).await.unwrap().unwrap();
    assert_eq!(
        (got.state, got.series, got.error),
        (JobState::Queued, 2, None)
    );
    assert_eq!(
        s.take_wakeups().await.unwrap(),
        vec![a.id],
        "a wakeup for a server sharing the store"
    );
    assert!(s.take_wakeups().await.unwrap().is_empty(), "taken once");
    let counts = s.count_by_state().await.unwrap();
    assert!(counts.contains(&(JobState::Queued, 2)), "{counts:?}");
}

/// Lists are newest first, paginated by cursor and filtered.
pub async fn list_paginates_and_filters<S: Store>(s: S) {
    let jobs: Vec<NewJob> = (0..5)
        .map(|i| new_job(i, 1, &format!("k{i}"), 100 + i as u64))
        .collect();
    s.insert_jobs(jobs.clone(), WINDOW).await.unwrap();
    s.cancel(None, jobs[1].id, 200).await.unwrap();
    let page1 = s
        .list_jobs(
            Some(TenantId(1)),
            &JobFilter {
                limit: 2,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        page1.iter().map(|j| j.id).collect::<Vec<_>>(),
        vec![jobs[4].id, jobs[3].id]
    );
    let page2 = s
        .list_jobs(
            Some(TenantId(1)),
            &JobFilter {
                limit: 2,
                before: Some(jobs[3].id),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        page2.iter().map(|j| j.id).collect::<Vec<_>>(),
        vec![jobs[2].id, jobs[1].id]
    );
    let cancelled = s
        .list_jobs(
            None,
            &JobFilter {
                limit: 10,
                state: Some(JobState::Cancelled),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        cancelled.iter().map(|j| j.id).collect::<Vec<_>>(),
        vec![jobs[1].id]
    );
    let recent = s
        .list_jobs(
            None,
            &JobFilter {
                limit: 10,
                created_after: Some(102),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(recent.len(), 2);
    let lane = s
        .list_jobs(
            None,
            &JobFilter {
                limit: 10,
                lane: Some("other:1".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(lane.is_empty());
}

/// Expands to one `#[tokio::test]` per conformance case for the store made by `$make`
/// (an async expression evaluated afresh for each case).
#[macro_export]
macro_rules! conformance_tests {
    ($make:expr) => {
        $crate::conformance_tests!(@case $make; tenants_and_keys, jobs_are_tenant_scoped, idempotency_dedups,
            lease_fences_completion, retry_schedules_next_attempt, cancel_wins_over_late_completion,
            recover_releases_running, replay_and_expire, list_paginates_and_filters);
    };
    (@case $make:expr; $($case:ident),*) => {
        $(
            #[tokio::test]
            async fn $case() {
                $crate::conformance::$case($make).await;
            }
        )*
    };
}
