//! `/api/v1/lanes`: the caller's lanes (one per target host and upstream credential), the
//! limits in force and where each came from, so "why is my job slow" has an answer; and the
//! tenant's own pins on them.

use axum::extract::{Path, State};
use axum::routing::{get, put};
use axum::{Json, Router};
use ezt_core::FieldError;
use ezt_runtime::lanes::LaneView;
use ezt_store::{LanePin, LearnedFrom, SourceKind};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::Caller;
use crate::body::{parse_json, read_limited};
use crate::error::{ApiError, ErrorBody};
use crate::state::AppState;

/// Routes of this resource.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/lanes", get(list))
        .route("/api/v1/lanes/{host}/limits", put(pin))
}

/// Highest rate or burst a tenant may pin (requests/s, requests).
const MAX_PIN_RATE: f64 = 1_000_000.0;
/// Highest in-flight cap a tenant may pin.
const MAX_PIN_IN_FLIGHT: u32 = 10_000;

/// How a value was set.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SourceKindOut {
    /// The configured default (`lanes.default`).
    Default,
    /// Pinned by the operator in the configuration (`lanes.hosts`).
    Config,
    /// Announced by the target in a response header (`header` names it).
    Header,
    /// Found by adaptive pacing (AIMD).
    Adaptive,
    /// Pinned by the tenant (`PUT /api/v1/lanes/{host}/limits`).
    Tenant,
    /// Derived from the learned rate (in-flight cap: one second of calls; `header` names the
    /// rate's header).
    Derived,
}

impl From<SourceKind> for SourceKindOut {
    fn from(k: SourceKind) -> Self {
        match k {
            SourceKind::Default => Self::Default,
            SourceKind::Config => Self::Config,
            SourceKind::Header => Self::Header,
            SourceKind::Adaptive => Self::Adaptive,
            SourceKind::Tenant => Self::Tenant,
            SourceKind::Derived => Self::Derived,
        }
    }
}

/// Where one value came from.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"kind": "header", "header": "x-ratelimit-limit-requests", "window_s": 60, "learned_at": 1767323045678u64}))]
pub struct SourceOut {
    /// How it was set.
    pub kind: SourceKindOut,
    /// The response header that carried it (lower-case), for `header` and `derived`.
    pub header: Option<String>,
    /// The window the quota was announced over, seconds (`x-ratelimit-limit-requests`: 60).
    pub window_s: Option<u64>,
    /// When it was learned or pinned, ms since epoch (`null` for configured values).
    pub learned_at: Option<u64>,
}

impl From<&LearnedFrom> for SourceOut {
    fn from(s: &LearnedFrom) -> Self {
        Self {
            kind: s.kind.into(),
            header: s.header.clone(),
            window_s: s.window_s,
            learned_at: (s.at_ms > 0).then_some(s.at_ms),
        }
    }
}

/// The source of each value in force.
#[derive(Debug, Serialize, ToSchema)]
pub struct SourcesOut {
    /// Of `rate`.
    pub rate: SourceOut,
    /// Of `burst`.
    pub burst: SourceOut,
    /// Of `max_in_flight`.
    pub max_in_flight: SourceOut,
    /// Of the last pause (`null`: the target never asked for one).
    pub pause: Option<SourceOut>,
}

/// A lane's key: the target and the credential it is called with.
#[derive(Debug, Serialize, ToSchema)]
pub struct LaneKeyOut {
    /// `host:port` of the target.
    pub host: String,
    /// Keyed fingerprint of the upstream credential (never the credential); `null` for calls
    /// without one.
    pub credential_fingerprint: Option<String>,
}

/// What the tenant pinned (each set field overrides what is learned).
#[derive(Debug, Serialize, ToSchema)]
pub struct PinOut {
    /// Requests per second.
    pub rate: Option<f64>,
    /// Burst.
    pub burst: Option<u32>,
    /// In-flight cap.
    pub max_in_flight: Option<u32>,
    /// Adaptive pacing forced on or off.
    pub adaptive: Option<bool>,
    /// Adaptive pacing's ceiling, requests/s.
    pub adaptive_ceiling: Option<f64>,
    /// When, ms since epoch.
    pub pinned_at: u64,
}

