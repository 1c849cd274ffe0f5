//! `ClusterStore`: membership leases with epochs, lane claims that fence the attempt lease,
//! hand-over, and what an adopter is told. The embedded backends answer as a one-member
//! cluster; PostgreSQL as a shared one.

use super::fixtures::*;
use crate::*;

const TTL: u64 = 60_000;

fn info(id: &str) -> NodeInfo {
    NodeInfo {
        id: NodeId::new(id),
        region: "r1".into(),
        advertise_url: Some("http://127.0.0.2:1".into()),
        version: "test".into(),
    }
}

fn job_lane() -> String {
    format!("job:{}", new_job(1, 1, "k", 100).lane.0)
}

fn fenced(token: u64, holder: &str, lane_epoch: u64, node_epoch: u64) -> Lease {
    Lease {
        fence: Some(Fence {
            lane: job_lane(),
            lane_epoch,
            node_epoch,
        }),
        ..lease_by(token, 110, NodeId::new(holder))
    }
}

/// A node joins with an epoch, heartbeats, cannot be joined twice while alive, and after
/// leaving its heartbeat fails and a rejoin gets a newer epoch.
pub async fn membership_epochs_and_leases<S: ClusterStore>(s: S) {
    let a = info("node-a");
    let e1 = s.join(&a, TTL).await.unwrap();
    assert!(e1 > 0);
    assert!(s.heartbeat(&a.id, e1, TTL).await.unwrap());
    assert!(
        !s.heartbeat(&a.id, e1 + 1000, TTL).await.unwrap(),
        "another epoch's heartbeat is refused"
    );
    let err = s.join(&a, TTL).await.unwrap_err();
    assert!(matches!(err, Error::Conflict(_)), "{err:?}");
    let nodes = s.nodes().await.unwrap();
    let me = nodes.iter().find(|n| n.id == "node-a").expect("listed");
    assert!(me.alive && !me.draining, "{me:?}");
    assert_eq!((me.epoch, me.region.as_str()), (e1, "r1"));
    assert!(me.expires_at_ms >= me.started_at_ms + TTL - 1000, "{me:?}");
    s.leave(&a.id, e1).await.unwrap();
    assert!(!s.heartbeat(&a.id, e1, TTL).await.unwrap(), "left");
    assert!(!s
        .nodes()
        .await
        .unwrap()
        .iter()
        .any(|n| n.id == "node-a" && n.alive));
    let e2 = s.join(&a, TTL).await.unwrap();
    assert!(e2 > e1, "epochs grow: {e1} then {e2}");
}

