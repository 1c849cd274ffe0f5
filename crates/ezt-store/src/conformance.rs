//! The conformance suite: every `Store` backend must pass every case.
//!
//! Backends call `ezt_store::conformance_tests!(async_factory_expr)` from a test file; the macro
//! expands to one `#[tokio::test]` per case, each with a fresh store.

use ezt_core::job::JobSpec;
use ezt_core::lane::LaneKey;
use ezt_core::retry::{Counters, RetryPolicy, Verdict};
use ezt_core::tier::Tier;
use ezt_core::webhook::{DeliveryState, Webhook};
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
        webhooks: vec![],
        webhook_quorum: 0,
        region_policy: Default::default(),
        execution_mode: Default::default(),
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
        s.cancel(Some(TenantId(2)), id, 5, "local").await.unwrap(),
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
        s.cancel(None, a.id, 300, "local").await.unwrap(),
        CancelOutcome::Cancelled(vec![])
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
        s.complete_attempt(done(99)).await.unwrap().is_none(),
        "zombie token is discarded"
    );
    assert_eq!(s.complete_attempt(done(11)).await.unwrap(), Some(vec![]));
    assert!(
        s.complete_attempt(done(11)).await.unwrap().is_none(),
        "completes once"
    );
    let got = s.get_job(None, j.id).await.unwrap().unwrap();
    assert_eq!(got.state, JobState::Succeeded);
    assert_eq!(got.finished_at, Some(300));
    assert_eq!(got.response, Some(ok_response()));
    assert_eq!(got.attempts, vec![attempt(1, Verdict::Success)]);
    assert_eq!(
        s.cancel(None, j.id, 400, "local").await.unwrap(),
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
    assert_eq!(
        applied,
        Some(vec![]),
        "applied, and a retry delivers nothing"
    );
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
        s.cancel(Some(TenantId(1)), a.id, 150, "local")
            .await
            .unwrap(),
        CancelOutcome::Cancelled(vec![])
    );
    assert!(
        s.lease(a.id, lease(1, 160)).await.unwrap().is_none(),
        "cancelled job is not leased"
    );
    s.lease(b.id, lease(2, 160)).await.unwrap().unwrap();
    assert_eq!(
        s.cancel(Some(TenantId(1)), b.id, 170, "local")
            .await
            .unwrap(),
        CancelOutcome::Cancelled(vec![])
    );
    let late = succeeded(b.id, 2, 180);
    assert!(
        s.complete_attempt(late).await.unwrap().is_none(),
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
    s.cancel(None, c.id, 120, "local").await.unwrap();
    let mut pending: Vec<JobId> = s
        .recover(130, "local")
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
    assert_eq!(s.expire(a.id, 120, "local").await.unwrap(), Some(vec![]));
    assert!(
        s.expire(a.id, 121, "local").await.unwrap().is_none(),
        "expires once"
    );
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

/// The ids a listing returns, newest first.
async fn listed<S: Store>(s: &S, tenant: Option<TenantId>, filter: JobFilter) -> Vec<JobId> {
    let jobs = s.list_jobs(tenant, &filter).await.unwrap();
    jobs.iter().map(|j| j.id).collect()
}

/// Lists are newest first, paginated by cursor and filtered.
pub async fn list_paginates_and_filters<S: Store>(s: S) {
    let jobs: Vec<NewJob> = (0..5)
        .map(|i| new_job(i, 1, &format!("k{i}"), 100 + i as u64))
        .collect();
    s.insert_jobs(jobs.clone(), WINDOW).await.unwrap();
    s.cancel(None, jobs[1].id, 200, "local").await.unwrap();
    let page = |limit, before| JobFilter {
        limit,
        before,
        ..Default::default()
    };
    assert_eq!(
        listed(&s, Some(TenantId(1)), page(2, None)).await,
        vec![jobs[4].id, jobs[3].id]
    );
    assert_eq!(
        listed(&s, Some(TenantId(1)), page(2, Some(jobs[3].id))).await,
        vec![jobs[2].id, jobs[1].id]
    );
    let cancelled = JobFilter {
        state: Some(JobState::Cancelled),
        ..page(10, None)
    };
    assert_eq!(listed(&s, None, cancelled).await, vec![jobs[1].id]);
    let recent = JobFilter {
        created_after: Some(102),
        ..page(10, None)
    };
    assert_eq!(listed(&s, None, recent).await.len(), 2);
    let lane = JobFilter {
        lane: Some("other:1".into()),
        ..page(10, None)
    };
    assert!(listed(&s, None, lane).await.is_empty());
}

fn hooked_job(
    id: u128,
    tenant: u128,
    key: &str,
    now: u64,
    urls: &[(&str, bool)],
    quorum: u32,
) -> NewJob {
    let mut j = new_job(id, tenant, key, now);
    j.spec.metadata.insert("order".into(), "42".into());
    j.spec.webhooks = urls
        .iter()
        .map(|(u, vote)| Webhook {
            url: (*u).into(),
            regions: vec![],
            has_quorum_vote: *vote,
        })
        .collect();
    j.spec.webhook_quorum = quorum;
    j
}

fn delivery_attempt(n: u32, status: u16, outcome: &str) -> DeliveryAttempt {
    DeliveryAttempt {
        n,
        at: 1,
        status_code: Some(status),
        error: None,
        latency_ms: 1,
        outcome: outcome.into(),
        wait_ms: None,
    }
}

/// Every way a job ends (success, expiry, cancel) creates its deliveries in the same call, with
/// one payload; deliveries are fenced by their lease and survive a restart.
pub async fn final_states_create_webhook_deliveries<S: Store>(s: S) {
    let hooks = [
        ("http://127.0.0.1:7/a", true),
        ("http://127.0.0.1:7/b", false),
    ];
    let a = hooked_job(1, 1, "a", 100, &hooks, 1);
    let b = hooked_job(2, 1, "b", 100, &hooks[..1], 1);
    let c = hooked_job(3, 1, "c", 100, &hooks[..1], 1);
    let plain = new_job(4, 1, "plain", 100);
    s.insert_jobs(vec![a.clone(), b.clone(), c.clone(), plain.clone()], WINDOW)
        .await
        .unwrap();
    s.lease(a.id, lease(1, 110)).await.unwrap().unwrap();
    let mut done = succeeded(a.id, 1, 120);
    done.next = Next::Final {
        state: JobState::Succeeded,
        response: Some(ok_response()),
        error: None,
    };
    let created = s.complete_attempt(done).await.unwrap().expect("applied");
    assert_eq!(created.len(), 2, "one delivery per webhook");
    assert_eq!(
        (
            created[0].url.as_str(),
            created[0].next_at,
            created[0].tenant_id
        ),
        ("http://127.0.0.1:7/a", 120, TenantId(1))
    );
    let view = s.get_job(Some(TenantId(1)), a.id).await.unwrap().unwrap();
    assert_eq!(view.deliveries.len(), 2);
    assert_eq!(
        (
            view.deliveries[0].index,
            view.deliveries[0].has_quorum_vote,
            view.deliveries[1].has_quorum_vote
        ),
        (0, true, false)
    );
    assert!(view
        .deliveries
        .iter()
        .all(|d| d.state == DeliveryState::Pending));

    let expired = s
        .expire(b.id, 130, "local")
        .await
        .unwrap()
        .expect("expired");
    assert_eq!(expired.len(), 1);
    let CancelOutcome::Cancelled(cancelled) = s.cancel(None, c.id, 140, "local").await.unwrap()
    else {
        panic!("cancels")
    };
    assert_eq!(cancelled.len(), 1);
    assert_eq!(
        s.take_wakeups().await.unwrap(),
        vec![c.id],
        "a cancel that creates deliveries wakes a server sharing the store"
    );
    s.lease(plain.id, lease(2, 150)).await.unwrap().unwrap();
    assert_eq!(
        s.complete_attempt(succeeded(plain.id, 2, 160))
            .await
            .unwrap(),
        Some(vec![]),
        "no webhooks, no deliveries"
    );

    // The payload: API.md's shape, fixed when the job ended.
    let d = s
        .lease_delivery(created[0].id, lease(7, 200))
        .await
        .unwrap()
        .expect("pending delivery leases");
    assert!(
        s.lease_delivery(created[0].id, lease(8, 200))
            .await
            .unwrap()
            .is_none(),
        "not twice"
    );
    let body: serde_json::Value = serde_json::from_slice(&d.payload).unwrap();
    assert_eq!(body["job_id"], a.id.to_string());
    assert_eq!(body["idempotent_key"], "a");
    assert_eq!(body["status"], "success");
    assert_eq!(body["response"]["status_code"], 200);
    assert_eq!(body["response"]["body"], "ok");
    assert_eq!(body["metadata"]["order"], "42");
    assert_eq!(
        (body["attempts"].as_u64(), body["completed_at"].as_u64()),
        (Some(1), Some(120))
    );
    assert_eq!(body["region"], "local");
    assert!(body.get("error").is_none());
    let eb = s
        .lease_delivery(expired[0].id, lease(9, 200))
        .await
        .unwrap()
        .unwrap();
    let eb: serde_json::Value = serde_json::from_slice(&eb.payload).unwrap();
    assert_eq!(
        (eb["status"].as_str(), eb["error"]["code"].as_str()),
        (Some("failed"), Some("deadline"))
    );
    assert!(eb["response"].is_null());
    let cb = s
        .lease_delivery(cancelled[0].id, lease(10, 200))
        .await
        .unwrap()
        .unwrap();
    let cb: serde_json::Value = serde_json::from_slice(&cb.payload).unwrap();
    assert_eq!(cb["error"]["code"], "cancelled");

    // Fencing, then a retry.
    let retry = |token| DeliveryDone {
        id: created[0].id,
        lease_token: token,
        attempt: delivery_attempt(1, 503, "retry"),
        next: DeliveryNext::RetryAt(5_000),
        now_ms: 210,
    };
    assert!(
        !s.complete_delivery(retry(99)).await.unwrap(),
        "zombie discarded"
    );
    assert!(s.complete_delivery(retry(7)).await.unwrap());
    assert!(!s.complete_delivery(retry(7)).await.unwrap(), "once");

    // Restart: leases are void, every pending delivery comes back with its next time.
    let rec = s.recover(300, "local").await.unwrap();
    let mut ids: Vec<_> = rec.deliveries.iter().map(|d| (d.id, d.next_at)).collect();
    ids.sort();
    let mut want = vec![
        (created[0].id, 5_000),
        (created[1].id, 120),
        (expired[0].id, 130),
        (cancelled[0].id, 140),
    ];
    want.sort();
    assert_eq!(ids, want);
    let again = s
        .lease_delivery(expired[0].id, lease(11, 310))
        .await
        .unwrap();
    assert!(again.is_some(), "the dead run's lease was released");
    let d0 = s
        .lease_delivery(created[0].id, lease(12, 5_000))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((d0.attempt_no, d0.failed_in_run), (2, 1));
}

/// Delivered and failed deliveries end; quorum facts (acked) survive a redelivery, which
/// restarts the schedule for the job's latest deliveries and is tenant-scoped.
pub async fn deliveries_end_and_redeliver<S: Store>(s: S) {
    let hooks = [
        ("http://127.0.0.1:7/a", true),
        ("http://127.0.0.1:7/b", true),
    ];
    let a = hooked_job(1, 1, "a", 100, &hooks, 2);
    s.insert_jobs(vec![a.clone()], WINDOW).await.unwrap();
    assert_eq!(
        s.redeliver(Some(TenantId(1)), a.id, 105).await.unwrap(),
        RedeliverOutcome::NoDeliveries,
        "not final yet"
    );
    s.lease(a.id, lease(1, 110)).await.unwrap().unwrap();
    let created = s
        .complete_attempt(succeeded(a.id, 1, 120))
        .await
        .unwrap()
        .unwrap();
    let (d0, d1) = (created[0].id, created[1].id);
    s.lease_delivery(d0, lease(2, 130)).await.unwrap().unwrap();
    s.lease_delivery(d1, lease(3, 130)).await.unwrap().unwrap();
    assert!(s
        .complete_delivery(DeliveryDone {
            id: d0,
            lease_token: 2,
            attempt: delivery_attempt(1, 200, "delivered"),
            next: DeliveryNext::Delivered,
            now_ms: 140,
        })
        .await
        .unwrap());
    assert!(s
        .complete_delivery(DeliveryDone {
            id: d1,
            lease_token: 3,
            attempt: delivery_attempt(1, 410, "failed"),
            next: DeliveryNext::Failed,
            now_ms: 141,
        })
        .await
        .unwrap());
    assert_eq!(s.oldest_pending_delivery().await.unwrap(), None);
    let j = s.get_job(None, a.id).await.unwrap().unwrap();
    assert_eq!(
        j.deliveries
            .iter()
            .map(|d| (d.state, d.acked_at))
            .collect::<Vec<_>>(),
        vec![
            (DeliveryState::Delivered, Some(140)),
            (DeliveryState::Failed, None)
        ]
    );
    assert_eq!(
        j.deliveries[0].attempts,
        vec![delivery_attempt(1, 200, "delivered")]
    );
    assert!(
        s.lease_delivery(d0, lease(4, 150)).await.unwrap().is_none(),
        "delivered is final"
    );
    assert!(
        s.lease_delivery(d1, lease(4, 150)).await.unwrap().is_none(),
        "failed is final"
    );

    assert_eq!(
        s.redeliver(Some(TenantId(2)), a.id, 200).await.unwrap(),
        RedeliverOutcome::NotFound,
        "another tenant's job"
    );
    let RedeliverOutcome::Requeued(again) =
        s.redeliver(Some(TenantId(1)), a.id, 200).await.unwrap()
    else {
        panic!("redelivers")
    };
    let mut again_ids: Vec<_> = again.iter().map(|p| (p.id, p.next_at)).collect();
    again_ids.sort();
    let mut want = vec![(d0, 200), (d1, 200)];
    want.sort();
    assert_eq!(again_ids, want);
    let j = s.get_job(None, a.id).await.unwrap().unwrap();
    assert!(j
        .deliveries
        .iter()
        .all(|d| d.state == DeliveryState::Pending && d.failed_in_run == 0));
    assert_eq!(
        j.deliveries[0].acked_at,
        Some(140),
        "a cast vote stays cast"
    );
    assert_eq!(s.oldest_pending_delivery().await.unwrap(), Some(120));
    let l = s.lease_delivery(d1, lease(5, 210)).await.unwrap().unwrap();
    assert_eq!(
        (l.attempt_no, l.failed_in_run, l.acked_before),
        (2, 0, false)
    );
}

/// Secrets are per tenant; rotation moves the primary to secondary atomically.
pub async fn webhook_secrets_rotate<S: Store>(s: S) {
    let t1 = TenantId(1);
    assert!(s.webhook_secrets(t1).await.unwrap().is_none());
    assert!(
        s.rotate_webhook_secret(t1, vec![9], 5)
            .await
            .unwrap()
            .is_none(),
        "nothing to rotate"
    );
    s.put_webhook_secrets(
        t1,
        WebhookSecrets {
            primary: vec![1],
            secondary: None,
            updated_at: 1,
        },
    )
    .await
    .unwrap();
    assert!(
        s.webhook_secrets(TenantId(2)).await.unwrap().is_none(),
        "per tenant"
    );
    let r = s
        .rotate_webhook_secret(t1, vec![2], 6)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (r.primary, r.secondary, r.updated_at),
        (vec![2], Some(vec![1]), 6)
    );
    let r = s
        .rotate_webhook_secret(t1, vec![3], 7)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (r.primary, r.secondary),
        (vec![3], Some(vec![2])),
        "the oldest is dropped"
    );
    assert_eq!(
        s.webhook_secrets(t1).await.unwrap().unwrap().primary,
        vec![3]
    );
    assert!(s.delete_webhook_secrets(t1).await.unwrap());
    assert!(!s.delete_webhook_secrets(t1).await.unwrap());
    assert!(s.webhook_secrets(t1).await.unwrap().is_none());
}