/// One lane of the caller's.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"lane": "api.openai.com:443#3f9a0c1d2b4e5f60", "key": {"host": "api.openai.com:443", "credential_fingerprint": "3f9a0c1d2b4e5f60"}, "rate": 20.0, "burst": 1, "max_in_flight": 20, "remaining": 1187, "paused_until": null, "sources": {"rate": {"kind": "header", "header": "x-ratelimit-limit-requests", "window_s": 60, "learned_at": 1767323045678u64}, "burst": {"kind": "header", "header": "x-ratelimit-limit-requests", "window_s": 60, "learned_at": 1767323045678u64}, "max_in_flight": {"kind": "derived", "header": "x-ratelimit-limit-requests", "window_s": 60, "learned_at": 1767323045678u64}, "pause": null}, "adaptive": false, "pin": null, "queue_depth": 182, "in_flight": 3, "owner_node": null, "epoch": null}))]
pub struct LaneOut {
    /// The lane's name (`host:port` or `host:port#fingerprint`), as in job views.
    pub lane: String,
    /// Its key.
    pub key: LaneKeyOut,
    /// Requests per second in force.
    pub rate: f64,
    /// Back-to-back requests allowed.
    pub burst: u32,
    /// Requests in flight at once.
    pub max_in_flight: u32,
    /// Requests left in the target's current window, as its last response said (`null`: it
    /// never said).
    pub remaining: Option<u64>,
    /// Paused by the target until this time, ms since epoch (`null`: not paused).
    pub paused_until: Option<u64>,
    /// Where each value came from.
    pub sources: SourcesOut,
    /// Whether adaptive pacing (AIMD) is on for the lane.
    pub adaptive: bool,
    /// What the tenant pinned, if anything.
    pub pin: Option<PinOut>,
    /// Jobs waiting for the limiter.
    pub queue_depth: usize,
    /// Requests in flight now.
    pub in_flight: u32,
    /// Node that dispatches the lane (cluster mode, read from the database, the same on every
    /// node; `null` while no live node owns it, and on a single node).
    pub owner_node: Option<String>,
    /// The lane's ownership epoch (cluster mode, with `owner_node`; `null` on a single node).
    pub epoch: Option<u64>,
}

/// The caller's lanes.
#[derive(Debug, Serialize, ToSchema)]
pub struct LanesOut {
    /// Lanes the caller has had work in since they were loaded (a lane idle for
    /// `lanes.idle_evict_after_ms` leaves memory and this list; what it learned is kept), by
    /// name.
    pub lanes: Vec<LaneOut>,
}

/// Body of `PUT /api/v1/lanes/{host}/limits`: each field set pins that value on every lane
/// of the caller's to the host; an empty object unpins them (back to the configured limit,
/// then what the target teaches). camelCase `maxInFlight`, `adaptiveCeiling` are accepted.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(example = json!({"rate": 15.0, "max_in_flight": 8}))]
#[serde(deny_unknown_fields)]
pub struct PinIn {
    /// Requests per second, > 0 (at most 1000000).
    #[schema(exclusive_minimum = 0.0, maximum = 1000000.0)]
    pub rate: Option<f64>,
    /// Back-to-back requests, >= 1.
    #[schema(minimum = 1, maximum = 1000000)]
    pub burst: Option<u32>,
    /// Requests in flight at once, 1-10000.
    #[serde(alias = "maxInFlight")]
    #[schema(minimum = 1, maximum = 10000)]
    pub max_in_flight: Option<u32>,
    /// Adaptive pacing (AIMD) for a target that announces no limit: `true` opts in (it
    /// provokes a few 429s to find the limit), `false` opts out; absent: as configured.
    pub adaptive: Option<bool>,
    /// Highest rate adaptive pacing may reach, requests/s (default `lanes.adaptive.ceiling`).
    #[serde(alias = "adaptiveCeiling")]
    #[schema(exclusive_minimum = 0.0, maximum = 1000000.0)]
    pub adaptive_ceiling: Option<f64>,
}