/// A lane is taken only when asked; its owner's fenced lease works, a wrong lane epoch or
/// node epoch leases nothing, and after a drain the lane is free and the old fence is void.
pub async fn lane_claims_fence_the_attempt_lease<S: JobStore + ClusterStore>(s: S) {
    let (a, b, c) = (
        new_job(1, 1, "a", 100),
        new_job(2, 1, "b", 100),
        new_job(3, 1, "c", 100),
    );
    s.insert_jobs(vec![a.clone(), b.clone(), c.clone()], WINDOW)
        .await
        .unwrap();
    let lane = job_lane();
    let n = info("node-a");
    let e = s.join(&n, TTL).await.unwrap();
    assert_eq!(
        s.orphan_lanes("job:", true).await.unwrap(),
        vec![lane.clone()],
        "waiting work, no owner"
    );
    assert_eq!(
        s.claim_lane(&n.id, e, &lane, false).await.unwrap(),
        LaneClaim::Elsewhere { owner: None },
        "not taken unless asked"
    );
    let LaneClaim::Owned(o) = s.claim_lane(&n.id, e, &lane, true).await.unwrap() else {
        panic!("a free lane is taken");
    };
    assert!(o.lane_epoch > 0);
    assert_eq!(o.pause_left_ms, None);
    let LaneClaim::Owned(again) = s.claim_lane(&n.id, e, &lane, true).await.unwrap() else {
        panic!("still mine");
    };
    assert_eq!(
        again.lane_epoch, o.lane_epoch,
        "owning again keeps the epoch"
    );
    assert!(s.orphan_lanes("job:", true).await.unwrap().is_empty());
    assert!(s.orphan_lanes("job:", false).await.unwrap().is_empty());
    let owners = s.lane_owners(std::slice::from_ref(&lane)).await.unwrap();
    assert_eq!(owners[0].owner_node.as_deref(), Some("node-a"));
    assert!(owners[0].owner_alive);

    assert!(
        s.lease(a.id, fenced(1, "node-a", o.lane_epoch + 1, e))
            .await
            .unwrap()
            .is_none(),
        "a stale lane epoch leases nothing"
    );
    assert!(
        s.lease(a.id, fenced(1, "node-a", o.lane_epoch, e + 1))
            .await
            .unwrap()
            .is_none(),
        "another node epoch leases nothing"
    );
    assert!(
        s.lease(a.id, fenced(1, "node-b", o.lane_epoch, e))
            .await
            .unwrap()
            .is_none(),
        "another holder leases nothing"
    );
    let leased = s
        .lease(a.id, fenced(1, "node-a", o.lane_epoch, e))
        .await
        .unwrap()
        .expect("the owner leases");
    assert_eq!(leased.attempt_no, 1);
    // The call never left (self-fence between lease and send): undone, as if never leased.
    assert!(s.unlease(a.id, 1).await.unwrap());
    assert!(!s.unlease(a.id, 1).await.unwrap(), "once");
    let again = s
        .lease(a.id, fenced(2, "node-a", o.lane_epoch, e))
        .await
        .unwrap()
        .expect("leasable again");
    assert_eq!(again.attempt_no, 1, "the undone lease is not an attempt");

    s.drain(&n.id, e).await.unwrap();
    for thorough in [true, false] {
        assert_eq!(
            s.orphan_lanes("job:", thorough).await.unwrap(),
            vec![lane.clone()],
            "released with work waiting: ownerless (thorough: {thorough})"
        );
    }
    assert!(
        s.lease(b.id, fenced(3, "node-a", o.lane_epoch, e))
            .await
            .unwrap()
            .is_none(),
        "after the hand-over the old owner leases nothing"
    );
    assert!(
        s.heartbeat(&n.id, e, TTL).await.unwrap(),
        "a draining node keeps its lease"
    );
    assert!(s.nodes().await.unwrap()[0].draining);
    let owners = s.lane_owners(std::slice::from_ref(&lane)).await.unwrap();
    assert_eq!(owners[0].owner_node, None, "released");
    s.leave(&n.id, e).await.unwrap();
    let e2 = s.join(&n, TTL).await.unwrap();
    let LaneClaim::Owned(o2) = s.claim_lane(&n.id, e2, &lane, true).await.unwrap() else {
        panic!("free again");
    };
    assert!(
        o2.lane_epoch > o.lane_epoch,
        "a new owner, a new lane epoch"
    );
    assert!(s
        .lease(c.id, fenced(4, "node-a", o2.lane_epoch, e2))
        .await
        .unwrap()
        .is_some());
}

/// What the lane learned (and a pause still running) is handed to its next owner.
pub async fn an_owner_reads_what_the_lane_learned<S: LaneStore + ClusterStore>(s: S) {
    let lane = job_lane();
    let n = info("node-a");
    let e = s.join(&n, TTL).await.unwrap();
    let st = LaneState {
        rate: 10.0,
        burst: 1,
        max_in_flight: 5,
        paused_until_ms: Some(1_000 + 60_000),
        updated_at_ms: 1_000,
        detail: Default::default(),
    };
    s.save_lane_state(&lane, st.clone()).await.unwrap();
    let LaneClaim::Owned(o) = s.claim_lane(&n.id, e, &lane, true).await.unwrap() else {
        panic!("taken");
    };
    assert_eq!(o.state.map(|s| (s.rate, s.max_in_flight)), Some((10.0, 5)));
    // The embedded backends take the saved time as their own clock's; PostgreSQL moves the
    // remaining pause onto its own clock. Either way most of a minute is left, not less.
    if let Some(left) = o.pause_left_ms {
        assert!(left <= 60_000, "{left}");
    }
    assert_eq!(
        s.lane_state(&lane).await.unwrap(),
        Some(st),
        "claiming never changes what was learned"
    );
}

