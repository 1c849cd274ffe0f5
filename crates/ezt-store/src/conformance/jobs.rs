//! `JobStore`: admission and idempotency, the lease cycle and its fencing, cancel, expiry,
//! replay and wake-ups, listing.

use ezt_core::retry::{Counters, Verdict};
use ezt_core::{JobState, TenantId};

use super::fixtures::*;
use crate::*;

/// Jobs are visible only to their tenant.
pub async fn jobs_are_tenant_scoped<S: JobStore>(s: S) {
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
pub async fn idempotency_dedups<S: JobStore>(s: S) {
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
pub async fn lease_fences_completion<S: JobStore>(s: S) {
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
pub async fn retry_schedules_next_attempt<S: JobStore>(s: S) {
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
pub async fn cancel_wins_over_late_completion<S: JobStore>(s: S) {
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

/// Replay re-queues failed and expired jobs as a new series and leaves a wakeup.
pub async fn replay_and_expire<S: JobStore>(s: S) {
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

/// Lists are newest first, paginated by cursor and filtered.
pub async fn list_paginates_and_filters<S: JobStore>(s: S) {
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

/// A job's end creates its `on_success` / `on_failure` child in the same transaction, under the
/// derived id, once; a cancel creates none.
pub async fn chain_children_are_created_with_the_outcome<S: JobStore>(s: S) {
    use ezt_core::job::{child_id, Child, Relation};
    let mut parent = new_job(1, 1, "parent", 100);
    let child_spec = |url: &str| {
        Box::new(Child {
            spec: super::fixtures::spec(url),
            lane: "127.0.0.1:9".into(),
            idempotent_key: None,
        })
    };
    parent.spec.on_success = Some(child_spec("http://127.0.0.1:9/ok"));
    parent.spec.on_failure = Some(child_spec("http://127.0.0.1:9/bad"));
    let mut expiring = new_job(2, 1, "expiring", 100);
    expiring.spec.on_failure = Some(child_spec("http://127.0.0.1:9/late"));
    let mut cancelled = new_job(3, 1, "cancelled", 100);
    cancelled.spec.on_failure = Some(child_spec("http://127.0.0.1:9/never"));
    s.insert_jobs(
        vec![parent.clone(), expiring.clone(), cancelled.clone()],
        WINDOW,
    )
    .await
    .unwrap();
    s.lease(parent.id, lease(7, 200)).await.unwrap().unwrap();
    let done = AttemptDone {
        id: parent.id,
        lease_token: 7,
        attempt: attempt(1, Verdict::Success),
        next: Next::Final {
            state: JobState::Succeeded,
            response: Some(ok_response()),
            error: None,
        },
        now_ms: 300,
    };
    assert!(s.complete_attempt(done.clone()).await.unwrap().is_some());
    assert!(
        s.complete_attempt(done).await.unwrap().is_none(),
        "a second completion creates nothing"
    );
    let ok = child_id(parent.id, Relation::OnSuccess, 1);
    let child = s
        .get_job(None, ok)
        .await
        .unwrap()
        .expect("on_success child");
    assert_eq!(child.state, JobState::Queued);
    assert_eq!(child.tenant_id, parent.tenant_id);
    assert_eq!(child.spec.url, "http://127.0.0.1:9/ok");
    assert_eq!(child.idempotent_key, format!("{}:on_success", parent.id));
    assert_eq!(
        (child.created_at, child.run_at, child.deadline_at),
        (300, 300, 60_300)
    );
    let p = child.spec.parent.expect("linked to its parent");
    assert_eq!(
        (p.job_id, p.relation),
        (parent.id.to_string(), Relation::OnSuccess)
    );
    assert!(
        s.get_job(None, child_id(parent.id, Relation::OnFailure, 1))
            .await
            .unwrap()
            .is_none(),
        "on_failure only after a failure"
    );
    // The child waits like any job (recovery lists it).
    let waiting = s
        .recover(&NodeId::local(), 400, "local")
        .await
        .unwrap()
        .jobs;
    assert!(waiting.iter().any(|j| j.id == ok), "{waiting:?}");

    assert!(s.expire(expiring.id, 500, "local").await.unwrap().is_some());
    let late = s
        .get_job(None, child_id(expiring.id, Relation::OnFailure, 1))
        .await
        .unwrap()
        .expect("expiry runs on_failure");
    assert_eq!(late.spec.url, "http://127.0.0.1:9/late");

    s.cancel(None, cancelled.id, 600, "local").await.unwrap();
    assert!(s
        .get_job(None, child_id(cancelled.id, Relation::OnFailure, 1))
        .await
        .unwrap()
        .is_none());
}

/// A child's `{{parent.response…}}` templates are rendered in the transaction that ends its
/// parent, from the answer recorded there; one that cannot be rendered is stored with its
/// `template_error` (dispatch ends it unsent).
pub async fn chain_children_render_their_parents_answer<S: JobStore>(s: S) {
    use ezt_core::job::{child_id, Child, Relation};
    let templated = |url: &str, body: &str| {
        let mut spec = super::fixtures::spec(url);
        spec.headers = vec![(
            "X-Type".into(),
            "{{parent.response.headers.content-type}}".into(),
        )];
        spec.body = Some(body.into());
        Box::new(Child {
            spec,
            lane: "127.0.0.1:9".into(),
            idempotent_key: None,
        })
    };
    let mut good = new_job(11, 1, "good", 100);
    good.spec.on_success = Some(templated(
        "http://127.0.0.1:9/c/{{parent.response.status}}",
        "{\"was\": {{parent.response.body}}}",
    ));
    let mut bad = new_job(12, 1, "bad", 100);
    bad.spec.on_success = Some(templated(
        "http://127.0.0.1:9/c?id={{parent.response.body.id}}",
        "{}",
    ));
    s.insert_jobs(vec![good.clone(), bad.clone()], WINDOW)
        .await
        .unwrap();
    for (n, j) in [(7, &good), (8, &bad)] {
        s.lease(j.id, lease(n, 200)).await.unwrap().unwrap();
        let done = AttemptDone {
            id: j.id,
            lease_token: n,
            attempt: attempt(1, Verdict::Success),
            next: Next::Final {
                state: JobState::Succeeded,
                response: Some(ok_response()),
                error: None,
            },
            now_ms: 300,
        };
        assert!(s.complete_attempt(done).await.unwrap().is_some());
    }
    let child = s
        .get_job(None, child_id(good.id, Relation::OnSuccess, 1))
        .await
        .unwrap()
        .expect("the child");
    assert_eq!(child.spec.url, "http://127.0.0.1:9/c/200");
    assert_eq!(child.spec.body.as_deref(), Some("{\"was\": \"ok\"}"));
    assert_eq!(
        child.spec.headers,
        vec![("X-Type".to_string(), "text/plain".to_string())]
    );
    assert_eq!(child.spec.template_error, None);
    let unrendered = s
        .get_job(None, child_id(bad.id, Relation::OnSuccess, 1))
        .await
        .unwrap()
        .expect("created all the same");
    assert_eq!(unrendered.state, JobState::Queued);
    let e = unrendered
        .spec
        .template_error
        .expect("why it cannot be sent");
    assert!(e.starts_with("template_unresolved"), "{e}");
}

/// An attempt keeps the region and node that made it and why it moved there (a reroute).
pub async fn attempts_keep_region_node_and_reason<S: JobStore>(s: S) {
    let j = new_job(1, 1, "k", 100);
    s.insert_jobs(vec![j.clone()], WINDOW).await.unwrap();
    s.lease(j.id, lease(1, 100)).await.unwrap().unwrap();
    let mut first = attempt(1, Verdict::Reroute);
    first.region = "r1".into();
    first.node = Some("node-a".into());
    first.status_code = Some(502);
    let applied = s
        .complete_attempt(AttemptDone {
            id: j.id,
            lease_token: 1,
            attempt: first.clone(),
            next: Next::Retry {
                run_at: 150,
                counters: Counters {
                    retries: 0,
                    reroutes: 1,
                },
                response: None,
            },
            now_ms: 150,
        })
        .await
        .unwrap();
    assert_eq!(applied, Some(vec![]));
    s.lease(j.id, lease(2, 150)).await.unwrap().unwrap();
    let mut second = attempt(2, Verdict::Success);
    second.region = "r2".into();
    second.node = Some("node-b".into());
    second.reason = Some("reroute: 502 from r1".into());
    let done = AttemptDone {
        id: j.id,
        lease_token: 2,
        attempt: second.clone(),
        next: Next::Final {
            state: JobState::Succeeded,
            response: Some(ok_response()),
            error: None,
        },
        now_ms: 200,
    };
    assert_eq!(s.complete_attempt(done).await.unwrap(), Some(vec![]));
    let got = s.get_job(None, j.id).await.unwrap().unwrap();
    assert_eq!(got.attempts, vec![first, second]);
    assert_eq!(
        got.attempts[1].reason.as_deref(),
        Some("reroute: 502 from r1")
    );
}