impl PinIn {
    fn check(self) -> Result<LanePin, ApiError> {
        let rate_ok = |r: f64| r.is_finite() && r > 0.0 && r <= MAX_PIN_RATE;
        if self.rate.is_some_and(|r| !rate_ok(r)) {
            return Err(FieldError::invalid("rate", "must be a number > 0 and <= 1000000").into());
        }
        if self
            .burst
            .is_some_and(|b| b == 0 || f64::from(b) > MAX_PIN_RATE)
        {
            return Err(FieldError::invalid("burst", "must be between 1 and 1000000").into());
        }
        if self
            .max_in_flight
            .is_some_and(|m| m == 0 || m > MAX_PIN_IN_FLIGHT)
        {
            return Err(FieldError::invalid("max_in_flight", "must be between 1 and 10000").into());
        }
        if self.adaptive_ceiling.is_some_and(|r| !rate_ok(r)) {
            return Err(FieldError::invalid(
                "adaptive_ceiling",
                "must be a number > 0 and <= 1000000",
            )
            .into());
        }
        if self.adaptive_ceiling.is_some() && self.adaptive == Some(false) {
            return Err(FieldError::invalid(
                "adaptive_ceiling",
                "is a bound of adaptive pacing, which this pin turns off",
            )
            .into());
        }
        Ok(LanePin {
            rate: self.rate,
            burst: self.burst,
            max_in_flight: self.max_in_flight,
            adaptive: self.adaptive,
            adaptive_ceiling: self.adaptive_ceiling,
            at_ms: 0,
        })
    }
}

/// A `{host}` path segment: a DNS name or IP literal, with an optional port.
fn check_host(host: &str) -> Result<(), ApiError> {
    let ok = !host.is_empty()
        && host.len() <= 260
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-:[]_".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(FieldError::invalid(
            "host",
            "must be a host name or IP, optionally with :port (e.g. api.openai.com)",
        )
        .into())
    }
}

/// The API's view of a lane: in cluster mode read from the shared store (owner, epoch, queue
/// as the database holds them, the same on every node); on one node, or while the database
/// cannot answer, this node's (`node`) own view, where the owner is this node when it holds
/// the lane under a lane epoch.
fn view(l: LaneView, node: &str) -> LaneOut {
    let (host, fp) = match l.lane.split_once('#') {
        Some((h, f)) => (h.to_owned(), Some(f.to_owned())),
        None => (l.lane.clone(), None),
    };
    let src = |s: &Option<LearnedFrom>| {
        s.as_ref().map_or(
            SourceOut {
                kind: SourceKindOut::Default,
                header: None,
                window_s: None,
                learned_at: None,
            },
            SourceOut::from,
        )
    };
    LaneOut {
        key: LaneKeyOut {
            host,
            credential_fingerprint: fp,
        },
        rate: l.rate,
        burst: l.burst,
        max_in_flight: l.max_in_flight,
        remaining: l.remaining,
        paused_until: l.paused_until,
        sources: SourcesOut {
            rate: src(&l.detail.rate),
            burst: src(&l.detail.burst),
            max_in_flight: src(&l.detail.max_in_flight),
            pause: l.detail.pause.as_ref().map(SourceOut::from),
        },
        adaptive: l.adaptive,
        pin: l.detail.pin.map(|p| PinOut {
            rate: p.rate,
            burst: p.burst,
            max_in_flight: p.max_in_flight,
            adaptive: p.adaptive,
            adaptive_ceiling: p.adaptive_ceiling,
            pinned_at: p.at_ms,
        }),
        queue_depth: l.queued,
        in_flight: l.in_flight,
        owner_node: l
            .owner_node
            .clone()
            .or_else(|| l.lane_epoch.map(|_| node.to_string())),
        epoch: l.lane_epoch,
        lane: l.lane,
    }
}

/// The caller's lanes: limits in force, where each came from, budget left, pause, queue.
#[utoipa::path(get, path = "/api/v1/lanes", operation_id = "listLanes", tag = "lanes",
    responses((status = 200, description = "the caller's lanes, by name", body = LanesOut), (status = 401, description = "no valid API key (`unauthorized`)", body = ErrorBody)),
    security(("bearer" = [])))]