/// A tenant's pin, written through by the owner (or by another node for it), is what the
/// next owner of the lane is handed, with the rest of what the lane learned.
pub async fn an_adopter_is_handed_the_pin<S: LaneStore + ClusterStore>(s: S) {
    let lane = job_lane();
    let a = info("node-a");
    let ea = s.join(&a, TTL).await.unwrap();
    let LaneClaim::Owned(_) = s.claim_lane(&a.id, ea, &lane, true).await.unwrap() else {
        panic!("taken");
    };
    let pin = LanePin {
        rate: Some(2.0),
        max_in_flight: Some(1),
        at_ms: 7,
        ..LanePin::default()
    };
    let st = LaneState {
        rate: 2.0,
        burst: 1,
        max_in_flight: 1,
        paused_until_ms: None,
        updated_at_ms: 7,
        detail: LaneDetail {
            pin: Some(pin.clone()),
            ..LaneDetail::default()
        },
    };
    s.save_lane_state(&lane, st.clone()).await.unwrap();
    s.pin_lane(&lane, Some(pin.clone()), st.clone())
        .await
        .unwrap();
    s.leave(&a.id, ea).await.unwrap();
    let b = info("node-b");
    let eb = s.join(&b, TTL).await.unwrap();
    let LaneClaim::Owned(o) = s.claim_lane(&b.id, eb, &lane, true).await.unwrap() else {
        panic!("adopted");
    };
    let got = o.state.expect("what the lane learned is handed over");
    assert_eq!(got.detail.pin, Some(pin.clone()), "the pin is handed over");
    assert_eq!((got.rate, got.max_in_flight), (2.0, 1));
    // Another node unpins it for the owner: the owner's next claim reads it.
    s.pin_lane(&lane, None, st).await.unwrap();
    let LaneClaim::Owned(o) = s.claim_lane(&b.id, eb, &lane, true).await.unwrap() else {
        panic!("still b's");
    };
    assert_eq!(o.state.and_then(|s| s.detail.pin), None, "unpinned");
}

/// Nodes claiming one ownerless lane at the same moment make exactly one owner, and the
/// stored owner is the one that was told `Owned`. (PostgreSQL once let two claims both win:
/// the second re-checked the row the first had just taken without re-reading the first's
/// membership, and saw an owner "not alive".)
pub async fn concurrent_claims_make_one_owner<S: ClusterStore>(s: S) {
    let ids = ["node-a", "node-b", "node-c", "node-d"];
    let mut nodes = Vec::new();
    for id in ids {
        let n = info(id);
        let e = s.join(&n, TTL).await.unwrap();
        nodes.push((n.id, e));
    }
    let live = s.nodes().await.unwrap().iter().filter(|n| n.alive).count();
    if live < ids.len() {
        // An embedded backend: one member at a time (the newest join), nothing to race.
        return;
    }
    for round in 0..20 {
        let lane = format!("job:fresh-{round}");
        // A node not placed there asked first: the lane's row exists without an owner (the
        // case that went wrong: a fresh row serialises claims on its insert).
        let asked = s
            .claim_lane(&nodes[0].0, nodes[0].1, &lane, false)
            .await
            .unwrap();
        assert!(
            matches!(asked, LaneClaim::Elsewhere { owner: None }),
            "{asked:?}"
        );
        let claim = |i: usize| s.claim_lane(&nodes[i].0, nodes[i].1, &lane, true);
        let (a, b, c, d) = tokio::join!(claim(0), claim(1), claim(2), claim(3));
        let owned: Vec<usize> = [a, b, c, d]
            .into_iter()
            .enumerate()
            .filter(|(_, r)| matches!(r.as_ref().unwrap(), LaneClaim::Owned(_)))
            .map(|(i, _)| i)
            .collect();
        assert_eq!(owned.len(), 1, "round {round}: owners {owned:?}");
        let stored = s.lane_owners(std::slice::from_ref(&lane)).await.unwrap();
        assert_eq!(
            stored[0].owner_node.as_deref(),
            Some(ids[owned[0]]),
            "round {round}: the stored owner is the one told"
        );
    }
}