/// Restart: an attempt cut off by the crash stays in the job's history as `interrupted` (its
/// number from lease time, `at` the lease time, this node's region), once; the re-run is the next
/// number and the interruption costs no retry.
pub async fn recover_records_interrupted_attempt<S: Store>(s: S) {
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

    s.recover(300, "here").await.unwrap();
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
    s.recover(400, "here").await.unwrap();
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

/// Lane states: absent until saved, then the last save wins, and keys are independent.
pub async fn lane_states_persist<S: Store>(s: S) {
    assert_eq!(s.lane_state("job:a").await.unwrap(), None);
    let st = LaneState {
        rate: 0.5,
        burst: 1,
        max_in_flight: 3,
        paused_until_ms: Some(1_700_000_000_000),
        updated_at_ms: 1,
    };
    s.save_lane_state("job:a", st).await.unwrap();
    assert_eq!(s.lane_state("job:a").await.unwrap(), Some(st));
    assert_eq!(
        s.lane_state("webhook:a").await.unwrap(),
        None,
        "keys are apart"
    );
    let newer = LaneState {
        rate: 7.25,
        paused_until_ms: None,
        updated_at_ms: 2,
        ..st
    };
    s.save_lane_state("job:a", newer).await.unwrap();
    assert_eq!(
        s.lane_state("job:a").await.unwrap(),
        Some(newer),
        "last save wins"
    );
}

/// Finishes `id` with a successful first attempt at `now` (token `id`); its new deliveries.
async fn finish_for_purge<S: Store>(s: &S, id: JobId, now: u64) -> Vec<PendingDelivery> {
    s.lease(id, lease(id.0 as u64 & 0xffff, now))
        .await
        .unwrap()
        .unwrap();
    s.complete_attempt(succeeded(id, id.0 as u64 & 0xffff, now))
        .await
        .unwrap()
        .unwrap()
}

/// Retention: finished jobs older than their tenant's cutoff go (oldest first, at most `limit`
/// per call) with their attempts and idempotency keys; recent, unfinished, overridden and
/// still-delivering jobs stay.
pub async fn purge_removes_old_finished_jobs<S: Store>(s: S) {
    let old1 = new_job(1, 1, "old1", 100);
    let old2 = new_job(2, 1, "old2", 100);
    let recent = new_job(3, 1, "recent", 100);
    let waiting = new_job(4, 1, "waiting", 100);
    let other = new_job(5, 2, "other", 100);
    let hooked = hooked_job(6, 1, "hooked", 100, &[("http://127.0.0.1:7/h", true)], 1);
    let all = [&old1, &old2, &recent, &waiting, &other, &hooked];
    s.insert_jobs(all.iter().map(|j| (*j).clone()).collect(), WINDOW)
        .await
        .unwrap();
    finish_for_purge(&s, old1.id, 1_000).await;
    finish_for_purge(&s, old2.id, 1_100).await;
    finish_for_purge(&s, recent.id, 5_000).await;
    finish_for_purge(&s, other.id, 1_000).await;
    let deliveries = finish_for_purge(&s, hooked.id, 1_000).await;
    let cutoffs = PurgeCutoffs {
        default: Some(2_000),
        tenants: vec![(TenantId(2), None), (TenantId(9), Some(9_999))],
    };
    assert_eq!(
        s.purge_finished(&PurgeCutoffs::default(), 10)
            .await
            .unwrap(),
        0,
        "no cutoff"
    );
    assert_eq!(s.purge_finished(&cutoffs, 1).await.unwrap(), 1, "limit");
    assert!(
        s.get_job(None, old1.id).await.unwrap().is_none(),
        "oldest first"
    );
    assert!(s.get_job(None, old2.id).await.unwrap().is_some());
    assert_eq!(s.purge_finished(&cutoffs, 10).await.unwrap(), 1);
    assert_eq!(
        s.purge_finished(&cutoffs, 10).await.unwrap(),
        0,
        "nothing left"
    );
    for j in [&recent, &waiting, &other, &hooked] {
        assert!(
            s.get_job(None, j.id).await.unwrap().is_some(),
            "{:?} kept",
            j.idempotent_key
        );
    }
    // The purged key is free again, well inside the dedup window.
    let again = new_job(7, 1, "old1", 3_000);
    assert_eq!(
        s.insert_jobs(vec![again.clone()], WINDOW).await.unwrap(),
        vec![Admission::Inserted]
    );
    // Once the webhook is delivered, the hooked job goes too (with its deliveries).
    let d = deliveries[0].id;
    s.lease_delivery(d, lease(50, 1_200))
        .await
        .unwrap()
        .unwrap();
    assert!(s
        .complete_delivery(DeliveryDone {
            id: d,
            lease_token: 50,
            attempt: delivery_attempt(1, 200, "delivered"),
            next: DeliveryNext::Delivered,
            now_ms: 1_300,
        })
        .await
        .unwrap());
    assert_eq!(s.purge_finished(&cutoffs, 10).await.unwrap(), 1);
    assert!(s.get_job(None, hooked.id).await.unwrap().is_none());
    assert!(s
        .lease_delivery(d, lease(51, 1_400))
        .await
        .unwrap()
        .is_none());
    assert_eq!(
        s.redeliver(None, hooked.id, 1_500).await.unwrap(),
        RedeliverOutcome::NotFound
    );
    // A per-tenant override applies to its tenant only.
    let longer = PurgeCutoffs {
        default: Some(2_000),
        tenants: vec![(TenantId(2), Some(1_001))],
    };
    assert_eq!(s.purge_finished(&longer, 10).await.unwrap(), 1);
    assert!(s.get_job(None, other.id).await.unwrap().is_none());
    let listed = listed(
        &s,
        None,
        JobFilter {
            limit: 100,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(listed, vec![again.id, waiting.id, recent.id]);
}

/// Expands to one `#[tokio::test]` per conformance case for the store made by `$make`
/// (an async expression evaluated afresh for each case).
#[macro_export]
macro_rules! conformance_tests {
    ($make:expr) => {
        $crate::conformance_tests!(@case $make; tenants_and_keys, jobs_are_tenant_scoped, idempotency_dedups,
            lease_fences_completion, retry_schedules_next_attempt, cancel_wins_over_late_completion,
            recover_releases_running, replay_and_expire, list_paginates_and_filters,
            final_states_create_webhook_deliveries, deliveries_end_and_redeliver, webhook_secrets_rotate);
        $crate::conformance_tests!(@case $make; recover_records_interrupted_attempt);
        $crate::conformance_tests!(@case $make; lane_states_persist);
        $crate::conformance_tests!(@case $make; purge_removes_old_finished_jobs);
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
