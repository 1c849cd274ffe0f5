//! STUB (replaced by the real module)
#![allow(missing_docs)]
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LimitChange {
    pub rate_per_sec: Option<f64>,
    pub burst: Option<u32>,
    pub max_in_flight: Option<u32>,
    pub pause_for_ms: Option<u64>,
}
pub const MAX_PAUSE_MS: u64 = 24 * 3600 * 1000;
pub fn parse(headers: &[(String, String)], _status: u16, now_ms: u64) -> LimitChange {
    let mut c = LimitChange::default();
    for (n, v) in headers {
        if n.eq_ignore_ascii_case("retry-after") {
            c.pause_for_ms = parse_retry_after(v, now_ms);
        }
        if n.eq_ignore_ascii_case("x-ezthrottle-rps") {
            c.rate_per_sec = v.parse().ok();
        }
        if n.eq_ignore_ascii_case("x-ezthrottle-max-concurrent") {
            c.max_in_flight = v.parse().ok();
        }
    }
    c
}
pub fn parse_retry_after(value: &str, _now_ms: u64) -> Option<u64> {
    value
        .trim()
        .parse::<u64>()
        .ok()
        .map(|s| (s * 1000).min(MAX_PAUSE_MS))
}