/// Dead members' rows are deleted after the retention, live ones never; an id that joins
/// again afterwards still gets a larger epoch.
pub async fn dead_members_are_forgotten_and_epochs_stay_monotonic<S: ClusterStore>(s: S) {
    let a = info("node-a");
    let e1 = s.join(&a, TTL).await.unwrap();
    assert_eq!(
        s.forget_dead_nodes(0).await.unwrap(),
        0,
        "a live member stays"
    );
    s.leave(&a.id, e1).await.unwrap();
    assert_eq!(
        s.forget_dead_nodes(3_600_000).await.unwrap(),
        0,
        "kept for the retention"
    );
    assert!(s.nodes().await.unwrap().iter().any(|n| n.id == "node-a"));
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    assert_eq!(s.forget_dead_nodes(0).await.unwrap(), 1, "then deleted");
    assert!(!s.nodes().await.unwrap().iter().any(|n| n.id == "node-a"));
    let e2 = s.join(&a, TTL).await.unwrap();
    assert!(
        e2 > e1,
        "a rejoin after the row was deleted: {e1} then {e2}"
    );
}

/// Leases held by no live member are listed for recovery; a live member's are not.
pub async fn dead_holders_are_listed<S: JobStore + ClusterStore>(s: S) {
    let (a, b) = (new_job(1, 1, "a", 100), new_job(2, 1, "b", 100));
    s.insert_jobs(vec![a.clone(), b.clone()], WINDOW)
        .await
        .unwrap();
    let n = info("node-a");
    s.join(&n, TTL).await.unwrap();
    s.lease(a.id, lease_by(1, 110, NodeId::new("ghost")))
        .await
        .unwrap()
        .unwrap();
    s.lease(b.id, lease_by(2, 110, NodeId::new("node-a")))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(s.dead_holders().await.unwrap(), vec![NodeId::new("ghost")]);
}

/// A notification's read: the waiting jobs of the lanes after a given id only, and up to one
/// when given (leased ones never), in id order — the same as the full read filtered.
pub async fn waiting_jobs_after_an_id<S: JobStore + ClusterStore>(s: S) {
    let jobs: Vec<NewJob> = (1..=4)
        .map(|i| new_job(i, 1, &format!("k{i}"), 100 + i as u64))
        .collect();
    s.insert_jobs(jobs.clone(), WINDOW).await.unwrap();
    s.lease(jobs[3].id, lease(1, 110)).await.unwrap().unwrap();
    let lanes = vec![job_lane()];
    let all: Vec<ezt_core::JobId> = s
        .waiting_jobs("job:", &lanes)
        .await
        .unwrap()
        .iter()
        .map(|j| j.id)
        .collect();
    assert_eq!(all, vec![jobs[0].id, jobs[1].id, jobs[2].id]);
    let newer: Vec<ezt_core::JobId> = s
        .waiting_jobs_after("job:", &lanes, jobs[0].id, None)
        .await
        .unwrap()
        .iter()
        .map(|j| j.id)
        .collect();
    assert_eq!(
        newer,
        vec![jobs[1].id, jobs[2].id],
        "after the first, leased excluded"
    );
    assert!(s
        .waiting_jobs_after("job:", &lanes, jobs[3].id, None)
        .await
        .unwrap()
        .is_empty());
    let between: Vec<ezt_core::JobId> = s
        .waiting_jobs_after("job:", &lanes, jobs[0].id, Some(jobs[1].id))
        .await
        .unwrap()
        .iter()
        .map(|j| j.id)
        .collect();
    assert_eq!(between, vec![jobs[1].id], "up to and with `until`");
}
