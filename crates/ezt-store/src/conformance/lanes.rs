//! `LaneStore`: what lanes learned survives.

use crate::*;

/// Lane states: absent until saved, then the last save wins (except the pin, which only
/// `pin_lane` changes once a lane was saved), and keys are independent.
pub async fn lane_states_persist<S: LaneStore>(s: S) {
    assert_eq!(s.lane_state("job:a").await.unwrap(), None);
    let st = LaneState {
        rate: 0.5,
        burst: 1,
        max_in_flight: 3,
        paused_until_ms: Some(1_700_000_000_000),
        updated_at_ms: 1,
        detail: LaneDetail::default(),
    };
    s.save_lane_state("job:a", st.clone()).await.unwrap();
    assert_eq!(s.lane_state("job:a").await.unwrap(), Some(st.clone()));
    assert_eq!(
        s.lane_state("webhook:a").await.unwrap(),
        None,
        "keys are apart"
    );
    let newer = LaneState {
        rate: 7.25,
        paused_until_ms: None,
        updated_at_ms: 2,
        detail: LaneDetail {
            rate: Some(LearnedFrom {
                kind: SourceKind::Header,
                header: Some("x-ratelimit-limit-requests".into()),
                window_s: Some(60),
                at_ms: 2,
            }),
            remaining: Some(17),
            pin: Some(LanePin {
                max_in_flight: Some(4),
                adaptive: Some(true),
                adaptive_ceiling: Some(40.0),
                at_ms: 2,
                ..LanePin::default()
            }),
            ..LaneDetail::default()
        },
        ..st
    };
    s.save_lane_state("job:a", newer.clone()).await.unwrap();
    let unpinned = LaneState {
        detail: LaneDetail {
            pin: None,
            ..newer.detail.clone()
        },
        ..newer.clone()
    };
    assert_eq!(
        s.lane_state("job:a").await.unwrap(),
        Some(unpinned.clone()),
        "last save wins, sources included; a save never sets the pin of a saved lane"
    );
    s.pin_lane("job:a", newer.detail.pin.clone(), st.clone())
        .await
        .unwrap();
    s.save_lane_state("job:a", unpinned).await.unwrap();
    assert_eq!(
        s.lane_state("job:a").await.unwrap(),
        Some(newer.clone()),
        "nor drops it: the pin stays until pin_lane changes it"
    );
    s.save_lane_state("webhook:b", st.clone()).await.unwrap();
    assert_eq!(
        s.lane_states().await.unwrap(),
        vec![("job:a".to_string(), newer), ("webhook:b".to_string(), st)],
        "every state, in name order"
    );
}

/// A pin changes only the pin: what the lane learned (rate, pause, sources) stays; a lane
/// with nothing saved gets the fallback with the pin; `None` unpins.
pub async fn a_pin_changes_only_the_pin<S: LaneStore>(s: S) {
    let learned = LaneState {
        rate: 7.5,
        burst: 2,
        max_in_flight: 9,
        paused_until_ms: Some(1_700_000_000_000),
        updated_at_ms: 5,
        detail: LaneDetail {
            remaining: Some(3),
            ..LaneDetail::default()
        },
    };
    s.save_lane_state("job:a", learned.clone()).await.unwrap();
    let pin = LanePin {
        rate: Some(2.0),
        max_in_flight: Some(1),
        at_ms: 9,
        ..LanePin::default()
    };
    let fallback = LaneState {
        rate: 1.0,
        burst: 1,
        max_in_flight: 1,
        paused_until_ms: None,
        updated_at_ms: 9,
        detail: LaneDetail::default(),
    };
    s.pin_lane("job:a", Some(pin.clone()), fallback.clone())
        .await
        .unwrap();
    let mut want = learned.clone();
    want.detail.pin = Some(pin.clone());
    assert_eq!(
        s.lane_state("job:a").await.unwrap(),
        Some(want),
        "only the pin changed"
    );
    s.pin_lane("job:a", None, fallback.clone()).await.unwrap();
    assert_eq!(
        s.lane_state("job:a").await.unwrap(),
        Some(learned),
        "unpinned"
    );
    s.pin_lane("job:new", Some(pin.clone()), fallback.clone())
        .await
        .unwrap();
    let got = s.lane_state("job:new").await.unwrap().expect("saved");
    assert_eq!(
        (got.rate, got.burst, got.max_in_flight, got.detail.pin),
        (1.0, 1, 1, Some(pin)),
        "nothing learned yet: the fallback, pinned"
    );
}
