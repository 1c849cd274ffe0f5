//! `WorkflowStore`: a run is stored with the steps it starts with, and a step job's end
//! advances it (result recorded, dependents released, rendered from the result) in the same
//! transaction, once.

use ezt_core::retry::Verdict;
use ezt_core::workflow::{
    step_job_id, Definition, JobTemplate, Run, RunStatus, StepDef, StepStatus,
};
use ezt_core::{JobState, TenantId, WorkflowId};

use super::fixtures::*;
use crate::*;

/// A two-step run: `b` depends on `a` and reads `a`'s answer.
pub async fn a_step_end_advances_its_run_once<S: Store>(s: S) {
    let step = |name: &str, url: &str, deps: Vec<u32>| StepDef {
        name: name.into(),
        job: JobTemplate {
            spec: spec(url),
            lane: "127.0.0.1:9".into(),
        },
        depends_on: deps,
        critical: true,
        non_blocking: false,
        compensate: None,
        paginate: None,
        when: None,
    };
    let def = Definition {
        name: "two".into(),
        input: serde_json::json!({}),
        steps: vec![
            step("a", "http://127.0.0.1:9/a", vec![]),
            step(
                "b",
                "http://127.0.0.1:9/b/{{steps.a.response.body.id}}",
                vec![0],
            ),
        ],
        webhooks: vec![],
        idempotent_key: None,
    };
    let wf = WorkflowId::new(100, 5);
    let mut run = Run::new(def);
    let first = release_jobs(run.start(wf), TenantId(1), 100);
    assert_eq!(first.len(), 1);
    let a = first[0].id;
    assert_eq!(a, step_job_id(wf, 0, false));
    s.insert_workflow(
        WorkflowRecord {
            id: wf,
            tenant_id: TenantId(1),
            run,
            created_at: 100,
            updated_at: 100,
        },
        first,
    )
    .await
    .unwrap();
    assert!(
        s.get_workflow(Some(TenantId(2)), wf)
            .await
            .unwrap()
            .is_none(),
        "tenant-scoped"
    );
    let job = s
        .get_job(None, a)
        .await
        .unwrap()
        .expect("the first step's job");
    assert_eq!(job.idempotent_key, format!("{wf}:a"));
    s.lease(a, lease(3, 200)).await.unwrap().unwrap();
    let done = AttemptDone {
        id: a,
        lease_token: 3,
        attempt: attempt(1, Verdict::Success),
        next: Next::Final {
            state: JobState::Succeeded,
            response: Some(Response {
                body: r#"{"id": "x y"}"#.into(),
                ..ok_response()
            }),
            error: None,
        },
        now_ms: 300,
    };
    assert!(s.complete_attempt(done.clone()).await.unwrap().is_some());
    assert!(s.complete_attempt(done).await.unwrap().is_none());
    let rec = s
        .get_workflow(Some(TenantId(1)), wf)
        .await
        .unwrap()
        .unwrap();
    let st = &rec.run.state.steps;
    assert_eq!(
        (st[0].status, st[1].status),
        (StepStatus::Succeeded, StepStatus::Running)
    );
    assert_eq!(st[0].response.as_ref().unwrap().body, r#"{"id": "x y"}"#);
    assert_eq!(st[1].released_by, Some(a.to_string()));
    assert_eq!(rec.updated_at, 300);
    let b = s
        .get_job(None, step_job_id(wf, 1, false))
        .await
        .unwrap()
        .expect("released in the step's transaction");
    assert_eq!(b.spec.url, "http://127.0.0.1:9/b/x%20y");
    assert_eq!(b.state, JobState::Queued);
    assert_eq!(b.created_at, 300);
}

/// A run with webhooks: the end of its last step stores the `workflow.completed` payload under
/// the run's key and one pending delivery per webhook, answered with the step's end.
pub async fn a_run_end_creates_its_webhook_deliveries_in_the_same_commit<S: Store>(s: S) {
    let def = Definition {
        name: "hooked".into(),
        input: serde_json::json!({}),
        steps: vec![StepDef {
            name: "only".into(),
            job: JobTemplate {
                spec: spec("http://127.0.0.1:9/only"),
                lane: "127.0.0.1:9".into(),
            },
            depends_on: vec![],
            critical: true,
            non_blocking: false,
            compensate: None,
            paginate: None,
            when: None,
        }],
        webhooks: vec![ezt_core::webhook::Webhook {
            url: "http://127.0.0.1:9/hook".into(),
            regions: vec![],
            has_quorum_vote: true,
        }],
        idempotent_key: None,
    };
    let wf = WorkflowId::new(100, 6);
    let mut run = Run::new(def);
    let first = release_jobs(run.start(wf), TenantId(1), 100);
    let a = first[0].id;
    s.insert_workflow(
        WorkflowRecord {
            id: wf,
            tenant_id: TenantId(1),
            run,
            created_at: 100,
            updated_at: 100,
        },
        first,
    )
    .await
    .unwrap();
    s.lease(a, lease(3, 200)).await.unwrap().unwrap();
    let done = AttemptDone {
        id: a,
        lease_token: 3,
        attempt: attempt(1, Verdict::Success),
        next: Next::Final {
            state: JobState::Succeeded,
            response: Some(ok_response()),
            error: None,
        },
        now_ms: 300,
    };
    let created = s.complete_attempt(done).await.unwrap().expect("applied");
    assert_eq!(created.len(), 1, "one delivery for the run's one webhook");
    assert_eq!(created[0].url, "http://127.0.0.1:9/hook");
    let d = s
        .lease_delivery(created[0].id, lease(4, 310))
        .await
        .unwrap()
        .expect("leased");
    assert_eq!(d.job_id, run_key(wf), "stored under the run's key");
    let body: serde_json::Value = serde_json::from_slice(&d.payload).unwrap();
    assert_eq!(body["type"], "workflow.completed");
    assert_eq!(body["workflow_id"], wf.to_string());
    assert_eq!(body["steps"][0]["status"], "succeeded");
    let listed = s.deliveries_under(TenantId(1), run_key(wf)).await.unwrap();
    assert_eq!(
        listed.len(),
        1,
        "the run's deliveries are listed under its key"
    );
    assert_eq!((listed[0].id, listed[0].series), (created[0].id, 1));
    assert!(
        s.deliveries_under(TenantId(2), run_key(wf))
            .await
            .unwrap()
            .is_empty(),
        "tenant-scoped"
    );
}

/// A tenant's second run with the same `idempotent_key` is not stored (nor its jobs): the
/// first is answered. Another tenant, or no key, is a new run.
pub async fn a_runs_key_admits_it_once_per_tenant<S: Store>(s: S) {
    let record = |n: u128, tenant: u128, key: Option<&str>| {
        let def = Definition {
            name: "k".into(),
            input: serde_json::json!({}),
            steps: vec![StepDef {
                name: "only".into(),
                job: JobTemplate {
                    spec: spec("http://127.0.0.1:9/only"),
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
            idempotent_key: key.map(str::to_string),
        };
        let wf = WorkflowId::new(100, n);
        let mut run = Run::new(def);
        let jobs = release_jobs(run.start(wf), TenantId(tenant), 100);
        (
            WorkflowRecord {
                id: wf,
                tenant_id: TenantId(tenant),
                run,
                created_at: 100,
                updated_at: 100,
            },
            jobs,
        )
    };
    let (a, ja) = record(11, 1, Some("order-7"));
    assert_eq!(
        s.insert_workflow(a.clone(), ja).await.unwrap(),
        WorkflowAdmission::Stored
    );
    let (b, jb) = record(12, 1, Some("order-7"));
    let b_job = jb[0].id;
    assert_eq!(
        s.insert_workflow(b.clone(), jb).await.unwrap(),
        WorkflowAdmission::Duplicate { existing: a.id }
    );
    assert!(s.get_workflow(None, b.id).await.unwrap().is_none());
    assert!(
        s.get_job(None, b_job).await.unwrap().is_none(),
        "its jobs not stored"
    );
    let (c, jc) = record(13, 2, Some("order-7"));
    assert_eq!(
        s.insert_workflow(c, jc).await.unwrap(),
        WorkflowAdmission::Stored,
        "keys are per tenant"
    );
    for n in [14, 15] {
        let (d, jd) = record(n, 1, None);
        assert_eq!(
            s.insert_workflow(d, jd).await.unwrap(),
            WorkflowAdmission::Stored
        );
    }
}

/// Cancel ends the run and its waiting step job in one transaction (with the run's
/// `workflow.cancelled` delivery); resume releases that step again under a new id and key.
pub async fn cancel_and_resume_change_the_run_and_its_jobs_at_once<S: Store>(s: S) {
    let def = Definition {
        name: "c".into(),
        input: serde_json::json!({}),
        steps: vec![StepDef {
            name: "only".into(),
            job: JobTemplate {
                spec: spec("http://127.0.0.1:9/only"),
                lane: "127.0.0.1:9".into(),
            },
            depends_on: vec![],
            critical: true,
            non_blocking: false,
            compensate: None,
            paginate: None,
            when: None,
        }],
        webhooks: vec![ezt_core::webhook::Webhook {
            url: "http://127.0.0.1:9/hook".into(),
            regions: vec![],
            has_quorum_vote: true,
        }],
        idempotent_key: None,
    };
    let wf = WorkflowId::new(100, 21);
    let mut run = Run::new(def);
    let first = release_jobs(run.start(wf), TenantId(1), 100);
    let a = first[0].id;
    let rec = WorkflowRecord {
        id: wf,
        tenant_id: TenantId(1),
        run,
        created_at: 100,
        updated_at: 100,
    };
    s.insert_workflow(rec, first).await.unwrap();
    assert_eq!(
        s.control_workflow(TenantId(2), wf, RunControl::Cancel, 150)
            .await
            .unwrap(),
        ControlOutcome::NotFound,
        "tenant-scoped"
    );
    let ControlOutcome::Applied {
        record,
        cancelled,
        deliveries,
        ..
    } = s
        .control_workflow(TenantId(1), wf, RunControl::Cancel, 200)
        .await
        .unwrap()
    else {
        panic!("applied")
    };
    assert_eq!(record.run.state.status, RunStatus::Cancelled);
    assert_eq!(cancelled, vec![a]);
    assert_eq!(
        deliveries.len(),
        1,
        "workflow.cancelled to the run's webhook"
    );
    let job = s.get_job(None, a).await.unwrap().unwrap();
    assert_eq!(job.state, JobState::Cancelled);
    assert_eq!(
        s.get_workflow(None, wf)
            .await
            .unwrap()
            .unwrap()
            .run
            .state
            .status,
        RunStatus::Cancelled,
        "written"
    );
    assert!(matches!(
        s.control_workflow(TenantId(1), wf, RunControl::Cancel, 210)
            .await
            .unwrap(),
        ControlOutcome::Refused(_)
    ));
    let ControlOutcome::Applied { released, .. } = s
        .control_workflow(TenantId(1), wf, RunControl::Resume, 300)
        .await
        .unwrap()
    else {
        panic!("applied")
    };
    assert_eq!(released.len(), 1);
    assert_ne!(released[0].id, a, "a new job per resume series");
    let again = s
        .get_job(None, released[0].id)
        .await
        .unwrap()
        .expect("stored");
    assert_eq!(again.state, JobState::Queued);
    assert_eq!(again.idempotent_key, format!("{wf}:only:resume:1"));
}