async fn list(State(st): State<AppState>, caller: Caller) -> Json<LanesOut> {
    let lanes = st.rt.jobs.lanes(caller.tenant.id).await;
    let node = st.rt.node.id().to_string();
    Json(LanesOut {
        lanes: lanes.into_iter().map(|l| view(l, &node)).collect(),
    })
}

/// Pin (or, with `{}`, unpin) the limits of the caller's lanes to a host; adaptive pacing is
/// opted in or out here too.
#[utoipa::path(put, path = "/api/v1/lanes/{host}/limits", operation_id = "pinLaneLimits", tag = "lanes", request_body = PinIn,
    params(("host" = String, Path, description = "the target's host, or host:port to pin one port only", pattern = r"^[A-Za-z0-9.:\[\]_-]{1,260}$", example = "api.openai.com")),
    responses((status = 200, description = "the lanes as now pinned", body = LanesOut),
              (status = 400, description = "a bad field (`invalid_field`, `unknown_field`, `invalid_json`); `host` for a bad path", body = ErrorBody), (status = 401, description = "no valid API key (`unauthorized`)", body = ErrorBody), (status = 404, description = "the caller has no lane to this host yet (`not_found`, field `host`): submit a job first", body = ErrorBody), (status = 408, description = "the body did not arrive in time (`request_timeout`)", body = ErrorBody), (status = 409, description = "the operator pinned this host in the configuration (`conflict`)", body = ErrorBody), (status = 413, description = "the request body is larger than `limits.max_request_bytes` (`payload_too_large`)", body = ErrorBody)),
    security(("bearer" = [])))]
async fn pin(
    State(st): State<AppState>,
    caller: Caller,
    Path(host): Path<String>,
    body: axum::body::Body,
) -> Result<Json<LanesOut>, ApiError> {
    check_host(&host)?;
    let input: PinIn = parse_json(&read_limited(&st, body).await?)?;
    let pin = input.check()?;
    let lanes = st
        .rt
        .jobs
        .pin_lane_limits(caller.tenant.id, &host, pin)
        .await?;
    let node = st.rt.node.id().to_string();
    Ok(Json(LanesOut {
        lanes: lanes.into_iter().map(|l| view(l, &node)).collect(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pin(v: serde_json::Value) -> Result<LanePin, ApiError> {
        serde_json::from_value::<PinIn>(v).unwrap().check()
    }

    #[test]
    fn pins_are_validated_field_by_field() {
        use serde_json::json;
        assert!(pin(json!({})).is_ok_and(|p| p == LanePin::default()));
        let p =
            pin(json!({"rate": 15.5, "maxInFlight": 8, "adaptive": true, "adaptiveCeiling": 40}))
                .unwrap();
        assert_eq!(
            (p.rate, p.max_in_flight, p.adaptive, p.adaptive_ceiling),
            (Some(15.5), Some(8), Some(true), Some(40.0))
        );
        for (bad, field) in [
            (json!({"rate": 0}), "rate"),
            (json!({"rate": -1}), "rate"),
            (json!({"rate": 2e6}), "rate"),
            (json!({"burst": 0}), "burst"),
            (json!({"max_in_flight": 0}), "max_in_flight"),
            (json!({"max_in_flight": 10001}), "max_in_flight"),
            (json!({"adaptive_ceiling": 0}), "adaptive_ceiling"),
            (
                json!({"adaptive": false, "adaptive_ceiling": 5}),
                "adaptive_ceiling",
            ),
        ] {
            let e = pin(bad.clone()).unwrap_err();
            assert_eq!(e.error_body().error.field.as_deref(), Some(field), "{bad}");
        }
        assert!(serde_json::from_value::<PinIn>(json!({"rps": 1})).is_err());
    }

    #[test]
    fn hosts_are_checked() {
        for ok in [
            "api.openai.com",
            "api.openai.com:443",
            "127.0.0.1:8080",
            "[::1]:80",
        ] {
            assert!(check_host(ok).is_ok(), "{ok}");
        }
        for bad in ["", "a b", "x/y", "é.com", &"a".repeat(261)] {
            assert!(check_host(bad).is_err(), "{bad:?}");
        }
    }
}
