//! `LaneStore`: what lanes learned survives.

use crate::*;

/// Lane states: absent until saved, then the last save wins, and keys are independent.
pub async fn lane_states_persist<S: LaneStore>(s: S) {
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
